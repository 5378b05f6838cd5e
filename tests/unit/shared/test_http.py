"""shared.http.Transport: anyio's mid-connect race is a ConnectError, nothing else
changes (found by `make chaos` c: the API killed while a stage fetched a run's keys
crashed the stage's handler)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import httpx
import pytest

from shared.http import Transport

RACE = AttributeError("'NoneType' object has no attribute 'getpeername'")


Handle = Callable[[httpx.AsyncHTTPTransport, httpx.Request], Awaitable[httpx.Response]]


def failing(error: Exception) -> Handle:
    async def handle(
        _self: httpx.AsyncHTTPTransport, _request: httpx.Request
    ) -> httpx.Response:
        raise error

    return handle


async def test_the_race_is_a_connect_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(httpx.AsyncHTTPTransport, "handle_async_request", failing(RACE))
    request = httpx.Request("POST", "http://api/internal/runs/x/secrets")
    with pytest.raises(
        httpx.ConnectError, match="closed while it was set up"
    ) as raised:
        await Transport().handle_async_request(request)
    assert raised.value.request is request
    assert raised.value.__cause__ is RACE


async def test_any_other_attribute_error_is_a_bug_and_stays_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    other = AttributeError("'Foo' object has no attribute 'bar'")
    monkeypatch.setattr(
        httpx.AsyncHTTPTransport, "handle_async_request", failing(other)
    )
    with pytest.raises(AttributeError, match="bar"):
        await Transport().handle_async_request(httpx.Request("GET", "http://api/"))
