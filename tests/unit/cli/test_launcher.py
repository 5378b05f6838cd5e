"""`up` and `down` decisions from the pid files, with look-alike processes."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.cli import launcher
from services.cli.processes import PidDir
from services.cli.settings import LauncherSettings
from tests.support.processes import lookalike


class Prepared(Exception):
    """Raised by `prepare` to stop `up` before it starts anything."""


def prepare() -> None:
    raise Prepared


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> LauncherSettings:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("VAR_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("API_URL", "http://127.0.0.1:9")  # nothing listens there
    return LauncherSettings()


def test_up_refuses_a_second_copy_when_partly_running(
    settings: LauncherSettings,
) -> None:
    pids = PidDir(settings.var_dir)
    with lookalike("services.api") as api:
        pids.write_pid("api", api.pid)

        assert launcher.up(settings, prepare) == 1
        assert pids.read_pid("api") == api.pid


def test_up_clears_stale_pid_files_before_preparing(settings: LauncherSettings) -> None:
    pids = PidDir(settings.var_dir)
    with lookalike("something.else") as other:
        pids.write_pid("api", other.pid)
        pids.write_pid("codex_runner-9", other.pid)

        with pytest.raises(Prepared):
            launcher.up(settings, prepare)

        assert pids.names() == []
        assert other.poll() is None


def test_down_stops_ours_and_spares_a_reused_pid(settings: LauncherSettings) -> None:
    pids = PidDir(settings.var_dir)
    with lookalike("services.api.relay") as relay, lookalike("elsewhere") as other:
        pids.write_pid("relay", relay.pid)
        pids.write_pid("api", other.pid)

        assert launcher.down(settings) == 0

        assert relay.wait(timeout=5) != 0
        assert other.poll() is None
        assert pids.names() == []
