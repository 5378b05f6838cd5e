"""The workers' internal API client: answers, errors, and retries in place.

Found by `make chaos` (scenario c): with the API restarting for a few seconds, every
stage that asked for a run's keys at that moment failed its run with
internal_api_unreachable.
"""

from __future__ import annotations

import asyncio
from uuid import uuid4

import httpx
import pytest

from shared import internal_api
from shared.internal_api import InternalApi, InternalApiError

TOKEN = "svc-token-0123456789abcdef0123456789"


@pytest.fixture(autouse=True)
def no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(internal_api, "FIRST_DELAY", 0.001)
    monkeypatch.setattr(internal_api, "MAX_DELAY", 0.001)


def api(answers: list[httpx.Response | Exception], **options: float) -> InternalApi:
    """A client whose transport plays `answers` in order (the last one repeats)."""
    calls = iter(range(10**6))

    def handle(request: httpx.Request) -> httpx.Response:
        assert request.headers["Authorization"] == f"Bearer {TOKEN}"
        answer = answers[min(next(calls), len(answers) - 1)]
        if isinstance(answer, Exception):
            raise answer
        return answer

    return InternalApi(
        "http://api", lambda: TOKEN, transport=httpx.MockTransport(handle), **options
    )


KEYS = httpx.Response(200, json={"secrets": {"github": "ghp_x"}, "missing": []})


async def test_secrets_returns_the_keys() -> None:
    assert await api([KEYS]).secrets(uuid4(), ["github"]) == {"github": "ghp_x"}


async def test_secrets_retries_while_the_api_restarts() -> None:
    refused = httpx.ConnectError("connection refused")
    answers: list[httpx.Response | Exception] = [refused, refused, KEYS]
    assert await api(answers).secrets(uuid4(), ["github"]) == {"github": "ghp_x"}


async def test_secrets_retries_while_the_database_is_down() -> None:
    unavailable = httpx.Response(503, json={"detail": {"code": "database_unavailable"}})
    answers: list[httpx.Response | Exception] = [unavailable, KEYS]
    assert await api(answers).secrets(uuid4(), ["github"]) == {"github": "ghp_x"}


async def test_secrets_gives_up_after_retry_for() -> None:
    client = api([httpx.ConnectError("refused")], retry_for=0.05)
    with pytest.raises(InternalApiError) as caught:
        await client.secrets(uuid4(), ["github"])
    assert (caught.value.code, caught.value.retryable) == (
        "internal_api_unreachable",
        True,
    )


@pytest.mark.parametrize(
    ("status", "code"),
    [(401, "internal_api_unauthorized"), (404, "run_not_found")],
)
async def test_secrets_fails_at_once_when_asking_again_cannot_help(
    status: int, code: str
) -> None:
    seen: list[int] = []

    def handle(_: httpx.Request) -> httpx.Response:
        seen.append(status)
        return httpx.Response(status)

    client = InternalApi(
        "http://api", lambda: TOKEN, transport=httpx.MockTransport(handle)
    )
    with pytest.raises(InternalApiError) as caught:
        await client.secrets(uuid4(), ["github"])
    assert (caught.value.code, caught.value.retryable, len(seen)) == (code, False, 1)


async def test_secrets_retries_when_the_api_dies_mid_connect(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The default transport (`shared.http.Transport`): anyio's AttributeError for a
    socket closed while connecting is retried like a refused connection."""
    answers = iter([AttributeError("'NoneType' object has no attribute 'getpeername'")])

    async def handle(
        _self: httpx.AsyncHTTPTransport, request: httpx.Request
    ) -> httpx.Response:
        answer = next(answers, None)
        if answer is not None:
            raise answer
        return httpx.Response(
            200, json={"secrets": {"github": "ghp_x"}, "missing": []}, request=request
        )

    monkeypatch.setattr(httpx.AsyncHTTPTransport, "handle_async_request", handle)
    client = InternalApi("http://api", lambda: TOKEN)
    assert await client.secrets(uuid4(), ["github"]) == {"github": "ghp_x"}


async def test_concurrent_calls_do_not_cut_each_other() -> None:
    """Each call has its own transport. With one shared, the first client to finish
    closed it, and the other calls' connections with it: ReadError, so
    internal_api_unreachable (make chaos, scenario b: 15 runs failed so when their
    retries met the database outage). A real server on loopback answers the calls
    one after another, 20 ms apart, so each ends while the later ones wait; no
    retries, so any cut connection fails."""
    body = b'{"secrets": {"github": "ghp_x"}, "missing": []}'
    arrived = iter(range(1, 100))

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        await reader.readexactly(length)
        await asyncio.sleep(0.02 * next(arrived))
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
        )
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = InternalApi(f"http://127.0.0.1:{port}", lambda: TOKEN, retry_for=0)
    try:
        found = await asyncio.gather(
            *(client.secrets(uuid4(), ["github"]) for _ in range(10)),
            return_exceptions=True,
        )
    finally:
        server.close()
        await server.wait_closed()
    assert found == [{"github": "ghp_x"}] * 10
