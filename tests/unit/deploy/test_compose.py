"""docker-compose.yml: valid Compose, and wired the way the services need it.

No Docker engine here: the file is parsed and interpolated as compose would
(tests/unit/deploy/compose.py) and checked against the Compose Specification schema and
against the settings, constants and defaults the code actually reads.
"""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import pytest

from services.codex_runner.executors.container import APP_GID, APP_UID
from services.codex_runner.settings import Settings as CodexSettings
from shared import liveness
from shared.routing import codex_volume_name
from shared.settings import ServiceSettings
from tests.unit.deploy import compose
from tests.unit.shared.test_settings import SETTINGS, documented, names_read

REQUIRED_SECRETS = compose.REQUIRED_SECRETS
ENV = compose.operator_env()

SERVICES = {
    "rabbitmq",
    "postgres",
    "storage-init",
    "migrate",
    "api",
    "relay",
    "preflight",
    "codex_runner",
    "publisher",
    "statsd",
    "codex-image",
}
ONE_SHOTS = {"storage-init", "migrate"}
WORKERS = {"preflight", "codex_runner", "publisher"}
DOCKER_SOCKET_USERS = {"preflight", "codex_runner"}
PROJECT = "spec-workflow"


def services(env: dict[str, str] | None = None) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = compose.load(ENV if env is None else env)[
        "services"
    ]
    return found


def ours(env: dict[str, str] | None = None) -> dict[str, dict[str, Any]]:
    """The services built from this repository's Dockerfile."""
    return {n: s for n, s in services(env).items() if s.get("build") == "."}


