"""The publisher for real: git over smart HTTP and the GitHub-compatible fake.

`run_publish` gets a real `Deps` with `FakeSecrets`; the patch is made against the
seeded Spec Kit repository the way the Codex runner makes it. No containers needed.
"""

from __future__ import annotations

import asyncio
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import pytest

from services.publisher.publish import Deps, Outcome, run_publish
from shared import artifacts
from shared.messages import (
    ApplyAndPublish,
    ArtifactRef,
    DiscoveredTask,
    PublishMode,
    TaskName,
    new_message,
)
from tests.support.fakes import FakeSecrets
from tests.support.github import FakeGitHub
from tests.support.gitserver import GitSmartHTTPServer
from tests.support.specrepo import (
    FEATURE_DIR,
    FEATURE_KEY,
    FEATURE_TITLE,
    FIRST_OPEN_TASK,
    TASKS,
    SeededRepo,
    seed_spec_repo,
)

pytestmark = pytest.mark.timeout(60)

REPO = "acme/shop"
USER = "alice"
TASK = next(t for t in TASKS if t.id == FIRST_OPEN_TASK)
CODE = "class Order:\n    pass\n"


@pytest.fixture
def git() -> Iterator[GitSmartHTTPServer]:
    with GitSmartHTTPServer() as server:
        yield server
    assert not server.errors


@pytest.fixture
def github(git: GitSmartHTTPServer) -> Iterator[FakeGitHub]:
    with FakeGitHub(git) as api:
        yield api
    assert not api.errors


@pytest.fixture
def token() -> str:
    return f"tok{secrets.token_hex(20)}"


def seed(
    git: GitSmartHTTPServer,
    github: FakeGitHub,
    token: str,
    *,
    scopes: tuple[str, ...] | None = ("repo", "workflow"),
) -> SeededRepo:
    seeded = seed_spec_repo(git, REPO)
    github.add_repo(REPO)
    github.add_user(USER, token, scopes=scopes)
    github.grant(USER, REPO, "write")
    return seeded


def make_deps(
    tmp_path: Path,
    git: GitSmartHTTPServer,
    github: FakeGitHub,
    token: str,
    **extra: Any,
) -> Deps:
    return Deps(
        internal_api=FakeSecrets({"github": token}),
        artifacts_root=tmp_path / "artifacts",
        workspaces_root=tmp_path / "workspaces",
        github_api_url=github.url,
        github_git_url=git.base_url,
        git_timeout=30,
        **extra,
    )


def make_patch(
    git: GitSmartHTTPServer,
    tmp_path: Path,
    files: dict[str, str],
    *,
    check: bool = False,
) -> bytes:
    """A `git diff` against the base commit, like the Codex runner's patch.diff."""
    work = tmp_path / f"agent-{secrets.token_hex(4)}"
    bare = str(git.repo_path(REPO))
    subprocess.run(["git", "clone", "-q", bare, str(work)], check=True)
    return _diff(work, files, check)


def _diff(work: Path, files: dict[str, str], check: bool) -> bytes:
    for path, text in files.items():
        target = work / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    if check:
        tasks = work / FEATURE_DIR / "tasks.md"
        tasks.write_text(
            tasks.read_text().replace(f"- [ ] {TASK.id} ", f"- [X] {TASK.id} ")
        )
    subprocess.run(["git", "-C", str(work), "add", "-A"], check=True)
    return subprocess.run(
        ["git", "-C", str(work), "diff", "--cached", "--binary"],
        check=True,
        capture_output=True,
    ).stdout


def command(
    seeded: SeededRepo,
    mode: PublishMode = PublishMode.PR,
    *,
    run_id: UUID | None = None,
    attempt: int = 1,
) -> ApplyAndPublish:
    return new_message(
        ApplyAndPublish,
        run_id=run_id or uuid4(),
        task=TaskName.APPLY_AND_PUBLISH,
        attempt=attempt,
        repository=REPO,
        feature_key=FEATURE_KEY,
        base_branch=seeded.base_branch,
        base_sha=seeded.base_sha,
        spec_task=DiscoveredTask(task_id=TASK.id, description=TASK.description),
        publish_mode=mode,
        patch=ArtifactRef(path="patch.diff", artifact_type="patch"),
        spec_title=FEATURE_TITLE,
    )


