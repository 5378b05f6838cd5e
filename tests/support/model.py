"""A scripted stand-in for the OpenAI Responses API, enough to drive `codex exec`.

Background and protocol: ../shared/notes/codex-cli.md §7-8. The step answered is the
number of tool results already in the request's `input` (the server keeps no session
state); past the end of the script the last step repeats.

    with ScriptedModel([[patch("c1", PATCH)], [say("Done.")]], api_key=KEY) as model:
        provider = model.provider()   # for CodexAgent(provider=...)

A step is a list of output items, or a `Step`: `Step(items, cut=True)` closes the
stream before `response.completed`; `error(status)` answers with an HTTP error; any
step may wait `delay` seconds first (stall and timeout tests). With `api_key`, a request
without `authorization: Bearer <api_key>` is answered 401 and counted.

Several runs against one server can follow different scripts: `choose(request)` returns
the steps for that request (e.g. picked by a marker in the prompt, such as the operator
notes), or None for the default `steps`. Each request records when it arrived
(`received_at`, `time.monotonic()`). A `Rendezvous` as the chooser holds the first
request of several marked runs until all of them have asked (concurrency proofs).
"""

from __future__ import annotations

import itertools
import json
import socket
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

from services.cli.offline_model import patch as patch
from services.cli.offline_model import say as say
from services.cli.offline_model import sse_stream, turn_of

Item = dict[str, Any]
PROVIDER_ID = "scripted"


def run(call_id: str, cmd: str) -> Item:
    """A shell command through the `exec_command` tool."""
    return {
        "type": "function_call",
        "name": "exec_command",
        "call_id": call_id,
        "arguments": json.dumps({"cmd": cmd}),
    }


@dataclass(frozen=True)
class Step:
    """One model response: items (optionally cut short) or an HTTP error."""

    items: Sequence[Item] = ()
    cut: bool = False
    """Close the stream before `response.completed`."""
    status: int | None = None
    """Answer with this HTTP status and `body` instead of a stream."""
    body: dict[str, Any] = field(default_factory=dict)
    delay: float = 0.0
    """Seconds to wait before answering (cut short when the server closes)."""


def error(status: int, message: str = "scripted error", *, delay: float = 0.0) -> Step:
    """An HTTP error reply with an OpenAI-style JSON body."""
    body = {"error": {"message": message, "type": "scripted", "code": str(status)}}
    return Step(status=status, body=body, delay=delay)


@dataclass(frozen=True)
class Request:
    path: str
    headers: dict[str, str]
    """Lower-case names."""
    body: dict[str, Any]
    received_at: float = field(default_factory=time.monotonic)
    """`time.monotonic()` when the request arrived."""

    def mentions(self, text: str) -> bool:
        """Whether `text` occurs in the body (the prompt, tool results, ...)."""
        return text in json.dumps(self.body)

    @property
    def turn(self) -> int:
        """The step this request asks for: the tool results already in its input."""
        return turn_of(self.body)


Script = Sequence[Step | Sequence[Item]]
Chooser = Callable[[Request], Script | None]


class Rendezvous:
    """A chooser that holds the first request of each marked Codex execution until
    every marker has asked (or `timeout` passed), then answers with the default steps.

    `met` afterwards means all of them were waiting on the model at the same moment:
    their agents ran concurrently. Requests without a marker pass straight through.
    """

    def __init__(self, markers: Iterable[str], timeout: float) -> None:
        self.markers = frozenset(markers)
        self.timeout = timeout
        self.arrived: dict[str, float] = {}
        """marker -> `received_at` of its first request."""
        self.released_at: float | None = None
        self._cond = threading.Condition()

    @property
    def met(self) -> bool:
        return self.released_at is not None

    def choose(self, request: Request) -> Script | None:
        marker = next((m for m in self.markers if request.mentions(m)), None)
        if marker is None or request.turn != 0:
            return None
        with self._cond:
            self.arrived.setdefault(marker, request.received_at)
            if self.arrived.keys() == self.markers and self.released_at is None:
                self.released_at = time.monotonic()
                self._cond.notify_all()
            self._cond.wait_for(lambda: self.released_at is not None, self.timeout)
        return None


def _steps(script: Script) -> list[Step]:
    return [s if isinstance(s, Step) else Step(items=list(s)) for s in script]


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], model: ScriptedModel) -> None:
        super().__init__(address, _Handler)
        self.model = model

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that went away (a killed codex) is expected here, not a test error.
        pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep test output clean

    def _reply(self, code: int, ctype: str, payload: bytes) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def do_GET(self) -> None:  # WebSocket upgrade attempts, /models probes, ...
        self._reply(404, "application/json", b'{"error":{"message":"not found"}}')

    def do_POST(self) -> None:
        model = self.server.model
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = json.loads(raw or b"{}")
        headers = {name.lower(): value for name, value in self.headers.items()}
        request = Request(self.path, headers, body)
        model.record(request)
        if not self.path.rstrip("/").endswith("/responses"):
            return self.do_GET()
        if model.api_key is not None and (
            headers.get("authorization") != f"Bearer {model.api_key}"
        ):
            model.auth_failures += 1
            return self._reply(
                401, "application/json", b'{"error":{"message":"bad key"}}'
            )
        step = model.step(request.turn, request)
        if step.delay and model.closing.wait(step.delay):
            self.close_connection = True  # shutting down: drop the request unanswered
            return None
        if step.status is not None:
            payload = json.dumps(step.body).encode()
            return self._reply(step.status, "application/json", payload)
        stream = sse_stream(step.items, f"resp_{next(model.ids)}", cut=step.cut)
        self._reply(200, "text/event-stream", stream)
        return None


class ScriptedModel:
    """`with ScriptedModel(steps) as m:` serves on 127.0.0.1 (host-networked containers
    reach it there); put `m.provider()` into the agent's configuration."""

    def __init__(
        self,
        steps: Script,
        *,
        api_key: str | None = None,
        choose: Chooser | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        if not steps:
            raise ValueError("at least one step is required")
        self.steps = _steps(steps)
        self.api_key = api_key
        self.choose = choose
        self.requests: list[Request] = []
        self.auth_failures = 0
        self.ids = itertools.count(1)
        self.closing = threading.Event()
        self._lock = threading.Lock()
        self._httpd = _Server((host, port), self)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            daemon=True,
        )

    def step(self, index: int, request: Request | None = None) -> Step:
        chosen = None
        if request is not None and self.choose is not None:
            chosen = self.choose(request)
        steps = _steps(chosen) if chosen else self.steps
        return steps[min(index, len(steps) - 1)]

    def record(self, request: Request) -> None:
        with self._lock:
            self.requests.append(request)

    @property
    def base_url(self) -> str:
        host, port = self._httpd.server_address[:2]
        if isinstance(host, bytes):
            host = host.decode()
        return f"http://{host}:{port}/v1"

    def provider(self, env_key: str = "CODEX_API_KEY") -> dict[str, Any]:
        """A custom provider table for this server (retries off, as in the notes)."""
        return {
            "id": PROVIDER_ID,
            "name": "Scripted",
            "base_url": self.base_url,
            "env_key": env_key,
            "wire_api": "responses",
        }

    def start(self) -> Self:
        self._thread.start()
        return self

    def close(self) -> None:
        self.closing.set()  # wakes delayed handlers so nothing lingers after a test
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on right now (for "server down" cases)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port
