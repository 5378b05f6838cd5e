"""The event loop every long-running process uses: uvloop (libuv), asyncio's API.

uvicorn picks uvloop by itself for the API; the stage workers and the relay start
theirs through `run`.
"""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any, TypeVar

import uvloop

T = TypeVar("T")


def run(main: Coroutine[Any, Any, T]) -> T:
    """`asyncio.run(main)` on a uvloop event loop."""
    return uvloop.run(main)
