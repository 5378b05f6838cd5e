"""Scenarios b and c: the broker and Postgres restarted, the API killed between commit
and publish."""

from __future__ import annotations

import asyncio
import time

from shared.topology import DEAD_LETTERS
from tests.chaos.chaos_driver import Driver, Knobs
from tests.support.api import RUNS
from tests.support.chaosrig import ChaosRig
from tests.support.faults import restart_rabbitmq, start_postgres, stop_postgres
from tests.support.history import History


async def shared_outages(
    _rig: ChaosRig, driver: Driver, history: History, knobs: Knobs
) -> set[str]:
    """b: restart RabbitMQ once mid-load, then stop Postgres for `pg_outage` s.

    While Postgres is down the API must answer 503 (never 500); afterwards nothing
    is lost, nothing was dead-lettered because of it, and the outbox rows written
    before it are sent within 60 s of recovery.
    """
    dead_before = (await driver.broker.queue(DEAD_LETTERS.name)).acked
    third = max(knobs.runs // 3, 1)
    await driver.submit_many(third, knobs.rate)

    submitter = asyncio.create_task(driver.submit_many(third, knobs.rate))
    await asyncio.sleep(third / knobs.rate / 3)
    began = time.monotonic()
    await restart_rabbitmq(down=3.0)
    idle = await driver.consumers_back(30)
    back = time.monotonic() - began
    if idle:
        history.flag(f"queues without a consumer 30 s after the broker restart: {idle}")
    history.note(
        f"RabbitMQ restarted (stop_app, 3 s, start_app); consumers back "
        f"{back:.0f} s after the stop"
    )
    await submitter

    await stop_postgres()
    down_at = time.monotonic()
    answers: dict[int | None, int] = {}
    refused: dict[int | None, int] = {}
    posts = min(10, driver.remaining // 2)
    while time.monotonic() - down_at < knobs.pg_outage:
        some = next((s.run_id for s in history.accepted), None)
        response = await driver.get(f"{RUNS}/{some}") if some else None
        status = response.status_code if response is not None else None
        answers[status] = answers.get(status, 0) + 1
        if posts > 0:  # submissions during the outage: 503, nothing stored
            posts -= 1
            sub = await driver.submit()
            refused[sub.status] = refused.get(sub.status, 0) + 1
        await asyncio.sleep(1.0)
    await start_postgres()
    recovered = await driver.db_now()
    history.note(
        f"Postgres stopped {knobs.pg_outage:g} s: GET answers {answers}, "
        f"POST answers {refused}"
    )
    submitter = asyncio.create_task(driver.submit_many(driver.remaining, knobs.rate))
    drained = False
    for _ in range(60):
        if await driver.unsent_before(recovered) == 0:
            drained = True
            break
        await asyncio.sleep(1.0)
    if not drained:
        history.flag("outbox rows from before the recovery unsent 60 s later")
    await submitter
    await driver.wait_settled(knobs.deadline)
    await asyncio.sleep(6)  # the management API's samples lag up to 5 s
    dead_after = (await driver.broker.queue(DEAD_LETTERS.name)).acked
    if dead_after > dead_before:
        history.flag(
            f"{dead_after - dead_before} messages dead-lettered by the outages"
        )
    return set()


# -- c: the API killed between commit and publish ------------------------------------


async def kill_api(
    rig: ChaosRig, driver: Driver, history: History, knobs: Knobs
) -> set[str]:
    """c: kill -9 the relay, then the API too, twice: once right after a burst of
    POSTs was answered, once in the middle of one (some POSTs get no answer: their
    runs may or may not exist, and count if they do). Whatever was committed and not
    yet published (by the API's fast path or the relay) must go out after restart."""
    burst = max(knobs.runs // 4, 1)
    await driver.submit_many(knobs.runs // 4, knobs.rate)
    for mid_burst in (False, True):
        await _api_outage(rig, driver, history, burst, mid_burst=mid_burst)
    await driver.submit_many(driver.remaining, knobs.rate)
    return set()


async def _api_outage(
    rig: ChaosRig, driver: Driver, history: History, burst: int, *, mid_burst: bool
) -> None:
    await asyncio.to_thread(rig.wait_dead, "relay", rig.kill("relay"), 10)
    tasks = [asyncio.create_task(driver.submit()) for _ in range(burst)]
    wait_for = burst // 3 if mid_burst else burst
    for answered, finished in enumerate(asyncio.as_completed(tasks), start=1):
        await finished
        if answered >= wait_for:
            break
    await asyncio.to_thread(rig.wait_dead, "api", rig.kill("api"), 10)
    subs = await asyncio.gather(*tasks)
    killed_at = await driver.db_now()
    unsent = "SELECT count(*) AS n FROM outbox WHERE sent_at IS NULL"
    waiting = (await driver.query(unsent))[0]["n"]
    when = "mid-burst" if mid_burst else "after a burst"
    history.note(
        f"relay and API killed {when}: {sum(s.status == 202 for s in subs)} of "
        f"{burst} POSTs accepted, {sum(s.status is None for s in subs)} unanswered; "
        f"{waiting} outbox rows committed and not yet published"
    )
    await asyncio.sleep(2)
    await asyncio.to_thread(rig.start, "api")
    await asyncio.to_thread(rig.start, "relay")
    restarted = time.monotonic()
    if not await driver.wait_ready():
        history.flag(f"the API was not ready 60 s after its restart ({when})")
    while await driver.unsent_before(killed_at):
        if time.monotonic() - restarted > 15:
            history.flag(f"outbox rows from before the kill unsent 15 s after ({when})")
            break
        await asyncio.sleep(0.5)
