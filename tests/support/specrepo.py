"""Spec Kit test repositories: stable commits from a dict of files; a typical feature.

`TASKS` is the oracle for the typical `tasks.md`: every real task in file order.
Look-alike lines in the HTML comment and the fenced code block (`DECOY_TASK_IDS`) must
never be parsed as tasks.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from tests.support.gitserver import GitSmartHTTPServer, run_git

FEATURE_KEY = "042-checkout"
FEATURE_TITLE = "Checkout"
FEATURE_DIR = f"specs/{FEATURE_KEY}"
FIXED_DATE = "1704067200 +0000"  # 2024-01-01T00:00:00Z, so SHAs never change
AUTHOR = ("Spec Fixture", "fixture@example.com")

Files = Mapping[str, str | bytes | None]  # None deletes the path


@dataclass(frozen=True)
class SpecTask:
    """One real task line of the typical tasks.md."""

    id: str
    description: str
    phase: int
    mark: str = " "  # " " open, "x" or "X" done
    parallel: bool = False
    story: str | None = None

    @property
    def done(self) -> bool:
        return self.mark != " "

    def line(self) -> str:
        parts = [f"- [{self.mark}] {self.id}"]
        if self.parallel:
            parts.append("[P]")
        if self.story:
            parts.append(f"[{self.story}]")
        parts.append(self.description)
        return " ".join(parts)


PHASES = {
    1: "Phase 1: Setup (Shared Infrastructure)",
    2: "Phase 2: Foundational (Blocking Prerequisites)",
    3: "Phase 3: User Story 1 - Pay with a saved card (Priority: P1) 🎯 MVP",
    4: "Phase 4: User Story 2 - Apply a discount code (Priority: P2)",
    5: "Phase 5: Polish & Cross-Cutting Concerns",
}

TASKS: tuple[SpecTask, ...] = (
    SpecTask("T001", "Create project structure in src/checkout/", 1, "x"),
    SpecTask(
        "T002", "Configure ruff and mypy in pyproject.toml", 1, "X", parallel=True
    ),
    SpecTask("T003", "Create Order and Payment models in src/checkout/models.py", 2),
    SpecTask(
        "T004",
        "Add payment gateway client in src/checkout/gateway.py",
        2,
        parallel=True,
    ),
    SpecTask(
        "T005",
        "Contract test for POST /checkout in tests/contract/test_checkout.py",
        3,
        parallel=True,
        story="US1",
    ),
    SpecTask(
        "T006",
        "Implement CheckoutService in src/checkout/service.py",
        3,
        "x",
        story="US1",
    ),
    SpecTask(
        "T007", "Add POST /checkout endpoint in src/checkout/api.py", 3, story="US1"
    ),
    SpecTask(
        "T008",
        "Discount model and rules in src/checkout/discounts.py",
        4,
        parallel=True,
        story="US2",
    ),
    SpecTask(
        "T009",
        "Apply discounts in CheckoutService in src/checkout/service.py",
        4,
        story="US2",
    ),
    SpecTask(
        "T010", "Document the checkout flow in docs/checkout.md", 5, parallel=True
    ),
)
FIRST_OPEN_TASK = "T003"  # T001/T002 are done; the decoys come before them
REQUESTED_TASK = "T007"  # open, not first: what a requested taskId picks
DONE_TASK = "T006"  # checked, between open tasks
AGENT_FILE = "src/checkout/models.py"
AGENT_PATCH = f"""*** Begin Patch
*** Add File: {AGENT_FILE}
+class Order:
+    \"\"\"An order.\"\"\"
*** Update File: {FEATURE_DIR}/tasks.md
@@
-- [ ] T003 Create Order and Payment models in src/checkout/models.py
+- [X] T003 Create Order and Payment models in src/checkout/models.py
*** End Patch
"""
"""What the scripted agent does for FIRST_OPEN_TASK: the model file, T003 checked."""
UNKNOWN_TASK = "T999"
DECOY_TASK_IDS = ("T000", "T900", "T901")


def tasks_md(tasks: tuple[SpecTask, ...] = TASKS, *, front_matter: bool = True) -> str:
    """A tasks.md in the shape of Spec Kit's tasks-template.md."""
    head = (
        ['---\ndescription: "Task list for the Checkout feature"\n---\n']
        if front_matter
        else []
    )
    out = [
        *head,
        f"# Tasks: {FEATURE_TITLE}\n",
        f"**Input**: Design documents from `/{FEATURE_DIR}/`",
        "**Prerequisites**: plan.md (required), spec.md (required for user stories)\n",
        "## Contents\n",
        *(f"- {title.split(' (')[0]}" for title in PHASES.values()),
        "",
        "## Format: `[ID] [P?] [Story] Description`\n",
        "- **[P]**: Can run in parallel (different files, no dependencies)",
        "- **[Story]**: Which user story this task belongs to (e.g., US1, US2)\n",
        "```text",
        "- [ ] T000 [P] [US1] Example task line inside a fenced code block",
        "```\n",
        "<!--",
        "  IMPORTANT: The tasks below replace the template's sample tasks.",
        "  - [ ] T900 Sample task inside an HTML comment must be ignored",
        "-->\n",
    ]
    for number, title in PHASES.items():
        out += [
            f"## {title}\n",
            f"**Purpose**: phase {number} of the checkout feature\n",
        ]
        if number == 4:
            out += [
                "Expected discount file layout:\n",
                "```markdown",
                "- [ ] T901 [US2] Look-alike inside a fence in a phase",
                "```\n",
            ]
        out += [task.line() for task in tasks if task.phase == number]
        out += [
            "",
            f"**Checkpoint**: phase {number} complete - verify before moving on\n",
        ]
        out += ["---\n"]
    out += ["<!-- - [ ] T900 a one-line comment look-alike -->", ""]
    return "\n".join(out)


