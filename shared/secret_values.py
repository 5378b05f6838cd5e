"""Secret values a process was told about, found wherever they appear in text.

The values live in buckets of at most `BUCKET`, each compiled into one regex of its
values, longest first. Adding a value recompiles its bucket only (and the bucket
a dropped value left): a compile costs about 90 µs a value, so one regex of every
value ever registered made the 1,000th registration cost about 50 ms and the
2,000th 100 ms, on the event loop of the process that registered it, and kept
every value for good.

A `KnownValues` with a `capacity` keeps at most that many, in registration order:
the oldest goes first. A value in the older half is moved to the newest end when
registered again, so one that keeps being revealed is not dropped, at the cost of
at most one move a value per `capacity / 2` registrations.

`spans` matches every bucket against the same text and `mask` replaces the union
of the matches, so a value that contains another one, kept in another bucket, is
still masked whole.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

BUCKET = 32


class KnownValues:
    def __init__(self, capacity: int | None = None) -> None:
        self.capacity = capacity
        self._seq: dict[str, int] = {}  # value -> registration number (its order)
        self._buckets: dict[int, list[str]] = {}  # number // BUCKET -> its values
        self._patterns: dict[int, re.Pattern[str]] = {}
        self._next = 0

    def __len__(self) -> int:
        return len(self._seq)

    def __contains__(self, value: object) -> bool:
        return value in self._seq

    def add(self, value: str) -> None:
        seq = self._seq.get(value)
        if seq is not None:
            if self.capacity is None or seq >= self._next - self.capacity // 2:
                return
            self._remove(value)  # in the older half: move it to the newest end
        self._seq[value] = self._next
        bucket = self._next // BUCKET
        self._next += 1
        self._buckets.setdefault(bucket, []).append(value)
        self._compile(bucket)
        if self.capacity is not None and len(self._seq) > self.capacity:
            self._remove(next(iter(self._seq)))  # dicts keep insertion order

    def clear(self) -> None:
        self._seq.clear()
        self._buckets.clear()
        self._patterns.clear()

    def spans(self, text: str) -> list[tuple[int, int]]:
        """Where any value occurs in `text` (overlapping spans possible)."""
        return [m.span() for p in self._patterns.values() for m in p.finditer(text)]

    def _remove(self, value: str) -> None:
        bucket = self._seq.pop(value) // BUCKET
        self._buckets[bucket].remove(value)
        self._compile(bucket)

    def _compile(self, bucket: int) -> None:
        values = self._buckets[bucket]
        if not values:
            del self._buckets[bucket], self._patterns[bucket]
            return
        ordered = sorted(values, key=len, reverse=True)  # a value may contain another
        self._patterns[bucket] = re.compile("|".join(map(re.escape, ordered)))


def mask(text: str, spans: Iterable[tuple[int, int]], replacement: str) -> str:
    """`text` with the union of `spans` replaced, each merged run once."""
    out: list[str] = []
    position = 0
    end = -1
    for start, stop in sorted(spans):
        if start > end:  # a new run
            if end >= 0:
                out.append(replacement)
            out.append(text[position:start])
            end = stop
        else:
            end = max(end, stop)
        position = max(position, end)
    if end >= 0:
        out.append(replacement)
    out.append(text[position:])
    return "".join(out)
