"""The preflight service for real: git over smart HTTP, a GitHub-compatible fake,
`codex login status` in real containers (Podman's Docker API, the real Codex binary)
and, for dead-lettering, the real broker.

`run_discovery` / `run_preflight` get a real `Deps`: the container probe behind a
`ProbeCache(ttl=0)` (every run probes), `FakeSecrets` for the run's keys (the API's
internal endpoint is tested elsewhere), the fakes' URLs and temporary roots.
Needs `make podman` (or `make test-integration`) and `make services`.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from uuid import uuid4

import aio_pika
import aiodocker
import pytest
import pytest_asyncio
from aiodocker.exceptions import DockerError
from fast_depends import dependency_provider
from faststream.rabbit import RabbitBroker
from loguru import logger

from services.preflight.checks import Deps, Outcome, run_discovery, run_preflight
from services.preflight.handlers import get_deps, router
from services.preflight.probe import DockerLoginProbe, LoginProbe, ProbeCache
from shared.messages import (
    CodexPreflight,
    CodexShard,
    DiscoveredTask,
    DiscoverNextPhase,
    PublishMode,
    TaskName,
    TaskSucceeded,
    new_message,
)
from shared.topology import EXCHANGE, Route, declare_topology
from tests.support.containers import (
    ContainerEngine,
    ContainerEngineUnavailable,
    ContainerSettings,
    container_engine,
    create_volume,
    delete_volume,
    write_auth_json,
)
from tests.support.fakes import FakeSecrets
from tests.support.github import FakeGitHub, Role
from tests.support.gitserver import GitSmartHTTPServer
from tests.support.infra import provision
from tests.support.specrepo import (
    DONE_TASK,
    FEATURE_KEY,
    FEATURE_TITLE,
    FIRST_OPEN_TASK,
    PHASES,
    REQUESTED_TASK,
    TASKS,
    UNKNOWN_TASK,
    SeededRepo,
    Variant,
    seed_spec_repo,
)

pytestmark = pytest.mark.timeout(60)

REPO = "acme/shop"
USER = "alice"
PROBE_LABEL = "moonmind.role=codex-login-probe"
API_KEY_AUTH = json.dumps(
    {"auth_mode": "apikey", "OPENAI_API_KEY": "sk-proj-" + "a1B2c3D4e5" * 4}
)
OPEN_TASKS = sum(1 for task in TASKS if not task.done)


def new_token() -> str:
    """Shapeless on purpose: only registration, never a token pattern, could mask it."""
    return f"tok{secrets.token_hex(20)}"


# -- fixtures ---------------------------------------------------------------------


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
    return new_token()


@pytest.fixture
def logs() -> Iterator[list[str]]:
    """Every loguru record of the test, serialized (message and bound fields)."""
    lines: list[str] = []
    sink = logger.add(lines.append, level="DEBUG", serialize=True)
    try:
        yield lines
    finally:
        logger.remove(sink)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def engine() -> ContainerEngine:
    return await container_engine()


@pytest_asyncio.fixture(loop_scope="session")
async def docker(engine: ContainerEngine) -> AsyncIterator[aiodocker.Docker]:
    """A client; afterwards no probe container may be left behind."""
    async with engine.docker() as client:
        yield client
        left = await client.containers.list(
            all="true", filters=json.dumps({"label": [PROBE_LABEL]})
        )
        assert not left, f"probe containers left behind: {[c.id for c in left]}"


@pytest_asyncio.fixture(loop_scope="session")
async def volume(docker: aiodocker.Docker) -> AsyncIterator[str]:
    """A fresh, empty auth volume (deleted afterwards, not forced)."""
    name = await create_volume(docker, f"moonmind-test-{secrets.token_hex(6)}")
    try:
        yield name
    finally:
        await delete_volume(docker, name)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def logged_in_volume(engine: ContainerEngine) -> AsyncIterator[str]:
    """One API-key volume for the GitHub cases (their probes must pass)."""
    async with engine.docker() as client:
        name = await create_volume(client, f"moonmind-test-{secrets.token_hex(6)}")
        try:
            await write_auth_json(client, name, API_KEY_AUTH, image=engine.codex_image)
            yield name
        finally:
            await delete_volume(client, name)


# -- helpers ----------------------------------------------------------------------


def docker_settings() -> tuple[str | None, str]:
    found = ContainerSettings()
    return found.docker_host, found.codex_image or "localhost/codex-unset:0"


def base_image() -> str:
    image = os.environ.get("TEST_BASE_IMAGE")
    if not image:
        raise ContainerEngineUnavailable(
            "TEST_BASE_IMAGE is not set: source var/podman/env.sh"
        )
    return image


def make_deps(
    tmp_path: Path,
    git: GitSmartHTTPServer,
    github: FakeGitHub,
    keys: dict[str, str],
    *,
    probe: LoginProbe | None = None,
    codex_image: str | None = None,
) -> Deps:
    docker_host, image = docker_settings()
    return Deps(
        internal_api=FakeSecrets(keys),
        probes=ProbeCache(probe or DockerLoginProbe(docker_host, image, 60), ttl=0),
        artifacts_root=tmp_path / "artifacts",
        workspaces_root=tmp_path / "workspaces",
        github_api_url=github.url,
        github_git_url=git.base_url,
        git_timeout=30,
        codex_image=codex_image or image,
    )


def seed(
    git: GitSmartHTTPServer,
    github: FakeGitHub,
    token: str,
    variant: Variant = Variant.TYPICAL,
    *,
    role: Role | None = "write",
    scopes: tuple[str, ...] | None = ("repo", "workflow"),
    base_branch: str = "main",
    default_branch: str = "main",
) -> SeededRepo:
    """`acme/shop` on the git server and the GitHub fake; `token` is alice's."""
    seeded = seed_spec_repo(
        git, REPO, variant, base_branch=base_branch, default_branch=default_branch
    )
    github.add_repo(REPO)
    github.add_user(USER, token, scopes=scopes)
    github.grant(USER, REPO, role)
    return seeded


