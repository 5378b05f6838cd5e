"""Run an ASGI app's lifespan (startup/shutdown) in tests, as uvicorn would; or
only a token-mode app's own FastAPI lifespan, which runs its token watcher."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from starlette.types import ASGIApp

from services.api.main import startup
from services.api.tokencache import TokenCache


@asynccontextmanager
async def lifespan(
    app: ASGIApp,
    timeout: float = 30.0,  # noqa: ASYNC109 - bounds each phase; expiry is a TimeoutError
) -> AsyncIterator[None]:
    inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    outbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def receive() -> dict[str, Any]:
        return await inbox.get()

    async def send(message: Any) -> None:
        await outbox.put(dict(message))

    scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
    task: asyncio.Task[None] = asyncio.create_task(app(scope, receive, send))  # type: ignore[arg-type]
    await inbox.put({"type": "lifespan.startup"})
    started = await asyncio.wait_for(outbox.get(), timeout)
    if started["type"] != "lifespan.startup.complete":
        await asyncio.gather(task, return_exceptions=True)
        raise RuntimeError(f"startup failed: {started.get('message', '')[-2000:]}")
    try:
        yield
    finally:
        await inbox.put({"type": "lifespan.shutdown"})
        await asyncio.wait_for(outbox.get(), timeout)
        await asyncio.gather(task, return_exceptions=True)


async def until(condition: Callable[[], bool], timeout: float = 10.0) -> None:  # noqa: ASYNC109
    """Poll `condition` every 10 ms; an AssertionError after `timeout` s."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.01)


@asynccontextmanager
async def caching_tokens(app: FastAPI) -> AsyncIterator[TokenCache]:
    """A token-mode app's `startup` only (the default user, the token watcher; not
    its broker or consumers), entered once its cache is live: its token checks
    answer as in production, from memory between changes."""
    cache: TokenCache | None = app.state.token_cache
    assert cache is not None, "not a token-mode app, or TOKEN_CACHE_SECONDS=0"
    async with startup(app):
        await until(lambda: cache.live)
        yield cache
