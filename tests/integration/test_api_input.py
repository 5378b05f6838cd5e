"""Bad input gets a 4xx with a code and writes nothing; listing pages really page."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
from sqlalchemy import Text, func, select

from services.api.db import Database
from services.api.models import OutboxRow, Run
from tests.support.api import RUNS, create_run, wait_for

GOOD = {"repository": "acme/shop", "featureKey": "042-checkout"}


async def counts(database: Database) -> tuple[int, int]:
    """Runs, and outbox rows that name no stored run: what a rejected request could
    have written (a run, or a command without its run). Rows of existing runs are
    left out: runs of other tests in this session may still be moving, and add
    theirs at any time."""
    async with database.new_session() as session:
        runs = await session.scalar(select(func.count()).select_from(Run))
        orphans = await session.scalar(
            select(func.count())
            .select_from(OutboxRow)
            .where(
                ~select(Run.id)
                .where(func.cast(Run.id, Text) == OutboxRow.payload["run_id"].astext)
                .exists()
            )
        )
    return int(runs or 0), int(orphans or 0)


BAD_BODIES: list[tuple[str, Any]] = [
    ("missing repository", {"featureKey": "x"}),
    ("wrong type", {"repository": 42, "featureKey": "x"}),
    ("list body", [GOOD]),
    ("null body", None),
    ("unknown field", {**GOOD, "branch": "main"}),
    ("snake_case field", {"repository": "acme/shop", "feature_key": "x"}),
    ("unknown publish mode", {**GOOD, "publishMode": "yolo"}),
    ("leading dash repository", {**GOOD, "repository": "-acme/shop"}),
    ("option-like url", {**GOOD, "repository": "--upload-pack=evil"}),
    ("ssh remote", {**GOOD, "repository": "git@github.com:acme/shop.git"}),
    ("http remote", {**GOOD, "repository": "http://git.example/acme/shop.git"}),
    ("ext transport", {**GOOD, "repository": "ext::sh -c touch% /tmp/pwned"}),
    (
        "credentials in url",
        {**GOOD, "repository": "https://user:pw@git.example/acme/shop.git"},
    ),
    ("whitespace", {**GOOD, "repository": "acme/ shop"}),
    ("traversal slug", {**GOOD, "repository": "acme/.."}),
    ("three segments", {**GOOD, "repository": "acme/shop/extra"}),
    ("feature traversal", {**GOOD, "featureKey": "../etc"}),
    ("feature dotdot", {**GOOD, "featureKey": ".."}),
    ("feature separator", {**GOOD, "featureKey": "a/b"}),
    ("feature option", {**GOOD, "featureKey": "--help"}),
    ("feature too long", {**GOOD, "featureKey": "a" * 129}),
    ("task id separator", {**GOOD, "taskId": "T001/../x"}),
    ("branch dotdot", {**GOOD, "baseBranch": "main..evil"}),
    ("branch option", {**GOOD, "baseBranch": "-f"}),
    ("branch lock", {**GOOD, "baseBranch": "main.lock"}),
    ("branch reflog", {**GOOD, "baseBranch": "main@{1}"}),
    ("nul in notes", {**GOOD, "notes": "a\x00b"}),
    ("huge repository", {**GOOD, "repository": "a" * 100_000}),
    ("huge notes", {**GOOD, "notes": "n" * 10_001}),
]


@pytest.mark.parametrize(("case", "body"), BAD_BODIES, ids=[c for c, _ in BAD_BODIES])
async def test_bad_create_body_is_a_422_with_a_code(
    api: httpx.AsyncClient, database: Database, case: str, body: Any
) -> None:
    before = await counts(database)
    response = await api.post(RUNS, json=body)

    assert response.status_code == 422, (case, response.text)
    detail = response.json()["detail"]
    assert detail["code"] == "invalid_request"
    assert detail["message"]
    assert "a" * 1000 not in response.text  # the input is not echoed back
    assert await counts(database) == before


@pytest.mark.parametrize(
    ("case", "content", "status", "code"),
    [
        ("not json", b"{nope", 422, "invalid_request"),
        ("not utf-8", b'{"repository": "\xff\xfe"}', 400, "bad_request"),
        ("deeply nested", b"[" * 20_000 + b"]" * 20_000, 400, "bad_request"),
        (
            "over the size limit",
            b'{"notes": "' + b"x" * 1_100_000 + b'"}',
            413,
            "payload_too_large",
        ),
    ],
)
async def test_unparseable_body_is_a_4xx_with_a_code(
    api: httpx.AsyncClient,
    database: Database,
    case: str,
    content: bytes,
    status: int,
    code: str,
) -> None:
    before = await counts(database)
    response = await api.post(
        RUNS, content=content, headers={"content-type": "application/json"}
    )

    assert response.status_code == status, (case, response.text[:300])
    assert response.json()["detail"]["code"] == code
    assert await counts(database) == before


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", f"{RUNS}/not-a-uuid"),
        ("GET", f"{RUNS}/123"),
        ("POST", f"{RUNS}/not-a-uuid/retry"),
        ("POST", f"{RUNS}/%2e%2e/cancel"),
        ("GET", f"{RUNS}?limit=0"),
        ("GET", f"{RUNS}?limit=101"),
        ("GET", f"{RUNS}?limit=ten"),
        ("GET", f"{RUNS}?status=exploded"),
        ("GET", f"{RUNS}?cursor=garbage"),
        ("GET", f"{RUNS}?cursor=" + "A" * 300),
        ("GET", f"{RUNS}?featureKey=../x"),
        ("GET", f"{RUNS}/{uuid.uuid4()}/events?after=-1"),
        ("GET", f"{RUNS}/{uuid.uuid4()}/events?after=99999999999999"),
    ],
)
async def test_bad_path_or_query_is_a_422_with_a_code(
    api: httpx.AsyncClient, method: str, path: str
) -> None:
    response = await api.request(method, path)

    assert response.status_code == 422, response.text
    assert response.json()["detail"]["code"] in {"invalid_request", "invalid_cursor"}


async def test_unknown_run_and_route_are_404_with_a_code(
    api: httpx.AsyncClient,
) -> None:
    for path in (
        f"{RUNS}/{uuid.uuid4()}",
        f"{RUNS}/{uuid.uuid4()}/events",
        f"{RUNS}/{uuid.uuid4()}/artifacts",
    ):
        response = await api.get(path)
        assert response.status_code == 404
        assert response.json()["detail"]["code"] == "workflow_not_found"
    nowhere = await api.get("/api/nowhere")
    assert nowhere.status_code == 404
    assert nowhere.json()["detail"]["code"] == "not_found"
    wrong_method = await api.delete(RUNS)
    assert wrong_method.status_code == 405
    assert wrong_method.json()["detail"]["code"] == "method_not_allowed"


@pytest.mark.parametrize(
    "suffix",
    [
        "..%2f..%2fetc%2fpasswd",
        "%2e%2e%2f%2e%2e%2fetc%2fpasswd",
        "%252e%252e%252fetc",
        "../../../etc/passwd",
        "..\\..\\x",
        "%00",
        "C:%5Cwindows",
    ],
)
@pytest.mark.usefixtures("stages")
async def test_artifact_traversal_never_serves_a_file(
    api: httpx.AsyncClient, suffix: str
) -> None:
    run = await wait_for(
        api, (await create_run(api, f"t-{uuid.uuid4().hex[:8]}"))["id"]
    )
    response = await api.get(f"{RUNS}/{run['id']}/artifacts/{suffix}")
    assert response.status_code in (404, 422), response.text
    assert response.json()["detail"]["code"] in {"not_found", "invalid_request"}
    assert "root:" not in response.text


async def test_bad_retry_body_is_rejected(api: httpx.AsyncClient) -> None:
    response = await api.post(f"{RUNS}/{uuid.uuid4()}/retry", json={"notes": 5})
    assert response.status_code == 422
    assert response.json()["detail"]["code"] == "invalid_request"


async def test_bad_idempotency_key_is_rejected(
    api: httpx.AsyncClient, database: Database
) -> None:
    before = await counts(database)
    response = await api.post(RUNS, json=GOOD, headers={"Idempotency-Key": "k" * 256})
    assert response.status_code == 422
    assert await counts(database) == before


@pytest.mark.usefixtures("stages")
async def test_listing_pages_through_every_run_once(api: httpx.AsyncClient) -> None:
    repository = f"pager/r-{uuid.uuid4().hex[:8]}"
    created = []
    for n in range(7):
        run = await create_run(api, f"page-{n}", repository=repository)
        created.append(run["id"])
        await wait_for(api, run["id"])
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"repository": repository, "limit": 3}
        if cursor:
            params["cursor"] = cursor
        page = (await api.get(RUNS, params=params)).json()
        assert len(page["items"]) <= 3
        seen.extend(item["id"] for item in page["items"])
        cursor = page["nextCursor"]
        if cursor is None:
            break
    assert seen == list(reversed(created))  # newest first, each exactly once
    only = (
        await api.get(RUNS, params={"repository": repository, "featureKey": "page-3"})
    ).json()["items"]
    assert [r["id"] for r in only] == [created[3]]
    succeeded = (
        await api.get(
            RUNS, params={"repository": repository, "status": "succeeded", "limit": 100}
        )
    ).json()
    assert len(succeeded["items"]) == 7
    assert (
        await api.get(RUNS, params={"repository": repository, "status": "failed"})
    ).json()["items"] == []


async def test_shards_and_health_endpoints(api: httpx.AsyncClient) -> None:
    shards = (await api.get("/api/workflows/speckit/codex/shards")).json()["items"]
    assert [(s["shardIndex"], s["queue"], s["volume"]) for s in shards] == [
        (0, "codex-0", "codex_auth_0"),
        (1, "codex-1", "codex_auth_1"),
        (2, "codex-2", "codex_auth_2"),
    ]
    assert (await api.get("/healthz")).json() == {"status": "ok"}
    ready = await api.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"database": True, "broker": True}
