"""The fault scenarios of `make chaos` (../shared/notes/messaging-reliability.md §8).

Each scenario gets a fresh stack (`chaos_stack`), drives runs through it while it
injects its faults, and returns the error codes a run may legitimately fail with
under those faults. `run_scenario` then waits until every run is terminal (or the
deadline passes), checks the processes and queues, and does the accounting.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import httpx

from shared.topology import LOG_RECORDS
from tests.chaos.chaos_driver import Driver, Knobs, Scenario
from tests.chaos.chaos_outages import kill_api, shared_outages
from tests.chaos.chaos_poison import poison
from tests.chaos.chaos_races import duplicates_and_races
from tests.chaos.chaos_workers import kill_workers, stop_workers
from tests.support.chaosrig import chaos_stack
from tests.support.faults import shared_services_busy
from tests.support.history import History, Verdict, check, skipped


async def run_scenario(
    title: str, scenario: Scenario, knobs: Knobs, home: Path
) -> Verdict:
    async with chaos_stack(home, knobs.runs) as rig:
        history = History()
        driver = Driver(rig, history)
        broker = driver.broker
        try:
            await driver.wait_ready()
            started = time.monotonic()
            allowed = await scenario(rig, driver, history, knobs)
            if not await driver.wait_settled(knobs.deadline):
                history.note(f"not every run terminal {knobs.deadline:g}s after faults")
            duration = time.monotonic() - started
            dead = driver.dead_processes()
            if dead:
                history.flag(f"processes not running at the end: {', '.join(dead)}")
            idle = await driver.consumers_back(30)
            if idle:
                history.flag(f"queues without a consumer at the end: {idle}")
            await _report_reexecutions(driver, history)
            await asyncio.sleep(6)  # the management API's samples lag up to 5 s
            with contextlib.suppress(httpx.HTTPError):
                leftover = {
                    n: q.messages
                    for n, q in (await broker.queues()).items()
                    if q.messages and n != LOG_RECORDS.name
                }
                if leftover:
                    history.note(f"messages still queued at the end: {leftover}")
            return check(
                title,
                history,
                await driver.finals(),
                rig.github.pulls_created,
                rig.pushes.pushes(),
                allowed_errors=allowed,
                duration=duration,
            )
        finally:
            await driver.close()


async def _report_reexecutions(driver: Driver, history: History) -> None:
    rows = await driver.query(
        "SELECT task_name, count(*) AS n FROM run_events "
        "WHERE kind = 'task_redispatched' GROUP BY task_name"
    )
    if rows:
        found = ", ".join(f"{r['task_name']} x{r['n']}" for r in rows)
        history.note(f"lease re-dispatches (re-executions, allowed): {found}")
    failed = await driver.query(
        "SELECT error_code, count(*) AS n FROM spec_workflow_runs "
        "WHERE status = 'failed' GROUP BY error_code"
    )
    if failed:
        codes = ", ".join(f"{r['error_code']} x{r['n']}" for r in failed)
        history.note(f"failures: {codes}")


SCENARIOS: dict[str, tuple[str, Scenario]] = {
    "a": ("a. kill -9 workers", kill_workers),
    "b": ("b. broker restart + Postgres outage", shared_outages),
    "c": ("c. API killed between commit and publish", kill_api),
    "d": ("d. poison messages", poison),
    "e": ("e. duplicates, reordering, retry/cancel races", duplicates_and_races),
    "f": ("f. SIGTERM during stages", stop_workers),
}


async def run_all(
    keys: list[str], knobs: Knobs, home: Path, log: Callable[[str], None]
) -> list[Verdict]:
    verdicts = []
    for key in keys:
        title, scenario = SCENARIOS[key]
        if key == "b" and not knobs.force_shared:
            busy = shared_services_busy()
            if busy:
                log(f"{title}: skipped, other tests use RabbitMQ and Postgres: {busy}")
                verdicts.append(
                    skipped(title, "other test runs were using RabbitMQ/Postgres")
                )
                continue
        log(f"{title}: starting ({knobs.runs} runs)")
        began = time.monotonic()
        try:
            verdict = await run_scenario(title, scenario, knobs, home / key)
        except Exception as exc:  # a harness failure is a failed row, not a crash
            log(f"{title}: harness error\n{traceback.format_exc()}")
            verdict = Verdict(title, 0, 0, 0, 0, 0, 0, 1, time.monotonic() - began,
                              findings=[f"harness error: {exc!r}"])  # fmt: skip
        log(f"{title}: {verdict.result} in {time.monotonic() - began:.0f} s")
        verdicts.append(verdict)
    return verdicts