def discover_cmd(repository: str = REPO, **fields: Any) -> DiscoverNextPhase:
    return new_message(
        DiscoverNextPhase,
        run_id=uuid4(),
        task=TaskName.DISCOVER_NEXT_PHASE,
        attempt=1,
        repository=repository,
        feature_key=FEATURE_KEY,
        **fields,
    )


def preflight_cmd(volume: str, repository: str = REPO, **fields: Any) -> CodexPreflight:
    values: dict[str, Any] = {
        "base_branch": "main",
        "base_sha": "0" * 40,
        "shard": CodexShard(
            codex_queue="codex-0", codex_volume=volume, codex_shard_index=0
        ),
        "spec_task": DiscoveredTask(task_id=FIRST_OPEN_TASK, description="d"),
    }
    return new_message(
        CodexPreflight,
        run_id=uuid4(),
        task=TaskName.CODEX_PREFLIGHT,
        attempt=1,
        repository=repository,
        feature_key=FEATURE_KEY,
        **(values | fields),
    )


def artifact(tmp_path: Path, run_id: object, name: str) -> str:
    return (tmp_path / "artifacts" / str(run_id) / name).read_text()


def summary_of(outcome: Outcome) -> dict[str, Any]:
    assert outcome.summary is not None, outcome
    return outcome.summary


def error_of(outcome: Outcome) -> tuple[str, str, bool]:
    assert outcome.error is not None, outcome
    return outcome.error.code, outcome.error.message, outcome.error.retryable


# -- discovery ----------------------------------------------------------------------


async def test_discovery_finds_the_first_open_task(
    tmp_path: Path, git: GitSmartHTTPServer, github: FakeGitHub, token: str
) -> None:
    seeded = seed(git, github, token)
    cmd = discover_cmd(base_branch="main")

    outcome = await run_discovery(
        cmd, make_deps(tmp_path, git, github, {"github": token})
    )

    assert outcome.error is None, outcome.error
    summary = summary_of(outcome)
    first = next(task for task in TASKS if task.id == FIRST_OPEN_TASK)
    assert summary["result"] == "task_found"
    assert summary["base_branch"] == "main"
    assert summary["base_sha"] == seeded.base_sha
    assert summary["discovered"]["task_id"] == FIRST_OPEN_TASK
    assert summary["discovered"]["description"] == first.description
    assert summary["discovered"]["phase"] == PHASES[first.phase]
    assert summary["spec_title"] == FEATURE_TITLE
    assert summary["has_plan"] is True
    assert summary["remaining_tasks"] == OPEN_TASKS
    assert [a.path for a in outcome.artifacts] == ["discovery.json"]
    written = json.loads(artifact(tmp_path, cmd.run_id, "discovery.json"))
    assert written["base_sha"] == seeded.base_sha
    assert written["discovered"]["task_id"] == FIRST_OPEN_TASK
    assert written["tasksPath"] == f"specs/{FEATURE_KEY}/tasks.md"
    assert token not in artifact(tmp_path, cmd.run_id, "discovery.json")
    assert list((tmp_path / "workspaces" / str(cmd.run_id)).glob("discover-*")) == []


