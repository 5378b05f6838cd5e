"""A git smart-HTTP server for tests: `git http-backend` behind GitHub-like token auth.

Bare repositories live under a temporary root at `/<owner>/<name>.git`. Credentials
are checked the way GitHub does: none or an unknown token is a 401 with
`WWW-Authenticate: Basic realm="GitHub"`, a repository the token can't see is a 404,
and a push without push permission is a 403. A `pre-receive` hook refuses changes
under `.github/workflows/` from a token granted without the workflow scope.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self, cast
from urllib.parse import parse_qs, unquote, urlsplit

_REPO_PATH = re.compile(r"/([A-Za-z0-9_.-]+)/([A-Za-z0-9_.-]+)\.git(/.*)")
_SERVICES = ("git-upload-pack", "git-receive-pack")
_CHUNK = 64 * 1024

# Runs inside receive-pack, which inherits the CGI environment we build per request.
_PRE_RECEIVE = """#!/bin/sh
[ "$FAKE_GIT_WORKFLOW_SCOPE" = 1 ] && exit 0
zero=0000000000000000000000000000000000000000
while read -r old new ref; do
  [ "$new" = "$zero" ] && continue
  range="$old..$new"
  [ "$old" = "$zero" ] && range="$new --not --branches"
  for commit in $(git rev-list $range); do
    path=$(git diff-tree --no-commit-id --name-only -r --root "$commit" \\
      | grep '^\\.github/workflows/' | head -n 1)
    if [ -n "$path" ]; then
      echo "refusing to allow a Personal Access Token to create or update workflow" \\
        "\\`$path\\` without \\`workflow\\` scope" >&2
      exit 1
    fi
  done
