"""Schemathesis against the API's own OpenAPI document: no 5xx, no response that
breaks the schema, as every kind of caller.

Runs in the sandbox stack (its own database and vhost): the fuzzer creates runs,
stores and deletes keys and claims shards, which would disturb the session's tests.
Deterministic (derandomized Hypothesis) and bounded: MAX_EXAMPLES per operation
and generation mode (positive and negative); about 1,500 requests, 10-40 s.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from typing import Any

import pytest
import pytest_asyncio

from shared.messages import TaskName
from tests.support.api import RUNS, wait_for
from tests.support.canary import INTERNAL_TOKEN
from tests.support.fuzzing import Report, Target, fuzz, load_schema
from tests.support.sandbox import Principal, Sandbox

MAX_EXAMPLES = 15
"""Per operation and generation mode, for callers that get past authentication."""
REFUSED_EXAMPLES = 5
"""The same for callers every non-public route refuses."""
PUBLIC = {"GET /healthz", "GET /readyz"}
SERVICE = {"Authorization": f"Bearer {INTERNAL_TOKEN}"}
VALID_FIELDS: dict[str, list[Any]] = {
    "repository": ["acme/fuzz", "https://git.example/a/fuzz.git", "file:///srv/fuzz"],
    "featureKey": ["fz-1", "fz-2", "fz-3"],
    "baseBranch": ["main", None],
    "taskId": ["T002", None],
    "notes": ["fuzzed", None],
}
"""Fields whose rules the OpenAPI document does not spell out (validators)."""
PAST_VALIDATION = {200, 202, 204, 404, 409}


def internal(label: str) -> bool:
    return label.split(" ", 1)[1].startswith("/internal/")


@dataclass(frozen=True)
class World:
    schema: Any
    user: Principal
    user_known: dict[str, list[str]]
    default_known: dict[str, list[str]]


async def _runs(
    sandbox: Sandbox, headers: dict[str, str] | None, client_token: bool
) -> dict[str, list[str]]:
    """A succeeded run (with an artifact) and a failed one; their ids and artifacts."""
    client = sandbox.token_api if client_token else sandbox.api
    failing = f"fz-fail-{uuid.uuid4().hex[:8]}"
    sandbox.stages.script(failing, fail_at=TaskName.SUBMIT_CODEX_JOB)
    ids = []
    for feature in (f"fz-ok-{uuid.uuid4().hex[:8]}", failing):
        created = await client.post(
            RUNS,
            json={"repository": "acme/fuzz", "featureKey": feature},
            headers=headers,
        )
        assert created.status_code == 202, created.text
        ids.append(created.json()["id"])
    artifacts = []
    for run_id in ids:
        await wait_for(client, run_id, headers=headers)
        listed = await client.get(f"{RUNS}/{run_id}/artifacts", headers=headers)
        artifacts += [a["id"] for a in listed.json()["items"]]
    assert artifacts, "the succeeded run has a patch artifact"
    return {"run_id": ids, "artifact_id": artifacts, **VALID_FIELDS}


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def world(sandbox: Sandbox) -> World:
    schema = load_schema(sandbox.token_app.openapi())
    user = await sandbox.new_user()
    return World(
        schema,
        user,
        await _runs(sandbox, user.headers, client_token=True),
        await _runs(sandbox, None, client_token=False),
    )


async def run_fuzz(
    target: Target, world: World, examples: int, **options: Any
) -> Report:
    report = await asyncio.to_thread(
        fuzz, world.schema, target, max_examples=examples, **options
    )
    print(report.summary())  # noqa: T201 - shown with -s / on failure
    findings = "\n".join(str(f) for f in report.findings.values())
    assert not report.findings, f"schemathesis found:\n{findings}"
    assert report.sent > 0
    return report


def answered_below_400(report: Report, labels: set[str]) -> list[str]:
    return sorted(
        f"{label} -> {status}"
        for (label, status) in report.statuses
        if label in labels and status < 400
    )


def assert_went_deep(report: Report) -> None:
    """Every /api operation got past authentication and validation at least once."""
    labels = {label for label, _ in report.statuses if not internal(label)}
    deep = {op for op in labels if report.seen(op) & PAST_VALIDATION}
    assert deep == labels, f"never past validation: {sorted(labels - deep)}"
    assert 202 in report.seen("POST /api/workflows/speckit/runs")


async def test_fuzz_as_a_token_user(sandbox: Sandbox, world: World) -> None:
    loop = asyncio.get_running_loop()
    target = Target(sandbox.token_api, loop, world.user.headers, world.user_known)
    report = await run_fuzz(target, world, MAX_EXAMPLES)
    assert_went_deep(report)
    internal_ops = {label for label, _ in report.statuses if internal(label)}
    assert answered_below_400(report, internal_ops) == []  # not the service token


async def test_fuzz_as_the_default_user_in_disabled_mode(
    sandbox: Sandbox, world: World
) -> None:
    loop = asyncio.get_running_loop()
    target = Target(sandbox.api, loop, {}, world.default_known)
    report = await run_fuzz(target, world, MAX_EXAMPLES)
    assert_went_deep(report)
    internal_ops = {label for label, _ in report.statuses if internal(label)}
    assert answered_below_400(report, internal_ops) == []  # still needs the token


async def test_fuzz_with_the_service_token_on_the_internal_api(
    sandbox: Sandbox, world: World
) -> None:
    loop = asyncio.get_running_loop()
    target = Target(sandbox.token_api, loop, SERVICE, world.default_known)
    report = await run_fuzz(target, world, MAX_EXAMPLES, only=internal)
    for label in {label for label, _ in report.statuses}:
        assert 200 in report.seen(label), f"{label}: never 200"


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer sw_unknown-token-0123456789", f"Bearer {INTERNAL_TOKEN}"],
    ids=["anonymous", "wrong-token", "service-token"],
)
async def test_fuzz_refused_callers_get_no_data(
    sandbox: Sandbox, world: World, authorization: str | None
) -> None:
    """No input gets a refused caller past authentication: every answer but health
    is an error body (the service token opens /internal only)."""
    headers = {"Authorization": authorization} if authorization else {}
    loop = asyncio.get_running_loop()
    target = Target(sandbox.token_api, loop, headers, world.user_known)
    only = (lambda label: not internal(label)) if authorization else (lambda _: True)
    report = await run_fuzz(
        target, world, REFUSED_EXAMPLES, only=only, keep_responses=True
    )
    labels = {label for label, _ in report.statuses}
    assert answered_below_400(report, labels - PUBLIC) == []
    for label, response in report.responses:
        if label not in PUBLIC:
            assert response.json()["detail"]["code"], (label, response.text)


async def test_openapi_documents_the_error_shape_we_send(sandbox: Sandbox) -> None:
    """Regression: every 422 was documented as FastAPI's `{"detail": [...]}` while
    the API answers `{"detail": {"code", "message", "errors"}}`."""
    document = sandbox.token_app.openapi()
    assert "HTTPValidationError" not in str(document)
    create = document["paths"]["/api/workflows/speckit/runs"]["post"]["responses"]
    for status in ("422", "default"):
        ref = create[status]["content"]["application/json"]["schema"]["$ref"]
        assert ref == "#/components/schemas/ErrorOut"
    invalid = await sandbox.api.post(RUNS, json={"repository": 1})
    assert invalid.status_code == 422
    assert set(invalid.json()["detail"]) >= {"code", "message", "errors"}