async def test_copies_of_one_discovery_command_at_once_all_succeed(
    tmp_path: Path, git: GitSmartHTTPServer, github: FakeGitHub, token: str
) -> None:
    """Found by `make chaos`: two deliveries of one command (a redelivery, an outbox
    row published twice) ran at the same time in one folder and broke each other
    (git_unavailable, feature_not_found)."""
    seed(git, github, token)
    cmd = discover_cmd()
    deps = make_deps(tmp_path, git, github, {"github": token})
    outcomes = await asyncio.gather(*(run_discovery(cmd, deps) for _ in range(4)))

    assert [o.error for o in outcomes] == [None] * 4
    assert len({json.dumps(summary_of(o), sort_keys=True) for o in outcomes}) == 1
    assert list((tmp_path / "workspaces" / str(cmd.run_id)).iterdir()) == []


async def test_discovery_of_a_finished_feature_is_no_work(
    tmp_path: Path, git: GitSmartHTTPServer, github: FakeGitHub, token: str
) -> None:
    seeded = seed(git, github, token, Variant.ALL_DONE)

    outcome = await run_discovery(
        discover_cmd(), make_deps(tmp_path, git, github, {"github": token})
    )

    assert outcome.error is None, outcome.error
    summary = summary_of(outcome)
    assert summary["result"] == "no_work"
    assert summary["discovered"] is None
    assert summary["remaining_tasks"] == 0
    assert summary["base_sha"] == seeded.base_sha


@pytest.mark.parametrize(
    ("variant", "fields", "code", "hint"),
    [
        (Variant.MISSING_FEATURE, {}, "feature_not_found", f"specs/{FEATURE_KEY}/"),
        (Variant.MISSING_TASKS, {}, "tasks_file_missing", "tasks.md"),
        (Variant.BINARY_TASKS, {}, "spec_file_unreadable", "UTF-8"),
        (
            Variant.TYPICAL,
            {"requested_task_id": UNKNOWN_TASK},
            "task_not_found",
            UNKNOWN_TASK,
        ),
        (
            Variant.TYPICAL,
            {"requested_task_id": DONE_TASK},
            "task_already_done",
            DONE_TASK,
        ),
    ],
)
async def test_discovery_failures_name_the_problem(
    tmp_path: Path,
    git: GitSmartHTTPServer,
    github: FakeGitHub,
    token: str,
    variant: Variant,
    fields: dict[str, Any],
    code: str,
    hint: str,
) -> None:
    seed(git, github, token, variant)
    cmd = discover_cmd(**fields)

    outcome = await run_discovery(
        cmd, make_deps(tmp_path, git, github, {"github": token})
    )

    assert error_of(outcome)[0] == code, outcome.error
    assert hint in error_of(outcome)[1]
    assert error_of(outcome)[2] is False
    assert outcome.summary is None
    assert not (tmp_path / "artifacts" / str(cmd.run_id) / "discovery.json").exists()


async def test_discovery_takes_the_requested_task(
    tmp_path: Path, git: GitSmartHTTPServer, github: FakeGitHub, token: str
) -> None:
    seed(git, github, token)
    requested = next(task for task in TASKS if task.id == REQUESTED_TASK)

    outcome = await run_discovery(
        discover_cmd(requested_task_id=REQUESTED_TASK.lower()),
        make_deps(tmp_path, git, github, {"github": token}),
    )

    assert outcome.error is None, outcome.error
    found = summary_of(outcome)["discovered"]
    assert found["task_id"] == REQUESTED_TASK
    assert found["description"] == requested.description
    assert found["phase"] == PHASES[requested.phase]
    assert found["user_story"] == requested.story
    assert found["parallel"] is requested.parallel


