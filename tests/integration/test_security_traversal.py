"""Artifact downloads never read outside the run's own artifact folder.

Three ways in, each tried with `../`, percent- and double-encoded dots, backslashes,
absolute paths and NUL: the download URL itself (also sent byte for byte, as httpx
would normalise `..` away), the artifact paths a stage reports (the API records
only safe relative paths), and rows written straight into the table (the download
re-checks with realpath). Symlinks planted in a run's folder, pointing outside
ARTIFACTS_ROOT, into another user's run folder and at the root itself, are refused
too. Every answer is a clean 4xx: never a 500, never the file.

Runs in the sandbox stack; the planted links are removed at the end, so the session's
canary audit (which reads every artifact file) never follows them.
"""

from __future__ import annotations

import asyncio
import shutil
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from sqlalchemy import insert
from sqlalchemy.exc import DBAPIError

from services.api.models import Artifact
from shared.messages import ArtifactRef, TaskName, TaskSucceeded
from shared.summaries import CodexSummary
from tests.support.api import RUNS, wait_for
from tests.support.rawasgi import raw_get
from tests.support.sandbox import Principal, Sandbox

SECRET = f"TRAVERSAL-SECRET-{uuid.uuid4().hex}"
OTHER_PATCH = f"OTHER-RUN-PATCH-{uuid.uuid4().hex}"
SIBLING = f"SIBLING-SECRET-{uuid.uuid4().hex}"
MINE = "diff for T001\n"  # what the scripted Codex stage writes in the owner's run


@dataclass(frozen=True)
class Scene:
    sandbox: Sandbox
    owner: Principal
    other: Principal
    run_id: str  # the owner's run
    other_run_id: str  # another user's run, beside it under ARTIFACTS_ROOT
    other_artifact_id: str
    root: Path  # ARTIFACTS_ROOT
    outside: Path  # a file outside ARTIFACTS_ROOT
    reported: list[str]  # artifact paths the owner's Codex stage reported
    recorded: dict[str, str]  # path -> artifact id, as the API recorded them

    def url(self, tail: str, run_id: str | None = None) -> str:
        return f"{RUNS}/{run_id or self.run_id}/artifacts/{tail}"


def stage_paths(other_run: str, outside: Path) -> list[str]:
    """What a misbehaving (or compromised) stage might report as its files."""
    return [
        f"../{other_run}/patch.diff",
        "../../../../../../etc/passwd",
        f"a/../../{other_run}/patch.diff",
        str(outside),
        "/etc/passwd",
        "..\\..\\etc\\passwd",
        "sub\\..\\..\\x",
        "patch.diff\x00.txt",
        "\x00",
        "",
        ".",
        "./",
        "..",
        "%2e%2e%2f%2e%2e%2fetc%2fpasswd",  # a file name with % in it: harmless
        "%252e%252e%252fetc",
        "link-outside",
        "link-other-run",
        "linkdir/patch.diff",
        f"link-root/{other_run}/patch.diff",
        "patch.diff",
    ]


def lexically_safe(path: str) -> bool:
    """What the API may record: relative, no `..`, no backslash, no NUL."""
    parts = path.split("/")
    return (
        bool(path)
        and path not in (".", "./")
        and not path.startswith("/")
        and "\\" not in path
        and "\x00" not in path
        and ".." not in parts
    )


async def _succeeded_run(sandbox: Sandbox, who: Principal) -> dict[str, Any]:
    created = await sandbox.token_api.post(
        RUNS,
        json={"repository": "acme/trav", "featureKey": f"tr-{uuid.uuid4().hex[:8]}"},
        headers=who.headers,
    )
    assert created.status_code == 202, created.text
    run = await wait_for(sandbox.token_api, created.json()["id"], headers=who.headers)
    assert run["status"] == "succeeded", run
    return run