def spec_md(title: str = FEATURE_TITLE) -> str:
    return (
        f"# Feature Specification: {title}\n\n"
        f"**Feature Branch**: `{FEATURE_KEY}`\n**Status**: Draft\n\n"
        "## User Scenarios & Testing *(mandatory)*\n\n"
        "### User Story 1 - Pay with a saved card (Priority: P1)\n\n"
        "A returning customer pays with a card on file.\n"
    )


def plan_md(title: str = FEATURE_TITLE) -> str:
    return (
        f"# Implementation Plan: {title}\n\n"
        f"**Branch**: `{FEATURE_KEY}` | **Spec**: [spec.md](./spec.md)\n\n"
        "## Technical Context\n\n**Language/Version**: Python 3.11\n"
    )


class Variant(StrEnum):
    """Which shape of the feature folder a seeded repository gets."""

    TYPICAL = "typical"  # first open task FIRST_OPEN_TASK
    ALL_DONE = "all_done"  # every real task checked: no work (decoys stay open)
    NO_PLAN = "no_plan"  # spec.md and tasks.md only
    MISSING_TASKS = "missing_tasks"  # spec.md and plan.md only
    MISSING_FEATURE = "missing_feature"  # another feature only
    BINARY_TASKS = "binary_tasks"  # tasks.md is not UTF-8


def feature_files(variant: Variant = Variant.TYPICAL) -> dict[str, str | bytes | None]:
    """The repository files for `variant`, plus a README."""
    files: dict[str, str | bytes | None] = {
        "README.md": "# shop\n",
        ".specify/memory/constitution.md": "# Shop Constitution\n",
    }
    if variant is Variant.MISSING_FEATURE:
        files["specs/001-catalog/spec.md"] = spec_md("Catalog")
        files["specs/001-catalog/tasks.md"] = tasks_md()
        return files
    files[f"{FEATURE_DIR}/spec.md"] = spec_md()
    if variant is not Variant.NO_PLAN:
        files[f"{FEATURE_DIR}/plan.md"] = plan_md()
    if variant is Variant.ALL_DONE:
        done = tuple(
            SpecTask(
                t.id,
                t.description,
                t.phase,
                "X" if t.done else "x",
                t.parallel,
                t.story,
            )
            for t in TASKS
        )
        files[f"{FEATURE_DIR}/tasks.md"] = tasks_md(done)
    elif variant is Variant.BINARY_TASKS:
        files[f"{FEATURE_DIR}/tasks.md"] = (
            b"\xff\xfe# Tasks\n- [ ] T001 \xc3\x28 bad\n\x00"
        )
    elif variant is not Variant.MISSING_TASKS:
        files[f"{FEATURE_DIR}/tasks.md"] = tasks_md()
    return files


