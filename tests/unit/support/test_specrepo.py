"""The Spec Kit fixtures say what they promise: the oracle matches the file."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.support.gitserver import run_git, token_from_header
from tests.support.specrepo import (
    DECOY_TASK_IDS,
    DONE_TASK,
    FEATURE_DIR,
    FIRST_OPEN_TASK,
    REQUESTED_TASK,
    TASKS,
    UNKNOWN_TASK,
    Variant,
    commit_files,
    feature_files,
    tasks_md,
)

TASK_LINE = re.compile(r"- \[([ xX])\] (T\d{3})\b")


def real_tasks(text: str) -> list[tuple[str, bool]]:
    """A reference reading: task lines outside fences and HTML comments."""
    found: list[tuple[str, bool]] = []
    in_fence = in_comment = False
    for line in text.splitlines():
        stripped = line.strip()
        if in_comment:
            in_comment = "-->" not in stripped
        elif stripped.startswith("```"):
            in_fence = not in_fence
        elif in_fence:
            continue
        elif stripped.startswith("<!--"):
            in_comment = "-->" not in stripped
        elif match := TASK_LINE.match(line):
            found.append((match[2], match[1] != " "))
    return found


def bare(tmp_path: Path, name: str) -> Path:
    path = tmp_path / f"{name}.git"
    run_git("init", "-q", "--bare", "--initial-branch=main", str(path))
    return path


def test_tasks_md_matches_the_oracle() -> None:
    assert real_tasks(tasks_md()) == [(t.id, t.done) for t in TASKS]


def test_decoys_are_open_look_alikes_inside_fences_and_comments() -> None:
    text = tasks_md()
    for decoy in DECOY_TASK_IDS:
        assert re.search(rf"^\s*- \[ \] {decoy} ", text, re.MULTILINE), decoy
    first_look_alike = TASK_LINE.search(text)
    assert first_look_alike is not None
    assert first_look_alike[2] in DECOY_TASK_IDS  # a naive scan picks a decoy


def test_named_task_ids_are_what_they_say() -> None:
    state = dict(real_tasks(tasks_md()))
    assert next(i for i, done in state.items() if not done) == FIRST_OPEN_TASK
    assert state[REQUESTED_TASK] is False
    assert REQUESTED_TASK != FIRST_OPEN_TASK
    assert state[DONE_TASK] is True
    assert UNKNOWN_TASK not in state
    assert {"x", "X"} <= {t.mark for t in TASKS}


def test_task_lines_follow_the_template_format() -> None:
    lines = {t.id: t.line() for t in TASKS}
    assert lines["T002"] == "- [X] T002 [P] Configure ruff and mypy in pyproject.toml"
    assert lines["T005"].startswith("- [ ] T005 [P] [US1] Contract test")
    assert tasks_md().startswith("---\n")
    assert not tasks_md(front_matter=False).startswith("---")


def test_variants() -> None:
    tasks = f"{FEATURE_DIR}/tasks.md"
    all_done = feature_files(Variant.ALL_DONE)[tasks]
    assert isinstance(all_done, str)
    assert all(done for _, done in real_tasks(all_done))
    assert tasks not in feature_files(Variant.MISSING_TASKS)
    assert f"{FEATURE_DIR}/plan.md" not in feature_files(Variant.NO_PLAN)
    assert not any(
        p.startswith(FEATURE_DIR) for p in feature_files(Variant.MISSING_FEATURE)
    )
    binary = feature_files(Variant.BINARY_TASKS)[tasks]
    assert isinstance(binary, bytes)
    with pytest.raises(UnicodeDecodeError):
        binary.decode()


def test_commit_files_sha_depends_only_on_content(tmp_path: Path) -> None:
    files = feature_files()
    first = commit_files(bare(tmp_path, "a"), files)
    assert commit_files(bare(tmp_path, "b"), files) == first

    repo = bare(tmp_path, "c")
    commit_files(repo, files)
    second = commit_files(repo, {"README.md": None, "new.txt": b"\x00bin"}, message="m")
    listed = run_git("ls-tree", "-r", "--name-only", second, git_dir=repo).split()
    assert "README.md" not in listed
    assert "new.txt" in listed
    assert run_git("rev-parse", f"{second}^", git_dir=repo).strip() == first


@pytest.mark.parametrize(
    ("header", "token"),
    [
        ("Basic eC1hY2Nlc3MtdG9rZW46Z2hwX3g=", "ghp_x"),  # x-access-token:ghp_x
        ("Basic YW55b25lOmdocF94", "ghp_x"),  # anyone:ghp_x
        ("Bearer ghp_x", "ghp_x"),
        ("token ghp_x", "ghp_x"),
        ("Basic eC1hY2Nlc3MtdG9rZW46", None),  # empty password
        ("Basic !!!", None),
        ("Digest abc", None),
        (None, None),
    ],
)
def test_token_from_header(header: str | None, token: str | None) -> None:
    assert token_from_header(header) == token