done
exit 0
"""


class QuietHTTPServer(ThreadingHTTPServer):
    """Joins its request threads on close and keeps handler errors for assertions."""

    daemon_threads = False
    block_on_close = True

    def __init__(self, handler: type[BaseHTTPRequestHandler], app: Any) -> None:
        super().__init__(("127.0.0.1", 0), handler)
        self.app = app
        self.errors: list[BaseException] = []

    def handle_error(self, request: Any, client_address: Any) -> None:  # noqa: ARG002
        exc = sys.exc_info()[1]
        if exc is not None and not isinstance(exc, ConnectionError):
            self.errors.append(exc)


class BackgroundHTTPServer:
    """A `QuietHTTPServer` on 127.0.0.1:<free port>, served from one thread."""

    def __init__(self, handler: type[BaseHTTPRequestHandler], app: Any) -> None:
        self._handler = handler
        self._app = app
        self._server: QuietHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._server = QuietHTTPServer(self._handler, self._app)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"{type(self._app).__name__}-{self.port}",
        )
        self._thread.start()

    def stop(self) -> None:
        if self._server is None or self._thread is None:
            return
        self._server.shutdown()
        self._server.server_close()  # joins the request threads
        self._thread.join()
        self._thread = None

    @property
    def server(self) -> QuietHTTPServer:
        if self._server is None:
            raise RuntimeError("server not started")
        return self._server

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def errors(self) -> list[BaseException]:
        return list(self.server.errors) if self._server else []


def token_from_header(value: str | None) -> str | None:
    """The token in `Basic base64(<any user>:<token>)`, `Bearer <t>` or `token <t>`."""
    if not value:
        return None
    scheme, _, credentials = value.strip().partition(" ")
    credentials = credentials.strip()
    if scheme.lower() in ("bearer", "token"):
        return credentials or None
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(credentials, validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    _, _, password = decoded.partition(":")
    return password or None


def run_git(
    *args: str,
    git_dir: Path | None = None,
    input: bytes | None = None,
    env: Mapping[str, str] | None = None,
) -> str:
    """Run git with no user or system config; raise on failure, return stdout."""
    full_env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "LC_ALL": "C",
        **(env or {}),
    }
    if git_dir is not None:
        full_env["GIT_DIR"] = str(git_dir)
    done = subprocess.run(
        ["git", *args], input=input, capture_output=True, env=full_env, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)}: {done.stderr.decode().strip()}")
    return done.stdout.decode()


@dataclass(frozen=True)
class GitRequest:
    """One request as the server saw it (never the token itself)."""

    method: str
    path: str
    service: str | None
    authenticated: bool  # a known token was presented
    token_label: str | None
    status: int
    content_encoding: str | None = None
    chunked: bool = False
    git_protocol: str | None = None


@dataclass
class _Grant:
    push: bool
    workflow: bool


class GitSmartHTTPServer:
    """Serves bare repositories over smart HTTP; use as a context manager."""

    def __init__(self, root: Path | None = None) -> None:
        self._own_root = root is None
        self.root = (
            Path(tempfile.mkdtemp(prefix="gitserver-")) if root is None else root
        )
        self._lock = threading.Lock()
        self._labels: dict[str, str] = {}
        self._grants: dict[tuple[str, str], _Grant] = {}
        self._requests: list[GitRequest] = []
        self._faults: list[int] = []
        self._http = BackgroundHTTPServer(_GitHandler, self)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self._http.start()

    def stop(self) -> None:
        self._http.stop()
        if self._own_root:
            shutil.rmtree(self.root, ignore_errors=True)

    @property
    def base_url(self) -> str:
        return self._http.base_url

    @property
    def errors(self) -> list[BaseException]:
        """Exceptions raised by request handlers (expect none)."""
        return self._http.errors

    def url_for(self, full_name: str) -> str:
        return f"{self.base_url}/{full_name}.git"

    def repo_path(self, full_name: str) -> Path:
        owner, _, name = full_name.partition("/")
        if not (owner and name) or not _REPO_PATH.fullmatch(f"/{full_name}.git/"):
            raise ValueError(f"not an owner/name: {full_name!r}")
        return self.root / owner / f"{name}.git"

    def has_repo(self, full_name: str) -> bool:
        return (self.repo_path(full_name) / "HEAD").is_file()

    def create_repo(self, full_name: str, *, default_branch: str = "main") -> Path:
        """An empty bare repository whose HEAD names `default_branch`."""
        path = self.repo_path(full_name)
        path.parent.mkdir(parents=True, exist_ok=True)
        run_git(
            "init", "--quiet", "--bare", f"--initial-branch={default_branch}", str(path)
        )
        run_git("config", "http.receivepack", "true", git_dir=path)
        hook = path / "hooks" / "pre-receive"
        hook.write_text(_PRE_RECEIVE)
        hook.chmod(0o755)
        return path

    def add_token(self, token: str, label: str | None = None) -> str:
        """Make `token` known (valid) without access to anything; returns its label."""
        with self._lock:
            if token not in self._labels:
                self._labels[token] = label or f"token-{len(self._labels) + 1}"
            elif label:
                self._labels[token] = label
            return self._labels[token]

    def grant(
        self,
        token: str,
        full_name: str,
        *,
        push: bool = False,
        workflow: bool = True,
        label: str | None = None,
    ) -> None:
        """Let `token` read `full_name` (and push, and change workflow files)."""
        self.add_token(token, label)
        with self._lock:
            self._grants[(token, full_name)] = _Grant(push=push, workflow=workflow)

    def revoke(self, token: str, full_name: str | None = None) -> None:
        """Remove one grant, or forget the token altogether (it becomes a 401)."""
        with self._lock:
            if full_name is not None:
                self._grants.pop((token, full_name), None)
                return
            self._labels.pop(token, None)
            for key in [k for k in self._grants if k[0] == token]:
                del self._grants[key]

    def fail_next(self, count: int = 1, status: int = 503) -> None:
        """The next `count` requests answer `status` before auth is checked."""
        with self._lock:
            self._faults.extend([status] * count)

    @property
    def requests(self) -> list[GitRequest]:
        with self._lock:
            return list(self._requests)

    def clear_requests(self) -> None:
        with self._lock:
            self._requests.clear()

    def git(self, full_name: str, *args: str) -> str:
        """Run a git command in the bare repository; returns stdout."""
        return run_git(*args, git_dir=self.repo_path(full_name))

    def rev_parse(self, full_name: str, ref: str) -> str | None:
        """The commit `ref` names (a branch name is looked up as refs/heads/…)."""
        if not self.has_repo(full_name):
            return None
        if not ref.startswith("refs/") and re.fullmatch(r"[0-9a-f]{40}", ref) is None:
            ref = f"refs/heads/{ref}"
        try:
            return self.git(
                full_name, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}"
            ).strip()
        except RuntimeError:
            return None

    def branches(self, full_name: str) -> dict[str, str]:
        out = self.git(
            full_name,
            "for-each-ref",
            "--format=%(refname:short) %(objectname)",
            "refs/heads",
        )
        return dict(line.split(" ", 1) for line in out.splitlines())

    def default_branch(self, full_name: str) -> str:
        return self.git(full_name, "symbolic-ref", "--short", "HEAD").strip()

    def show(self, full_name: str, ref: str, path: str) -> bytes:
        """The bytes of `path` at `ref` (raises if either is missing)."""
        repo = self.repo_path(full_name)
        done = subprocess.run(
            ["git", "--git-dir", str(repo), "cat-file", "blob", f"{ref}:{path}"],
            capture_output=True,
            check=True,
        )
        return done.stdout

    # -- used by the handler ------------------------------------------------------

    def _authorize(
        self, token: str | None, full_name: str, push: bool
    ) -> tuple[int, str | None, _Grant | None]:
        with self._lock:
            label = self._labels.get(token) if token else None
            if label is None:
                return 401, None, None
            grant = self._grants.get((token or "", full_name))
        if grant is None or not self.has_repo(full_name):
            return 404, label, None
        if push and not grant.push:
            return 403, label, grant
        return 200, label, grant

    def _take_fault(self) -> int | None:
        with self._lock:
            return self._faults.pop(0) if self._faults else None

    def _record(self, request: GitRequest) -> None:
        with self._lock:
            self._requests.append(request)


class _GitHandler(BaseHTTPRequestHandler):
    # HTTP/1.0: one request per connection, so close() never waits on an idle client.
    protocol_version = "HTTP/1.0"
    timeout = 60
    server_version = "FakeGitHub-git/1.0"

    def log_message(self, *_args: Any) -> None:
        return

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def _handle(self) -> None:
        app = cast(GitSmartHTTPServer, cast(QuietHTTPServer, self.server).app)
        url = urlsplit(self.path)
        path = unquote(url.path)
        match = _REPO_PATH.fullmatch(path)
        service = self._service(path, url.query)
        token = token_from_header(self.headers.get("Authorization"))
        seen = GitRequest(
            method=self.command,
            path=path,
            service=service,
            authenticated=False,
            token_label=None,
            status=0,
            content_encoding=self.headers.get("Content-Encoding"),
            chunked="chunked" in self.headers.get("Transfer-Encoding", "").lower(),
            git_protocol=self.headers.get("Git-Protocol"),
        )
        # Recorded before the answer goes out: the client may look as soon as it has it.
        fault = app._take_fault()
        if fault is not None:
            app._record(replace(seen, status=fault))
            self._plain(fault, "Service unavailable (injected)\n")
            return
        if match is None:
            app._record(replace(seen, status=404))
            self._plain(404, "Not Found\n")
            return
        full_name = f"{match[1]}/{match[2]}"
        push = service == "git-receive-pack"
        status, label, grant = app._authorize(token, full_name, push)
        seen = replace(seen, authenticated=label is not None, token_label=label)
        if status != 200 or grant is None:
            app._record(replace(seen, status=status))
            self._deny(status, full_name, label)
        else:
            self._run_backend(app, path, url.query, grant, seen)

    @staticmethod
    def _service(path: str, query: str) -> str | None:
        if path.endswith("/info/refs"):
            found = parse_qs(query).get("service", [None])[0]
            return found if found in _SERVICES else None
        tail = path.rsplit("/", 1)[-1]
        return tail if tail in _SERVICES else None

    def _deny(self, status: int, full_name: str, label: str | None) -> None:
        if status == 401:
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="GitHub"')
            self.send_header("Content-Type", "text/plain")
            self.end_headers()
            self.wfile.write(b"Invalid username or token.\n")
        elif status == 403:
            self._plain(403, f"Permission to {full_name}.git denied to {label}.\n")
        else:
            self._plain(404, "Repository not found.\n")

    def _plain(self, status: int, text: str) -> None:
        body = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _run_backend(
        self,
        app: GitSmartHTTPServer,
        path: str,
        query: str,
        grant: _Grant,
        seen: GitRequest,
    ) -> None:
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(app.root),
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_CONFIG_GLOBAL": os.devnull,
            "GIT_PROJECT_ROOT": str(app.root),
            "GIT_HTTP_EXPORT_ALL": "1",
            "GATEWAY_INTERFACE": "CGI/1.1",
            "SERVER_PROTOCOL": "HTTP/1.1",
            "REQUEST_METHOD": self.command,
            "PATH_INFO": path,
            "QUERY_STRING": query,
            "CONTENT_TYPE": self.headers.get("Content-Type", ""),
            "REMOTE_USER": seen.token_label or "",
            "REMOTE_ADDR": self.client_address[0],
            "FAKE_GIT_WORKFLOW_SCOPE": "1" if grant.workflow else "0",
        }
        length = self.headers.get("Content-Length")
        if length is not None:
            env["CONTENT_LENGTH"] = length
        # Passed through, not decoded: http-backend inflates gzip bodies itself.
        if encoding := self.headers.get("Content-Encoding"):
            env["HTTP_CONTENT_ENCODING"] = encoding
        # Without it the backend silently answers protocol v0.
        if protocol := self.headers.get("Git-Protocol"):
            env["HTTP_GIT_PROTOCOL"] = protocol
        proc = subprocess.Popen(
            ["git", "http-backend"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        assert proc.stdin is not None
        assert proc.stdout is not None
        assert proc.stderr is not None
        feeder = threading.Thread(target=self._feed, args=(proc.stdin,))
        # Drained so a chatty backend never blocks on a full stderr pipe.
        drainer = threading.Thread(target=proc.stderr.read)
        feeder.start()
        drainer.start()
        try:
            status, headers = self._cgi_headers(proc.stdout)
            app._record(replace(seen, status=status))
            self.send_response(status)
            for name, value in headers:
                self.send_header(name, value)
            self.end_headers()
            shutil.copyfileobj(proc.stdout, self.wfile, _CHUNK)
        finally:
            proc.stdout.close()
            proc.wait(timeout=60)
            feeder.join()
            drainer.join()
            proc.stderr.close()

    def _body(self) -> Iterator[bytes]:
        """The request body as sent (still gzip if it was), de-chunked if chunked."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            while True:
                size = int(self.rfile.readline().split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline().strip():  # trailers
                        pass
                    return
                yield self.rfile.read(size)
                self.rfile.readline()
        remaining = int(self.headers.get("Content-Length") or 0)
        while remaining > 0:
            data = self.rfile.read(min(_CHUNK, remaining))
            if not data:
                return
            remaining -= len(data)
            yield data

    def _feed(self, stdin: IO[bytes]) -> None:
        try:
            for data in self._body():
                stdin.write(data)
        except (BrokenPipeError, ConnectionError):
            pass  # the backend stopped reading (it answered an error)
        finally:
            with contextlib.suppress(BrokenPipeError):
                stdin.close()

    @staticmethod
    def _cgi_headers(stdout: IO[bytes]) -> tuple[int, list[tuple[str, str]]]:
        status, headers = 200, list[tuple[str, str]]()
        while True:
            raw = stdout.readline()
            if not raw:  # the backend died before its headers: not a 200
                return 500, [("Content-Type", "text/plain")]
            line = raw.rstrip(b"\r\n")
            if not line:
                return status, headers
            name, _, value = line.decode("latin-1").partition(":")
            if name.lower() == "status":
                status = int(value.strip().split(" ", 1)[0])
            else:
                headers.append((name.strip(), value.strip()))
