"""The git smart-HTTP server and the GitHub-compatible server behave like GitHub.

Real git over HTTP with the token only in `http.extraHeader` (through GIT_CONFIG_*
environment variables), and httpx against the REST fake.
"""

from __future__ import annotations

import base64
import os
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.github import BAD_TOKEN_LABEL, FakeGitHub
from tests.support.gitserver import GitSmartHTTPServer
from tests.support.specrepo import (
    FEATURE_DIR,
    SeededRepo,
    commit_files,
    seed_spec_repo,
    tasks_md,
)

REPO = "acme/shop"
WRITER = "ghp_writer_0123456789abcdef"
READER = "ghp_reader_0123456789abcdef"
OUTSIDER = "ghp_outsider_0123456789abcd"
NO_WORKFLOW = "ghp_noworkflow_0123456789ab"
FINE_GRAINED = "github_pat_fine_0123456789"
NO_REPO_SCOPE = "ghp_norepo_0123456789abcdef"


@pytest.fixture(scope="module")
def git_server() -> Iterator[GitSmartHTTPServer]:
    with GitSmartHTTPServer() as server:
        yield server
        assert server.errors == []


@pytest.fixture(scope="module")
def seeded(git_server: GitSmartHTTPServer) -> SeededRepo:
    repo = seed_spec_repo(git_server, REPO)
    git_server.grant(WRITER, REPO, push=True, label="writer-bot")
    git_server.grant(READER, REPO, label="reader")
    git_server.grant(NO_WORKFLOW, REPO, push=True, workflow=False, label="no-workflow")
    git_server.add_token(OUTSIDER, label="outsider")
    return repo


@pytest.fixture(scope="module")
def github(git_server: GitSmartHTTPServer, seeded: SeededRepo) -> Iterator[FakeGitHub]:
    with FakeGitHub(git=git_server) as fake:
        fake.add_repo(seeded.full_name)
        fake.add_user("writer-bot", WRITER)
        fake.add_user("reader", READER, scopes=("repo",))
        fake.add_user("outsider", OUTSIDER)
        fake.add_user("no-workflow", NO_WORKFLOW, scopes=("repo",))
        fake.add_user("fine-grained", FINE_GRAINED, scopes=None)
        fake.add_user("no-repo-scope", NO_REPO_SCOPE, scopes=("read:user",))
        fake.grant("writer-bot", REPO, "write")
        fake.grant("reader", REPO, "read")
        fake.grant("no-workflow", REPO, "write")
        fake.grant("fine-grained", REPO, "admin")
        fake.grant("no-repo-scope", REPO, "write")
        yield fake
        assert fake.errors == []


