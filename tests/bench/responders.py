"""`python -m tests.bench.responders`: instant stage responders for `make bench`.

One process stands in for preflight, the Codex runners and the publisher: the
scripted `StageHarness` (tests/support/harness.py) on the real stage queues, with no
script, so every command is answered at once: with `TaskSucceeded` only, as the real
preflight and publisher answer work shorter than STAGE_STARTED_AFTER, and with
`TaskStarted` then `TaskSucceeded` for Codex jobs (the runner always announces); the
outcome carries a valid typed summary (discovery finds a task, pre-flight
passes, Codex writes a one-line `patch.diff`, the publisher reports a PR URL); both
published persistent and confirmed, as the real stages publish them.

Environment: RABBITMQ_URL, ARTIFACTS_ROOT, CODEX_SHARDS. Prints `ready` once it
consumes; stops on SIGTERM or SIGINT.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.topology import declare_topology
from tests.support.harness import StageHarness

FORGET_EVERY = 1.0  # s: the harness keeps what it saw; a long bench must not grow


class ResponderSettings(BaseSettings):
    model_config = SettingsConfigDict(env_ignore_empty=True, extra="ignore")

    rabbitmq_url: str = Field(validation_alias="RABBITMQ_URL")
    artifacts_root: Path = Field(validation_alias="ARTIFACTS_ROOT")
    codex_shards: int = Field(3, ge=1, validation_alias="CODEX_SHARDS")


async def forget(harness: StageHarness) -> None:
    while True:
        await asyncio.sleep(FORGET_EVERY)
        harness.received.clear()
        harness.published.clear()


async def serve(settings: ResponderSettings) -> None:
    harness = StageHarness(
        settings.rabbitmq_url,
        settings.codex_shards,
        settings.artifacts_root,
        quick_stages=True,
    )
    await harness.broker.connect()
    await declare_topology(harness.broker, settings.codex_shards)
    await harness.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    forgetting = asyncio.create_task(forget(harness))
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    try:
        await stop.wait()
    finally:
        forgetting.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await forgetting
        await harness.stop()


def main() -> None:
    asyncio.run(serve(ResponderSettings()))


if __name__ == "__main__":
    main()