def store(deps: Deps, cmd: ApplyAndPublish, diff: bytes) -> None:
    artifacts.write_bytes(deps.artifacts_root, cmd.run_id, "patch.diff", diff, "patch")


def ok(outcome: Outcome) -> dict[str, Any]:
    assert outcome.error is None, outcome.error
    assert outcome.summary is not None
    return outcome.summary


def code_of(outcome: Outcome) -> str:
    assert outcome.error is not None, outcome.summary
    return outcome.error.code


def receive_packs(git: GitSmartHTTPServer) -> int:
    return sum(1 for r in git.requests if r.service == "git-receive-pack")


@pytest.fixture
def world(
    tmp_path: Path, git: GitSmartHTTPServer, github: FakeGitHub, token: str
) -> tuple[SeededRepo, Deps, bytes]:
    seeded = seed(git, github, token)
    deps = make_deps(tmp_path, git, github, token, labels=["spec-workflow"])
    diff = make_patch(git, tmp_path, {"src/checkout/models.py": CODE})
    return seeded, deps, diff


# -- the modes ------------------------------------------------------------------


async def test_publish_creates_one_pull_request(
    world: tuple[SeededRepo, Deps, bytes], git: GitSmartHTTPServer, github: FakeGitHub
) -> None:
    seeded, deps, diff = world
    cmd = command(seeded)
    store(deps, cmd, diff)
    run_dir = artifacts.run_dir(deps.artifacts_root, cmd.run_id)
    (run_dir / "codex/1").mkdir(parents=True)
    (run_dir / "codex/1/last_message.txt").write_text("Added the Order model.")

    summary = ok(await run_publish(cmd, deps))

    branch = f"speckit/{FEATURE_KEY}/{TASK.id}-{str(cmd.run_id)[:8]}"
    assert summary["branch_name"] == branch
    assert summary["adopted"] is False
    assert git.rev_parse(REPO, branch) == summary["commit_sha"]
    (pull,) = github.pulls_created
    assert summary["pr_url"].endswith(f"/pull/{pull.number}")
    assert pull.title == f"{TASK.id}: {TASK.description}"
    assert pull.draft is False
    assert pull.labels == ["spec-workflow"]
    assert pull.body is not None
    assert "Added the Order model." in pull.body
    assert "src/checkout/models.py" in pull.body
    assert f"Spec-Workflow-Run: {cmd.run_id}" in pull.body
    assert "Remaining unchecked tasks" in pull.body
    tasks = git.show(REPO, branch, f"{FEATURE_DIR}/tasks.md").decode()
    assert f"- [X] {TASK.id} " in tasks  # checked by the publisher
    message = git.git(REPO, "log", "-1", "--format=%an <%ae>%n%B", branch)
    assert message.startswith("MoonMind Spec Workflow <spec-workflow@")
    assert f"{FEATURE_KEY}: {TASK.id} {TASK.description}" in message
    assert f"Spec-Workflow-Run: {cmd.run_id}" in message
    assert (run_dir / "publish/push.log").is_file()
    assert (run_dir / "github/pulls_create.json").is_file()


async def test_publish_draft_opens_a_draft(
    tmp_path: Path,
    world: tuple[SeededRepo, Deps, bytes],
    git: GitSmartHTTPServer,
    github: FakeGitHub,
) -> None:
    seeded, deps, _ = world
    cmd = command(seeded, PublishMode.DRAFT)
    # This agent checked the task itself: the publisher leaves tasks.md alone.
    diff = make_patch(git, tmp_path, {"src/checkout/models.py": CODE}, check=True)
    store(deps, cmd, diff)

    summary = ok(await run_publish(cmd, deps))

    (pull,) = github.pulls_created
    assert pull.draft is True
    tasks = git.show(REPO, summary["branch_name"], f"{FEATURE_DIR}/tasks.md")
    assert tasks.decode().count(f"- [X] {TASK.id} ") == 1