async def test_discovery_reads_a_non_default_base_branch(
    tmp_path: Path, git: GitSmartHTTPServer, github: FakeGitHub, token: str
) -> None:
    seeded = seed(git, github, token, base_branch="release/2.0")
    deps = make_deps(tmp_path, git, github, {"github": token})

    on_base = await run_discovery(discover_cmd(base_branch="release/2.0"), deps)
    on_default = await run_discovery(discover_cmd(base_branch=None), deps)

    assert on_base.error is None, on_base.error
    assert summary_of(on_base)["base_branch"] == "release/2.0"
    assert summary_of(on_base)["base_sha"] == seeded.base_sha
    assert summary_of(on_base)["discovered"]["task_id"] == FIRST_OPEN_TASK
    # baseBranch None is the default branch (main), which holds only a README
    assert error_of(on_default)[0] == "feature_not_found"
    assert "main" in error_of(on_default)[1]


async def test_discovery_resolves_the_default_branch(
    tmp_path: Path, git: GitSmartHTTPServer, github: FakeGitHub, token: str
) -> None:
    seeded = seed(git, github, token, base_branch="trunk", default_branch="trunk")

    outcome = await run_discovery(
        discover_cmd(base_branch=None),
        make_deps(tmp_path, git, github, {"github": token}),
    )

    assert outcome.error is None, outcome.error
    assert summary_of(outcome)["base_branch"] == "trunk"
    assert summary_of(outcome)["base_sha"] == seeded.base_sha


@pytest.mark.parametrize("base_branch", ["main", None])
async def test_discovery_of_an_unknown_repository(
    tmp_path: Path,
    git: GitSmartHTTPServer,
    github: FakeGitHub,
    token: str,
    base_branch: str | None,
) -> None:
    seed(git, github, token)

    outcome = await run_discovery(
        discover_cmd("acme/no-such-repo", base_branch=base_branch),
        make_deps(tmp_path, git, github, {"github": token}),
    )

    code, message, retryable = error_of(outcome)
    assert (code, retryable) == ("repository_not_found", False), message
    assert token not in message


async def test_discovery_with_a_bad_token(
    tmp_path: Path, git: GitSmartHTTPServer, github: FakeGitHub, token: str
) -> None:
    seed(git, github, token)
    bad = new_token()

    outcome = await run_discovery(
        discover_cmd(base_branch="main"),
        make_deps(tmp_path, git, github, {"github": bad}),
    )

    code, message, retryable = error_of(outcome)
    assert (code, retryable) == ("git_auth_failed", False), message
    assert bad not in message
    assert git.requests
    assert not any(r.authenticated for r in git.requests)


@pytest.mark.parametrize("base_branch", ["main", None])
async def test_discovery_without_a_token_asks_for_one(
    tmp_path: Path,
    git: GitSmartHTTPServer,
    github: FakeGitHub,
    token: str,
    base_branch: str | None,
) -> None:
    seed(git, github, token)

    outcome = await run_discovery(
        discover_cmd(base_branch=base_branch), make_deps(tmp_path, git, github, {})
    )

    code, message, retryable = error_of(outcome)
    assert (code, retryable) == ("github_token_missing", False), message
    assert "store" in message.lower() or "PUT" in message
    assert "/api/me/credentials/github" in message


@pytest.mark.parametrize("base_branch", ["main", None])
async def test_discovery_when_the_git_server_fails(
    tmp_path: Path,
    git: GitSmartHTTPServer,
    github: FakeGitHub,
    token: str,
    base_branch: str | None,
) -> None:
    seed(git, github, token)
    git.fail_next(1, 503)

    outcome = await run_discovery(
        discover_cmd(base_branch=base_branch),
        make_deps(tmp_path, git, github, {"github": token}),
    )

    code, message, retryable = error_of(outcome)
    assert (code, retryable) == ("git_unavailable", True), message
    assert [r.status for r in git.requests] == [503]


async def test_the_token_never_travels_in_a_url_or_a_log(
    tmp_path: Path,
    git: GitSmartHTTPServer,
    github: FakeGitHub,
    token: str,
    logs: list[str],
) -> None:
    seed(git, github, token)
    cmd = discover_cmd(base_branch=None)  # ls-remote, then fetch

    outcome = await run_discovery(
        cmd, make_deps(tmp_path, git, github, {"github": token})
    )

    assert outcome.error is None, outcome.error
    seen = git.requests
    assert len(seen) >= 2
    # Credentials in a URL would make git try without them first (a 401), then
    # retry: every request authenticated from the first one means a header.
    assert all(r.authenticated and r.token_label == USER for r in seen), seen
    assert {r.status for r in seen} == {200}
    assert not [r for r in seen if token in r.path], seen
    assert token not in repr(seen)
    assert token not in artifact(tmp_path, cmd.run_id, "discovery.json")
    assert token not in repr(outcome)
    assert not [line for line in logs if token in line]


