"""The two clients `make bench` times: our API over HTTP, and the Celery chain.

Each `one(key)` submits one run and returns its latency (ms) from just before the
submission until the run's completion signal reaches the driver:

- ours: `POST /api/workflows/speckit/runs` to the real API process (over
  `rawhttp`'s keep-alive connections, as lean as Celery's kombu); done when
  `evt.run.succeeded` (the run event the finalize transaction puts in the outbox, as
  the relay publishes it) reaches an exclusive queue bound to `evt.run.*` outcomes;
- Celery: INSERT of the run row, then `chain(...).apply_async()`; done when
  `finalize_run`'s `pg_notify` reaches the driver's LISTEN connection. The
  `AsyncResult.get()` figures come from `get_sequential`/`get_burst` instead.
"""

from __future__ import annotations

import asyncio
import collections
import json
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any
from uuid import uuid4

import aio_pika
import asyncpg
from aio_pika.abc import AbstractIncomingMessage

from tests.bench import rawhttp

RUN_TIMEOUT = 120.0
RUNS_PATH = "/api/workflows/speckit/runs"
OUTCOMES = ("evt.run.succeeded", "evt.run.failed", "evt.run.cancelled")


class RunFailed(RuntimeError):
    """A run did not succeed, or did not finish in time."""


@dataclass
class Timing:
    """Wall-clock marks of one run (time.time()), for the hop breakdown."""

    submitted: float
    posted: float
    done: float


@dataclass
class Waiters:
    """Futures by run id; a signal that comes before its waiter is kept."""

    waiting: dict[str, asyncio.Future[str]] = field(default_factory=dict)
    early: dict[str, str] = field(default_factory=dict)

    def expect(self, run_id: str) -> asyncio.Future[str]:
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        if run_id in self.early:
            future.set_result(self.early.pop(run_id))
        else:
            self.waiting[run_id] = future
        return future

    def signal(self, run_id: str, status: str) -> None:
        future = self.waiting.pop(run_id, None)
        if future is None:
            self.early[run_id] = status
        elif not future.done():
            future.set_result(status)


async def outcome(future: asyncio.Future[str], run_id: str) -> None:
    try:
        status = await asyncio.wait_for(future, RUN_TIMEOUT)
    except TimeoutError:
        raise RunFailed(f"run {run_id} did not finish in {RUN_TIMEOUT:g}s") from None
    if status != "succeeded":
        raise RunFailed(f"run {run_id} ended {status}")


class Ours:
    """Our stack as a client sees it: the HTTP API and the run events."""

    def __init__(
        self, base_url: str, rabbitmq_url: str, headers: dict[str, str]
    ) -> None:
        self.base_url, self.rabbitmq_url = base_url, rabbitmq_url
        self.headers = headers  # the bearer token, in token mode
        self.waiters = Waiters()
        self.timings: dict[str, Timing] = {}
        self.record = False

    async def open(self) -> None:
        self.http = rawhttp.Pool(self.base_url, self.headers.get("Authorization"))
        self.connection = await aio_pika.connect_robust(self.rabbitmq_url)
        channel = await self.connection.channel()
        queue = await channel.declare_queue(exclusive=True, auto_delete=True)
        for key in OUTCOMES:
            await queue.bind("spec_workflow", routing_key=key)
        await queue.consume(self._on_event, no_ack=True)

    async def close(self) -> None:
        await self.http.close()
        await self.connection.close()

    async def _on_event(self, message: AbstractIncomingMessage) -> None:
        body = json.loads(message.body)
        self.waiters.signal(str(body["run_id"]), str(body["status"]))

    async def one(self, key: str) -> float:
        started, wall = time.perf_counter(), time.time()
        status, body = await self.http.request(
            "POST",
            RUNS_PATH,
            json.dumps({"repository": "acme/shop", "featureKey": key}).encode(),
        )
        posted = time.time()
        if status != 202:
            raise RunFailed(f"POST {RUNS_PATH}: {status} {body[:300]!r}")
        run_id = str(json.loads(body)["id"])
        await outcome(self.waiters.expect(run_id), run_id)
        elapsed = (time.perf_counter() - started) * 1000
        if self.record:
            self.timings[run_id] = Timing(wall, posted, time.time())
        return elapsed


