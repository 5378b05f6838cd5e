"""Secret values a process was told about, found wherever they appear in text.

The values live in buckets of at most `BUCKET`, each compiled into one regex of its
values. Adding a value recompiles its bucket only (and the bucket a dropped value
left): a compile costs about 90 µs a value, so one regex of every value ever
registered made the 1,000th registration cost about 50 ms and the 2,000th 100 ms,
on the event loop of the process that registered it, and kept every value for good.

A `KnownValues` with a `capacity` keeps at most that many, in registration order:
the oldest goes first. A value in the older half is moved to the newest end when
registered again, so one that keeps being revealed is not dropped, at the cost of
at most one move a value per `capacity / 2` registrations. Moves leave holes in the
older buckets; once there are more than twice the buckets the values need, they are
renumbered and rebuilt (one full compile, rarely), so a log line is matched against
at most about 2 x capacity / BUCKET regexes.

`spans` finds every occurrence of every value, overlapping ones included (after a
match, the search goes on from the next position, not from the match's end), and
`mask` replaces their union: a value that contains or overlaps another is masked
whole.

One writer at a time (the event loop), any number of readers: `spans` reads one
tuple of the compiled buckets, replaced whole after each change, and a moved value
is added to its new bucket before it leaves its old one, so a thread that logs
while the loop registers never sees a registered value missing.
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
        self._compiled: tuple[re.Pattern[str], ...] = ()  # what `spans` reads
        self._next = 0

    def __len__(self) -> int:
        return len(self._seq)

    def __contains__(self, value: object) -> bool:
        return value in self._seq

    def add(self, value: str) -> None:
        old = self._seq.get(value)
        if old is not None and (
            self.capacity is None or old >= self._next - self.capacity // 2
        ):
            return
        if old is not None:
            del self._seq[value]  # to the end of the (insertion-ordered) dict
        self._seq[value] = self._next
        bucket = self._next // BUCKET
        self._next += 1
        self._buckets.setdefault(bucket, []).append(value)
        self._compile(bucket)
        if old is not None:  # moved from the older half: now leave the old bucket
            self._discard(value, old // BUCKET)
        if self.capacity is not None and len(self._seq) > self.capacity:
            oldest = next(iter(self._seq))  # dicts keep insertion order
            self._discard(oldest, self._seq.pop(oldest) // BUCKET)
        if self.capacity is not None and len(self._buckets) > 2 * (
            self.capacity // BUCKET + 1
        ):
            self._renumber()

    def clear(self) -> None:
        self._seq.clear()
        self._buckets.clear()
        self._patterns.clear()
        self._compiled = ()
        self._next = 0

    def spans(self, text: str) -> list[tuple[int, int]]:
        """Where any value occurs in `text` (overlapping spans possible)."""
        found: list[tuple[int, int]] = []
        for pattern in self._compiled:
            match = pattern.search(text)
            while match is not None:  # rare: most text holds no secret
                found.append(match.span())
                # From the next position, not the match's end: overlaps count too.
                match = pattern.search(text, match.start() + 1)
        return found

    def _discard(self, value: str, bucket: int) -> None:
        self._buckets[bucket].remove(value)
        self._compile(bucket)

    def _compile(self, bucket: int) -> None:
        values = self._buckets[bucket]
        if values:
            self._patterns[bucket] = _alternation(values)
        else:
            del self._buckets[bucket], self._patterns[bucket]
        self._compiled = tuple(self._patterns.values())

    def _renumber(self) -> None:
        """The live values, in order, numbered from 0 again in full buckets."""
        ordered = list(self._seq)
        seq = {value: n for n, value in enumerate(ordered)}
        buckets = {
            n // BUCKET: ordered[n : n + BUCKET] for n in range(0, len(ordered), BUCKET)
        }
        patterns = {n: _alternation(values) for n, values in buckets.items()}
        self._seq, self._buckets, self._patterns = seq, buckets, patterns
        self._next = len(ordered)
        self._compiled = tuple(patterns.values())


def _alternation(values: list[str]) -> re.Pattern[str]:
    # The longest first, so a value that contains another wins where both start.
    ordered = sorted(values, key=len, reverse=True)
    return re.compile("|".join(map(re.escape, ordered)))


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
