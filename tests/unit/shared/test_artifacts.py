"""`artifacts.inside`: a stage-reported path never leads out of the run's folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared import artifacts


@pytest.mark.parametrize(
    "relative",
    ["../other/patch.diff", "/etc/passwd", "a/../../x", "", ".", "a\x00b", "link/x"],
)
def test_paths_leaving_the_folder_are_refused(tmp_path: Path, relative: str) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (tmp_path / "other").mkdir()
    (run / "link").symlink_to(tmp_path / "other")

    assert artifacts.inside(run, relative) is None


def test_a_path_inside_resolves(tmp_path: Path) -> None:
    (tmp_path / "codex").mkdir()
    (tmp_path / "codex" / "patch.diff").write_text("x")

    found = artifacts.inside(tmp_path, "codex/patch.diff")

    assert found == (tmp_path / "codex" / "patch.diff").resolve()