async def _run_reporting(
    sandbox: Sandbox, owner: Principal, paths: list[str]
) -> dict[str, Any]:
    """A run of `owner` whose Codex stage reports `paths` among its artifacts.

    The scripted stage holds its job; this sends the outcome in its place (the same
    message id, so the stage's own copy, sent on release, is a duplicate).
    """
    feature = f"tr-{uuid.uuid4().hex[:8]}"
    sandbox.stages.script(feature, hold=frozenset({TaskName.SUBMIT_CODEX_JOB}))
    created = await sandbox.token_api.post(
        RUNS,
        json={"repository": "acme/trav", "featureKey": feature},
        headers=owner.headers,
    )
    assert created.status_code == 202, created.text
    run_id = created.json()["id"]
    for _ in range(400):
        if sandbox.stages.commands(feature, TaskName.SUBMIT_CODEX_JOB):
            break
        await asyncio.sleep(0.025)
    (cmd,) = sandbox.stages.commands(feature, TaskName.SUBMIT_CODEX_JOB)
    patch = ArtifactRef(path="patch.diff", artifact_type="patch")
    await sandbox.stages.emit(
        cmd.reply(
            TaskSucceeded,
            summary=CodexSummary(patch=patch).model_dump(mode="json"),
            artifacts=[patch, *(ArtifactRef(path=p, artifact_type="x") for p in paths)],
        )
    )
    # Only once the API applied ours: the stage's own copy carries the same message
    # id, and the API handles deliveries concurrently, so the first to arrive must not
    # race the second.
    await wait_for(
        sandbox.token_api,
        run_id,
        frozenset({"running", "succeeded"}),
        where=lambda r: any(
            t["taskName"] == TaskName.SUBMIT_CODEX_JOB and t["status"] == "succeeded"
            for t in r.get("tasks") or []
        ),
        headers=owner.headers,
    )
    sandbox.stages.release(run_id)
    run = await wait_for(sandbox.token_api, run_id, headers=owner.headers)
    assert run["status"] == "succeeded", run
    return run


def plant(run_dir: Path, other_run_dir: Path, outside: Path) -> list[Path]:
    links = {
        "link-outside": outside,  # absolute, out of ARTIFACTS_ROOT
        "link-other-run": Path("..") / other_run_dir.name / "patch.diff",
        "linkdir": Path("..") / other_run_dir.name,  # a folder link
        "link-root": Path(".."),  # ARTIFACTS_ROOT itself
    }
    for name, target in links.items():
        (run_dir / name).symlink_to(target)
    return [run_dir / name for name in links]


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def scene(
    sandbox: Sandbox, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Scene]:
    root = sandbox.settings.artifacts_root
    outside = tmp_path_factory.mktemp("outside") / "secret.txt"
    outside.write_text(SECRET)
    owner, other = await sandbox.new_user(), await sandbox.new_user()
    theirs = await _succeeded_run(sandbox, other)
    (root / theirs["id"] / "patch.diff").write_text(OTHER_PATCH)
    (their_patch,) = [a for a in theirs["artifacts"] if a["path"] == "patch.diff"]
    paths = stage_paths(theirs["id"], outside)
    mine = await _run_reporting(sandbox, owner, paths)
    planted = plant(root / mine["id"], root / theirs["id"], outside)
    sibling = root / f"{mine['id']}-evil"  # shares the run folder's name as a prefix
    sibling.mkdir()
    (sibling / "secret.txt").write_text(SIBLING)
    try:
        yield Scene(
            sandbox,
            owner,
            other,
            mine["id"],
            theirs["id"],
            their_patch["id"],
            root,
            outside,
            paths,
            {a["path"]: a["id"] for a in mine["artifacts"]},
        )
    finally:
        for link in planted:
            link.unlink()
        shutil.rmtree(sibling)


def assert_refused(status: int, text: str, what: object) -> None:
    assert 400 <= status < 500, (what, status, text[:300])
    for secret in (SECRET, OTHER_PATCH, SIBLING, "root:x:0:0"):
        assert secret not in text, (what, status)


async def test_stage_reported_paths_are_recorded_only_when_safe(scene: Scene) -> None:
    expected = {p for p in scene.reported if lexically_safe(p)}
    assert set(scene.recorded) - {"manifest.json"} == expected
    assert "linkdir/patch.diff" in expected  # lexically fine: caught at download


async def test_recorded_links_and_names_never_leave_the_run(scene: Scene) -> None:
    api, headers = scene.sandbox.token_api, scene.owner.headers
    own = await api.get(scene.url(scene.recorded["patch.diff"]), headers=headers)
    assert own.status_code == 200
    assert own.text == MINE  # downloads work: the refusals below are the checks
    for path, artifact_id in sorted(scene.recorded.items()):
        if path in ("patch.diff", "manifest.json"):
            continue
        response = await api.get(scene.url(artifact_id), headers=headers)
        assert_refused(response.status_code, response.text, path)
        assert response.json()["detail"]["code"] == "artifact_not_found", path


BAD_ROWS = [
    "../{other}/patch.diff",
    "../../../../../../../../etc/passwd",
    "{outside}",
    "/etc/passwd",
    "..",
    "../",
    ".",
    "",
    "linkdir/../../{other}/patch.diff",
    "link-root/{other}/../{run}-evil/secret.txt",
    "link-root/../{outside_rel}",
    "../{run}-evil/secret.txt",
    "..\\..\\etc\\passwd",
    "%2e%2e/%2e%2e/etc/passwd",
]


