"""The bundled offline model: a scripted stand-in for OpenAI's Responses API.

`make demo` uses it when neither OPENAI_API_KEY nor a logged-in Codex volume is there:
the real Codex CLI runs in its container and talks to this server on the host loopback
instead of api.openai.com. It answers every request of a turn from a fixed script
chosen by the task id in the prompt (the demo's sample feature): first an
`apply_patch` call with the task's change, then a final message. The step answered is
the number of tool results already in the request's `input`, so the server keeps no
session state. Protocol background: ../shared/notes/codex-cli.md §7-8.

    python -m services.cli.offline_model --port 8765 --key-file var/demo/model.key

The key file holds the bearer key Codex must send (the one logged into the demo's
auth volumes); requests without it get 401. The key is never printed.
"""

from __future__ import annotations

import argparse
import json
import secrets
import threading
from collections.abc import Callable, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from loguru import logger

from services.cli import sample_repo

Item = dict[str, Any]
TOOL_RESULTS = frozenset({"function_call_output", "custom_tool_call_output"})
USAGE = {
    "input_tokens": 12,
    "input_tokens_details": {"cached_tokens": 0},
    "output_tokens": 3,
    "output_tokens_details": {"reasoning_tokens": 0},
    "total_tokens": 15,
}
PROVIDER_ID = "offline"


def say(text: str) -> Item:
    """An assistant message; a response holding only messages ends the turn."""
    return {
        "type": "message",
        "role": "assistant",
        "content": [{"type": "output_text", "text": text}],
    }


def patch(call_id: str, body: str) -> Item:
    """An `apply_patch` call; `body` is `*** Begin Patch\\n…*** End Patch\\n`."""
    return {
        "type": "custom_tool_call",
        "name": "apply_patch",
        "call_id": call_id,
        "input": body,
    }


def turn_of(body: dict[str, Any]) -> int:
    """The step a request asks for: the tool results already in its input."""
    inputs = body.get("input", [])
    return sum(
        1 for it in inputs if isinstance(it, dict) and it.get("type") in TOOL_RESULTS
    )


def _event(kind: str, **fields: Any) -> bytes:
    return f"event: {kind}\ndata: {json.dumps({'type': kind, **fields})}\n\n".encode()


def sse_stream(items: Sequence[Item], resp_id: str, *, cut: bool = False) -> bytes:
    """A whole Responses API stream for `items` (without `response.completed` when
    `cut`)."""
    created = {"id": resp_id, "status": "in_progress"}
    out = [_event("response.created", response=created)]
    for index, item in enumerate(items):
        out.append(_event("response.output_item.added", output_index=index, item=item))
        out.append(_event("response.output_item.done", output_index=index, item=item))
    if not cut:
        done = {"id": resp_id, "status": "completed", "usage": USAGE}
        out.append(_event("response.completed", response=done))
    return b"".join(out)


def demo_script(body: dict[str, Any]) -> list[list[Item]]:
    """The steps for the sample feature's task the prompt names."""
    text = json.dumps(body)
    for task_id, change in sample_repo.CHANGES.items():
        if f"Implement task {task_id} only" in text:
            return [
                [patch(f"call_{task_id}", change.patch)],
                [say(f"{change.summary} (offline scripted model)")],
            ]
    return [[say("The offline model only knows the demo's sample feature.")]]


Script = Callable[[dict[str, Any]], Sequence[Sequence[Item]]]


class OfflineModel(ThreadingHTTPServer):
    """Serves `POST …/responses` from `script`; anything else is 404."""

    daemon_threads = True

    def __init__(
        self, address: tuple[str, int], api_key: str, script: Script = demo_script
    ) -> None:
        super().__init__(address, _Handler)
        self.api_key, self.script = api_key, script
        self.served = 0
        self._lock = threading.Lock()

    def next_id(self) -> str:
        with self._lock:
            self.served += 1
            return f"resp_{self.served}"

    @property
    def base_url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}/v1"

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that went away (a cancelled run) is not an error here


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: OfflineModel

    def log_message(self, format: str, *args: Any) -> None:
        pass  # request lines would only repeat the path

    def _reply(self, code: int, ctype: str, payload: bytes) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def _error(self, code: int, message: str) -> None:
        body = {"error": {"message": message, "type": "offline_model"}}
        self._reply(code, "application/json", json.dumps(body).encode())

    def do_GET(self) -> None:  # /models probes, WebSocket upgrade attempts, ...
        self._error(404, "not found")

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if not self.path.rstrip("/").endswith("/responses"):
            return self._error(404, "not found")
        expected = f"Bearer {self.server.api_key}"
        if not secrets.compare_digest(self.headers.get("Authorization", ""), expected):
            return self._error(401, "invalid API key for the offline model")
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            return self._error(400, "the request body is not JSON")
        steps = self.server.script(body)
        items = steps[min(turn_of(body), len(steps) - 1)]
        self._reply(200, "text/event-stream", sse_stream(items, self.server.next_id()))
        return None


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--key-file", type=Path, required=True)
    args = parser.parse_args(argv)
    key = args.key_file.read_text().strip()
    with OfflineModel((args.host, args.port), key) as server:
        logger.info("offline model serving {}", server.base_url)
        server.serve_forever(poll_interval=0.2)


if __name__ == "__main__":
    main()
