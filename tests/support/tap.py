"""`spec-workflow tap --json` as a background process of an e2e test.

    async with tap(stack) as seen:          # returns once the tap's queue is bound
        ... start a run ...
        await seen.until(lambda r: r["routing_key"] == "evt.run.succeeded", 30)
    assert seen.exit_code == 0              # stopped with SIGTERM, like Ctrl-C

stdout is read as it comes (a full pipe would stall the tap), one JSON record a line:
`{received_at, exchange, routing_key, body}`.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

from tests.support.stack import CLI, Stack

Record = dict[str, Any]


@dataclass
class Tapped:
    """What the tap process printed; `exit_code` and `stderr` are set once it ended."""

    banner: str
    records: list[Record] = field(default_factory=list)
    exit_code: int | None = None
    stderr: str = ""

    def of_run(self, run_id: str) -> list[Record]:
        """Records whose body names this run, in the order the tap received them."""
        return [
            r
            for r in self.records
            if isinstance(r.get("body"), dict) and r["body"].get("run_id") == run_id
        ]

    async def until(
        self,
        check: Callable[[Record], bool],
        timeout: float,  # noqa: ASYNC109 - expiry is an AssertionError
    ) -> Record:
        """The first record for which `check` holds, waiting up to `timeout` s."""
        deadline = time.monotonic() + timeout
        while True:
            found = next((r for r in list(self.records) if check(r)), None)
            if found is not None:
                return found
            if time.monotonic() >= deadline:
                keys = [r.get("routing_key") for r in self.records]
                raise AssertionError(
                    f"the tap did not see it within {timeout}s: {keys}"
                )
            await asyncio.sleep(0.05)


@asynccontextmanager
async def tap(
    stack: Stack,
    *patterns: str,
    ready_within: float = 20.0,
) -> AsyncIterator[Tapped]:
    """Start `spec-workflow tap --json [PATTERN …]` on the stack's vhost; SIGTERM it
    at exit and wait for it to end."""
    process = await asyncio.create_subprocess_exec(
        CLI,
        "tap",
        "--json",
        *patterns,
        env=stack.env,
        cwd=stack.var_dir.parent,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    assert process.stderr is not None
    stdout, stderr = process.stdout, process.stderr
    try:
        # `tap <queue> on host:port/vhost: …` once the queue is bound; before
        # that, the tap would miss messages.
        banner = (await asyncio.wait_for(stderr.readline(), ready_within)).decode()
        assert banner.startswith("tap "), banner
        seen = Tapped(banner)

        async def read() -> None:
            async for raw in stdout:
                seen.records.append(json.loads(raw))

        reader = asyncio.create_task(read())
        try:
            yield seen
        finally:
            process.send_signal(signal.SIGTERM)
            rest = await asyncio.wait_for(stderr.read(), 20)
            await asyncio.wait_for(reader, 20)
            seen.exit_code = await asyncio.wait_for(process.wait(), 20)
            seen.stderr = banner + rest.decode()
    finally:
        if process.returncode is None:
            with suppress(ProcessLookupError):
                process.kill()
            await process.wait()
