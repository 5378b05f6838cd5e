"""Canary secrets, and an audit that they never show up where they must not.

The integration session seeds these values as the default user's provider keys, then
collects every log line, every API response (the /internal endpoint excepted: it
releases keys by design), every message on the exchange and every artifact file, and
at the end dumps the database with `pg_dump` (where a key may exist only encrypted).
A marker counts as found in plain text and as hex, the way `pg_dump` writes bytea.
"""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aio_pika
import httpx

from shared.logging import add_sink

CANARIES: dict[str, str] = {
    "github": "ghp_CANARYgithubTOKEN0123456789abcdefABCD",
    "openai": "sk-proj-CANARYopenai0123456789abcdefghijkl",
    "google": "AIzaCANARYgoogle0123456789abcdefghijklm",
    "anthropic": "sk-ant-CANARYanthropic0123456789abcdefgh",
}
"""Provider -> value; all look like real keys so pattern redaction is exercised too."""

SEED_ENV = {
    "GITHUB_TOKEN": CANARIES["github"],
    "OPENAI_API_KEY": CANARIES["openai"],
    "GOOGLE_API_KEY": CANARIES["google"],
    "ANTHROPIC_API_KEY": CANARIES["anthropic"],
}
SECRETS_KEY = "yK1C8o1JXo1lG0m0pQ3mBfV3q6c8Zc3oVw2f4mXw0aY="  # test-only, 32 bytes
INTERNAL_TOKEN = "internal-test-token-0123456789abcdef"
MARKERS = ("CANARYgithub", "CANARYopenai", "CANARYgoogle", "CANARYanthropic")
"""What is searched for: a fragment of each canary, so partial leaks count too."""


def found_in(text: str, values: Iterable[str] = MARKERS) -> list[str]:
    """The values present in `text`, as they are or hex-encoded (bytea in a dump)."""
    return [value for value in values if value in text or value.encode().hex() in text]


async def database_dump(database_url: str) -> str:
    """`pg_dump` of the whole database (schema and data) as SQL text."""
    url = database_url.replace("postgresql+asyncpg://", "postgresql://")
    done = await asyncio.to_thread(
        subprocess.run,
        ["pg_dump", "--no-owner", url],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return done.stdout


def dump_leaks(dump: str, values: Iterable[str] = MARKERS) -> list[str]:
    """Where in a dump the values are: `table: value` (or `schema` outside data)."""
    found = []
    table = "schema"
    for line in dump.splitlines():
        if line.startswith("COPY "):
            table = line.split()[1]
        elif line == "\\.":
            table = "schema"
        found += [f"pg_dump {table}: {v}" for v in found_in(line, values)]
    return sorted(set(found))


@dataclass
class CanaryAudit:
    logs: list[str] = field(default_factory=list)
    responses: list[str] = field(default_factory=list)
    tapped: list[str] = field(default_factory=list)
    _connection: Any = None

    def sink(self, message: Any) -> None:  # a loguru Message (a str subclass)
        self.logs.append(str(message))

    async def record_response(self, response: httpx.Response) -> None:
        if response.request.url.path.startswith("/internal/"):
            return
        await response.aread()
        self.responses.append(response.text)

    async def start_tap(self, rabbitmq_url: str, exchange: str) -> None:
        """A temporary exclusive queue bound to every command and event key.

        It takes no message away from the system's queues. (Not bound to `#`: a tap
        on `#` would make any key routable, which the unroutable-outbox test relies on.)
        """
        self._connection = await aio_pika.connect(rabbitmq_url)
        channel = await self._connection.channel()
        queue = await channel.declare_queue(exclusive=True, auto_delete=True)
        await queue.bind(exchange, routing_key="cmd.#")
        await queue.bind(exchange, routing_key="evt.#")

        async def seen(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            self.tapped.append(message.body.decode(errors="replace"))
            await message.ack()

        await queue.consume(seen)

    async def stop_tap(self) -> None:
        if self._connection is not None:
            await asyncio.sleep(0.5)  # let in-flight deliveries arrive
            await self._connection.close()

    def leaks(self, artifacts_root: Path, values: Iterable[str] = MARKERS) -> list[str]:
        values = list(values)
        found = []
        places = {"log": self.logs, "response": self.responses, "message": self.tapped}
        for place, texts in places.items():
            for text in list(texts):
                for value in found_in(text, values):
                    found.append(f"{place}: {value} in {text[:300]!r}")
        for path in artifacts_root.rglob("*"):
            if path.is_file():
                content = path.read_text(errors="replace")
                found += [f"artifact {path}: {v}" for v in found_in(content, values)]
        return found


def attach_capture(audit: CanaryAudit) -> None:
    """Every log line, at every level, into the audit.

    Needed again after each configure_logging() (every create_app calls it).
    """
    add_sink(audit.sink, level="DEBUG", serialize=True)