async def test_publish_branch_only_pushes(
    world: tuple[SeededRepo, Deps, bytes], git: GitSmartHTTPServer, github: FakeGitHub
) -> None:
    seeded, deps, diff = world
    cmd = command(seeded, PublishMode.BRANCH)
    store(deps, cmd, diff)

    summary = ok(await run_publish(cmd, deps))

    assert git.rev_parse(REPO, summary["branch_name"]) == summary["commit_sha"]
    assert summary["pr_url"] is None
    assert github.pulls(REPO) == []


async def test_publish_none_keeps_only_the_patch(
    world: tuple[SeededRepo, Deps, bytes], git: GitSmartHTTPServer, github: FakeGitHub
) -> None:
    seeded, deps, diff = world
    cmd = command(seeded, PublishMode.NONE)
    store(deps, cmd, diff)
    git.clear_requests()

    summary = ok(await run_publish(cmd, deps))

    assert summary["branch_name"] is None
    assert summary["patch"] == "patch.diff"
    assert git.requests == []
    assert github.calls == []


# -- idempotency ------------------------------------------------------------------


async def test_publish_adopts_an_open_pull_request(
    world: tuple[SeededRepo, Deps, bytes], github: FakeGitHub
) -> None:
    seeded, deps, diff = world
    cmd = command(seeded, PublishMode.BRANCH)
    store(deps, cmd, diff)
    branch = ok(await run_publish(cmd, deps))["branch_name"]
    existing = github.add_pull(REPO, branch, title="old title")

    summary = ok(await run_publish(command(seeded, run_id=cmd.run_id), deps))

    assert summary["adopted"] is True
    assert summary["pr_number"] == existing.number
    assert len(github.pulls_created) == 0
    assert existing.title == f"{TASK.id}: {TASK.description}"  # updated


async def test_the_same_command_twice_opens_exactly_one_pull_request(
    world: tuple[SeededRepo, Deps, bytes], github: FakeGitHub
) -> None:
    seeded, deps, diff = world
    cmd = command(seeded)
    store(deps, cmd, diff)

    first = ok(await run_publish(cmd, deps))
    second = ok(await run_publish(cmd, deps))

    assert len(github.pulls(REPO)) == 1
    assert len(github.pulls_created) == 1
    assert second["pr_url"] == first["pr_url"]
    assert second["commit_sha"] == first["commit_sha"]
    assert second["adopted"] is True


async def test_copies_of_one_command_at_once_open_exactly_one_pull_request(
    world: tuple[SeededRepo, Deps, bytes], github: FakeGitHub
) -> None:
    """Found by `make chaos`: two deliveries of one command (a redelivery, an outbox
    row published twice) at the same time shared one working copy, and the second
    emptied it under the first."""
    seeded, deps, diff = world
    cmd = command(seeded)
    store(deps, cmd, diff)

    outcomes = await asyncio.gather(*(run_publish(cmd, deps) for _ in range(3)))

    summaries = [ok(outcome) for outcome in outcomes]
    assert len({s["commit_sha"] for s in summaries}) == 1
    assert len({s["pr_url"] for s in summaries}) == 1
    assert len(github.pulls_created) == 1
    assert list((deps.workspaces_root / str(cmd.run_id)).iterdir()) == []


async def test_a_crash_between_push_and_pull_request_still_opens_one(
    world: tuple[SeededRepo, Deps, bytes], git: GitSmartHTTPServer, github: FakeGitHub
) -> None:
    seeded, deps, diff = world
    cmd = command(seeded)
    store(deps, cmd, diff)
    # The push step alone: what a publisher killed before the PR call left behind.
    pushed = ok(
        await run_publish(cmd.model_copy(update={"publish_mode": "branch"}), deps)
    )
    retry = command(seeded, run_id=cmd.run_id, attempt=2)

    summary = ok(await run_publish(retry, deps))

    assert summary["commit_sha"] == pushed["commit_sha"]
    assert summary["branch_name"] == pushed["branch_name"]
    assert len(github.pulls(REPO)) == 1
    assert len(github.pulls_created) == 1
    assert git.branches(REPO).keys() == {"main", summary["branch_name"]}


