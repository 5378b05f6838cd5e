"""Known secret values: bounded buckets, bounded memory, whole masks."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from pydantic import BaseModel, SecretStr

from shared.redaction import (
    MASK,
    RECENT_SECRETS,
    forget_secrets,
    redact_text,
    register_secret,
    register_settings_secrets,
)
from shared.secret_values import BUCKET, KnownValues, mask


@pytest.fixture(autouse=True)
def no_registered_secrets() -> Iterator[None]:
    forget_secrets()
    yield
    forget_secrets()


def value(i: int) -> str:
    return f"secret-value-{i:06d}"


def test_mask_replaces_the_union_of_overlapping_and_touching_spans() -> None:
    text = "0123456789abcdef"
    assert mask(text, [], "*") == text
    assert mask("", [], "*") == ""
    assert mask("clé→ßecret", [(2, 7)], "*") == "cl*ret"
    assert mask(text, [(2, 4)], "*") == "01*456789abcdef"
    assert mask(text, [(6, 9), (2, 4), (3, 5)], "*") == "01*5*9abcdef"
    assert mask(text, [(2, 4), (4, 6)], "*") == "01*6789abcdef"  # touching: one run
    assert mask(text, [(0, 16), (3, 5)], "*") == "*"


def test_a_value_containing_another_in_another_bucket_is_masked_whole() -> None:
    known = KnownValues()
    inner = "abcdefgh12"
    known.add(inner)
    for i in range(BUCKET):  # the next one lands in the next bucket
        known.add(value(i))
    outer = "xx-" + inner + "-yy"
    known.add(outer)
    assert mask(f"[{outer}] [{inner}]", known.spans(f"[{outer}] [{inner}]"), "*") == (
        "[*] [*]"
    )


def test_every_bucket_holds_at_most_bucket_values_and_memory_is_bounded() -> None:
    known = KnownValues(capacity=100)
    for i in range(1_000):
        known.add(value(i))
    assert len(known) == 100
    assert all(len(values) <= BUCKET for values in known._buckets.values())
    assert len(known._patterns) == len(known._buckets) <= 100 // BUCKET + 2
    assert value(899) not in known  # the oldest went first
    assert value(900) in known
    assert known.spans(value(899)) == []
    assert known.spans(f"a {value(999)} b") == [(2, 2 + len(value(999)))]


def test_a_value_registered_again_in_the_older_half_moves_to_the_newest_end() -> None:
    known = KnownValues(capacity=10)
    for i in range(10):
        known.add(value(i))
    known.add(value(0))  # the oldest: moved
    known.add(value(9))  # among the newest: stays where it is
    for i in range(10, 19):
        known.add(value(i))
    assert value(0) in known  # registered again just before the last 9
    assert value(9) not in known
    assert len(known) == 10


def test_settings_secrets_are_never_dropped_and_run_secrets_are_bounded() -> None:
    class Conf(BaseModel):
        internal_api_token: SecretStr

    register_settings_secrets(Conf(internal_api_token=SecretStr("svc-token-123")))
    first = "first-run-key-0001"
    register_secret(first)
    for i in range(RECENT_SECRETS):
        register_secret(value(i))
    text = f"svc-token-123 {first} {value(RECENT_SECRETS - 1)}"
    assert redact_text(text) == f"{MASK} {first} {MASK}"


def test_values_overlapping_in_one_bucket_are_masked_as_one() -> None:
    known = KnownValues()
    known.add("abcdefgh")
    known.add("ghijklmn")
    text = "xxabcdefghijklmnxx abcdefgh"
    assert mask(text, known.spans(text), "*") == "xx*xx *"


def test_an_evicted_value_is_masked_again_once_registered_again() -> None:
    known = KnownValues(capacity=4)
    for i in range(5):
        known.add(value(i))
    assert known.spans(value(0)) == []
    known.add(value(0))
    assert known.spans(value(0)) == [(0, len(value(0)))]
    assert value(1) not in known  # the oldest made room for it


def test_a_pinned_value_inside_a_recent_one_and_the_reverse_are_masked_whole() -> None:
    register_secret("inner-pinned-01", pinned=True)
    register_secret("xx-inner-pinned-01-yy")
    register_secret("recent-inner-02")
    register_secret("zz-recent-inner-02-zz", pinned=True)
    text = "a xx-inner-pinned-01-yy b zz-recent-inner-02-zz c"
    assert redact_text(text) == f"a {MASK} b {MASK} c"


class Checked(KnownValues):
    """Checks, each time the compiled buckets are replaced, that every value it
    holds is found: what a thread logging at that moment would see."""

    def _publish_checked(self) -> None:
        for held in list(self._seq):
            assert self.spans(held), f"{held} unmasked at a publication"

    def _compile(self, bucket: int) -> None:
        super()._compile(bucket)
        self._publish_checked()

    def _renumber(self) -> None:
        super()._renumber()
        self._publish_checked()


def test_hot_values_keep_moving_without_a_gap_and_buckets_stay_bounded() -> None:
    """30 values revealed over and over, with a new one every fifth step: each move
    adds the value to its new bucket before it leaves the old one, and the holes
    moves leave are renumbered away, so the regexes a line meets stay bounded."""
    capacity = 64
    known = Checked(capacity)
    limit = 2 * (capacity // BUCKET + 1)
    for step in range(1_000):
        if step % 5 == 0:
            known.add(value(1_000 + step))
        known.add(value(step % 30))
        assert len(known._buckets) <= limit
    assert all(value(i) in known for i in range(30))
    assert len(known) == capacity
    assert all(0 < len(v) <= BUCKET for v in known._buckets.values())


def test_a_thread_reading_while_the_loop_registers_always_finds_the_values() -> None:
    known = KnownValues(capacity=64)
    stable = "stable-secret-0001"
    known.add(stable)
    problems: list[str] = []
    done = threading.Event()

    def read() -> None:
        while not done.is_set():
            try:
                if not known.spans(f"x {stable} y"):
                    problems.append("unmasked")
            except RuntimeError as exc:  # a dict changing size under a loop
                problems.append(repr(exc))

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for i in range(600):
            known.add(value(i))
            known.add(stable)  # revealed again: moved once it is in the older half
    finally:
        done.set()
        reader.join()
    assert problems == []
