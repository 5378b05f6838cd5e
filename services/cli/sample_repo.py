"""The demo's sample repository: a Spec Kit feature in a local bare git remote.

`create(remote)` makes `remote` a bare repository whose `main` holds a tiny Python
package and the feature `001-greeting`: T001 done, T002 and T003 open. `CHANGES` is
what the offline model writes for each open task, so a demo run without a real model
still produces a real patch, commit and branch.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

FEATURE_KEY = "001-greeting"
FEATURE_DIR = f"specs/{FEATURE_KEY}"
BRANCH = "main"
GIT_ENV = {
    "GIT_AUTHOR_NAME": "MoonMind Demo",
    "GIT_AUTHOR_EMAIL": "demo@example.com",
    "GIT_COMMITTER_NAME": "MoonMind Demo",
    "GIT_COMMITTER_EMAIL": "demo@example.com",
    "GIT_AUTHOR_DATE": "1704067200 +0000",
    "GIT_COMMITTER_DATE": "1704067200 +0000",
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": "/dev/null",
    "PATH": "/usr/local/bin:/usr/bin:/bin",
    "LC_ALL": "C",
}
T002 = "- [ ] T002 [US1] Implement greet(name) in src/greeting/core.py"
T003 = "- [ ] T003 [US1] Add tests for greet() in tests/test_core.py"

FILES = {
    "README.md": "# greeting\n\nA tiny package for the MoonMind Spec Workflow demo.\n",
    "src/greeting/__init__.py": '"""Greetings."""\n',
    ".specify/memory/constitution.md": "# Greeting Constitution\n\nSmall and tested.\n",
    f"{FEATURE_DIR}/spec.md": (
        "# Feature Specification: Greeting\n\n"
        f"**Feature Branch**: `{FEATURE_KEY}`\n**Status**: Draft\n\n"
        "## User Scenarios & Testing *(mandatory)*\n\n"
        "### User Story 1 - Greet a user by name (Priority: P1)\n\n"
        "Given a name, the package returns `Hello, <name>!`.\n"
    ),
    f"{FEATURE_DIR}/plan.md": (
        "# Implementation Plan: Greeting\n\n"
        f"**Branch**: `{FEATURE_KEY}` | **Spec**: [spec.md](./spec.md)\n\n"
        "## Technical Context\n\n**Language/Version**: Python 3.11\n"
    ),
    f"{FEATURE_DIR}/tasks.md": (
        "# Tasks: Greeting\n\n"
        "## Phase 1: Setup\n\n"
        "- [X] T001 Create the package layout in src/greeting/\n\n"
        "## Phase 2: User Story 1 - Greet a user by name (Priority: P1)\n\n"
        f"{T002}\n{T003}\n"
    ),
}


@dataclass(frozen=True)
class Change:
    patch: str
    summary: str


def _check(line: str) -> str:
    return line.replace("- [ ]", "- [X]", 1)


CHANGES = {
    "T002": Change(
        "*** Begin Patch\n"
        "*** Add File: src/greeting/core.py\n"
        '+"""Greeting a user by name."""\n'
        "+\n"
        "+\n"
        "+def greet(name: str) -> str:\n"
        '+    """`Hello, <name>!` for a non-blank name."""\n'
        "+    if not name.strip():\n"
        '+        raise ValueError("name must not be blank")\n'
        '+    return f"Hello, {name.strip()}!"\n'
        f"*** Update File: {FEATURE_DIR}/tasks.md\n"
        "@@\n"
        f"-{T002}\n"
        f"+{_check(T002)}\n"
        "*** End Patch\n",
        "Implemented greet(name) in src/greeting/core.py and checked T002.",
    ),
    "T003": Change(
        "*** Begin Patch\n"
        "*** Add File: tests/test_core.py\n"
        "+from greeting.core import greet\n"
        "+\n"
        "+\n"
        "+def test_greets_by_name() -> None:\n"
        '+    assert greet(" Ada ") == "Hello, Ada!"\n'
        f"*** Update File: {FEATURE_DIR}/tasks.md\n"
        "@@\n"
        f"-{T003}\n"
        f"+{_check(T003)}\n"
        "*** End Patch\n",
        "Added tests for greet() in tests/test_core.py and checked T003.",
    ),
}


def _git(*args: str, cwd: Path) -> str:
    done = subprocess.run(
        ["git", *args],
        cwd=cwd,
        env=GIT_ENV,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return done.stdout


def create(remote: Path) -> str:
    """(Re)create the bare repository `remote`; returns the commit `main` points at.

    The commit is the same on every machine (fixed identity and dates).
    """
    if remote.exists():
        shutil.rmtree(remote)
    remote.parent.mkdir(parents=True, exist_ok=True)
    _git("init", "--quiet", "--bare", f"--initial-branch={BRANCH}", str(remote),
         cwd=remote.parent)  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="sample-") as tmp:
        work = Path(tmp)
        _git("init", "--quiet", f"--initial-branch={BRANCH}", cwd=work)
        for name, text in FILES.items():
            path = work / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
        _git("add", "--all", cwd=work)
        _git("commit", "--quiet", "-m", "Greeting: spec, plan and tasks", cwd=work)
        _git("push", "--quiet", str(remote), f"HEAD:refs/heads/{BRANCH}", cwd=work)
    return _git("rev-parse", BRANCH, cwd=remote).strip()


def branches(remote: Path) -> dict[str, str]:
    """Every branch of `remote` and its commit."""
    out = _git("for-each-ref", "--format=%(refname:short) %(objectname)",
               "refs/heads", cwd=remote)  # fmt: skip
    return dict(line.split(" ", 1) for line in out.splitlines() if line)


def diff(remote: Path, branch: str) -> str:
    """`git diff main <branch>` in `remote`."""
    return _git("diff", "--no-color", BRANCH, branch, "--", cwd=remote)
