"""The arithmetic `make bench` reports with (no I/O: runs with the unit tests)."""

from __future__ import annotations

import math

import pytest

from tests.bench.stats import Latency, Spread, percentile, ratio, split


def test_percentile_interpolates_between_closest_ranks() -> None:
    values = [float(v) for v in range(1, 101)]  # 1 .. 100
    assert percentile(values, 50) == pytest.approx(50.5)
    assert percentile(values, 99) == pytest.approx(99.01)
    assert percentile([7.0], 99) == 7.0
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0  # unsorted input


def test_percentile_rejects_empty_input_and_out_of_range_q() -> None:
    with pytest.raises(ValueError, match="no values"):
        percentile([], 50)
    with pytest.raises(ValueError, match="outside"):
        percentile([1.0], 100)


def test_latency_summarises_samples() -> None:
    lat = Latency.of([10.0] * 98 + [50.0, 100.0])
    assert (lat.n, lat.p50, lat.max) == (100, 10.0, 100.0)
    assert lat.p99 == pytest.approx(50.5)


def test_spread_shows_median_and_range() -> None:
    assert Spread.of([3.0, 1.0, 2.0]).show() == "2.0 (1.0-3.0)"
    assert Spread.of([4.25]).show(".2f") == "4.25"


def test_ratio_and_split_edge_cases() -> None:
    assert ratio(30.0, 15.0) == 2.0
    assert ratio(0.0, 0.0) == 0.0
    assert math.isinf(ratio(1.0, 0.0))
    assert split(300, 3) == [100, 100, 100]
    assert split(10, 3) == [4, 3, 3]
    assert sum(split(7, 7)) == 7
