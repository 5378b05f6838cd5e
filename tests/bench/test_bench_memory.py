"""`make bench-memory`'s report (no I/O: runs with the unit tests)."""

from __future__ import annotations

from datetime import UTC, datetime

from tests.bench.bench_memory import PROCESSES, BenchSettings, Phase, Report, render


def _phase(
    name: str, mib: float, preflight: float, runs: int = 0, seconds: float = 0.0
) -> Phase:
    kib = {process: int(mib * 1024) for process in PROCESSES}
    kib["preflight"] = int(preflight * 1024)
    return Phase(name, kib, runs, seconds)


def test_the_report_has_a_row_a_phase_and_the_idle_growth_over_each_burst() -> None:
    phases = [
        _phase("started", 50.0, 50.0),
        _phase("idle after warm-up", 60.0, 70.0),
        _phase("peak, burst 1", 90.0, 99.0, runs=30, seconds=25.0),
        _phase("idle after burst 1", 61.0, 90.0),
        _phase("peak, burst 2", 95.0, 99.0, runs=30, seconds=30.0),
        _phase("idle after burst 2", 61.5, 89.5),
    ]
    report = Report(BenchSettings(), datetime(2026, 11, 29, tzinfo=UTC), [], phases)
    text = render(report)
    lines = text.splitlines()
    assert lines[0] == "## bench-memory"
    header = next(line for line in lines if line.startswith("| phase |"))
    assert header.split(" | ")[1:] == [*PROCESSES, "**all** |"]
    row = next(line for line in lines if line.startswith("| peak, burst 2 |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1:4] == ["95.0", "95.0", "99.0"]  # api, relay, preflight
    total = 95.0 * (len(PROCESSES) - 1) + 99.0
    assert cells[-1] == f"**{total:.1f}**"
    assert "- peak, burst 1: 30 runs in 25.0 s (1.20 runs/s on 3 shards)" in text
    # Idle after each burst minus idle before it, from the idle after warm-up on.
    assert "api +1.0, +0.5; relay +1.0, +0.5; preflight +20.0, -0.5;" in text
