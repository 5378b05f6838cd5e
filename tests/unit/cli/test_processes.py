"""Process table, pid files and stop, with a fake /proc or short-lived children."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from services.cli.processes import (
    COMMANDS,
    PidDir,
    ProcessSpec,
    State,
    Tracked,
    marker_for,
    process_table,
)
from tests.support.processes import lookalike


def fake_process(proc: Path, pid: int, *argv: str) -> None:
    (proc / str(pid)).mkdir(parents=True)
    (proc / str(pid) / "cmdline").write_bytes(
        b"".join(a.encode() + b"\0" for a in argv)
    )


def test_process_table_starts_one_codex_runner_per_shard() -> None:
    specs = process_table("/py", codex_shards=2)

    assert [s.name for s in specs] == [
        "api",
        "relay",
        "preflight",
        "publisher",
        "codex_runner-0",
        "codex_runner-1",
    ]
    assert specs[0].argv == ("/py", "-m", "services.api")
    assert specs[5].argv[:3] == ("env", "CODEX_SHARD_INDEX=1", "/py")


def test_process_table_argv_contains_the_marker_of_its_name() -> None:
    for spec in process_table(sys.executable, codex_shards=3):
        assert marker_for(spec.name) in spec.argv


def test_marker_for_unknown_name_is_none() -> None:
    assert marker_for("postgres") is None
    assert marker_for("codex_runner-1") == COMMANDS["codex_runner"][-1]


def test_pid_file_round_trip(tmp_path: Path) -> None:
    pids = PidDir(tmp_path)
    pids.write_pid("api", 4242)
    pids.write_pid("codex_runner-0", 4243)

    assert pids.names() == ["api", "codex_runner-0"]
    assert pids.read_pid("api") == 4242
    assert pids.pid_file("api").read_text() == "4242\n"
    pids.remove("api")
    pids.remove("api")  # twice is fine
    assert pids.names() == ["codex_runner-0"]


@pytest.mark.parametrize("content", ["", "abc", "-5", "0", "12 13"])
def test_read_pid_rejects_garbage(tmp_path: Path, content: str) -> None:
    pids = PidDir(tmp_path)
    pids.run.mkdir()
    pids.pid_file("api").write_text(content)

    assert pids.read_pid("api") is None
    assert pids.inspect("api") == Tracked("api", None, State.STALE)


def test_inspect_running_when_cmdline_has_the_marker(tmp_path: Path) -> None:
    pids = PidDir(tmp_path / "var", proc=tmp_path / "proc")
    fake_process(tmp_path / "proc", 4242, "/py", "-m", "services.api")
    pids.write_pid("api", 4242)

    assert pids.inspect("api") == Tracked("api", 4242, State.RUNNING)


def test_inspect_stale_when_pid_was_reused_by_another_command(tmp_path: Path) -> None:
    pids = PidDir(tmp_path / "var", proc=tmp_path / "proc")
    # "services.api" is a prefix of the relay's module: whole arguments must match
    fake_process(tmp_path / "proc", 4242, "/py", "-m", "services.api.relay")
    fake_process(tmp_path / "proc", 4243)  # a zombie: empty cmdline
    pids.write_pid("api", 4242)
    pids.write_pid("preflight", 4243)
    pids.write_pid("publisher", 4244)  # no such process

    assert [pids.inspect(n).state for n in pids.names()] == [State.STALE] * 3


def test_inspect_absent_without_pid_file(tmp_path: Path) -> None:
    assert PidDir(tmp_path).inspect("api") == Tracked("api", None, State.ABSENT)


def test_start_records_pid_and_logs_output(tmp_path: Path) -> None:
    pids = PidDir(tmp_path)
    spec = ProcessSpec("api", (sys.executable, "-c", "print('hello')", "services.api"))

    child = pids.start(spec)
    child.wait(timeout=10)

    assert pids.read_pid("api") == child.pid
    log = pids.log_file("api").read_text()
    assert "spec-workflow up:" in log
    assert log.endswith("hello\n")


@pytest.mark.parametrize(("ignore_term", "killed"), [(False, []), (True, ["api"])])
def test_stop_terminates_then_kills(
    tmp_path: Path, ignore_term: bool, killed: list[str]
) -> None:
    with lookalike("services.api", ignore_term=ignore_term) as child:
        target = Tracked("api", child.pid, State.RUNNING)

        assert PidDir(tmp_path).stop([target], timeout=1.0) == killed
        assert child.wait(timeout=5) != 0


def test_stop_leaves_stale_targets_alone(tmp_path: Path) -> None:
    with lookalike("services.api") as child:
        stale = Tracked("api", child.pid, State.STALE)

        assert PidDir(tmp_path).stop([stale], timeout=0.1) == []
        assert child.poll() is None


def test_every_process_is_told_the_api_url_up_serves() -> None:
    specs = process_table("/py", codex_shards=2, api_url="http://127.0.0.1:9001")

    for spec in specs:
        assert spec.argv[:2] == ("env", "API_URL=http://127.0.0.1:9001"), spec
    assert specs[5].argv[2:4] == ("CODEX_SHARD_INDEX=1", "/py")