def git(
    *args: str, cwd: Path, token: str | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(cwd),
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_TERMINAL_PROMPT": "0",
        "LC_ALL": "C",
        "GIT_AUTHOR_NAME": "Tester",
        "GIT_AUTHOR_EMAIL": "tester@example.com",
        "GIT_COMMITTER_NAME": "Tester",
        "GIT_COMMITTER_EMAIL": "tester@example.com",
    }
    if token is not None:
        basic = base64.b64encode(f"x-access-token:{token}".encode()).decode()
        env |= {
            "GIT_CONFIG_COUNT": "1",
            "GIT_CONFIG_KEY_0": "http.extraHeader",
            "GIT_CONFIG_VALUE_0": f"Authorization: Basic {basic}",
        }
    done = subprocess.run(
        ["git", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=30
    )
    if check and done.returncode != 0:
        raise AssertionError(f"git {args}: {done.stderr}")
    return done


def clone(seeded: SeededRepo, tmp_path: Path, token: str = WRITER) -> Path:
    git("clone", "--depth", "1", seeded.clone_url, "work", cwd=tmp_path, token=token)
    return tmp_path / "work"


def test_clone_depth_1_with_header_token(
    git_server: GitSmartHTTPServer, seeded: SeededRepo, tmp_path: Path
) -> None:
    git_server.clear_requests()
    work = clone(seeded, tmp_path)

    assert git("rev-parse", "HEAD", cwd=work).stdout.strip() == seeded.base_sha
    assert (
        git("rev-parse", "--is-shallow-repository", cwd=work).stdout.strip() == "true"
    )
    assert (work / FEATURE_DIR / "tasks.md").read_text() == tasks_md()
    assert WRITER not in (work / ".git" / "config").read_text()
    seen = git_server.requests
    assert {r.status for r in seen} == {200}
    assert all(r.authenticated and r.token_label for r in seen)
    assert WRITER not in repr(seen)


def test_shallow_fetch_sends_gzip_bodies_the_backend_inflates(
    git_server: GitSmartHTTPServer, seeded: SeededRepo, tmp_path: Path
) -> None:
    # Enough local commits that the "have" lines pass git's 1 KiB gzip threshold.
    git("init", "-q", "local", cwd=tmp_path)
    work = tmp_path / "local"
    stream = "".join(
        f"commit refs/heads/local\ncommitter a <a@b> {1700000000 + i} +0000\n"
        f"data 4\nc{i:03d}\n"
        for i in range(60)
    )
    subprocess.run(
        ["git", "fast-import", "--quiet"], cwd=work, input=stream, text=True, check=True
    )
    git_server.clear_requests()

    for version in ("0", "2"):
        git(
            "-c",
            f"protocol.version={version}",
            "fetch",
            "--depth",
            "1",
            seeded.clone_url,
            seeded.base_branch,
            cwd=work,
            token=WRITER,
        )
        git("update-ref", "-d", "FETCH_HEAD", cwd=work)
        git("tag", f"v{version}", seeded.base_sha, cwd=work)  # keeps the objects

    posts = [r for r in git_server.requests if r.method == "POST"]
    assert {r.content_encoding for r in posts} >= {"gzip"}
    assert {r.git_protocol for r in posts} == {None, "version=2"}


def test_ls_remote_lists_the_seeded_branch(seeded: SeededRepo, tmp_path: Path) -> None:
    out = git("ls-remote", seeded.clone_url, cwd=tmp_path, token=READER).stdout
    assert f"{seeded.base_sha}\trefs/heads/main" in out


@pytest.mark.parametrize(
    ("token", "status", "message"),
    [
        (None, 401, "terminal prompts disabled"),
        ("ghp_not_a_real_token", 401, "terminal prompts disabled"),
        (OUTSIDER, 404, "not found"),
    ],
)
def test_ls_remote_refused(
    git_server: GitSmartHTTPServer,
    seeded: SeededRepo,
    tmp_path: Path,
    token: str | None,
    status: int,
    message: str,
) -> None:
    git_server.clear_requests()
    done = git("ls-remote", seeded.clone_url, cwd=tmp_path, token=token, check=False)

    assert done.returncode != 0
    assert message in done.stderr
    assert [r.status for r in git_server.requests] == [status]
    assert git_server.requests[0].authenticated is (status == 404)


def test_unknown_repository_is_404(
    git_server: GitSmartHTTPServer, tmp_path: Path
) -> None:
    git_server.clear_requests()
    url = git_server.url_for("acme/nope")
    done = git("ls-remote", url, cwd=tmp_path, token=WRITER, check=False)

    assert "not found" in done.stderr
    assert [r.status for r in git_server.requests] == [404]


def test_push_creates_the_branch(
    git_server: GitSmartHTTPServer, seeded: SeededRepo, tmp_path: Path
) -> None:
    work = clone(seeded, tmp_path)
    (work / "src.py").write_text("print('hi')\n")
    git("add", ".", cwd=work)
    git("commit", "-qm", "T003 models", cwd=work)
    git("push", "origin", "HEAD:refs/heads/speckit/push-ok", cwd=work, token=WRITER)

    head = git("rev-parse", "HEAD", cwd=work).stdout.strip()
    assert git_server.rev_parse(REPO, "speckit/push-ok") == head
    assert git_server.show(REPO, "speckit/push-ok", "src.py") == b"print('hi')\n"


def test_large_push_is_chunked_and_lands(
    git_server: GitSmartHTTPServer, seeded: SeededRepo, tmp_path: Path
) -> None:
    work = clone(seeded, tmp_path)
    (work / "blob.bin").write_bytes(os.urandom(1_500_000))  # > http.postBuffer
    git("add", ".", cwd=work)
    git("commit", "-qm", "big", cwd=work)
    git_server.clear_requests()
    git("push", "origin", "HEAD:refs/heads/speckit/big", cwd=work, token=WRITER)

    assert any(r.chunked for r in git_server.requests)
    assert git_server.rev_parse(REPO, "speckit/big") is not None


def test_push_without_push_permission_is_403(
    git_server: GitSmartHTTPServer, seeded: SeededRepo, tmp_path: Path
) -> None:
    work = clone(seeded, tmp_path, token=READER)
    git("commit", "-q", "--allow-empty", "-m", "nope", cwd=work)
    git_server.clear_requests()
    done = git(
        "push", "origin", "HEAD:refs/heads/x", cwd=work, token=READER, check=False
    )

    assert done.returncode != 0
    assert "403" in done.stderr
    assert [(r.service, r.status) for r in git_server.requests] == [
        ("git-receive-pack", 403)
    ]
    assert git_server.rev_parse(REPO, "x") is None


def test_push_of_workflow_file_needs_workflow_scope(
    git_server: GitSmartHTTPServer, seeded: SeededRepo, tmp_path: Path
) -> None:
    work = clone(seeded, tmp_path, token=NO_WORKFLOW)
    (work / ".github" / "workflows").mkdir(parents=True)
    (work / ".github" / "workflows" / "ci.yml").write_text("on: push\n")
    git("add", ".", cwd=work)
    git("commit", "-qm", "ci", cwd=work)

    refused = git(
        "push", "origin", "HEAD:refs/heads/wf", cwd=work, token=NO_WORKFLOW, check=False
    )
    assert refused.returncode != 0
    assert "without `workflow` scope" in refused.stderr
    assert git_server.rev_parse(REPO, "wf") is None

    git("push", "origin", "HEAD:refs/heads/wf", cwd=work, token=WRITER)
    assert git_server.rev_parse(REPO, "wf") is not None


def test_git_fault_injection(
    git_server: GitSmartHTTPServer, seeded: SeededRepo, tmp_path: Path
) -> None:
    git_server.fail_next(1, status=503)
    failed = git("ls-remote", seeded.clone_url, cwd=tmp_path, token=WRITER, check=False)
    assert "503" in failed.stderr
    git("ls-remote", seeded.clone_url, cwd=tmp_path, token=WRITER)


# -- the REST fake ----------------------------------------------------------------


@pytest.fixture
def api(github: FakeGitHub) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=github.url, timeout=10) as client:
        yield client


