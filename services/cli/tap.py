"""`tap`: print the commands and events crossing the exchanges, live.

A tap is a server-named, exclusive, auto-delete queue bound to `spec_workflow` with
the given patterns: the broker hands it a copy of each matching message, so the
system's own queues lose nothing. It acks its copies, deletes its queue on the way
out, and the broker drops it with the connection if the process dies.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TextIO
from urllib.parse import urlsplit

import aio_pika
import typer
from aio_pika.abc import AbstractIncomingMessage, AbstractQueue
from aio_pika.exceptions import (
    AMQPError,
    ChannelInvalidStateError,
    ChannelNotFoundEntity,
)

EXCHANGE = "spec_workflow"
LOGS_EXCHANGE = "spec_workflow.logs"
PREFETCH = 100


@dataclass(frozen=True)
class Tapped:
    """One message the tap saw: where it came from and its body, parsed if it could."""

    exchange: str
    routing_key: str
    received_at: datetime
    raw: bytes
    body: Any = None
    malformed: bool = False


def decode(
    exchange: str, routing_key: str, raw: bytes, received_at: datetime
) -> Tapped:
    try:
        body = json.loads(raw)
    except ValueError:  # not JSON, or not UTF-8
        return Tapped(exchange, routing_key, received_at, raw, malformed=True)
    return Tapped(exchange, routing_key, received_at, raw, body=body)


def record(tapped: Tapped) -> dict[str, Any]:
    """The JSON line of `--json` and `--save`."""
    line: dict[str, Any] = {
        "received_at": tapped.received_at.astimezone(UTC).isoformat(),
        "exchange": tapped.exchange,
        "routing_key": tapped.routing_key,
        "body": tapped.body,
    }
    if tapped.malformed:
        line["malformed"] = _preview(tapped.raw)
    return line


def line(tapped: Tapped) -> str:
    """time, routing key, run, task, attempt and a short summary, on one line."""
    moment = tapped.received_at.astimezone().strftime("%H:%M:%S.%f")[:-3]
    head = f"{moment}  {tapped.routing_key:<32}"
    body = tapped.body
    if tapped.malformed:
        size = len(tapped.raw)
        return f"{head}  malformed body ({size} bytes): {_preview(tapped.raw)}"
    if not isinstance(body, dict):
        return f"{head}  not a message: {_preview(json.dumps(body).encode())}"
    run = str(body.get("run_id") or "-")
    task = str(body.get("task") or "-")
    attempt = body.get("attempt")
    tries = f"#{attempt}" if attempt is not None else "-"
    return f"{head}  {run:<36}  {task:<20}  {tries:<3}  {summary(body)}".rstrip()


def summary(body: dict[str, Any]) -> str:
    """Status, error code, result and the keys of summary/progress: no payloads."""
    parts: list[str] = []
    for key in ("status", "result", "error_code", "level"):
        if body.get(key) not in (None, ""):
            parts.append(f"{key}={body[key]}")
    error = body.get("error")
    if isinstance(error, dict) and error.get("code"):
        retryable = " (retryable)" if error.get("retryable") else ""
        parts.append(f"error={error['code']}{retryable}")
    for key in ("summary", "progress"):
        value = body.get(key)
        if isinstance(value, dict) and value:
            parts.append(f"{key}: {','.join(sorted(map(str, value)))}")
    if isinstance(body.get("message"), str):  # a log record
        parts.append(_preview(body["message"].encode(), 100))
    return "  ".join(parts)


def _preview(raw: bytes, width: int = 60) -> str:
    text = repr(raw[:width])[2:-1]
    return text + ("…" if len(raw) > width else "")


def bindings(patterns: list[str], *, logs: bool) -> list[tuple[str, str]]:
    """(exchange, pattern) pairs: `--logs` alone taps only the log exchange."""
    pairs = []
    if patterns or not logs:
        pairs += [(EXCHANGE, pattern) for pattern in patterns or ["#"]]
    if logs:
        pairs.append((LOGS_EXCHANGE, "#"))
    return pairs


def where(url: str) -> str:
    """host:port/vhost of an AMQP URL, without its credentials."""
    parts = urlsplit(url)
    return f"{parts.hostname}:{parts.port or 5672}{parts.path or '/'}"


@dataclass
class Tap:
    """Bind, consume until `count` messages, `seconds`, or `stop`; clean up."""

    url: str
    pairs: list[tuple[str, str]]
    show: Callable[[Tapped], None]
    count: int | None = None
    seconds: float | None = None

    async def run(self, stop: asyncio.Event, ready: Callable[[str], None]) -> int:
        """The number of messages shown."""
        connection = await aio_pika.connect(
            self.url, client_properties={"connection_name": "spec-workflow tap"}
        )
        async with connection:
            channel = await connection.channel()
            await channel.set_qos(prefetch_count=PREFETCH)
            queue = await channel.declare_queue(exclusive=True, auto_delete=True)
            try:
                for exchange_name, pattern in self.pairs:
                    exchange = await channel.get_exchange(exchange_name, ensure=True)
                    await queue.bind(exchange, routing_key=pattern)
                ready(queue.name)
                return await self._until_done(queue, stop)
            finally:
                # The broker drops it with the connection anyway; deleting it first
                # also covers a connection that outlives this call.
                if not channel.is_closed:
                    with contextlib.suppress(AMQPError, ChannelInvalidStateError):
                        await queue.delete(if_unused=False, if_empty=False)

    async def _until_done(self, queue: AbstractQueue, stop: asyncio.Event) -> int:
        shown = 0

        async def consume() -> None:
            nonlocal shown
            async with queue.iterator() as messages:
                async for message in messages:
                    self._show(message)
                    await message.ack()
                    shown += 1
                    if self.count is not None and shown >= self.count:
                        return

        consumer = asyncio.create_task(consume())
        stopped = asyncio.create_task(stop.wait())
        try:
            done, _ = await asyncio.wait(
                {consumer, stopped},
                timeout=self.seconds,
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            for task in (consumer, stopped):
                task.cancel()
            await asyncio.gather(consumer, stopped, return_exceptions=True)
        if consumer in done:
            consumer.result()  # a lost connection surfaces here
        return shown

    def _show(self, message: AbstractIncomingMessage) -> None:
        received = datetime.now(UTC)
        exchange = message.exchange or ""
        self.show(decode(exchange, message.routing_key or "", message.body, received))


def stop_on_signals(stop: asyncio.Event) -> Callable[[], None]:
    """SIGINT and SIGTERM set `stop`; the returned function restores the defaults."""
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)

    def restore() -> None:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)

    return restore


def run_tap(
    url: str,
    pairs: list[tuple[str, str]],
    *,
    as_json: bool,
    save: TextIO | None,
    count: int | None,
    seconds: float | None,
) -> int:
    """Print (and save) what the tap sees; the exit code."""

    def show(tapped: Tapped) -> None:
        data = json.dumps(record(tapped), ensure_ascii=False)
        typer.echo(data if as_json else line(tapped))
        if save is not None:
            save.write(data + "\n")
            save.flush()

    def ready(queue: str) -> None:
        bound = ", ".join(f"{exchange} {pattern!r}" for exchange, pattern in pairs)
        typer.echo(f"tap {queue} on {where(url)}: {bound}", err=True)

    async def main() -> int:
        stop = asyncio.Event()
        restore = stop_on_signals(stop)
        try:
            return await Tap(url, pairs, show, count, seconds).run(stop, ready)
        finally:
            restore()

    # Their connection errors would reach stderr twice: once logged, once from us.
    for name in ("aiormq", "aio_pika"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    try:
        shown = asyncio.run(main())
    except ChannelNotFoundEntity as error:
        typer.echo(f"{where(url)}: {error.args[0] if error.args else error}", err=True)
        typer.echo("has `spec-workflow up` (or any service) run once?", err=True)
        return 2
    except (AMQPError, OSError) as error:
        typer.echo(f"RabbitMQ at {where(url)}: {error!r}", err=True)
        return 2
    typer.echo(f"tap done: {shown} message(s)", err=True)
    return 0