# -- the GitHub check (run_preflight, with a logged-in volume) -----------------------


@pytest.mark.usefixtures("docker")  # no probe container left behind
async def test_github_check_passes_with_push_access(
    tmp_path: Path,
    git: GitSmartHTTPServer,
    github: FakeGitHub,
    token: str,
    logged_in_volume: str,
    logs: list[str],
) -> None:
    seed(git, github, token)
    cmd = preflight_cmd(logged_in_volume)

    outcome = await run_preflight(
        cmd, make_deps(tmp_path, git, github, {"github": token})
    )

    assert outcome.error is None, outcome.error
    summary = summary_of(outcome)
    assert summary["github_status"] == "valid"
    assert summary["codex_status"] == "valid"
    assert "push allowed" in summary["notes"]
    assert [a.path for a in outcome.artifacts] == ["preflight.json"]
    written = artifact(tmp_path, cmd.run_id, "preflight.json")
    assert json.loads(written)["github_status"] == "valid"
    assert token not in written
    assert not [line for line in logs if token in line]
    assert {c.token_label for c in github.calls} == {USER}


@pytest.mark.usefixtures("docker")  # no probe container left behind
@pytest.mark.parametrize(
    ("grant", "publish_mode", "keys", "code", "status"),
    [
        ({}, PublishMode.PR, {"github": "unknown"}, "github_token_invalid", "invalid"),
        ({"role": "read"}, PublishMode.PR, {}, "github_scope_missing", "scope_missing"),
        ({"role": "read"}, PublishMode.NONE, {}, None, "valid"),
        (
            {"scopes": ("read:user", "gist")},
            PublishMode.PR,
            {},
            "github_scope_missing",
            "scope_missing",
        ),
        ({"scopes": None}, PublishMode.PR, {}, None, "valid"),  # fine-grained token
        ({"role": None}, PublishMode.PR, {}, "github_scope_missing", "scope_missing"),
        ({}, PublishMode.PR, {"github": None}, "github_token_missing", "missing"),
    ],
    ids=[
        "bad-token",
        "no-push",
        "no-push-publish-none",
        "classic-without-repo",
        "fine-grained",
        "no-access",
        "no-token",
    ],
)
async def test_github_check_verdicts(
    tmp_path: Path,
    git: GitSmartHTTPServer,
    github: FakeGitHub,
    token: str,
    logged_in_volume: str,
    grant: dict[str, Any],
    publish_mode: PublishMode,
    keys: dict[str, str | None],
    code: str | None,
    status: str,
) -> None:
    seed(git, github, token, **grant)
    stored = {"github": token} | keys
    if stored["github"] == "unknown":
        stored["github"] = new_token()
    found = {k: v for k, v in stored.items() if v is not None}

    outcome = await run_preflight(
        preflight_cmd(logged_in_volume, publish_mode=publish_mode),
        make_deps(tmp_path, git, github, found),
    )

    summary = summary_of(outcome)
    assert summary["codex_status"] == "valid"
    assert summary["github_status"] == status, summary
    if code is None:
        assert outcome.error is None, outcome.error
    else:
        assert error_of(outcome)[0] == code, outcome.error
        assert error_of(outcome)[2] is False


@pytest.mark.usefixtures("docker")  # no probe container left behind
async def test_github_check_finds_a_deleted_base_branch(
    tmp_path: Path,
    git: GitSmartHTTPServer,
    github: FakeGitHub,
    token: str,
    logged_in_volume: str,
) -> None:
    seeded = seed(git, github, token)
    git.git(REPO, "update-ref", "refs/heads/release", seeded.base_sha)
    deps = make_deps(tmp_path, git, github, {"github": token})
    before = await run_preflight(
        preflight_cmd(logged_in_volume, base_branch="release"), deps
    )
    git.git(REPO, "update-ref", "-d", "refs/heads/release")

    after = await run_preflight(
        preflight_cmd(logged_in_volume, base_branch="release"), deps
    )

    assert before.error is None, before.error
    code, message, _ = error_of(after)
    assert code == "base_branch_not_found"
    assert "release" in message
    assert summary_of(after)["github_status"] == "valid"