def auth(token: str, scheme: str = "Bearer") -> dict[str, str]:
    return {"Authorization": f"{scheme} {token}"}


def test_user_reports_login_and_scopes(api: httpx.Client) -> None:
    for scheme in ("Bearer", "token"):
        res = api.get("/user", headers=auth(WRITER, scheme))
        assert res.status_code == 200
        assert res.json()["login"] == "writer-bot"
        assert isinstance(res.json()["id"], int)
        assert res.headers["X-OAuth-Scopes"] == "repo, workflow"

    fine = api.get("/user", headers=auth(FINE_GRAINED))
    assert fine.status_code == 200
    assert "X-OAuth-Scopes" not in fine.headers


def test_user_rejects_bad_or_missing_credentials(
    api: httpx.Client, github: FakeGitHub
) -> None:
    bad = api.get("/user", headers=auth("ghp_wrong"))
    assert bad.status_code == 401
    assert bad.json()["message"] == "Bad credentials"
    assert bad.json()["documentation_url"].startswith("https://docs.github.com")

    missing = api.get("/user")
    assert missing.status_code == 401
    assert missing.json()["message"] == "Requires authentication"
    assert github.calls[-2].token_label == BAD_TOKEN_LABEL
    assert github.calls[-1].token_label is None


def test_repository_shape_and_permissions(
    api: httpx.Client, seeded: SeededRepo
) -> None:
    res = api.get(f"/repos/{REPO}", headers=auth(WRITER))
    assert res.status_code == 200
    body = res.json()
    assert body["full_name"] == REPO
    assert body["default_branch"] == "main"
    assert body["private"] is True
    assert body["clone_url"] == seeded.clone_url
    assert body["html_url"] == f"https://github.com/{REPO}"
    assert body["permissions"] == {
        "admin": False,
        "maintain": False,
        "push": True,
        "triage": True,
        "pull": True,
    }

    reader = api.get(f"/repos/{REPO}", headers=auth(READER)).json()
    assert reader["permissions"]["push"] is False
    assert reader["permissions"]["pull"] is True


