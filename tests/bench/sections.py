"""docs/benchmarks.md, one section per `make bench-*` target, and the targets' `main`.

Each target rewrites its own `## <name>` section and keeps the others.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

ROOT = Path(__file__).resolve().parents[2]
DOCUMENT = ROOT / "docs" / "benchmarks.md"
DOC_HEADER = (
    "# Benchmarks\n\n"
    "Written by the Makefile's `bench-*` targets: each rewrites its own section and "
    "keeps the others. Compare numbers only within one section's run, never across "
    "runs or machines (`../shared/notes/messaging-reliability.md` §11).\n\n"
)

R = TypeVar("R")


class BenchError(RuntimeError):
    """The benchmark could not measure what it reports (a run failed, a process
    died, an answer was wrong): it fails and writes nothing."""


def replace_section(text: str, section: str, heading: str) -> str:
    """`text` with its `heading` section (up to the next `## `) replaced."""
    lines = text.splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if line.rstrip() == heading), None)
    if start is None:
        base = text.rstrip("\n")
        return f"{base}\n\n{section}" if base else DOC_HEADER + section
    end = next(
        (i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")),
        len(lines),
    )
    rest = "".join(lines[end:])
    return "".join(lines[:start]) + section + ("\n" + rest if rest else "")


def write_section(path: Path, section: str, heading: str) -> None:
    """Print the section and put it into the benchmarks document, keeping the rest."""
    sys.stdout.write(section)
    old = path.read_text() if path.is_file() else ""
    path.write_text(replace_section(old, section, heading))
    sys.stderr.write(f"[{heading[3:]}] wrote the {heading!r} section of {path}\n")


def run_and_write(
    heading: str,
    output: Path,
    bench: Coroutine[Any, Any, R],
    render: Callable[[R], str],
) -> int:
    """A target's `main`: run `bench`, then write its section; 1 on a BenchError."""
    try:
        report = asyncio.run(bench)
    except BenchError as exc:
        sys.stderr.write(f"[{heading[3:]}] failed: {exc}\n")
        return 1
    write_section(output, render(report), heading)
    return 0
