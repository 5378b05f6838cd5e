"""A GitHub-compatible REST server for tests, with GitHub's shapes and status codes.

Covers what the project calls: `GET /user`, `GET /repos/{o}/{r}`, branches, pulls
(list, get, create, update) and issue labels. Link it to a `GitSmartHTTPServer` and
branches, head SHAs and "no commits between" come from the real bare repositories, and
`grant()` also grants the token on the git server.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler
from types import TracebackType
from typing import Any, Literal, Self, cast
from urllib.parse import parse_qsl, unquote, urlsplit

from tests.support.gitserver import (
    BackgroundHTTPServer,
    GitSmartHTTPServer,
    QuietHTTPServer,
    token_from_header,
)

Role = Literal["read", "triage", "write", "maintain", "admin"]
ROLES: tuple[Role, ...] = ("read", "triage", "write", "maintain", "admin")
DOCS = "https://docs.github.com/rest"
BAD_TOKEN_LABEL = "<bad-token>"


@dataclass
class FakeUser:
    login: str
    id: int
    token: str
    label: str
    scopes: tuple[str, ...] | None  # None: a fine-grained or app token (no header)


@dataclass
class FakeRepo:
    full_name: str
    id: int
    default_branch: str
    private: bool = True
    branches: dict[str, str] = field(default_factory=dict)  # used when not linked
    grants: dict[str, Role] = field(default_factory=dict)  # login -> role
    labels: dict[str, int] = field(default_factory=dict)  # name -> id

    @property
    def owner(self) -> str:
        return self.full_name.split("/", 1)[0]


@dataclass
class PullRequest:
    repo: str
    number: int
    id: int
    head: str  # branch name in the same repository
    base: str
    title: str
    body: str | None
    draft: bool
    author: str
    state: str = "open"
    labels: list[str] = field(default_factory=list)
    created_at: str = ""
    updated_at: str = ""


@dataclass(frozen=True)
class Call:
    """One request and its answer (the token appears only as its user's label)."""

    method: str
    path: str
    query: dict[str, str]
    status: int
    token_label: str | None
    request_json: Any
    response_json: Any


@dataclass(frozen=True)
class Reply:
    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class _Fault:
    status: int
    method: str | None
    path: re.Pattern[str] | None


@dataclass
class _Ctx:
    user: FakeUser | None
    query: dict[str, str]
    body: Any


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def error(status: int, message: str, doc: str = DOCS, **extra: Any) -> Reply:
    return Reply(
        status,
        {"message": message, **extra, "documentation_url": doc, "status": str(status)},
    )


def _validation(doc: str, *errors: dict[str, str]) -> Reply:
    return error(422, "Validation Failed", doc, errors=list(errors))


NOT_FOUND = error(404, "Not Found")
PULLS_DOC = f"{DOCS}/pulls/pulls#create-a-pull-request"


class FakeGitHub:
    """The REST API on 127.0.0.1; `url` is the `GITHUB_API_URL`. A context manager."""

    def __init__(
        self,
        git: GitSmartHTTPServer | None = None,
        html_url: str = "https://github.com",
    ) -> None:
        self.git = git
        self.html_url = html_url
        self.delay = 0.0  # seconds every request waits before it is handled
        self._lock = threading.RLock()
        self._ids = iter(range(1001, 10**9))
        self._users: dict[str, FakeUser] = {}  # token -> user
        self._repos: dict[str, FakeRepo] = {}
        self._pulls: list[PullRequest] = []
        self._created: list[PullRequest] = []
        self._calls: list[Call] = []
        self._faults: list[_Fault] = []
        self._http = BackgroundHTTPServer(_ApiHandler, self)
        self._routes: list[tuple[str, re.Pattern[str], Callable[..., Reply]]] = [
            ("GET", re.compile(r"/user"), self._get_user),
            ("GET", re.compile(r"/repos/([^/]+)/([^/]+)"), self._get_repo),
            (
                "GET",
                re.compile(r"/repos/([^/]+)/([^/]+)/branches/(.+)"),
                self._get_branch,
            ),
            ("GET", re.compile(r"/repos/([^/]+)/([^/]+)/pulls"), self._list_pulls),
            ("POST", re.compile(r"/repos/([^/]+)/([^/]+)/pulls"), self._create_pull),
            ("GET", re.compile(r"/repos/([^/]+)/([^/]+)/pulls/(\d+)"), self._get_pull),
            (
                "PATCH",
                re.compile(r"/repos/([^/]+)/([^/]+)/pulls/(\d+)"),
                self._update_pull,
            ),
            (
                "POST",
                re.compile(r"/repos/([^/]+)/([^/]+)/issues/(\d+)/labels"),
                self._add_labels,
            ),
        ]

    # -- lifecycle ----------------------------------------------------------------

    def __enter__(self) -> Self:
        self._http.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._http.stop()

    @property
    def url(self) -> str:
        return self._http.base_url

    @property
    def errors(self) -> list[BaseException]:
        """Exceptions raised by request handlers (expect none)."""
        return self._http.errors

    # -- configuration ------------------------------------------------------------

    def add_user(
        self,
        login: str,
        token: str,
        *,
        scopes: tuple[str, ...] | None = ("repo", "workflow"),
        label: str | None = None,
    ) -> FakeUser:
        """A user and its token (replacing the user's previous token and scopes)."""
        with self._lock:
            old = next((u for u in self._users.values() if u.login == login), None)
            if old is not None:
                del self._users[old.token]
                if self.git is not None and old.token != token:
                    self.git.revoke(old.token)
            user = FakeUser(
                login, old.id if old else next(self._ids), token, label or login, scopes
            )
            self._users[token] = user
            if self.git is not None:
                self.git.add_token(token, user.label)
                for repo in self._repos.values():
                    if login in repo.grants:
                        self._sync_git_grant(user, repo)
            return user

    def add_repo(
        self, full_name: str, *, default_branch: str | None = None, private: bool = True
    ) -> FakeRepo:
        """A repository (when linked, its bare repo is created if missing)."""
        if self.git is not None:
            if not self.git.has_repo(full_name):
                self.git.create_repo(full_name, default_branch=default_branch or "main")
            default_branch = default_branch or self.git.default_branch(full_name)
        repo = FakeRepo(full_name, next(self._ids), default_branch or "main", private)
        with self._lock:
            self._repos[full_name] = repo
        return repo

    def grant(self, login: str, full_name: str, role: Role | None = "write") -> None:
        """Give `login` a role on the repository (None removes it)."""
        with self._lock:
            repo = self._repos[full_name]
            if role is None:
                repo.grants.pop(login, None)
            else:
                repo.grants[login] = role
            user = next((u for u in self._users.values() if u.login == login), None)
            if user is not None:
                self._sync_git_grant(user, repo)

    def remove_token(self, token: str) -> None:
        """The token becomes unknown: 401 Bad credentials (and on the git server)."""
        with self._lock:
            self._users.pop(token, None)
        if self.git is not None:
            self.git.revoke(token)

    def set_branch(self, full_name: str, branch: str, sha: str) -> None:
        """A branch of an unlinked repository."""
        with self._lock:
            self._repos[full_name].branches[branch] = sha

    def add_pull(
        self,
        full_name: str,
        head: str,
        *,
        base: str | None = None,
        title: str = "Existing pull request",
        body: str | None = None,
        draft: bool = False,
        state: str = "open",
        author: str = "someone",
    ) -> PullRequest:
        """Seed a pull request (not counted in `pulls_created`)."""
        with self._lock:
            repo = self._repos[full_name]
            return self._new_pull(
                repo,
                head,
                base or repo.default_branch,
                title,
                body,
                draft,
                author,
                state,
            )

    def fail_next(
        self,
        count: int = 1,
        status: int = 502,
        *,
        method: str | None = None,
        path: str | None = None,
    ) -> None:
        """The next `count` matching requests (`path` is a regex) answer `status`."""
        pattern = re.compile(path) if path else None
        with self._lock:
            self._faults.extend(_Fault(status, method, pattern) for _ in range(count))

    # -- assertions ---------------------------------------------------------------

    @property
    def calls(self) -> list[Call]:
        with self._lock:
            return list(self._calls)

    def calls_to(self, method: str, path_pattern: str) -> list[Call]:
        return [
            c
            for c in self.calls
            if c.method == method and re.fullmatch(path_pattern, c.path)
        ]

    @property
    def pulls_created(self) -> list[PullRequest]:
        """Pull requests created through `POST …/pulls` (answered 201)."""
        with self._lock:
            return list(self._created)

    def pulls(self, full_name: str | None = None) -> list[PullRequest]:
        with self._lock:
            return [p for p in self._pulls if full_name in (None, p.repo)]

    # -- request handling -----------------------------------------------------------

    def handle(
        self, method: str, target: str, authorization: str | None, raw_body: bytes
    ) -> Reply:
        """Answer one request and record it."""
        if self.delay:
            time.sleep(self.delay)
        url = urlsplit(target)
        path = unquote(url.path).rstrip("/") or "/"
        query = dict(parse_qsl(url.query))
        try:
            body = json.loads(raw_body) if raw_body.strip() else None
        except ValueError:
            body = None
            reply: Reply | None = error(400, "Problems parsing JSON")
        else:
            reply = None
        token = token_from_header(authorization)
        with self._lock:
            user = self._users.get(token) if token else None
            label = user.label if user else (BAD_TOKEN_LABEL if token else None)
            reply = reply or self._fault(method, path)
            if reply is None and token and user is None:
                reply = error(401, "Bad credentials")
            if reply is None:
                reply = self._route(method, path, _Ctx(user, query, body))
            if user is not None and user.scopes is not None:
                scopes = {"X-OAuth-Scopes": ", ".join(user.scopes)}
                reply = Reply(reply.status, reply.body, {**reply.headers, **scopes})
            self._calls.append(
                Call(method, path, query, reply.status, label, body, reply.body)
            )
        return reply

    def _fault(self, method: str, path: str) -> Reply | None:
        for fault in self._faults:
            if fault.method not in (None, method):
                continue
            if fault.path is not None and not fault.path.search(path):
                continue
            self._faults.remove(fault)
            return Reply(fault.status, {"message": "Server Error"}, {})
        return None

    def _route(self, method: str, path: str, ctx: _Ctx) -> Reply:
        allowed = False
        for verb, pattern, func in self._routes:
            match = pattern.fullmatch(path)
            if match is None:
                continue
            if verb == method:
                return func(ctx, *match.groups())
            allowed = True
        return (
            error(404, "Not Found") if not allowed else error(405, "Method Not Allowed")
        )

    # -- endpoints ----------------------------------------------------------------

    def _get_user(self, ctx: _Ctx) -> Reply:
        if ctx.user is None:
            return error(
                401,
                "Requires authentication",
                f"{DOCS}/users/users#get-the-authenticated-user",
            )
        return Reply(200, self._user_json(ctx.user.login, ctx.user.id))

    def _get_repo(self, ctx: _Ctx, owner: str, name: str) -> Reply:
        found = self._visible(ctx, owner, name)
        if isinstance(found, Reply):
            return found
        repo, role = found
        return Reply(200, self._repo_json(repo, role if ctx.user else None))

    def _get_branch(self, ctx: _Ctx, owner: str, name: str, branch: str) -> Reply:
        found = self._visible(ctx, owner, name)
        if isinstance(found, Reply):
            return found
        repo, _ = found
        sha = self._branch_sha(repo, branch)
        if sha is None:
            return error(
                404, "Branch not found", f"{DOCS}/branches/branches#get-a-branch"
            )
        api = f"{self.url}/repos/{repo.full_name}"
        return Reply(
            200,
            {
                "name": branch,
                "commit": {"sha": sha, "url": f"{api}/commits/{sha}"},
                "protected": False,
                "_links": {
                    "self": f"{api}/branches/{branch}",
                    "html": f"{self.html_url}/{repo.full_name}/tree/{branch}",
                },
            },
        )

    def _list_pulls(self, ctx: _Ctx, owner: str, name: str) -> Reply:
        found = self._visible(ctx, owner, name)
        if isinstance(found, Reply):
            return found
        repo, _ = found
        state = ctx.query.get("state", "open")
        head = ctx.query.get("head")
        base = ctx.query.get("base")
        pulls = [p for p in self._pulls if p.repo == repo.full_name]
        if state != "all":
            pulls = [p for p in pulls if p.state == state]
        # GitHub ignores a head filter without the "owner:" part (returns everything).
        if head and ":" in head:
            head_owner, _, head_ref = head.partition(":")
            pulls = [
                p for p in pulls if head_owner == repo.owner and p.head == head_ref
            ]
        if base:
            pulls = [p for p in pulls if p.base == base]
        pulls.sort(key=lambda p: p.number, reverse=True)
        per_page = int(ctx.query.get("per_page", "30"))
        page = int(ctx.query.get("page", "1"))
        chosen = pulls[(page - 1) * per_page : page * per_page]
        return Reply(200, [self._pull_json(p) for p in chosen])

    def _get_pull(self, ctx: _Ctx, owner: str, name: str, number: str) -> Reply:
        found = self._visible(ctx, owner, name)
        if isinstance(found, Reply):
            return found
        pull = self._find_pull(found[0], number)
        return NOT_FOUND if pull is None else Reply(200, self._pull_json(pull))

    def _create_pull(self, ctx: _Ctx, owner: str, name: str) -> Reply:
        found = self._writable(ctx, owner, name, "write")
        if isinstance(found, Reply):
            return found
        repo = found
        body = ctx.body if isinstance(ctx.body, dict) else {}
        for key in ("head", "base"):
            if not isinstance(body.get(key), str) or not body[key]:
                return error(
                    422, f'Invalid request.\n\n"{key}" wasn\'t supplied.', PULLS_DOC
                )
        if not isinstance(body.get("title"), str) or not body["title"]:
            return _validation(
                PULLS_DOC,
                {"resource": "PullRequest", "code": "missing_field", "field": "title"},
            )
        head_owner, _, head = body["head"].rpartition(":")
        base = body["base"]
        head_sha = self._branch_sha(repo, head)
        if head_owner not in ("", repo.owner) or head_sha is None:
            return _validation(
                PULLS_DOC,
                {"resource": "PullRequest", "field": "head", "code": "invalid"},
            )
        if self._branch_sha(repo, base) is None:
            return _validation(
                PULLS_DOC,
                {"resource": "PullRequest", "field": "base", "code": "invalid"},
            )
        if any(
            p.head == head and p.base == base and p.state == "open"
            for p in self._pulls
            if p.repo == repo.full_name
        ):
            message = f"A pull request already exists for {repo.owner}:{head}."
            return _validation(
                PULLS_DOC,
                {"resource": "PullRequest", "code": "custom", "message": message},
            )
        if self._no_commits_between(repo, base, head):
            message = f"No commits between {base} and {head}"
            return _validation(
                PULLS_DOC,
                {"resource": "PullRequest", "code": "custom", "message": message},
            )
        assert ctx.user is not None
        pull = self._new_pull(
            repo,
            head,
            base,
            body["title"],
            body.get("body"),
            bool(body.get("draft")),
            ctx.user.login,
        )
        self._created.append(pull)
        data = self._pull_json(pull)
        return Reply(201, data, {"Location": data["url"]})

    def _update_pull(self, ctx: _Ctx, owner: str, name: str, number: str) -> Reply:
        found = self._writable(ctx, owner, name, "write")
        if isinstance(found, Reply):
            return found
        pull = self._find_pull(found, number)
        if pull is None:
            return NOT_FOUND
        body = ctx.body if isinstance(ctx.body, dict) else {}
        if body.get("state") not in (None, "open", "closed"):
            return _validation(
                f"{DOCS}/pulls/pulls#update-a-pull-request",
                {"resource": "PullRequest", "field": "state", "code": "invalid"},
            )
        for key in ("title", "body", "state", "base"):
            if key in body:
                setattr(pull, key, body[key])
        pull.updated_at = _now()
        return Reply(200, self._pull_json(pull))

    def _add_labels(self, ctx: _Ctx, owner: str, name: str, number: str) -> Reply:
        found = self._writable(ctx, owner, name, "triage")
        if isinstance(found, Reply):
            return found
        repo = found
        pull = self._find_pull(repo, number)
        if pull is None:
            return NOT_FOUND
        raw = ctx.body.get("labels") if isinstance(ctx.body, dict) else ctx.body
        if not isinstance(raw, list):
            return error(
                422,
                'Invalid request.\n\n"labels" wasn\'t supplied.',
                f"{DOCS}/issues/labels",
            )
        names = [item["name"] if isinstance(item, dict) else str(item) for item in raw]
        for label in names:
            repo.labels.setdefault(label, next(self._ids))
            if label not in pull.labels:
                pull.labels.append(label)
        pull.updated_at = _now()
        return Reply(200, [self._label_json(repo, label) for label in pull.labels])

    # -- helpers --------------------------------------------------------------------

    def _sync_git_grant(self, user: FakeUser, repo: FakeRepo) -> None:
        if self.git is None:
            return
        role = self._role_of(user, repo)
        if role is None:
            self.git.revoke(user.token, repo.full_name)
            return
        workflow = user.scopes is None or "workflow" in user.scopes
        push = ROLES.index(role) >= ROLES.index("write")
        self.git.grant(
            user.token, repo.full_name, push=push, workflow=workflow, label=user.label
        )

    @staticmethod
    def _role_of(user: FakeUser | None, repo: FakeRepo) -> Role | None:
        role = repo.grants.get(user.login) if user else None
        # A classic token without the `repo` scope sees public repositories only.
        if user and user.scopes is not None and "repo" not in user.scopes:
            role = None
        if role is None and not repo.private:
            return "read"
        return role

    def _role(self, ctx: _Ctx, repo: FakeRepo) -> Role | None:
        return self._role_of(ctx.user, repo)

    def _visible(
        self, ctx: _Ctx, owner: str, name: str
    ) -> tuple[FakeRepo, Role] | Reply:
        repo = self._repos.get(f"{owner}/{name}")
        role = self._role(ctx, repo) if repo else None
        if repo is None or role is None:
            return NOT_FOUND
        return repo, role

    def _writable(
        self, ctx: _Ctx, owner: str, name: str, needed: Role
    ) -> FakeRepo | Reply:
        found = self._visible(ctx, owner, name)
        if isinstance(found, Reply):
            return found
        repo, role = found
        if ctx.user is None or ROLES.index(role) < ROLES.index(needed):
            return error(403, "Resource not accessible by integration")
        return repo

    def _branch_sha(self, repo: FakeRepo, branch: str) -> str | None:
        if self.git is not None:
            return self.git.rev_parse(repo.full_name, f"refs/heads/{branch}")
        return repo.branches.get(branch)

    def _no_commits_between(self, repo: FakeRepo, base: str, head: str) -> bool:
        if self.git is None:
            return repo.branches.get(base) == repo.branches.get(head)
        try:
            self.git.git(
                repo.full_name,
                "merge-base",
                "--is-ancestor",
                f"refs/heads/{head}",
                f"refs/heads/{base}",
            )
        except RuntimeError:
            return False
        return True

    def _find_pull(self, repo: FakeRepo, number: str) -> PullRequest | None:
        return next(
            (
                p
                for p in self._pulls
                if p.repo == repo.full_name and p.number == int(number)
            ),
            None,
        )

    def _new_pull(
        self,
        repo: FakeRepo,
        head: str,
        base: str,
        title: str,
        body: str | None,
        draft: bool,
        author: str,
        state: str = "open",
    ) -> PullRequest:
        number = 1 + sum(1 for p in self._pulls if p.repo == repo.full_name)
        now = _now()
        pull = PullRequest(
            repo.full_name,
            number,
            next(self._ids),
            head,
            base,
            title,
            body,
            draft,
            author,
            state,
            [],
            now,
            now,
        )
        self._pulls.append(pull)
        return pull

    def _user_json(self, login: str, user_id: int) -> dict[str, Any]:
        return {
            "login": login,
            "id": user_id,
            "node_id": f"U_{user_id}",
            "type": "User",
            "site_admin": False,
            "url": f"{self.url}/users/{login}",
            "html_url": f"{self.html_url}/{login}",
        }

    def _repo_json(self, repo: FakeRepo, role: Role | None) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": repo.id,
            "node_id": f"R_{repo.id}",
            "name": repo.full_name.split("/", 1)[1],
            "full_name": repo.full_name,
            "private": repo.private,
            "visibility": "private" if repo.private else "public",
            "owner": {**self._user_json(repo.owner, 1), "type": "Organization"},
            "html_url": f"{self.html_url}/{repo.full_name}",
            "url": f"{self.url}/repos/{repo.full_name}",
            "clone_url": self.git.url_for(repo.full_name)
            if self.git
            else f"{self.html_url}/{repo.full_name}.git",
            "default_branch": repo.default_branch,
            "fork": False,
            "archived": False,
            "disabled": False,
        }
        if role is not None:
            level = ROLES.index(role)
            data["permissions"] = {
                "admin": level >= ROLES.index("admin"),
                "maintain": level >= ROLES.index("maintain"),
                "push": level >= ROLES.index("write"),
                "triage": level >= ROLES.index("triage"),
                "pull": True,
            }
        return data

    def _label_json(self, repo: FakeRepo, name: str) -> dict[str, Any]:
        label_id = repo.labels[name]
        return {
            "id": label_id,
            "node_id": f"LA_{label_id}",
            "url": f"{self.url}/repos/{repo.full_name}/labels/{name}",
            "name": name,
            "color": "ededed",
            "default": False,
            "description": None,
        }

    def _pull_json(self, pull: PullRequest) -> dict[str, Any]:
        repo = self._repos[pull.repo]
        api = f"{self.url}/repos/{repo.full_name}"
        html = f"{self.html_url}/{repo.full_name}/pull/{pull.number}"
        author = next((u for u in self._users.values() if u.login == pull.author), None)
        repo_json = self._repo_json(repo, None)

        def ref(branch: str) -> dict[str, Any]:
            return {
                "label": f"{repo.owner}:{branch}",
                "ref": branch,
                "sha": self._branch_sha(repo, branch),
                "user": repo_json["owner"],
                "repo": repo_json,
            }

        return {
            "url": f"{api}/pulls/{pull.number}",
            "id": pull.id,
            "node_id": f"PR_{pull.id}",
            "html_url": html,
            "diff_url": f"{html}.diff",
            "patch_url": f"{html}.patch",
            "issue_url": f"{api}/issues/{pull.number}",
            "number": pull.number,
            "state": pull.state,
            "locked": False,
            "title": pull.title,
            "user": self._user_json(pull.author, author.id if author else 1),
            "body": pull.body,
            "labels": [self._label_json(repo, label) for label in pull.labels],
            "draft": pull.draft,
            "created_at": pull.created_at,
            "updated_at": pull.updated_at,
            "closed_at": None,
            "merged_at": None,
            "merge_commit_sha": None,
            "head": ref(pull.head),
            "base": ref(pull.base),
            "author_association": "MEMBER",
            "merged": False,
        }


class _ApiHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"  # one request per connection: close() never waits
    timeout = 60
    server_version = "GitHub.com"

    def log_message(self, *_args: Any) -> None:
        return

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def do_PATCH(self) -> None:
        self._handle()

    def do_PUT(self) -> None:
        self._handle()

    def do_DELETE(self) -> None:
        self._handle()

    def _handle(self) -> None:
        app = cast(FakeGitHub, cast(QuietHTTPServer, self.server).app)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        reply = app.handle(
            self.command, self.path, self.headers.get("Authorization"), raw
        )
        payload = json.dumps(reply.body).encode()
        self.send_response(reply.status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("X-GitHub-Media-Type", "github.v3; format=json")
        self.send_header("X-RateLimit-Limit", "5000")
        self.send_header("X-RateLimit-Remaining", "4999")
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)
