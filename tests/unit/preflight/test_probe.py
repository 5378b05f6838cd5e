"""The login probe's reading of `codex login status` and of `auth.json`."""

from __future__ import annotations

import pytest

from services.preflight.probe import (
    MAX_OUTPUT,
    ProbeCache,
    auth_state,
    classify,
    condense,
)
from tests.support.fakes import FakeLoginProbe


@pytest.mark.parametrize(
    ("raw", "state"),
    [
        (None, "logged_out"),
        (
            b'{"auth_mode": "apikey", "OPENAI_API_KEY": "sk-proj-abcdef123456789"}',
            "api_key",
        ),
        (b'{"auth_mode": "apikey", "OPENAI_API_KEY": ""}', "logged_out"),
        (b'{"auth_mode": "apikey", "OPENAI_API_KEY": "   "}', "logged_out"),
        (b"{}", "logged_out"),
        (b'{"auth_mode": "chatgpt"}', "logged_out"),
        (b'{"auth_mode": "chatgpt", "tokens": {"access_token": ""}}', "logged_out"),
        (b'{"auth_mode": "chatgpt", "tokens": {"refresh_token": "rt-1"}}', "chatgpt"),
        (b"{not json", None),
        (b"[]", None),
        (b"", None),
    ],
)
def test_auth_json_is_read_strictly(raw: bytes | None, state: str | None) -> None:
    assert auth_state(raw) == state


@pytest.mark.parametrize(
    ("rc", "output", "auth", "state"),
    [
        (0, "API key configured - sk-***89", "api_key", "api_key"),
        (0, "API key configured - ***", "logged_out", "logged_out"),  # empty key
        (0, "Logged in using ChatGPT", "logged_out", "logged_out"),  # {} file
        (0, "Logged in using ChatGPT", "chatgpt", "chatgpt"),
        (1, "Not logged in", "logged_out", "logged_out"),
        (1, "Error checking login status: failed to deserialize", None, "error"),
    ],
)
def test_exit_zero_is_not_enough(
    rc: int, output: str, auth: str | None, state: str
) -> None:
    assert classify(rc, output, auth) == state


def test_condense_drops_noise_redacts_and_truncates() -> None:
    stderr = (
        "WARNING: proceeding, even though we could not create PATH aliases\n"
        "Reading additional input from stdin...\n"
        "API key configured - sk-proj-SECRETSECRETSECRET1234\n" + "x" * 1000
    )
    out = condense("", stderr)
    assert not out.startswith("WARNING")
    assert "SECRETSECRET" not in out
    assert len(out) <= MAX_OUTPUT


async def test_cache_reuses_a_verdict_until_it_expires() -> None:
    probe = FakeLoginProbe({"v": "api_key"})
    cache = ProbeCache(probe, ttl=300)
    first, cached_first = await cache.get("v")
    second, cached_second = await cache.get("v")
    forced, cached_forced = await cache.get("v", refresh=True)
    assert (cached_first, cached_second, cached_forced) == (False, True, False)
    assert first.state == second.state == forced.state == "api_key"
    assert probe.calls == ["v", "v"]
    no_cache = ProbeCache(probe, ttl=0)
    await no_cache.get("w")
    await no_cache.get("w")
    assert probe.calls.count("w") == 2