@pytest.mark.usefixtures("docker")  # no probe container left behind
async def test_github_check_when_github_keeps_failing(
    tmp_path: Path,
    git: GitSmartHTTPServer,
    github: FakeGitHub,
    token: str,
    logged_in_volume: str,
) -> None:
    seed(git, github, token)
    github.fail_next(3, 503)

    outcome = await run_preflight(
        preflight_cmd(logged_in_volume),
        make_deps(tmp_path, git, github, {"github": token}),
    )

    code, _, retryable = error_of(outcome)
    assert (code, retryable) == ("github_unavailable", True)
    assert summary_of(outcome)["github_status"] == "invalid"
    assert [c.status for c in github.calls_to("GET", "/user")] == [503, 503, 503]


@pytest.mark.usefixtures("docker")  # no probe container left behind
async def test_github_check_recovers_from_one_5xx(
    tmp_path: Path,
    git: GitSmartHTTPServer,
    github: FakeGitHub,
    token: str,
    logged_in_volume: str,
) -> None:
    seed(git, github, token)
    github.fail_next(2, 502)

    outcome = await run_preflight(
        preflight_cmd(logged_in_volume),
        make_deps(tmp_path, git, github, {"github": token}),
    )

    assert outcome.error is None, outcome.error
    assert [c.status for c in github.calls_to("GET", "/user")] == [502, 502, 200]


@pytest.mark.usefixtures("docker")  # no probe container left behind
@pytest.mark.parametrize(
    ("stored", "code", "status"),
    [
        ("valid", None, "valid"),
        ("bad", "git_auth_failed", "invalid"),
        ("none", "git_auth_failed", "missing"),
    ],
)
async def test_a_non_github_remote_is_checked_with_ls_remote(
    tmp_path: Path,
    git: GitSmartHTTPServer,
    github: FakeGitHub,
    token: str,
    logged_in_volume: str,
    stored: str,
    code: str | None,
    status: str,
) -> None:
    seeded = seed(git, github, token)
    keys = {"valid": {"github": token}, "bad": {"github": new_token()}, "none": {}}

    outcome = await run_preflight(
        preflight_cmd(logged_in_volume, repository=seeded.clone_url),
        make_deps(tmp_path, git, github, keys[stored]),
    )

    assert summary_of(outcome)["github_status"] == status
    if code is None:
        assert outcome.error is None, outcome.error
        assert "ls-remote: read access" in summary_of(outcome)["notes"]
        assert all(r.authenticated for r in git.requests)
    else:
        assert error_of(outcome)[0] == code, outcome.error
    assert github.calls == []  # not GitHub: the REST API is not asked
    assert git.requests, "ls-remote never reached the git server"


# -- the Codex login probe, for real ---------------------------------------------------


@pytest.mark.parametrize(
    ("content", "code", "codex", "verdict", "state"),
    [
        (API_KEY_AUTH, None, "valid", "ready", "api_key"),
        (None, "codex_login_missing", "missing", "needs_auth", "logged_out"),
        ('{"auth_mode": "apikey", ', "codex_auth_invalid", "invalid", "error", "error"),
        ("{}", "codex_login_missing", "missing", "needs_auth", "logged_out"),
        (
            '{"auth_mode":"apikey","OPENAI_API_KEY":""}',
            "codex_login_missing",
            "missing",
            "needs_auth",
            "logged_out",
        ),
    ],
    ids=["api-key", "empty-volume", "malformed", "empty-object", "empty-key"],
)
async def test_codex_probe_verdicts(
    tmp_path: Path,
    git: GitSmartHTTPServer,
    github: FakeGitHub,
    token: str,
    engine: ContainerEngine,
    docker: aiodocker.Docker,
    volume: str,
    logs: list[str],
    content: str | None,
    code: str | None,
    codex: str,
    verdict: str,
    state: str,
) -> None:
    seed(git, github, token)
    if content is not None:
        await write_auth_json(docker, volume, content, image=engine.codex_image)
    cmd = preflight_cmd(volume)

    outcome = await run_preflight(
        cmd, make_deps(tmp_path, git, github, {"github": token})
    )

    summary = summary_of(outcome)
    assert summary["codex_status"] == codex
    assert summary["github_status"] == "valid"
    assert outcome.volume is not None
    assert (outcome.volume.status, outcome.volume.state) == (verdict, state)
    assert outcome.volume.shard.codex_volume == volume
    assert outcome.volume.run_id == cmd.run_id
    assert len(outcome.volume.output) <= 512
    if content in ("{}", '{"auth_mode":"apikey","OPENAI_API_KEY":""}'):
        assert outcome.volume.exit_code == 0  # exit 0, yet not logged in
    passed = [json.loads(line)["record"] for line in logs]
    checks = [r for r in passed if r["message"].startswith("Codex pre-flight check")]
    assert len(checks) == 1, checks
    assert checks[0]["extra"]["codex_volume"] == volume
    assert checks[0]["extra"]["exit_code"] == outcome.volume.exit_code
    if code is None:
        assert outcome.error is None, outcome.error
        assert checks[0]["message"] == "Codex pre-flight check passed"
        assert "sk-proj-a1B2c3D4e5a1B2" not in json.dumps(summary)
    else:
        got, message, retryable = error_of(outcome)
        assert (got, retryable) == (code, False), message
        assert checks[0]["message"] == "Codex pre-flight check failed"
        assert volume in message
        assert f"-v {volume}:/home/app/.codex" in message
        assert "codex login" in message


