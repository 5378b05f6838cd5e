"""The token cache's rules: answers only while live, within its TTL and the token's
expiry, never an answer read before a drop, and bounded in size. (Against Postgres,
with the real LISTEN: tests/integration/test_token_cache.py.)"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from services.api.tokencache import CAPACITY, TokenCache

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