async def test_rows_pointing_outside_are_refused_at_download(scene: Scene) -> None:
    """Defence in depth: even a row the API would never write is not followed."""
    database = scene.sandbox.database
    outside_rel = Path("..") / ".." / scene.outside.relative_to(scene.outside.anchor)
    rows = {}
    for template in BAD_ROWS:
        path = template.format(
            other=scene.other_run_id,
            outside=scene.outside,
            outside_rel=outside_rel,
            run=scene.run_id,
        )
        rows[path] = uuid.uuid4()
    async with database.new_session() as session, session.begin():
        await session.execute(
            insert(Artifact),
            [
                {
                    "id": i,
                    "run_id": uuid.UUID(scene.run_id),
                    "artifact_type": "x",
                    "path": p,
                }
                for p, i in rows.items()
            ],
        )
    for path, artifact_id in rows.items():
        response = await scene.sandbox.token_api.get(
            scene.url(str(artifact_id)), headers=scene.owner.headers
        )
        assert_refused(response.status_code, response.text, path)
        assert response.json()["detail"]["code"] == "artifact_not_found", path


async def test_nul_cannot_reach_the_artifact_table(scene: Scene) -> None:
    """Postgres refuses NUL in text; the path never gets as far as a download."""
    with pytest.raises(DBAPIError, match="0x00"):
        async with scene.sandbox.database.new_session() as session, session.begin():
            await session.execute(
                insert(Artifact).values(
                    id=uuid.uuid4(),
                    run_id=uuid.UUID(scene.run_id),
                    artifact_type="x",
                    path="patch.diff\x00.txt",
                )
            )


URL_TAILS = [
    "../../../../../../etc/passwd",
    "..%2f..%2f..%2fetc%2fpasswd",
    "%2e%2e%2f%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    "%2e%2e/%2e%2e/%2e%2e/etc/passwd",
    "%252e%252e%252f%252e%252e%252fetc%252fpasswd",
    "..%5c..%5c..%5cetc%5cpasswd",
    "..\\..\\..\\etc\\passwd",
    "%2fetc%2fpasswd",
    "/etc/passwd",
    "%00",
    "{artifact}%00",
    "{artifact}%00.txt",
    "{artifact}/../{other_artifact}",
    "{artifact}%2f..%2f..%2f..%2f{other}%2fpatch.diff",
    "../../{other}/artifacts/{other_artifact}",
    "link-outside",
    "patch.diff",
    "{artifact}/",
    "{artifact}?path=../../etc/passwd",
]


@pytest.mark.parametrize("tail", URL_TAILS)
async def test_download_urls_with_traversal_are_clean_4xx(
    scene: Scene, tail: str
) -> None:
    filled = tail.format(
        artifact=scene.recorded["link-other-run"],
        other_artifact=scene.other_artifact_id,
        other=scene.other_run_id,
    )
    url = scene.url(filled)
    # Through httpx (which normalises dot segments), then byte for byte. A trailing
    # slash is redirected to the same artifact without it: followed, then judged.
    response = await scene.sandbox.token_api.get(
        url, headers=scene.owner.headers, follow_redirects=True
    )
    assert_refused(response.status_code, response.text, url)
    assert response.json()["detail"]["code"], url
    assert all(r.status_code == 307 for r in response.history), url
    raw = await raw_get(scene.sandbox.token_app, url.encode(), scene.owner.headers)
    if raw.status == 307:
        assert url.endswith("/")
        assert raw.headers["location"].endswith(url.rstrip("/")), raw.headers
    else:
        assert_refused(raw.status, raw.text, ("raw", url))


async def test_another_runs_artifact_is_not_reachable_through_either_run(
    scene: Scene,
) -> None:
    api = scene.sandbox.token_api
    cases = [
        (scene.owner, scene.url(scene.other_artifact_id)),  # their artifact, my run
        (scene.owner, scene.url(scene.other_artifact_id, scene.other_run_id)),
        (scene.other, scene.url(scene.recorded["patch.diff"])),  # mine, as them
        (scene.other, scene.url(scene.recorded["patch.diff"], scene.other_run_id)),
    ]
    for who, url in cases:
        response = await api.get(url, headers=who.headers)
        assert response.status_code == 404, (url, response.text)
        assert MINE not in response.text
        assert OTHER_PATCH not in response.text
    theirs = await api.get(
        scene.url(scene.other_artifact_id, scene.other_run_id),
        headers=scene.other.headers,
    )
    assert theirs.text == OTHER_PATCH  # the owner of that run still gets it
