"""What both executors share: following stdout line by line under two clocks."""

from __future__ import annotations

import asyncio
import codecs
import contextlib
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from services.codex_runner.agent import OnLine
from shared.redaction import MASK, redact_text

LAST_MESSAGE = "last_message.txt"
"""File name of Codex's `-o` output inside `AgentRun.output_dir`."""
STDERR_TAIL_CHARS = 2000
WAIT_GRACE = 30.0
"""Seconds allowed for an agent to be reported gone after its stream ended or a kill."""


class Ended(Enum):
    EOF = "eof"
    TIMED_OUT = "timed_out"
    STALLED = "stalled"


@dataclass
class Active:
    """A run an executor is carrying out (what `cancel` needs to find it)."""

    cancelled: bool = False
    done: asyncio.Event = field(default_factory=asyncio.Event)
    process: Any = None
    """The process executor's `asyncio.subprocess.Process`."""


class LineFollower:
    """Feeds the complete lines of a chunk stream to `on_line`.

    A read is never cancelled on a timeout: the caller kills the agent and `drain`s,
    so the stream ends by itself (aiodocker releases a log response only at its end).
    """

    def __init__(self, chunks: AsyncIterator[str | bytes], on_line: OnLine) -> None:
        self._chunks = chunks
        self._on_line = on_line
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._pending = ""
        self._read: asyncio.Task[str | bytes | None] | None = None
        self._eof = False

    @property
    def eof(self) -> bool:
        return self._eof

    async def follow(self, *, deadline: float, idle_timeout: float) -> Ended:
        """Until EOF, the loop-time `deadline`, or no line for `idle_timeout` s."""
        loop = asyncio.get_running_loop()
        last_line = loop.time()
        while not self._eof:
            limit = min(deadline, last_line + idle_timeout)
            if not await self._chunk(limit - loop.time()):
                return Ended.TIMED_OUT if loop.time() >= deadline else Ended.STALLED
            if await self._lines():
                last_line = loop.time()
        return Ended.EOF

    async def drain(self, timeout: float) -> bool:  # noqa: ASYNC109 - a budget, see above
        """After a kill: read on to EOF within `timeout`; False if it never came."""
        loop = asyncio.get_running_loop()
        limit = loop.time() + timeout
        while not self._eof:
            if not await self._chunk(limit - loop.time()):
                return False
            await self._lines()
        return True

    async def close(self, grace: float = 5.0) -> None:
        """Read on to EOF (the agent is gone by now, so it comes at once), dropping
        what is left, then close the stream. Closing aiodocker's log generator
        mid-stream would leave its response (and connection) unreleased."""
        loop = asyncio.get_running_loop()
        limit = loop.time() + grace
        while not self._eof and await self._chunk(limit - loop.time()):
            self._pending = ""
        if self._read is not None:
            self._read.cancel()
            with contextlib.suppress(BaseException):
                await self._read
        aclose = getattr(self._chunks, "aclose", None)
        if aclose is not None:
            with contextlib.suppress(Exception):
                await aclose()

    async def _chunk(self, wait: float) -> bool:
        """Wait up to `wait` s for the next chunk; False on timeout."""
        if self._read is None:
            self._read = asyncio.create_task(self._next())
        done, _ = await asyncio.wait({self._read}, timeout=max(wait, 0))
        if not done:
            return False
        task, self._read = self._read, None
        chunk = task.result()
        if chunk is None:
            self._eof = True
            self._pending += self._decoder.decode(b"", final=True)
            if self._pending:
                self._pending += "\n"
            return True
        text = self._decoder.decode(chunk) if isinstance(chunk, bytes) else chunk
        self._pending += text
        return True

    async def _next(self) -> str | bytes | None:
        """The next chunk; None at the end (a Task may not raise StopAsyncIteration)."""
        try:
            return await anext(self._chunks)
        except StopAsyncIteration:
            return None

    async def _lines(self) -> bool:
        *lines, self._pending = self._pending.split("\n")
        for line in lines:
            await self._on_line(line)
        return bool(lines)


def stderr_tail(text: str, secrets: Iterable[str]) -> str:
    """The end of stderr with the run's credentials and token shapes masked."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, MASK)
    return redact_text(text)[-STDERR_TAIL_CHARS:]
