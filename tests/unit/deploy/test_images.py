"""The service image, the Codex image and `make compose-up`, against the code."""

from __future__ import annotations

import re
import shlex
from pathlib import Path, PurePosixPath
from uuid import uuid4

from services.codex_runner.agent import (
    CONTAINER_AGENT_HOME,
    CONTAINER_OUTPUT,
    CONTAINER_WORKSPACE,
    AgentRun,
)
from services.codex_runner.codex import CodexAgent
from services.codex_runner.executors.container import APP_GID, APP_UID
from services.codex_runner.settings import Settings as CodexSettings
from services.preflight.probe import CODEX_HOME as PROBE_CODEX_HOME
from services.preflight.settings import Settings as PreflightSettings
from tests.unit.deploy import compose

ROOT = compose.ROOT
SERVICE_DOCKERFILE = ROOT / "Dockerfile"
CODEX_DOCKERFILE = ROOT / "images" / "codex" / "Dockerfile"
INSTALL_CODEX = ROOT / ".ci" / "install-codex.sh"


def instructions(path: Path, *, final_stage: bool = True) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, continuations joined, comments dropped;
    only the last stage's when `final_stage`."""
    lines: list[str] = []
    pending = ""
    for line in path.read_text().splitlines():
        if line.lstrip().startswith("#") or not line.strip():
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        lines.append(pending + line)
        pending = ""
    parsed = [(ln.split(None, 1)[0].upper(), ln.split(None, 1)[1]) for ln in lines]
    if final_stage:
        last_from = max(i for i, (op, _) in enumerate(parsed) if op == "FROM")
        parsed = parsed[last_from:]
    return parsed


def values(path: Path, instruction: str) -> list[str]:
    return [args for op, args in instructions(path) if op == instruction]


def pinned_codex_version() -> str:
    match = re.search(
        r"^CODEX_VERSION=\$\{CODEX_VERSION:-([0-9][^}]*)\}$",
        INSTALL_CODEX.read_text(),
        flags=re.MULTILINE,
    )
    assert match is not None
    return match.group(1)


def test_codex_image_pins_the_ci_codex_version() -> None:
    version = pinned_codex_version()
    args = [a for op, a in instructions(CODEX_DOCKERFILE, final_stage=False)]
    assert f"CODEX_VERSION={version}" in args
    assert any('"@openai/codex@${CODEX_VERSION}"' in a for a in args)
    # the default tag of the image every component runs
    for default in (
        CodexSettings.model_fields["codex_image"].default,
        PreflightSettings.model_fields["codex_image"].default,
        compose.env_example()["CODEX_IMAGE"],
    ):
        assert default.endswith(f":{version}"), default


def test_codex_image_layout_matches_the_runner_and_the_probe() -> None:
    home = PurePosixPath(CONTAINER_AGENT_HOME).parent
    run = " ".join(values(CODEX_DOCKERFILE, "RUN"))
    assert f"useradd --uid {APP_UID} --gid {APP_GID} --home-dir {home}" in run
    for directory in (CONTAINER_AGENT_HOME, CONTAINER_OUTPUT, CONTAINER_WORKSPACE):
        assert re.search(rf"mkdir -p [^&]*{re.escape(directory)}\b", run), directory
    assert f"chown -R {APP_UID}:{APP_GID} {home} {CONTAINER_WORKSPACE}" in run
    assert values(CODEX_DOCKERFILE, "USER")[-1] in (f"{APP_UID}:{APP_GID}", "app")
    assert values(CODEX_DOCKERFILE, "WORKDIR")[-1] == CONTAINER_WORKSPACE
    env = " ".join(values(CODEX_DOCKERFILE, "ENV"))
    run_ = AgentRun(uuid4(), 1, Path("/w"), Path("/o"), "task", "codex_auth_0")
    agent_env = CodexAgent("image").environment(run_, CONTAINER_AGENT_HOME)
    assert f"HOME={agent_env['HOME']}" in env
    assert f"CODEX_HOME={PROBE_CODEX_HOME}" in env
    assert PROBE_CODEX_HOME == CONTAINER_AGENT_HOME
    assert "tini" in values(CODEX_DOCKERFILE, "ENTRYPOINT")[-1]
    assert re.search(r"\bgit\b", run)  # the workspace is a git clone
    assert "ln -s /opt/codex/bin/codex /usr/local/bin/codex" in run


def test_service_image_has_git_and_runs_as_the_agent_uid() -> None:
    run = " ".join(values(SERVICE_DOCKERFILE, "RUN"))
    installs = re.findall(r"apt-get install ([^&]*)", run)
    packages = set(shlex.split(" ".join(installs)))
    assert {"git", "tini", "ca-certificates"} <= packages
    # uid 1000 = the Codex containers' user: the shared workspaces need no chown
    assert f"useradd --uid {APP_UID} --gid {APP_GID}" in run
    user = values(SERVICE_DOCKERFILE, "USER")[-1]
    assert user not in ("root", "0")
    assert not user.startswith("0:")
    assert "tini" in values(SERVICE_DOCKERFILE, "ENTRYPOINT")[-1]


def test_dockerignore_keeps_local_settings_and_clutter_out() -> None:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    patterns = {ln.strip() for ln in lines if not ln.lstrip().startswith("#")}
    assert {".env", ".git", ".venv", "var", "tests"} <= patterns


def test_make_compose_up_runs_the_one_shots_then_the_rest() -> None:
    makefile = (ROOT / "Makefile").read_text()
    recipe = re.search(r"^compose-up:.*\n((?:\t.*\n)+)", makefile, flags=re.MULTILINE)
    assert recipe is not None
    steps = recipe.group(1)
    found = compose.load(compose.operator_env())["services"]
    one_shots = {
        n for n, s in found.items() if s.get("restart") == "no" and "profiles" not in s
    }
    for name in one_shots:
        assert f"docker compose run --rm --no-deps {name}\n" in steps, name
    last = steps.strip().splitlines()[-1]
    excluded = set(re.search(r"grep -vxE '([^']*)'", last).group(1).split("|"))  # type: ignore[union-attr]
    assert excluded == {"rabbitmq", "postgres", *one_shots}
    assert "--profile codex-image build" in steps
    assert re.search(r"^compose-up compose-down: export DOCKER_GID", makefile, re.M)
