"""A liveness file for the container health check of a process without an HTTP port.

With LIVENESS_FILE set, the process touches the file every INTERVAL seconds while its
check passes (the broker connection is up). `python -m shared.liveness FILE MAX_AGE`,
the compose health check, fails once the file is missing or older than MAX_AGE
seconds: a lost broker connection or a wedged event loop turns the container unhealthy.
Only the standard library is imported, so the check costs one short Python start.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

INTERVAL = 10.0
"""Seconds between checks; the health check's MAX_AGE allows several missed ones."""

Check = Callable[[], Awaitable[bool]]


def is_fresh(path: Path, max_age: float, *, now: float | None = None) -> bool:
    """The file exists and was touched at most `max_age` seconds ago."""
    try:
        touched = path.stat().st_mtime
    except OSError:
        return False
    return (time.time() if now is None else now) - touched <= max_age


class LivenessFile:
    """Touches `path` every `interval` seconds while `check()` passes; None: no-op."""

    def __init__(
        self, path: Path | None, check: Check, interval: float = INTERVAL
    ) -> None:
        self.path, self.check, self.interval = path, check, interval
        self._task: asyncio.Task[None] | None = None

    async def beat(self) -> bool:
        """Run the check once and touch the file if it passed."""
        try:
            alive = await self.check()
        except Exception:  # a check that fails to answer means "not alive"
            alive = False
        if alive and self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.touch()
        return alive

    async def _beat_forever(self) -> None:
        while True:
            await self.beat()
            await asyncio.sleep(self.interval)

    async def start(self) -> None:
        if self.path is not None and self._task is None:
            self._task = asyncio.create_task(self._beat_forever())

    async def stop(self) -> None:
        """Stop touching and remove the file: a stopping process is no longer live."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self.path is not None:
            self.path.unlink(missing_ok=True)


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m shared.liveness FILE MAX_AGE`: 0 fresh, 1 stale or gone, 2 usage."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        file, age = args
        path, max_age = Path(file), float(age)
    except ValueError:  # not two arguments, or no number
        sys.stderr.write("usage: python -m shared.liveness FILE MAX_AGE_SECONDS\n")
        return 2
    if is_fresh(path, max_age):
        return 0
    sys.stderr.write(f"{path} is missing or older than {max_age:g} s\n")
    return 1


if __name__ == "__main__":
    sys.exit(main())