def commit_files(
    git_dir: Path,
    files: Files,
    *,
    branch: str = "main",
    message: str = "Add files",
    parent: str | None = None,
) -> str:
    """Commit `files` on top of `branch` (or `parent`) in a bare repo; returns the SHA.

    A fixed author, committer and date make the SHA a function of the content.
    """
    identity = {
        "GIT_AUTHOR_NAME": AUTHOR[0],
        "GIT_AUTHOR_EMAIL": AUTHOR[1],
        "GIT_AUTHOR_DATE": FIXED_DATE,
        "GIT_COMMITTER_NAME": AUTHOR[0],
        "GIT_COMMITTER_EMAIL": AUTHOR[1],
        "GIT_COMMITTER_DATE": FIXED_DATE,
    }
    if parent is None:
        try:
            parent = run_git(
                "rev-parse",
                "--verify",
                "--quiet",
                f"refs/heads/{branch}",
                git_dir=git_dir,
            ).strip()
        except RuntimeError:
            parent = None
    with tempfile.TemporaryDirectory(prefix="specrepo-") as tmp:
        index = {"GIT_INDEX_FILE": str(Path(tmp) / "index")}
        if parent:
            run_git("read-tree", parent, git_dir=git_dir, env=index)
        entries = []
        for path, content in sorted(files.items()):
            if content is None:  # mode 0 removes the path (no work tree needed)
                entries.append(f"0 {'0' * 40}\t{path}\n")
                continue
            data = content.encode() if isinstance(content, str) else content
            blob = run_git("hash-object", "-w", "--stdin", git_dir=git_dir, input=data)
            entries.append(f"100644 {blob.strip()}\t{path}\n")
        listing = "".join(entries).encode()
        run_git(
            "update-index",
            "--add",
            "--index-info",
            git_dir=git_dir,
            env=index,
            input=listing,
        )
        tree = run_git("write-tree", git_dir=git_dir, env=index).strip()
    args = ["commit-tree", tree, "-m", message, *(["-p", parent] if parent else [])]
    sha = run_git(*args, git_dir=git_dir, env=identity).strip()
    run_git("update-ref", f"refs/heads/{branch}", sha, git_dir=git_dir)
    return sha


@dataclass(frozen=True)
class SeededRepo:
    """What a test needs to point a run at a seeded repository."""

    full_name: str
    clone_url: str
    default_branch: str
    base_branch: str
    base_sha: str
    feature_key: str = FEATURE_KEY


def seed_spec_repo(
    git: GitSmartHTTPServer,
    full_name: str = "acme/shop",
    variant: Variant = Variant.TYPICAL,
    *,
    base_branch: str = "main",
    default_branch: str = "main",
    extra_files: Files | None = None,
) -> SeededRepo:
    """Create `full_name` on `git` (started) with a Spec Kit feature on `base_branch`.

    With a non-default `base_branch`, the default branch holds only a README, so a
    run that ignores the requested base finds no feature at all.
    """
    path = git.create_repo(full_name, default_branch=default_branch)
    files = {**feature_files(variant), **(extra_files or {})}
    if base_branch != default_branch:
        root = commit_files(
            path,
            {"README.md": "# shop\n"},
            branch=default_branch,
            message="Initial commit",
        )
        sha = commit_files(
            path, files, branch=base_branch, parent=root, message=f"Add {FEATURE_KEY}"
        )
    else:
        sha = commit_files(
            path, files, branch=base_branch, message=f"Add {FEATURE_KEY}"
        )
    return SeededRepo(
        full_name=full_name,
        clone_url=git.url_for(full_name),
        default_branch=default_branch,
        base_branch=base_branch,
        base_sha=sha,
    )
