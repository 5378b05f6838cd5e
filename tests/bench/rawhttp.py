"""The bench's HTTP clients: plain keep-alive HTTP/1.1 connections, not httpx.

The load generator shares the 2 cores with what it measures, and httpx spent about
3 ms of CPU per request there: more than the API itself spends on a read, and a tenth
of everything a whole run costs. Celery's driver submits through its own lean client
(kombu), so ours should not carry httpx's weight either.

Enough HTTP for uvicorn's answers to these requests: a status line, headers with a
Content-Length (uvicorn always sends one here), a body.
"""

from __future__ import annotations

import asyncio
import time

import httpx

IDLE_EXPIRY = 2.0
"""Seconds an idle connection is kept: under uvicorn's 5 s keep-alive timeout, so a
request never goes out on a connection the server is closing."""


class BadAnswer(RuntimeError):
    """The API answered with something this client does not read."""


class Connection:
    """One keep-alive HTTP/1.1 connection, one request at a time."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        authorization: str | None,
    ):
        self.reader, self.writer = reader, writer
        self.head = "Host: bench\r\n" + (
            f"Authorization: {authorization}\r\n" if authorization else ""
        )
        self.used = time.monotonic()

    @classmethod
    async def open(cls, base_url: httpx.URL, authorization: str | None) -> Connection:
        reader, writer = await asyncio.open_connection(base_url.host, base_url.port)
        return cls(reader, writer, authorization)

    async def request(
        self, method: str, target: str, json_body: bytes | None = None
    ) -> tuple[int, bytes]:
        """(status, body) of `method target`, with `json_body` as JSON if given."""
        head = f"{method} {target} HTTP/1.1\r\n{self.head}"
        if json_body is not None:
            head += (
                "Content-Type: application/json\r\n"
                f"Content-Length: {len(json_body)}\r\n"
            )
        self.writer.write(head.encode() + b"\r\n" + (json_body or b""))
        answer = (await self.reader.readuntil(b"\r\n\r\n")).lower()
        start = answer.find(b"\r\ncontent-length:")
        if start < 0:
            raise BadAnswer(f"{method} {target}: no Content-Length in {answer[:200]!r}")
        start += len(b"\r\ncontent-length:")
        length = int(answer[start : answer.index(b"\r\n", start)])
        body = await self.reader.readexactly(length)
        self.used = time.monotonic()
        return int(answer[9:12]), body

    async def close(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()


class Pool:
    """Connections for requests from many tasks at once: an idle one if it was used
    within IDLE_EXPIRY, else a new one."""

    def __init__(self, base_url: str, authorization: str | None) -> None:
        self.base_url, self.authorization = httpx.URL(base_url), authorization
        self.idle: list[Connection] = []

    async def request(
        self, method: str, target: str, json_body: bytes | None = None
    ) -> tuple[int, bytes]:
        connection = await self._take()
        try:
            answer = await connection.request(method, target, json_body)
        except BaseException:
            await connection.close()
            raise
        self.idle.append(connection)
        return answer

    async def _take(self) -> Connection:
        cutoff = time.monotonic() - IDLE_EXPIRY
        while self.idle:
            connection = self.idle.pop()  # the most recently used
            if connection.used > cutoff:
                return connection
            await connection.close()
        return await Connection.open(self.base_url, self.authorization)

    async def close(self) -> None:
        idle, self.idle = self.idle, []
        for connection in idle:
            await connection.close()