class CeleryChain:
    """The Celery baseline's client: run row INSERT plus `apply_async`."""

    def __init__(self, database_dsn: str, start: Callable[[str], Any]) -> None:
        self.dsn, self.start = database_dsn, start
        self.waiters = Waiters()
        # kombu's producer is not shared across threads: every Celery call of the
        # driver goes through this one thread, as a synchronous client would.
        self.thread = ThreadPoolExecutor(1, thread_name_prefix="celery-client")

    async def open(self, done_channel: str, insert_run: str) -> None:
        self.insert_run = insert_run
        self.pool = await asyncpg.create_pool(self.dsn, min_size=2, max_size=10)
        self.listener = await asyncpg.connect(self.dsn)
        await self.listener.add_listener(done_channel, self._on_notify)

    async def close(self) -> None:
        await self.listener.close()
        await self.pool.close()
        self.thread.shutdown(wait=True)

    def _on_notify(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        self.waiters.signal(payload, "succeeded")

    async def _submit(self, key: str) -> tuple[str, Any]:
        run_id = str(uuid4())
        await self.pool.execute(self.insert_run, run_id, key)
        loop = asyncio.get_running_loop()
        return run_id, await loop.run_in_executor(self.thread, self.start, run_id)

    async def one(self, key: str) -> float:
        started = time.perf_counter()
        run_id = str(uuid4())
        future = self.waiters.expect(run_id)
        await self.pool.execute(self.insert_run, run_id, key)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self.thread, self.start, run_id)
        await outcome(future, run_id)
        return (time.perf_counter() - started) * 1000

    async def _get(self, result: Any) -> None:
        loop = asyncio.get_running_loop()
        value = await loop.run_in_executor(
            self.thread, lambda: result.get(timeout=RUN_TIMEOUT)
        )
        if not isinstance(value, dict) or value.get("status") != "succeeded":
            raise RunFailed(f"chain result {value!r}")

    async def get_sequential(self, prefix: str, n: int) -> list[float]:
        """Latency (ms) of `n` runs one after another, each awaited with .get()."""
        ms: list[float] = []
        for i in range(n):
            started = time.perf_counter()
            _, result = await self._submit(f"{prefix}-{i}")
            await self._get(result)
            ms.append((time.perf_counter() - started) * 1000)
        return ms

    async def get_burst(self, prefix: str, n: int, window: int) -> float:
        """Seconds for `n` runs with at most `window` unfinished, awaited in order
        with .get() (the synchronous client's way: wait on the oldest)."""
        pending: collections.deque[Any] = collections.deque()
        started = time.perf_counter()
        for i in range(n):
            if len(pending) >= window:
                await self._get(pending.popleft())
            pending.append((await self._submit(f"{prefix}-{i}"))[1])
        while pending:
            await self._get(pending.popleft())
        return time.perf_counter() - started


async def burst(
    one: Callable[[str], Awaitable[float]], prefix: str, n: int, window: int
) -> tuple[float, list[float]]:
    """(seconds, per-run ms) for `n` runs with at most `window` in flight."""
    gate = asyncio.Semaphore(window)

    async def run(i: int) -> float:
        async with gate:
            return await one(f"{prefix}-{i}")

    started = time.perf_counter()
    ms = await asyncio.gather(*(run(i) for i in range(n)))
    return time.perf_counter() - started, list(ms)


async def sequential(
    one: Callable[[str], Awaitable[float]], prefix: str, n: int
) -> list[float]:
    return [await one(f"{prefix}-{i}") for i in range(n)]
