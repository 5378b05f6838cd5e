"""The workers' internal API client: answers, errors, and retries in place.

Found by `make chaos` (scenario c): with the API restarting for a few seconds, every
stage that asked for a run's keys at that moment failed its run with
internal_api_unreachable.
"""

from __future__ import annotations

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