async def test_codex_probe_of_a_missing_volume_does_not_create_it(
    tmp_path: Path,
    git: GitSmartHTTPServer,
    github: FakeGitHub,
    token: str,
    docker: aiodocker.Docker,
) -> None:
    seed(git, github, token)
    missing = f"moonmind-test-missing-{secrets.token_hex(6)}"

    outcome = await run_preflight(
        preflight_cmd(missing), make_deps(tmp_path, git, github, {"github": token})
    )

    code, message, retryable = error_of(outcome)
    assert (code, retryable) == ("codex_volume_missing", False)
    assert missing in message
    assert summary_of(outcome)["codex_status"] == "missing"
    assert outcome.volume is not None
    assert (outcome.volume.status, outcome.volume.state) == (
        "needs_auth",
        "volume_missing",
    )
    with pytest.raises(DockerError) as absent:
        await docker.volumes.get(missing)  # type: ignore[no-untyped-call]
    assert absent.value.status == 404


async def test_codex_probe_with_a_missing_image(
    tmp_path: Path,
    git: GitSmartHTTPServer,
    github: FakeGitHub,
    token: str,
    engine: ContainerEngine,
    volume: str,
) -> None:
    seed(git, github, token)
    image = f"localhost/moonmind-no-such-image:{secrets.token_hex(4)}"
    probe = DockerLoginProbe(engine.url, image, 60)

    outcome = await run_preflight(
        preflight_cmd(volume),
        make_deps(
            tmp_path, git, github, {"github": token}, probe=probe, codex_image=image
        ),
    )

    code, message, retryable = error_of(outcome)
    assert (code, retryable) == ("codex_image_missing", False)
    assert image in message
    assert summary_of(outcome)["codex_status"] == "invalid"
    assert outcome.volume is not None
    assert (outcome.volume.status, outcome.volume.state) == ("error", "image_missing")


async def test_codex_probe_timeout_leaves_no_container(
    tmp_path: Path,
    git: GitSmartHTTPServer,
    github: FakeGitHub,
    token: str,
    engine: ContainerEngine,
    volume: str,
) -> None:
    seed(git, github, token)
    probe = DockerLoginProbe(
        engine.url, base_image(), timeout=1, command=("sleep", "30")
    )
    started = time.monotonic()

    outcome = await run_preflight(
        preflight_cmd(volume),
        make_deps(tmp_path, git, github, {"github": token}, probe=probe),
    )

    assert time.monotonic() - started < 15
    code, _, retryable = error_of(outcome)
    assert (code, retryable) == ("codex_probe_unavailable", True)
    assert summary_of(outcome)["codex_status"] == "invalid"
    assert outcome.volume is not None
    assert (outcome.volume.status, outcome.volume.state) == ("error", "timeout")
    # the `docker` fixture then checks that no probe container is left


async def test_codex_probe_mounts_the_volume_read_only(
    engine: ContainerEngine, docker: aiodocker.Docker, volume: str
) -> None:
    await write_auth_json(docker, volume, API_KEY_AUTH, image=engine.codex_image)
    probe = DockerLoginProbe(
        engine.url,
        base_image(),
        timeout=30,
        command=(
            "sh",
            "-c",
            "rm -f /home/app/.codex/auth.json; touch /home/app/.codex/x",
        ),
    )

    result = await probe.probe(volume)

    assert (result.state, result.exit_code) == ("error", 1), result
    assert "Read-only file system" in result.output
    after = await DockerLoginProbe(engine.url, engine.codex_image, 60).probe(volume)
    assert after.state == "api_key", after  # auth.json is still there


