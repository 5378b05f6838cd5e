"""The driver of a chaos scenario: submits runs, records answers, reads final states.

Every answer of the API goes into the `History` (a 5xx other than 503 is unexpected).
Final states come straight from Postgres (a fresh connection per look, so an outage
costs nothing but a retry).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

import asyncpg
import httpx

from tests.support.api import RUNS
from tests.support.chaosrig import ChaosRig
from tests.support.faults import Broker
from tests.support.history import TERMINAL, FinalRun, History, Submission, as_final
from tests.support.specrepo import FEATURE_KEY


@dataclass(frozen=True)
class Knobs:
    runs: int = 100
    rate: float = 3.0  # submissions per second while runs flow
    fault_every: float = 3.0  # seconds between worker faults (a, f)
    fault_window: float = 240.0  # worker faults stop at the latest after this
    deadline: float = 180.0  # after faults stop: every run terminal by then
    pg_outage: float = 30.0
    poison: int = 100  # malformed messages per queue (d)
    force_shared: bool = False  # b even while other pytest processes run


CRASH_CODES = {"handler_crashed", "lease_expired"}
"""A stage killed again and again: its message may hit the delivery limit, its lease
the re-dispatch limit. Both fail the run with a reason, retryably."""


SUBMIT_TIMEOUT = 15.0
RUNS_QUERY = """
SELECT id, repository, status, attempt, error_code, branch_name, pr_url, result,
       current_task