def long_running(found: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {n: s for n, s in found.items() if s.get("restart") != "no"}


def test_compose_file_is_valid_against_the_compose_spec() -> None:
    validator = jsonschema.Draft202012Validator(compose.schema())
    # As written (the schema admits `${...}` strings) and as compose interpolates it.
    for document in (compose.raw(), compose.load(ENV)):
        errors = [
            f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
            for e in validator.iter_errors(document)
        ]
        assert errors == []


def test_the_stack_has_the_production_services() -> None:
    document = compose.load(ENV)
    assert document["name"] == PROJECT
    found = document["services"]
    assert set(found) == SERVICES
    assert found["statsd"]["profiles"] == ["metrics"]
    assert found["codex-image"]["profiles"] == ["codex-image"]
    assert [n for n, s in found.items() if "profiles" in s] == ["statsd", "codex-image"]
    assert "setup" not in found  # renamed: migrate
    assert found["migrate"]["command"][-1] == (
        "spec-workflow broker setup && spec-workflow db upgrade"
    )
    assert {n for n, s in found.items() if s.get("restart") == "no"} == {
        *ONE_SHOTS,
        "codex-image",
    }


def test_only_preflight_and_the_codex_runner_reach_the_docker_socket() -> None:
    found = services()
    socket_users = {
        name
        for name, service in found.items()
        for mount in compose.mounts(service)
        if "docker.sock" in mount.source or "docker.sock" in mount.target
    }
    assert socket_users == DOCKER_SOCKET_USERS
    assert {n for n, s in found.items() if "group_add" in s} == DOCKER_SOCKET_USERS
    for name in DOCKER_SOCKET_USERS:
        assert found[name]["group_add"] == [REQUIRED_SECRETS["DOCKER_GID"]]
        assert found[name]["environment"]["DOCKER_HOST"] == (
            "unix:///var/run/docker.sock"
        )
    assert not any(s.get("privileged") for s in found.values())


def test_every_long_running_service_has_a_health_check() -> None:
    for name, service in long_running(services()).items():
        check = service.get("healthcheck", {})
        assert check.get("test"), name
        assert not check.get("disable"), name


def test_depends_on_waits_for_health_or_for_a_finished_one_shot() -> None:
    found = services()
    for name, service in found.items():
        for target, dependency in service.get("depends_on", {}).items():
            condition = dependency["condition"]
            if condition == "service_completed_successfully":
                assert target in ONE_SHOTS, (name, target)
                assert found[target]["restart"] == "no"
            else:
                assert condition == "service_healthy", (name, target)
                assert "healthcheck" in found[target], (name, target)
    for name in long_running(ours()):
        assert found[name]["depends_on"]["migrate"] == {
            "condition": "service_completed_successfully"
        }
    for name in [*WORKERS, "api"]:
        assert "storage-init" in found[name]["depends_on"], name
    for name in WORKERS:  # they call /internal from the start (secrets, shard claim)
        assert found[name]["depends_on"]["api"] == {"condition": "service_healthy"}


def test_every_environment_name_is_a_documented_setting() -> None:
    read = set().union(*(names_read(cls) for cls in SETTINGS))
    for name, service in ours().items():
        names = set(service.get("environment", {}))
        assert names - read == set(), name
        assert names - documented() == set(), name


@pytest.mark.parametrize(
    ("shell", "project"),
    [({}, PROJECT), ({"COMPOSE_PROJECT_NAME": "sw-prod"}, "sw-prod")],
)
def test_codex_volume_prefix_names_the_volumes_compose_creates(
    shell: dict[str, str], project: str
) -> None:
    document = compose.load({**ENV, **shell})
    volumes = document["volumes"]
    init_volumes = {
        m.source for m in compose.mounts(document["services"]["storage-init"])
    }
    default_shards = ServiceSettings.model_fields["codex_shards"].default
    for name, service in ours({**ENV, **shell}).items():
        environment = service.get("environment", {})
        if "CODEX_VOLUME_PREFIX" not in environment:
            continue
        prefix = environment["CODEX_VOLUME_PREFIX"]
        shards = int(environment["CODEX_SHARDS"])
        assert shards == default_shards, name
        settings = ServiceSettings(
            RABBITMQ_URL="amqp://guest:guest@127.0.0.1:5672/",
            CODEX_VOLUME_PREFIX=prefix,
        )
        for n in range(shards):
            # compose names a declared volume `<project>_<key>` unless it says otherwise
            assert f"codex_auth_{n}" in volumes, n
            assert not (volumes[f"codex_auth_{n}"] or {}).get("name"), n
            assert f"codex_auth_{n}" in init_volumes, n  # so compose creates it
            created = f"{project}_codex_auth_{n}"
            assert codex_volume_name(n, settings.codex_volume_prefix) == created
    auth_volumes = {v for v in volumes if v.startswith("codex_auth_")}
    assert auth_volumes == {f"codex_auth_{n}" for n in range(default_shards)}


@pytest.mark.parametrize("data_dir", [None, "/srv/spec-workflow"])
def test_workspaces_and_artifacts_are_mounted_at_their_host_path(
    data_dir: str | None,
) -> None:
    env = ENV if data_dir is None else {**ENV, "SPEC_WORKFLOW_DATA_DIR": data_dir}
    found = ours(env)
    checked = set()
    for name, service in found.items():
        environment = service.get("environment", {})
        for setting in ("ARTIFACTS_ROOT", "WORKSPACES_ROOT"):
            if setting not in environment:
                continue
            path = PurePosixPath(environment[setting])
            assert path.is_absolute(), (name, setting)
            if data_dir is not None:
                assert path.is_relative_to(data_dir)
            # The runner hands these paths to the host's engine as bind sources for
            # the Codex containers: inside and outside they must be the same path.
            assert any(
                m.kind == "bind"
                and m.source == m.target
                and path.is_relative_to(m.target)
                for m in compose.mounts(service)
            ), (name, setting, str(path))
            checked.add((name, setting))
    for name in ("codex_runner", "preflight", "publisher", "storage-init"):
        assert {(name, "ARTIFACTS_ROOT"), (name, "WORKSPACES_ROOT")} <= checked
    assert ("api", "ARTIFACTS_ROOT") in checked


def test_storage_init_hands_the_data_dir_and_logins_to_the_agent_uid() -> None:
    init = services()["storage-init"]
    assert init["user"] == "0:0"  # the only service that runs as root, once
    command = init["command"][-1]
    assert f"chown {APP_UID}:{APP_GID} " in command
    for setting in ("ARTIFACTS_ROOT", "WORKSPACES_ROOT"):
        assert setting in init["environment"]
        assert f'"${setting}"' in command, setting  # `$$` in the file: the shell's $
    auth = [m for m in compose.mounts(init) if m.source.startswith("codex_auth_")]
    assert auth
    assert all(m.target.startswith("/codex-auth/") for m in auth)
    assert "/codex-auth/*" in command
    others = {n for n, s in services().items() if s.get("user")} - {"storage-init"}
    assert others == set()


def test_required_secrets_fail_loudly() -> None:
    source = compose.text()
    for name in REQUIRED_SECRETS:
        uses = re.findall(rf"\$\{{?{name}\b(..)?", source)
        assert uses, name
        assert set(uses) == {":?"}, (name, uses)  # never a default, never optional
        without = {k: v for k, v in ENV.items() if k != name}
        with pytest.raises(compose.MissingVariable) as missing:
            compose.load(without)
        assert missing.value.name == name
        with pytest.raises(compose.MissingVariable):
            compose.load({**without, name: ""})  # `:?` also refuses an empty value
    found = services()
    assert found["api"]["environment"]["SECRETS_KEY"] == REQUIRED_SECRETS["SECRETS_KEY"]
    for name in ["api", *WORKERS]:
        token = found[name]["environment"]["INTERNAL_API_TOKEN"]
        assert token == REQUIRED_SECRETS["INTERNAL_API_TOKEN"], name


def test_codex_runner_is_one_scalable_service() -> None:
    runner = services()["codex_runner"]
    for fixed in ("container_name", "hostname", "ports"):
        assert fixed not in runner  # each would stop `--scale codex_runner=N`
    environment = runner["environment"]
    assert environment["CODEX_SHARD_INDEX"] == ""  # every replica claims a shard
    assert environment["EXECUTOR"] == "docker"
    assert int(runner["deploy"]["replicas"]) == int(environment["CODEX_SHARDS"])
    five = services({**ENV, "CODEX_SHARDS": "5"})["codex_runner"]
    assert five["deploy"]["replicas"] == five["environment"]["CODEX_SHARDS"] == "5"


def test_stop_grace_outlasts_the_graceful_timeout() -> None:
    graceful = ServiceSettings.model_fields["graceful_timeout"].default
    for name, service in long_running(ours()).items():
        assert compose.seconds(service["stop_grace_period"]) >= graceful + 10, name


def test_health_check_reads_the_liveness_file_the_process_touches() -> None:
    found = long_running(ours())
    assert set(found) == {"api", "relay", *WORKERS}
    for name, service in found.items():
        if name == "api":  # it has HTTP: GET /readyz
            assert "/readyz" in service["healthcheck"]["test"][-1]
            continue
        path = service["environment"]["LIVENESS_FILE"]
        test = service["healthcheck"]["test"]
        assert test[:5] == ["CMD", "python", "-m", "shared.liveness", path], name
        max_age = float(test[5])
        assert max_age >= 3 * liveness.INTERVAL, name  # a slow beat is no failure
        assert compose.seconds(service["healthcheck"]["interval"]) < max_age


def test_rabbitmq_consumer_timeout_outlasts_a_codex_run() -> None:
    rabbitmq = services()["rabbitmq"]
    config = [m for m in compose.mounts(rabbitmq) if m.source.startswith("./deploy/")]
    assert len(config) == 1
    assert config[0].target.startswith("/etc/rabbitmq/conf.d/")
    assert config[0].target.endswith(".conf")
    text = (compose.ROOT / config[0].source).read_text()
    values = dict(re.findall(r"^([a-z_.]+)\s*=\s*(\S+)", text, flags=re.MULTILINE))
    # A job waits unacked in the runner's prefetch slot while the shard's running job
    # finishes: up to CODEX_TIMEOUT, plus clone and patch time.
    codex_timeouts = [
        CodexSettings.model_fields["codex_timeout"].default,
        float(ENV.get("CODEX_TIMEOUT", 0)),
    ]
    assert int(values["consumer_timeout"]) >= (max(codex_timeouts) + 900) * 1000


def test_codex_image_is_built_under_the_tag_the_workers_use() -> None:
    found = services()
    image = found["codex-image"]
    assert image["build"] == "images/codex"
    assert (compose.ROOT / image["build"] / "Dockerfile").is_file()
    for name in DOCKER_SOCKET_USERS:
        assert found[name]["environment"]["CODEX_IMAGE"] == image["image"], name
    custom = services({**ENV, "CODEX_IMAGE": "registry.local/codex:1"})
    assert custom["codex-image"]["image"] == "registry.local/codex:1"
    assert custom["codex_runner"]["environment"]["CODEX_IMAGE"] == (
        "registry.local/codex:1"
    )


def test_interpolation_follows_the_compose_rules() -> None:
    env = {"SET": "v", "EMPTY": ""}
    cases = {
        "$$SET": "$SET",
        "$SET/${SET}": "v/v",
        "${UNSET:-d}|${EMPTY:-d}|${EMPTY-d}|${SET:-d}": "d|d||v",
        "${UNSET:-${SET}x}": "vx",
        "${SET:+alt}|${EMPTY:+alt}|${EMPTY+alt}": "alt||alt",
    }
    for source, expected in cases.items():
        assert compose.interpolate(source, env) == expected, source
    with pytest.raises(compose.MissingVariable, match="UNSET"):
        compose.interpolate("${UNSET:?say so}", env)
    assert compose.interpolate("${EMPTY?fine}", env) == ""
    assert compose.seconds("1m30s") == 90


def test_the_schema_is_the_vendored_compose_spec() -> None:
    schema = compose.schema()
    assert schema["title"] == "Compose Specification"
    readme = Path(compose.SCHEMA_FILE).with_name("README.md").read_text()
    assert "check-jsonschema" in readme
    # It rejects what compose rejects: an unknown key in a service.
    broken = compose.load(ENV)
    broken["services"]["api"]["heathcheck"] = {}
    validator = jsonschema.Draft202012Validator(schema)
    assert not validator.is_valid(broken)
