"""`rawhttp` against a real loopback HTTP/1.1 server (asyncio streams)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest
import pytest_asyncio

from tests.bench import rawhttp


class Server:
    """Answers each request with its method, target, Authorization and body as JSON;
    `/bare` answers without a Content-Length. Counts the connections it accepted."""

    def __init__(self) -> None:
        self.connections = 0

    async def handle(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode().split("\r\n")
                method, target, _ = lines[0].split(" ")
                pairs = [line.split(": ", 1) for line in lines[1:] if ": " in line]
                headers = {name.lower(): value for name, value in pairs}
                length = int(headers.get("content-length", "0"))
                body = (await reader.readexactly(length)).decode() if length else None
                if target == "/bare":
                    writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nhi")
                    await writer.drain()
                    break
                answer = json.dumps(
                    {
                        "method": method,
                        "target": target,
                        "authorization": headers.get("authorization"),
                        "type": headers.get("content-type"),
                        "body": body,
                    }
                ).encode()
                status = b"202 Accepted" if method == "POST" else b"200 OK"
                writer.write(
                    b"HTTP/1.1 " + status + b"\r\nContent-Type: application/json\r\n"
                    b"Content-Length: "
                    + str(len(answer)).encode()
                    + b"\r\n\r\n"
                    + answer
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@pytest_asyncio.fixture
async def served() -> AsyncIterator[tuple[Server, str]]:
    server = Server()
    listener = await asyncio.start_server(server.handle, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    async with listener:
        yield server, f"http://127.0.0.1:{port}"


@asynccontextmanager
async def connected(
    url: str, authorization: str | None
) -> AsyncIterator[rawhttp.Connection]:
    connection = await rawhttp.Connection.open(httpx.URL(url), authorization)
    try:
        yield connection
    finally:
        await connection.close()


async def test_get_and_post_on_one_kept_alive_connection(
    served: tuple[Server, str],
) -> None:
    server, url = served
    async with connected(url, "Bearer sw_x") as connection:
        status, body = await connection.request("GET", "/runs?limit=2")
        assert status == 200
        assert json.loads(body) == {
            "method": "GET",
            "target": "/runs?limit=2",
            "authorization": "Bearer sw_x",
            "type": None,
            "body": None,
        }
        sent = json.dumps({"featureKey": "k"}).encode()
        status, body = await connection.request("POST", "/runs", sent)
        assert status == 202
        answer = json.loads(body)
        assert answer["body"] == sent.decode()
        assert answer["type"] == "application/json"
    assert server.connections == 1


async def test_no_authorization_header_without_a_token(
    served: tuple[Server, str],
) -> None:
    _, url = served
    async with connected(url, None) as connection:
        _, body = await connection.request("GET", "/")
    assert json.loads(body)["authorization"] is None


async def test_an_answer_without_content_length_is_a_bad_answer(
    served: tuple[Server, str],
) -> None:
    _, url = served
    async with connected(url, None) as connection:
        with pytest.raises(rawhttp.BadAnswer, match="no Content-Length"):
            await connection.request("GET", "/bare")


async def test_pool_reuses_idle_connections_until_they_expire(
    served: tuple[Server, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    server, url = served
    pool = rawhttp.Pool(url, None)
    try:
        answers = await asyncio.gather(*(pool.request("GET", "/") for _ in range(3)))
        assert [status for status, _ in answers] == [200, 200, 200]
        assert server.connections == 3  # three at once: three connections
        await pool.request("GET", "/")
        assert server.connections == 3  # an idle one was reused

        monkeypatch.setattr(rawhttp, "IDLE_EXPIRY", 0.0)
        await pool.request("GET", "/")
        assert server.connections == 4  # the idle ones had expired: a new one
        assert len(pool.idle) == 1  # the expired ones were closed, not kept
    finally:
        await pool.close()
