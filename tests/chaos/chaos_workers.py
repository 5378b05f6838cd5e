"""Scenarios a and f: stage replicas (and the relay) killed or stopped mid-flow."""

from __future__ import annotations

import asyncio
import random
import signal

from tests.chaos.chaos_driver import (
    CRASH_CODES,
    Driver,
    Knobs,
    count,
    fault_loop,
    restart,
)
from tests.support.chaosrig import ChaosRig
from tests.support.history import History


async def _worker_faults(
    rig: ChaosRig,
    driver: Driver,
    history: History,
    knobs: Knobs,
    sig: signal.Signals,
    stop_timeout: float,
) -> set[str]:
    hit: list[str] = []
    down: set[str] = set()
    cycles: set[asyncio.Task[None]] = set()
    stop = asyncio.Event()

    async def cycle(name: str) -> None:
        try:
            await restart(rig, history, name, sig, down=1.0, stop_timeout=stop_timeout)
        except Exception as exc:  # a replica left down is a finding, not a log line
            history.flag(f"restarting {name} failed: {exc!r}"[:300])
        finally:
            down.discard(name)

    async def fault() -> None:
        # On schedule, whatever the previous restarts are still doing.
        candidates = [w for w in rig.workers() if w not in down]
        if candidates:
            name = random.choice(candidates)
            down.add(name)
            hit.append(name)
            task = asyncio.create_task(cycle(name))
            cycles.add(task)
            task.add_done_callback(cycles.discard)

    faults = asyncio.create_task(fault_loop(knobs.fault_every, stop, fault))
    try:
        await driver.submit_many(knobs.runs, knobs.rate)
        await driver.wait_settled(knobs.fault_window)
    finally:
        stop.set()
        await faults
        await asyncio.gather(*cycles)
    history.note(f"{len(hit)} x {sig.name}, each restarted 1 s later: {count(hit)}")
    return CRASH_CODES


async def kill_workers(
    rig: ChaosRig, driver: Driver, history: History, knobs: Knobs
) -> set[str]:
    """a: kill -9 a random stage replica (or the relay) every few seconds."""
    return await _worker_faults(rig, driver, history, knobs, signal.SIGKILL, 10)


async def stop_workers(
    rig: ChaosRig, driver: Driver, history: History, knobs: Knobs
) -> set[str]:
    """f: SIGTERM a random stage replica (or the relay) every few seconds; it must
    exit within the graceful timeout (10 s) plus a margin."""
    return await _worker_faults(rig, driver, history, knobs, signal.SIGTERM, 20)