# -- failures ---------------------------------------------------------------------


async def test_push_denied_then_retry_after_the_token_is_fixed(
    world: tuple[SeededRepo, Deps, bytes], git: GitSmartHTTPServer, github: FakeGitHub
) -> None:
    seeded, deps, diff = world
    github.grant(USER, REPO, "read")
    cmd = command(seeded)
    store(deps, cmd, diff)

    failed = await run_publish(cmd, deps)

    assert code_of(failed) == "push_denied"
    run_dir = artifacts.run_dir(deps.artifacts_root, cmd.run_id)
    assert "push_denied" in (run_dir / "publish/push.log").read_text()
    assert failed.error is not None
    assert not failed.error.retryable
    assert github.pulls(REPO) == []
    github.grant(USER, REPO, "write")
    retry = command(seeded, run_id=cmd.run_id, attempt=2)
    summary = ok(await run_publish(retry, deps))  # the stored patch, no Codex
    assert len(github.pulls_created) == 1
    assert git.rev_parse(REPO, summary["branch_name"]) == summary["commit_sha"]


async def test_workflow_change_without_the_scope_is_refused_before_pushing(
    tmp_path: Path, git: GitSmartHTTPServer, github: FakeGitHub, token: str
) -> None:
    seeded = seed(git, github, token, scopes=("repo",))
    deps = make_deps(tmp_path, git, github, token)
    workflow = "on: push\njobs: {}\n"
    diff = make_patch(git, tmp_path, {".github/workflows/ci.yml": workflow})
    cmd = command(seeded)
    store(deps, cmd, diff)
    git.clear_requests()

    outcome = await run_publish(cmd, deps)

    assert code_of(outcome) == "workflow_scope_missing"
    assert receive_packs(git) == 0
    assert github.pulls(REPO) == []


async def test_secret_in_the_patch_blocks_the_push(
    tmp_path: Path, git: GitSmartHTTPServer, github: FakeGitHub, token: str
) -> None:
    seeded = seed(git, github, token)
    deps = make_deps(tmp_path, git, github, token)
    leaked = 'GITHUB = "ghp_' + "a1B2c3D4e5" * 4 + '"\n'
    diff = make_patch(git, tmp_path, {"src/checkout/config.py": leaked})
    cmd = command(seeded)
    store(deps, cmd, diff)
    git.clear_requests()

    outcome = await run_publish(cmd, deps)

    assert code_of(outcome) == "secret_detected"
    assert "src/checkout/config.py:1" in (
        outcome.error.message if outcome.error else ""
    )
    assert receive_packs(git) == 0


async def test_a_patch_that_no_longer_applies_is_a_conflict(
    tmp_path: Path, git: GitSmartHTTPServer, github: FakeGitHub, token: str
) -> None:
    seeded = seed(git, github, token)
    deps = make_deps(tmp_path, git, github, token)
    diff = make_patch(git, tmp_path, {"README.md": "# shop, changed\n"})
    cmd = command(seeded)
    store(deps, cmd, diff.replace(b"-# shop", b"-# elsewhere"))

    outcome = await run_publish(cmd, deps)

    assert code_of(outcome) == "patch_conflict"
    assert outcome.error is not None
    assert not outcome.error.retryable
    run_dir = artifacts.run_dir(deps.artifacts_root, cmd.run_id)
    assert (run_dir / "patch.diff").is_file()  # kept for review
    assert receive_packs(git) == 0


async def test_a_patch_path_outside_the_run_is_refused_before_anything(
    world: tuple[SeededRepo, Deps, bytes], git: GitSmartHTTPServer
) -> None:
    # Another run's patch sits beside this run's folder; a stage reporting a path
    # that leads there must not get it pushed under this run.
    seeded, deps, diff = world
    other = command(seeded)
    store(deps, other, diff)
    cmd = command(seeded).model_copy(
        update={
            "patch": ArtifactRef(
                path=f"../{other.run_id}/patch.diff", artifact_type="patch"
            )
        }
    )
    git.clear_requests()

    outcome = await run_publish(cmd, deps)

    assert code_of(outcome) == "invalid_message"
    assert receive_packs(git) == 0
