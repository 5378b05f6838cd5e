"""Scenario e: duplicated and reordered events, concurrent retries, cancels racing
completion."""

from __future__ import annotations

import asyncio
import random
import uuid

import orjson

from tests.chaos.chaos_driver import Driver, Knobs, drained
from tests.support.api import RUNS
from tests.support.chaosrig import ChaosRig, fail_once_note
from tests.support.faults import COPY_HEADER, EventTap
from tests.support.history import History


async def duplicates_and_races(
    _rig: ChaosRig, driver: Driver, history: History, knobs: Knobs
) -> set[str]:
    """e: every task event published again (same id, twice) and a third of them later
    in shuffled order, with fresh ids; a fifth of the runs fail once (their first
    Codex execution changes nothing) and get three concurrent retries (exactly one
    202); a retry of a running run (409); cancels racing the runs' completion. After
    everything is terminal, every event captured is published once more, shuffled:
    no run may change."""
    fail_every = 5
    tap = EventTap(driver.broker)
    replayed = 0
    async with tap.running(), driver.broker.channel() as channel:

        async def publish(routing_key: str, body: dict[str, object]) -> None:
            await driver.broker.publish_raw(
                channel,
                orjson.dumps(body),
                routing_key=routing_key,
                headers={COPY_HEADER: "1"},
            )

        stop = asyncio.Event()
        late: list[tuple[str, dict[str, object]]] = []

        async def duplicate() -> None:
            nonlocal replayed
            seen = 0
            while not stop.is_set():
                await asyncio.sleep(0.5)
                fresh, seen = tap.events[seen:], len(tap.events)
                for event in fresh:
                    for _ in range(2):
                        await publish(event.routing_key, event.body)
                        replayed += 1
                    if random.random() < 1 / 3:
                        late.append(
                            (
                                event.routing_key,
                                {**event.body, "message_id": str(uuid.uuid4())},
                            )
                        )
                if len(late) > 20 or (stop.is_set() and late):
                    random.shuffle(late)
                    for key, body in late:
                        await publish(key, body)
                        replayed += 1
                    late.clear()

        duplicator = asyncio.create_task(duplicate())
        races = asyncio.create_task(_races(driver, history))
        await driver.submit_many(
            knobs.runs,
            knobs.rate,
            notes=lambda n: fail_once_note(n) if n % fail_every == 0 else None,
        )
        await driver.wait_settled(knobs.deadline)
        await races
        stop.set()
        await duplicator

        before = {r.id: r for r in await driver.finals()}
        copies = [(e.routing_key, e.body) for e in tap.events]
        copies += [
            (e.routing_key, {**e.body, "message_id": str(uuid.uuid4())})
            for e in tap.events
        ]
        random.shuffle(copies)
        for key, body in copies:
            await publish(key, body)
        replayed += len(copies)
        await driver.wait_settled(60)
        events = [n for n in await driver.broker.queues() if n.startswith("api.task")]
        if not await drained(driver, events, 120):
            history.note("event queues not empty 120 s after the replay")
        after = {r.id: r for r in await driver.finals()}
    changed = [rid for rid, run in before.items() if after.get(rid) != run]
    for rid in changed:
        history.flag(
            f"run {rid} changed by replayed events: {before[rid]} -> {after.get(rid)}"
        )
    history.note(f"{len(tap.events)} events captured, {replayed} copies published")
    return set()


async def _races(driver: Driver, history: History) -> None:
    """Retries of failed runs (three at once), a retry of a running run, cancels
    racing completion, until every run is terminal."""
    retried: set[str] = set()
    raced: set[str] = set()
    retry_answers: dict[int | None, int] = {}
    cancel_answers: dict[int | None, int] = {}
    running_retry: dict[int | None, int] = {}
    running_retries = 0
    while True:
        rows = await driver.rows()
        accepted = {s.run_id for s in history.accepted}
        for row in rows:
            rid = str(row["id"])
            if rid not in accepted:
                continue
            if row["status"] == "failed" and row["error_code"] == "no_changes":
                if rid in retried:
                    continue
                retried.add(rid)
                answers = await asyncio.gather(
                    *(driver.post(f"{RUNS}/{rid}/retry") for _ in range(3))
                )
                codes = [a.status_code if a is not None else None for a in answers]
                for code in codes:
                    retry_answers[code] = retry_answers.get(code, 0) + 1
                if codes.count(202) != 1:
                    history.flag(
                        f"run {rid}: three concurrent retries answered {codes}"
                    )
            elif (
                row["status"] == "running"
                and row["current_task"] in ("apply_and_publish", "finalize_run")
                and rid not in raced
                and len(raced) < len(accepted) // 6
            ):
                raced.add(rid)
                cancel = await driver.post(f"{RUNS}/{rid}/cancel")
                code = cancel.status_code if cancel is not None else None
                cancel_answers[code] = cancel_answers.get(code, 0) + 1
                if code == 202:
                    history.cancelled_by_us.add(rid)
            elif row["status"] == "running" and running_retries < 3:
                running_retries += 1
                answer = await driver.post(f"{RUNS}/{rid}/retry")
                code = answer.status_code if answer is not None else None
                running_retry[code] = running_retry.get(code, 0) + 1
                if code != 409:
                    history.flag(f"retry of running run {rid} answered {code}")
        if driver.remaining == 0 and await driver.settled():
            break
        await asyncio.sleep(0.3)
    history.note(
        f"retries of failed runs (3 at once): {retry_answers}; cancels racing "
        f"completion: {cancel_answers}; retries of running runs: {running_retry}"
    )
    for rid in history.cancelled_by_us:
        final = next((r for r in await driver.finals() if r.id == rid), None)
        if final is not None and final.status != "cancelled":
            history.flag(f"run {rid}: cancel accepted, yet it ended {final.status}")