@pytest.mark.parametrize(
    ("path", "headers"),
    [
        (f"/repos/{REPO}", {}),
        (f"/repos/{REPO}", auth(OUTSIDER)),
        (f"/repos/{REPO}", auth(NO_REPO_SCOPE)),
        ("/repos/acme/nope", auth(WRITER)),
    ],
)
def test_repository_hidden_is_404(
    api: httpx.Client, path: str, headers: dict[str, str]
) -> None:
    res = api.get(path, headers=headers)
    assert res.status_code == 404
    assert res.json()["message"] == "Not Found"


def test_branch_lookup_reflects_real_refs(
    api: httpx.Client, seeded: SeededRepo, git_server: GitSmartHTTPServer
) -> None:
    res = api.get(f"/repos/{REPO}/branches/main", headers=auth(READER))
    assert res.status_code == 200
    assert res.json()["name"] == "main"
    assert res.json()["commit"]["sha"] == seeded.base_sha

    path = git_server.repo_path(REPO)
    sha = commit_files(path, {"x.txt": "x"}, branch="feature/with-slash")
    nested = api.get(f"/repos/{REPO}/branches/feature/with-slash", headers=auth(READER))
    assert nested.json()["commit"]["sha"] == sha

    missing = api.get(f"/repos/{REPO}/branches/nope", headers=auth(READER))
    assert missing.status_code == 404
    assert missing.json()["message"] == "Branch not found"


def test_pull_request_create_list_update_and_label(
    api: httpx.Client, github: FakeGitHub, git_server: GitSmartHTTPServer
) -> None:
    branch = "speckit/042-checkout/T003-pr"
    commit_files(
        git_server.repo_path(REPO),
        {"a.py": "a"},
        branch=branch,
        parent=git_server.rev_parse(REPO, "main"),
    )
    before = len(github.pulls_created)
    payload = {
        "title": "T003",
        "head": branch,
        "base": "main",
        "body": "b",
        "draft": True,
    }

    created = api.post(f"/repos/{REPO}/pulls", json=payload, headers=auth(WRITER))
    assert created.status_code == 201
    pr = created.json()
    assert pr["state"] == "open"
    assert pr["draft"] is True
    assert (pr["head"]["ref"], pr["base"]["ref"]) == (branch, "main")
    assert pr["head"]["sha"] == git_server.rev_parse(REPO, branch)
    assert pr["html_url"] == f"https://github.com/{REPO}/pull/{pr['number']}"
    assert (pr["title"], pr["body"]) == ("T003", "b")

    dup = api.post(f"/repos/{REPO}/pulls", json=payload, headers=auth(WRITER))
    assert dup.status_code == 422
    assert dup.json()["message"] == "Validation Failed"
    assert dup.json()["errors"] == [
        {
            "resource": "PullRequest",
            "code": "custom",
            "message": f"A pull request already exists for acme:{branch}.",
        }
    ]
    assert len(github.pulls_created) == before + 1

    listed = api.get(
        f"/repos/{REPO}/pulls",
        params={"head": f"acme:{branch}", "state": "open"},
        headers=auth(READER),
    )
    assert [p["number"] for p in listed.json()] == [pr["number"]]

    n = pr["number"]
    patched = api.patch(
        f"/repos/{REPO}/pulls/{n}", json={"title": "T003 v2"}, headers=auth(WRITER)
    )
    assert patched.status_code == 200
    assert (patched.json()["title"], patched.json()["body"]) == ("T003 v2", "b")

    labels = api.post(
        f"/repos/{REPO}/issues/{n}/labels",
        json={"labels": ["speckit", "automated"]},
        headers=auth(WRITER),
    )
    assert labels.status_code == 200
    assert [label["name"] for label in labels.json()] == ["speckit", "automated"]
    assert WRITER not in repr(github.calls)
    assert (
        github.calls_to("POST", rf"/repos/{REPO}/pulls")[0].token_label == "writer-bot"
    )


