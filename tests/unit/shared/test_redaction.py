"""Redaction by key, by registered value and by token shape."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import AmqpDsn, BaseModel, SecretStr

from shared.redaction import (
    MASK,
    forget_secrets,
    is_secret_key,
    redact,
    redact_text,
    register_secret,
    register_settings_secrets,
)

GITHUB_TOKEN = "ghp_" + "A1b2C3d4E5" * 4


@pytest.fixture(autouse=True)
def no_registered_secrets() -> Iterator[None]:
    forget_secrets()
    yield
    forget_secrets()


@pytest.mark.parametrize(
    "key",
    [
        "authorization",
        "Authorization",
        "proxy-authorization",
        "token",
        "secret",
        "password",
        "passwd",
        "api_key",
        "apikey",
        "apiKey",
        "X-Api-Key",
        "private_key",
        "credential",
        "credentials",
        "cookie",
        "Set-Cookie",
        "github_token",
        "accessToken",
        "client_secret",
        "db_password",
        "openai_api_key",
        "INTERNAL_API_TOKEN",
    ],
)
def test_secret_looking_keys_are_recognised(key: str) -> None:
    assert is_secret_key(key)


@pytest.mark.parametrize(
    "key",
    [
        "feature_key",
        "idempotency_key",
        "task_key",
        "message_id",
        "codex_task_id",
        "token_count",
        "max_tokens",
        "tokens",
        "secret_name",
        "key",
        "keys",
        "run_id",
        "author",
    ],
)
def test_identifier_keys_stay_visible(key: str) -> None:
    assert not is_secret_key(key)


def test_redact_masks_values_under_secret_keys_only() -> None:
    payload = {
        "feature_key": "042-checkout",
        "idempotency_key": "run-1:discover:1",
        "codex_task_id": "task-123",
        "token_count": 42,
        "github_token": "not-a-known-shape",
        "Authorization": "whatever",
        "password": None,
    }

    assert redact(payload) == {
        "feature_key": "042-checkout",
        "idempotency_key": "run-1:discover:1",
        "codex_task_id": "task-123",
        "token_count": 42,
        "github_token": MASK,
        "Authorization": MASK,
        "password": None,
    }


def test_redact_walks_nested_structures_and_copies_them() -> None:
    payload: dict[str, Any] = {
        "outer": [{"api_key": "abc"}, ("plain", f"token is {GITHUB_TOKEN}")],
        "n": 1,
    }

    result = redact(payload)

    assert result == {
        "outer": [{"api_key": MASK}, ("plain", "token is ghp_***")],
        "n": 1,
    }
    assert payload["outer"][0] == {"api_key": "abc"}  # the input is untouched


def test_redact_masks_a_whole_secret_subtree() -> None:
    assert redact({"credentials": {"user": "u", "pass": "p"}}) == {"credentials": MASK}


def test_registered_values_are_masked_anywhere_in_text() -> None:
    register_secret("s3cr3t-value-123")

    assert (
        redact_text("clone failed: s3cr3t-value-123 rejected")
        == "clone failed: *** rejected"
    )
    assert redact({"note": ["x s3cr3t-value-123"]}) == {"note": ["x ***"]}


def test_short_registered_values_are_ignored() -> None:
    register_secret("short")

    assert redact_text("a short story") == "a short story"


def test_longest_registered_value_wins() -> None:
    register_secret("abcdefgh")
    register_secret("abcdefgh-ijklmnop")

    assert redact_text("v=abcdefgh-ijklmnop") == "v=***"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"using {GITHUB_TOKEN} now", "using ghp_*** now"),
        ("gho_" + "x" * 36, "gho_***"),
        ("ghs_" + "x" * 36, "ghs_***"),
        ("github_pat_" + "11ABCDEFG_" * 5, "github_pat_***"),
        ("key sk-" + "a1B2" * 12, "key sk-***"),
        ("sk-proj-" + "Ab_9-" * 8, "sk-proj-***"),
        ("sk-ant-api03-" + "Zz9_" * 10, "sk-ant-***"),
        ("AIza" + "B" * 35, "AIza***"),
        ("Authorization: Bearer eyJhbGciOi.payload.sig", "Authorization: Bearer ***"),
        ("Authorization: Basic dXNlcjpwYXNzd29yZA==", "Authorization: Basic ***"),
        (
            "clone https://user:pass@github.com/acme/shop.git",
            "clone https://***@github.com/acme/shop.git",
        ),
        ("https://x-access-token:abc@github.com/a", "https://***@github.com/a"),
        ("amqp://guest:guest@127.0.0.1:5672/", "amqp://***@127.0.0.1:5672/"),
        ("login failed: password=hunter22", "login failed: password=***"),
        ('{"api_key": "abcd1234"}', '{"api_key": "***"}'),
    ],
)
def test_token_shapes_are_masked_keeping_only_the_fixed_prefix(
    text: str, expected: str
) -> None:
    assert redact_text(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "Basic authentication failed",
        "Bearer token missing",
        "https://github.com/acme/shop/pull/1",
        "mail me at dev@example.com",
        "feature 042-checkout task T012 on branch spec/042-checkout-t012",
        "task-something-longer-than-twenty-chars",
        "token_count=5 max_tokens: 100",
        "8b1e0b6e-1111-2222-3333-444455556666",
    ],
)
def test_ordinary_text_is_left_alone(text: str) -> None:
    assert redact_text(text) == text


def test_pydantic_models_and_secret_str_are_redacted() -> None:
    class Probe(BaseModel):
        feature_key: str
        github_token: str

    assert redact(
        {"probe": Probe(feature_key="f", github_token="t"), "s": SecretStr("x")}
    ) == {
        "probe": {"feature_key": "f", "github_token": MASK},
        "s": MASK,
    }


def test_settings_secrets_and_url_passwords_are_registered() -> None:
    class Conf(BaseModel):
        rabbitmq_url: AmqpDsn
        internal_api_token: SecretStr

    register_settings_secrets(
        Conf(
            rabbitmq_url=AmqpDsn("amqp://svc:rabbit-pass-1@mq:5672/"),
            internal_api_token=SecretStr("svc-token-123"),
        )
    )

    assert redact_text("auth rabbit-pass-1 and svc-token-123") == "auth *** and ***"
