"""Known secret values: bounded buckets, bounded memory, whole masks."""

from __future__ import annotations

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