def test_pull_request_refusals(api: httpx.Client) -> None:
    def create(token: str, **fields: object) -> httpx.Response:
        body = {"title": "t", "head": "main", "base": "main"} | fields
        return api.post(f"/repos/{REPO}/pulls", json=body, headers=auth(token))

    missing_head = create(WRITER, head="no/such-branch")
    assert missing_head.status_code == 422
    assert missing_head.json()["errors"][0] == {
        "resource": "PullRequest",
        "field": "head",
        "code": "invalid",
    }
    same = create(WRITER)
    assert same.status_code == 422
    assert "No commits between main and main" in same.json()["errors"][0]["message"]
    read_only = create(READER)
    assert read_only.status_code == 403
    assert read_only.json()["message"] == "Resource not accessible by integration"
    assert create(OUTSIDER).status_code == 404
    assert create("ghp_wrong").status_code == 401


def test_rest_fault_injection_then_recovery(
    api: httpx.Client, github: FakeGitHub
) -> None:
    github.fail_next(2, status=502, path=r"^/user$")
    assert api.get("/user", headers=auth(WRITER)).status_code == 502
    assert api.get("/user", headers=auth(WRITER)).status_code == 502
    assert api.get("/user", headers=auth(WRITER)).status_code == 200
    assert [c.status for c in github.calls[-3:]] == [502, 502, 200]


def test_list_pulls_head_filter_needs_the_owner_prefix(
    api: httpx.Client, github: FakeGitHub, git_server: GitSmartHTTPServer
) -> None:
    main = git_server.rev_parse(REPO, "main")
    commit_files(
        git_server.repo_path(REPO), {"s.py": "s"}, branch="seeded", parent=main
    )
    existing = github.add_pull(REPO, "seeded", title="Adopt me")

    own = api.get(
        f"/repos/{REPO}/pulls", params={"head": "acme:seeded"}, headers=auth(READER)
    )
    assert [p["number"] for p in own.json()] == [existing.number]
    assert own.json()[0]["user"]["login"] == "someone"
    # Like GitHub: a head without "owner:" is ignored, so every open PR comes back.
    bare = api.get(
        f"/repos/{REPO}/pulls", params={"head": "seeded"}, headers=auth(READER)
    )
    assert len(bare.json()) == len([p for p in github.pulls(REPO) if p.state == "open"])
    assert existing not in github.pulls_created


def test_role_change_on_github_reaches_the_git_server(
    github: FakeGitHub, seeded: SeededRepo, tmp_path: Path
) -> None:
    work = clone(seeded, tmp_path, token=READER)
    git("commit", "-q", "--allow-empty", "-m", "retry me", cwd=work)
    push = ("push", "origin", "HEAD:refs/heads/retried")
    assert "403" in git(*push, cwd=work, token=READER, check=False).stderr

    github.grant("reader", REPO, "write")
    try:
        git(*push, cwd=work, token=READER)
    finally:
        github.grant("reader", REPO, "read")


def test_rest_delay_makes_clients_time_out(github: FakeGitHub) -> None:
    github.delay = 0.3
    try:
        with (
            httpx.Client(base_url=github.url, timeout=0.05) as client,
            pytest.raises(httpx.ReadTimeout),
        ):
            client.get("/user", headers=auth(WRITER))
    finally:
        github.delay = 0.0


def test_seed_with_non_default_base_branch(git_server: GitSmartHTTPServer) -> None:
    repo = seed_spec_repo(git_server, "acme/release", base_branch="release/2.0")

    assert git_server.default_branch(repo.full_name) == "main"
    assert git_server.rev_parse(repo.full_name, "release/2.0") == repo.base_sha
    assert git_server.show(repo.full_name, repo.base_sha, f"{FEATURE_DIR}/spec.md")
    with pytest.raises(subprocess.CalledProcessError):
        git_server.show(repo.full_name, "main", f"{FEATURE_DIR}/spec.md")


def test_servers_stop_cleanly(tmp_path: Path) -> None:
    before = set(threading.enumerate())
    with GitSmartHTTPServer() as server, FakeGitHub(git=server) as fake:
        fake.add_repo("acme/tmp")
        fake.add_user("u", "ghp_u")
        fake.grant("u", "acme/tmp")
        git("ls-remote", server.url_for("acme/tmp"), cwd=tmp_path, token="ghp_u")
        httpx.get(f"{fake.url}/user", headers=auth("ghp_u")).raise_for_status()
        root = server.root
    # A subset: threads of the module's servers may finish meanwhile, none may start.
    assert set(threading.enumerate()) <= before
    assert not root.exists()