async def test_codex_api_key_mode_when_not_logged_in(
    tmp_path: Path,
    git: GitSmartHTTPServer,
    github: FakeGitHub,
    token: str,
    volume: str,
    logs: list[str],
) -> None:
    seed(git, github, token)
    keys = {"github": token, "openai": "sk-proj-" + "Z9y8X7w6V5" * 4}

    outcome = await run_preflight(
        preflight_cmd(volume), make_deps(tmp_path, git, github, keys)
    )

    assert outcome.error is None, outcome.error
    summary = summary_of(outcome)
    assert summary["codex_status"] == "valid"
    assert "API-key mode" in summary["notes"]
    assert outcome.volume is not None
    assert (outcome.volume.status, outcome.volume.state) == ("needs_auth", "logged_out")
    records = [json.loads(line)["record"] for line in logs]
    checks = [r["message"] for r in records if "pre-flight check" in r["message"]]
    # The check passed (API-key mode): the log line must say so.
    assert checks == ["Codex pre-flight check passed"], checks


# -- dead-lettering on the real broker ------------------------------------------------


async def next_message(
    queue: aio_pika.abc.AbstractQueue,
    timeout: float,  # noqa: ASYNC109 - expiry is an AssertionError
) -> aio_pika.abc.AbstractIncomingMessage:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        message = await queue.get(fail=False)
        if message is not None:
            await message.ack()
            return message
        await asyncio.sleep(0.1)
    raise AssertionError(f"nothing arrived on {queue.name} within {timeout:g}s")


async def drain(
    queue: aio_pika.abc.AbstractQueue,
    expected: int,
    timeout: float,  # noqa: ASYNC109 - expiry is an AssertionError
) -> list[aio_pika.abc.AbstractIncomingMessage]:
    """Every message until `expected` arrived, then one more second for extras."""
    found: list[aio_pika.abc.AbstractIncomingMessage] = []
    deadline = time.monotonic() + timeout
    settle: float | None = None
    while time.monotonic() < (settle or deadline):
        message = await queue.get(fail=False)
        if message is None:
            await asyncio.sleep(0.1)
            continue
        await message.ack()
        found.append(message)
        if len(found) == expected:
            settle = time.monotonic() + 1.0
    assert len(found) == expected, [m.body for m in found]
    return found


async def test_malformed_commands_are_dead_lettered_and_the_service_keeps_going(
    tmp_path: Path, git: GitSmartHTTPServer, github: FakeGitHub, token: str
) -> None:
    seeded = seed(git, github, token)
    deps = make_deps(tmp_path, git, github, {"github": token})
    bad_bodies = [b"this is not json {", json.dumps({"hello": "world"}).encode()]
    good = discover_cmd(base_branch="main")

    async with provision() as infra:
        broker = RabbitBroker(infra.rabbitmq_url)
        broker.include_router(router)
        with dependency_provider.scope(get_deps, lambda: deps):
            await broker.connect()
            await declare_topology(broker, shards=1)
            await broker.start()
            connection = await aio_pika.connect(infra.rabbitmq_url)
            try:
                channel = await connection.channel()
                exchange = await channel.get_exchange(EXCHANGE.name)
                succeeded = await channel.declare_queue(exclusive=True)
                await succeeded.bind(exchange, Route.TASK_SUCCEEDED)
                for body in bad_bodies:
                    await exchange.publish(
                        aio_pika.Message(body, content_type="application/json"),
                        routing_key=Route.DISCOVER_NEXT_PHASE,
                    )
                await exchange.publish(
                    aio_pika.Message(
                        good.model_dump_json().encode(),
                        content_type="application/json",
                    ),
                    routing_key=Route.DISCOVER_NEXT_PHASE,
                )
                event = await next_message(succeeded, timeout=20)
                dead_queue = await channel.get_queue("api.dead_letters")
                dead = await drain(dead_queue, expected=2, timeout=15)
            finally:
                await connection.close()
                await broker.stop()

    done = TaskSucceeded.model_validate_json(event.body)
    assert done.run_id == good.run_id
    assert done.summary["result"] == "task_found"
    assert done.summary["base_sha"] == seeded.base_sha
    assert sorted(m.body for m in dead) == sorted(bad_bodies)
    for message in dead:
        death = (message.headers or {}).get("x-first-death-queue")
        assert death == "preflight.discover_next_phase", message.headers
