"""Faults `make chaos` injects, and what it reads from the broker to judge them.

- shared services: restart RabbitMQ (`rabbitmqctl stop_app` / `start_app`), stop and
  start PostgreSQL (`pg_ctlcluster`); both disturb every other user of the machine,
  so `shared_services_busy()` says whether anyone else's pytest is running;
- poison: raw messages published straight into a queue (default exchange), bodies that
  are not JSON, or JSON that no model of the queue accepts (optionally naming a real
  run, so the API can fail it);
- an event tap: an exclusive queue bound to `evt.task.#` that keeps every real task
  event, to publish copies later (duplicated, reordered);
- queue statistics from the management API (consumers, deliveries, dead letters).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import aio_pika
import orjson

from services.cli.broker import amqp_target, management_client, vhost_path
from shared.topology import EXCHANGE
from tests.support.stack import Stack

RABBITMQCTL_TIMEOUT = 120


def shared_services_busy() -> list[str]:
    """Command lines of pytest processes other than ours (other people's tests)."""
    done = subprocess.run(
        ["pgrep", "-af", "pytest"], capture_output=True, text=True, check=False
    )
    mine = {os.getpid(), os.getppid()}
    busy = []
    for line in done.stdout.splitlines():
        pid, _, cmd = line.partition(" ")
        if pid.isdigit() and int(pid) not in mine and "pgrep" not in cmd:
            busy.append(line)
    return busy


def _run(*argv: str, timeout: float = RABBITMQCTL_TIMEOUT) -> None:
    subprocess.run(
        argv,
        check=True,
        capture_output=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


async def restart_rabbitmq(down: float = 3.0) -> None:
    """Stop the RabbitMQ application (every connection drops), wait, start it."""
    await asyncio.to_thread(_run, "rabbitmqctl", "stop_app")
    await asyncio.sleep(down)
    await asyncio.to_thread(_run, "rabbitmqctl", "start_app")
    await asyncio.to_thread(_run, "rabbitmqctl", "await_startup")


def _pg_version() -> str:
    """The newest cluster version installed (what `make services` starts)."""
    versions = os.listdir("/etc/postgresql")
    return max(versions, key=lambda v: [int(p) for p in v.split(".") if p.isdigit()])


async def stop_postgres() -> None:
    """Fast shutdown: every session is terminated."""
    cmd = ("pg_ctlcluster", "--skip-systemctl-redirect", _pg_version(), "main")
    await asyncio.to_thread(_run, *cmd, "stop", "--mode", "fast")


async def start_postgres() -> None:
    cmd = ("pg_ctlcluster", "--skip-systemctl-redirect", _pg_version(), "main")
    await asyncio.to_thread(_run, *cmd, "start")
    for _ in range(60):
        done = await asyncio.to_thread(
            subprocess.run,
            ["pg_isready", "-q", "-h", "127.0.0.1", "-p", "5432"],
            check=False,
        )
        if done.returncode == 0:
            return
        await asyncio.sleep(0.5)
    raise RuntimeError("PostgreSQL did not come back within 30 s")


@dataclass(frozen=True)
class QueueStats:
    name: str
    messages: int  # ready + unacknowledged
    consumers: int
    published: int  # messages published into the queue, ever (not dead-lettered)
    delivered: int  # deliveries (and gets), redeliveries included
    redelivered: int
    acked: int


class Broker:
    """The stack's vhost: raw publishing and the management API's view of it."""

    def __init__(self, stack: Stack) -> None:
        self.url = stack.env["RABBITMQ_URL"]
        self.management_url = stack.env["RABBITMQ_MANAGEMENT_URL"]
        self.vhost = amqp_target(self.url).vhost

    async def queues(self) -> dict[str, QueueStats]:
        async with management_client(
            self.management_url, amqp_target(self.url)
        ) as client:
            response = await client.get(f"/queues/{vhost_path(self.vhost)}")
        response.raise_for_status()
        return {q["name"]: _stats(q) for q in response.json()}

    async def queue(self, name: str) -> QueueStats:
        async with management_client(
            self.management_url, amqp_target(self.url)
        ) as client:
            response = await client.get(
                f"/queues/{vhost_path(self.vhost)}/{quote(name, safe='')}"
            )
        response.raise_for_status()
        return _stats(response.json())

    @asynccontextmanager
    async def channel(self) -> AsyncIterator[aio_pika.abc.AbstractChannel]:
        connection = await aio_pika.connect(self.url, timeout=10)
        try:
            yield await connection.channel(publisher_confirms=True)
        finally:
            await connection.close()

    async def publish_raw(
        self,
        channel: aio_pika.abc.AbstractChannel,
        body: bytes,
        *,
        queue: str | None = None,
        exchange: str = EXCHANGE.name,
        routing_key: str | None = None,
        message_id: str | None = None,
        content_type: str | None = "application/json",
        headers: dict[str, str] | None = None,
    ) -> None:
        """Straight into `queue` (default exchange), or to `exchange` (mandatory)."""
        message = aio_pika.Message(
            body,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            message_id=message_id,
            content_type=content_type,
            headers=dict(headers or {}),
        )
        if queue is not None:
            await channel.default_exchange.publish(message, routing_key=queue)
            return
        target = await channel.get_exchange(exchange, ensure=False)
        await target.publish(message, routing_key=routing_key or "", mandatory=True)


def _stats(raw: dict[str, Any]) -> QueueStats:
    stats = raw.get("message_stats") or {}
    return QueueStats(
        name=raw["name"],
        messages=int(raw.get("messages", 0) or 0),
        consumers=int(raw.get("consumers", 0) or 0),
        published=int(stats.get("publish", 0) or 0),
        delivered=int(stats.get("deliver_get", 0) or 0),
        redelivered=int(stats.get("redeliver", 0) or 0),
        acked=int(stats.get("ack", 0) or 0),
    )


# -- poison ---------------------------------------------------------------------------

WRONG_TYPES: dict[str, Any] = {
    # Declared by at least one model per queue, with a type none accepts; extra keys
    # to the base `Message`, which therefore still parses (the run is identifiable).
    "repository": 42,
    "feature_key": ["x"],
    "lease_until": "never",
    "details": 3,
    "summary": "not an object",
    "artifacts": 5,
    "error": 7,
    "reason": {"no": "string"},
    "progress": 5,
    "shard": "nowhere",
    "records": "none",
}


def poison_bodies(
    n: int, task: str, run: tuple[str, int] | None
) -> list[tuple[bytes, str | None]]:
    """`n` malformed bodies (with a content type) for a queue of `task` messages.

    Half name no run at all (not JSON, empty, the wrong shape); the rest are
    well-formed base messages of `run` (or of an unknown run when `run` is None)
    whose full schema fails.
    """
    now = datetime.now(UTC).isoformat()
    shapes: list[tuple[bytes, str | None]] = [
        (b"\xff\xfe not json {", "application/json"),
        (b"", None),
        (b'{"run_id": 1}', "application/json"),
        (b"[1, 2, 3]", "application/json"),
        (b'"just a string"', "text/plain"),
        (b"null", "application/json"),
    ]
    bodies: list[tuple[bytes, str | None]] = []
    for i in range(n):
        if i % 2 == 0:
            bodies.append(shapes[(i // 2) % len(shapes)])
            continue
        run_id, attempt = run if run is not None else (str(uuid.uuid4()), 1)
        body = {
            "message_id": str(uuid.uuid4()),
            "run_id": run_id,
            "task": task,
            "attempt": attempt,
            "occurred_at": now,
            **WRONG_TYPES,
        }
        bodies.append((orjson.dumps(body), "application/json"))
    return bodies


# -- event tap ------------------------------------------------------------


@dataclass
class Tapped:
    routing_key: str
    body: dict[str, Any]
    message_id: str | None


COPY_HEADER = "x-chaos-copy"
"""Set on the copies a scenario publishes, so the tap does not capture them again."""


@dataclass
class EventTap:
    """Every task event on the bus (its own exclusive queue), copies excepted."""

    broker: Broker
    events: list[Tapped] = field(default_factory=list)

    @asynccontextmanager
    async def running(self) -> AsyncIterator[EventTap]:
        connection = await aio_pika.connect_robust(self.broker.url, timeout=10)
        try:
            channel = await connection.channel()
            queue = await channel.declare_queue(exclusive=True, auto_delete=True)
            await queue.bind(EXCHANGE.name, routing_key="evt.task.#")

            async def keep(message: aio_pika.abc.AbstractIncomingMessage) -> None:
                async with message.process():
                    if COPY_HEADER in (message.headers or {}):
                        return
                    try:
                        body = orjson.loads(message.body)
                    except orjson.JSONDecodeError:
                        return
                    if isinstance(body, dict):
                        self.events.append(
                            Tapped(message.routing_key or "", body, message.message_id)
                        )

            await queue.consume(keep)
            yield self
        finally:
            await connection.close()
