"""Send a request path to an ASGI app byte for byte.

httpx removes `.` and `..` segments from every URL it builds, as browsers do; a
hand-written client or a proxy need not, and uvicorn hands the path to the app as
received. This calls the app directly with the raw path, as a server would.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from starlette.types import ASGIApp


@dataclass(frozen=True)
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode(errors="replace")


async def raw_get(
    app: ASGIApp, raw_path: bytes, headers: dict[str, str] | None = None
) -> RawResponse:
    path, _, query = raw_path.partition(b"?")
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "server": ("raw", 80),
        "client": ("127.0.0.1", 1),
        "root_path": "",
        "path": unquote(path.decode("ascii")),  # as uvicorn does
        "raw_path": path,
        "query_string": query,
        "headers": [
            (b"host", b"raw"),
            *((k.lower().encode(), v.encode()) for k, v in (headers or {}).items()),
        ],
    }
    sent = False
    status = 0
    headers_out: dict[str, str] = {}
    body = bytearray()

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Any) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
            headers_out.update(
                (k.decode("latin-1"), v.decode("latin-1"))
                for k, v in message.get("headers", [])
            )
        elif message["type"] == "http.response.body":
            body.extend(message.get("body", b""))

    await app(scope, receive, send)
    return RawResponse(status, headers_out, bytes(body))
