"""The token cache's rules: answers only while live, within its TTL and the token's
expiry, never an answer read before a drop, and bounded in size; its watcher's loop
through failures. (Against Postgres, with the real LISTEN and triggers:
tests/integration/test_token_cache.py.)"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from services.api.tokencache import CAPACITY, TokenCache, TokenWatcher
from tests.support.fakes import CapturedLogs

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
ALICE = uuid.uuid4()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def live_cache(ttl: float = 30.0, capacity: int = CAPACITY) -> tuple[TokenCache, Clock]:
    clock = Clock()
    cache = TokenCache(ttl, capacity=capacity, clock=clock)
    cache.set_live(True)
    return cache, clock


def test_a_kept_token_is_answered_until_its_ttl() -> None:
    cache, clock = live_cache(ttl=30.0)
    cache.keep("h", ALICE, None, cache.generation)
    assert cache.lookup("h", NOW) == ALICE
    clock.now += 29.9
    assert cache.lookup("h", NOW) == ALICE
    clock.now += 0.1
    assert cache.lookup("h", NOW) is None
    assert "h" not in cache.entries


def test_a_token_is_not_answered_past_its_own_expiry() -> None:
    cache, _ = live_cache()
    cache.keep("h", ALICE, NOW + timedelta(seconds=5), cache.generation)
    assert cache.lookup("h", NOW) == ALICE
    assert cache.lookup("h", NOW + timedelta(seconds=5)) is None


def test_nothing_is_kept_or_answered_while_dark() -> None:
    cache = TokenCache(30.0)
    cache.keep("h", ALICE, None, cache.generation)
    assert cache.entries == {}

    cache.set_live(True)
    cache.keep("h", ALICE, None, cache.generation)
    assert cache.lookup("h", NOW) == ALICE
    cache.set_live(False)
    assert cache.lookup("h", NOW) is None
    cache.set_live(True)  # back: what it knew before is gone
    assert cache.lookup("h", NOW) is None


def test_a_check_read_before_a_drop_is_not_kept() -> None:
    cache, _ = live_cache()
    began = cache.generation  # the check reads the database ...
    cache.forget()  # ... a revocation's NOTIFY arrives ...
    cache.keep("h", ALICE, None, began)  # ... and its answer comes back
    assert cache.lookup("h", NOW) is None

    cache.keep("h", ALICE, None, cache.generation)
    assert cache.lookup("h", NOW) == ALICE
    cache.forget()
    assert cache.lookup("h", NOW) is None


def test_going_live_refuses_checks_begun_while_dark() -> None:
    cache = TokenCache(30.0)
    began = cache.generation
    cache.set_live(True)  # LISTEN is up only now: a change before it went unheard
    cache.keep("h", ALICE, None, began)
    assert cache.entries == {}


def test_the_oldest_entry_makes_room() -> None:
    cache, _ = live_cache(capacity=2)
    for name in ("a", "b", "c"):
        cache.keep(name, ALICE, None, cache.generation)
    assert list(cache.entries) == ["b", "c"]
    cache.keep("c", ALICE, None, cache.generation)  # already there: nothing evicted
    assert list(cache.entries) == ["b", "c"]


def test_a_zero_ttl_keeps_nothing() -> None:
    cache, _ = live_cache(ttl=0)
    cache.keep("h", ALICE, None, cache.generation)
    assert cache.lookup("h", NOW) is None


class Connects:
    """Stands in for `asyncpg.connect`: raises the scripted errors in turn (the last
    one from then on), and sets `enough` at the `calls`-th attempt."""

    def __init__(self, *errors: BaseException, calls: int) -> None:
        self.errors = list(errors)
        self.calls = 0
        self.wanted = calls
        self.enough = asyncio.Event()

    async def __call__(self, *_args: object, **_kwargs: object) -> None:
        self.calls += 1
        if self.calls >= self.wanted:
            self.enough.set()
        raise self.errors[min(self.calls, len(self.errors)) - 1]


async def watch_until(
    monkeypatch: pytest.MonkeyPatch, connects: Connects
) -> TokenWatcher:
    monkeypatch.setattr("asyncpg.connect", connects)
    watcher = TokenWatcher(TokenCache(30.0), "postgresql://unused", retry=0)
    watcher.start()
    await asyncio.wait_for(connects.enough.wait(), 10)
    await watcher.stop()
    return watcher


async def test_an_outage_is_logged_once_not_per_attempt(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with CapturedLogs.capture() as logs:
        watcher = await watch_until(monkeypatch, Connects(OSError("refused"), calls=5))
    assert len(logs.matching("Token cache off")) == 1
    assert "LISTEN api_tokens_changed lost (OSError)" in logs.messages()[0]
    assert not watcher.cache.live
    assert watcher.task is None


async def test_an_unexpected_error_is_logged_and_the_watcher_goes_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    connects = Connects(RuntimeError("bug"), OSError("refused"), calls=3)
    with CapturedLogs.capture() as logs:
        watcher = await watch_until(monkeypatch, connects)
    failed = logs.matching("Token cache watcher failed")
    assert len(failed) == 1
    assert failed[0]["exception"] is not None
    assert connects.calls >= 3  # it went on trying
    assert not watcher.cache.live
