"""Percentiles, medians with spreads and ratios for `make bench` (no I/O, no deps)."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0 < q < 100), linear between closest ranks (inclusive)."""
    if not values:
        raise ValueError("no values")
    if not 0 < q < 100:
        raise ValueError(f"percentile {q} is outside (0, 100)")
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    position = (len(ordered) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


@dataclass(frozen=True)
class Latency:
    """p50, p90, p99, max of one set of samples (ms)."""

    n: int
    p50: float
    p90: float
    p99: float
    max: float

    @classmethod
    def of(cls, ms: Sequence[float]) -> Latency:
        return cls(
            len(ms),
            percentile(ms, 50),
            percentile(ms, 90),
            percentile(ms, 99),
            max(ms),
        )


@dataclass(frozen=True)
class Spread:
    """The median of per-round values and their range."""

    median: float
    low: float
    high: float
    rounds: int

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        if not values:
            raise ValueError("no values")
        return cls(statistics.median(values), min(values), max(values), len(values))

    def show(self, fmt: str = ",.1f") -> str:
        """`12.3 (11.9-13.0)`: median (min-max); the bare value for one round."""
        if self.rounds == 1:
            return format(self.median, fmt)
        return f"{self.median:{fmt}} ({self.low:{fmt}}-{self.high:{fmt}})"


def split(total: int, parts: int) -> list[int]:
    """`total` as `parts` near-equal counts, the first ones larger by one."""
    if parts < 1:
        raise ValueError("parts must be >= 1")
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def ratio(ours: float, theirs: float) -> float:
    """ours / theirs; inf when theirs is 0 and ours is not."""
    if theirs == 0:
        return 0.0 if ours == 0 else float("inf")
    return ours / theirs


def verdict(met: bool) -> str:
    return "met" if met else "MISSED"