FROM spec_workflow_runs
"""


class Driver:
    def __init__(self, rig: ChaosRig, history: History) -> None:
        self.rig = rig
        self.history = history
        self.broker = Broker(rig.stack)
        self.client = httpx.AsyncClient(
            base_url=rig.stack.base_url, timeout=SUBMIT_TIMEOUT
        )
        self._next = 0

    async def close(self) -> None:
        await self.client.aclose()

    # -- the API --------------------------------------------------------------------

    def next_repo(self) -> str:
        repo = self.rig.repos[self._next]
        self._next += 1
        return repo

    @property
    def remaining(self) -> int:
        return len(self.rig.repos) - self._next

    async def submit(self, notes: str | None = None) -> Submission:
        sub = Submission(self.next_repo())
        self.history.submissions.append(sub)
        body: dict[str, Any] = {"repository": sub.repository, "featureKey": FEATURE_KEY}
        if notes:
            body["notes"] = notes
        try:
            response = await self.client.post(RUNS, json=body)
        except httpx.HTTPError as exc:
            sub.error = type(exc).__name__
            return sub
        sub.status = response.status_code
        self.history.answer(
            f"POST {sub.repository}", response.status_code, response.text
        )
        if response.status_code == 202:
            sub.run_id = str(response.json()["id"])
        else:
            sub.error = response.text[:200]
        return sub

    async def submit_many(
        self,
        count: int,
        rate: float,
        notes: Callable[[int], str | None] = lambda _: None,
    ) -> list[Submission]:
        """`count` submissions, started `1/rate` s apart (each in its own task)."""
        tasks = []
        for i in range(count):
            if not self.remaining:
                break
            tasks.append(asyncio.create_task(self.submit(notes(self._next))))
            if i + 1 < count:
                await asyncio.sleep(1 / rate)
        return list(await asyncio.gather(*tasks))

    async def post(self, path: str) -> httpx.Response | None:
        try:
            response = await self.client.post(path)
        except httpx.HTTPError:
            return None
        self.history.answer(f"POST {path}", response.status_code, response.text)
        return response

    async def get(self, path: str) -> httpx.Response | None:
        try:
            response = await self.client.get(path)
        except httpx.HTTPError:
            return None
        self.history.answer(f"GET {path}", response.status_code, response.text)
        return response

    async def wait_ready(self, timeout: float = 60) -> bool:  # noqa: ASYNC109
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if (await self.client.get("/readyz")).status_code == 200:
                    return True
            await asyncio.sleep(0.3)
        return False

    # -- Postgres -------------------------------------------------------------------

    async def query(self, sql: str, *args: Any) -> list[Any]:
        """One statement on a fresh connection; retried while Postgres is away."""
        for _ in range(600):
            try:
                conn = await asyncpg.connect(self.rig.database_dsn, timeout=5)
            except (OSError, asyncpg.PostgresError, TimeoutError):
                await asyncio.sleep(0.5)
                continue
            try:
                return list(await conn.fetch(sql, *args))
            except (OSError, asyncpg.PostgresConnectionError, TimeoutError):
                await asyncio.sleep(0.5)
            finally:
                with contextlib.suppress(Exception):
                    await conn.close()
        raise RuntimeError("PostgreSQL unreachable for 5 minutes")

    async def finals(self) -> list[FinalRun]:
        return [as_final(row) for row in await self.query(RUNS_QUERY)]

    async def rows(self) -> list[Any]:
        return await self.query(RUNS_QUERY)

    async def settled(self) -> bool:
        """Every run in the database terminal and every accepted run stored."""
        finals = {r.id: r for r in await self.finals()}
        accepted = {s.run_id for s in self.history.accepted}
        return accepted <= finals.keys() and all(
            r.status in TERMINAL for r in finals.values()
        )

    async def wait_settled(self, timeout: float) -> bool:  # noqa: ASYNC109
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if await self.settled():
                return True
            await asyncio.sleep(1.0)
        return await self.settled()

    async def unsent_before(self, moment: Any) -> int:
        rows = await self.query(
            "SELECT count(*) AS n FROM outbox "
            "WHERE sent_at IS NULL AND created_at < $1",
            moment,
        )
        return int(rows[0]["n"])

    async def db_now(self) -> Any:
        return (await self.query("SELECT now() AS t"))[0]["t"]

    # -- processes --------------------------------------------------------------------

    async def consumers_back(self, timeout: float) -> list[str]:  # noqa: ASYNC109
        """Queues still without a consumer after `timeout` s (empty: all consumed)."""
        deadline = time.monotonic() + timeout
        missing: list[str] = ["(management API unreachable)"]
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                queues = await self.broker.queues()
                missing = sorted(name for name, q in queues.items() if q.consumers == 0)
                if not missing:
                    return []
            await asyncio.sleep(1.0)
        return missing

    def dead_processes(self) -> list[str]:
        return [n for n in ["api", *self.rig.workers()] if not self.rig.alive(n)]


async def fault_loop(
    every: float,
    stop: asyncio.Event,
    fault: Callable[[], Awaitable[None]],
) -> None:
    """`fault()` every `every` s (±30%) until `stop` is set."""
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every * random.uniform(0.7, 1.3))
        if stop.is_set():
            return
        await fault()


async def restart(
    rig: ChaosRig,
    history: History,
    name: str,
    sig: signal.Signals,
    *,
    down: float = 1.0,
    stop_timeout: float = 30.0,
) -> None:
    """Signal `name`, wait for it to exit, leave it down `down` s, start it again."""
    pid = await asyncio.to_thread(rig.kill, name, sig)
    gone = await asyncio.to_thread(rig.wait_dead, name, pid, stop_timeout)
    if not gone:
        history.flag(
            f"{name} (pid {pid}) still running {stop_timeout:g}s after {sig.name}"
        )
        await asyncio.to_thread(rig.kill, name, signal.SIGKILL)
        await asyncio.to_thread(rig.wait_dead, name, pid, 10)
    await asyncio.sleep(down)
    await asyncio.to_thread(rig.start, name)


def count(names: Iterable[str]) -> str:
    tally: dict[str, int] = {}
    for name in names:
        tally[name] = tally.get(name, 0) + 1
    return ", ".join(f"{k} x{v}" for k, v in sorted(tally.items()))


async def drained(
    driver: Driver,
    names: list[str],
    timeout: float,  # noqa: ASYNC109
) -> bool:
    """Until `names` hold no message (sampled twice, 6 s apart: samples lag 5 s)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        await asyncio.sleep(6)
        queues = await driver.broker.queues()
        if all(queues[n].messages == 0 for n in names if n in queues):
            await asyncio.sleep(6)
            queues = await driver.broker.queues()
            if all(queues[n].messages == 0 for n in names if n in queues):
                return True
    return False


Scenario = Callable[[ChaosRig, Driver, History, Knobs], Awaitable[set[str]]]
"""Drives runs through the rig while it injects its faults; returns the error codes a
run may fail with under those faults."""
