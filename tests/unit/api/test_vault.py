"""The keyring: AES-256-GCM, bound to user and provider, rotation, key loading rules."""

from __future__ import annotations

import stat
from pathlib import Path
from uuid import uuid4

import pytest

from services.api.settings import Settings
from services.api.vault import (
    Keyring,
    Sealed,
    VaultError,
    generate_key,
    key_id,
    load_keyring,
    parse_key,
)

USER = uuid4()


def test_seal_then_open_round_trips_and_hides_the_value() -> None:
    ring = Keyring(parse_key(generate_key()))
    sealed = ring.seal(USER, "github", "ghp_secret-value-1234")
    assert b"ghp_secret" not in sealed.ciphertext
    assert len(sealed.nonce) == 12
    assert ring.open(USER, "github", sealed) == "ghp_secret-value-1234"
    assert ring.seal(USER, "github", "x").nonce != ring.seal(USER, "github", "x").nonce


def test_a_ciphertext_opens_only_for_its_user_and_provider() -> None:
    ring = Keyring(parse_key(generate_key()))
    sealed = ring.seal(USER, "github", "value")
    with pytest.raises(VaultError, match="authentication"):
        ring.open(uuid4(), "github", sealed)
    with pytest.raises(VaultError, match="authentication"):
        ring.open(USER, "openai", sealed)
    tampered = Sealed(
        sealed.key_id,
        sealed.nonce,
        bytes([sealed.ciphertext[0] ^ 1]) + sealed.ciphertext[1:],
    )
    with pytest.raises(VaultError, match="authentication"):
        ring.open(USER, "github", tampered)


def test_previous_keys_stay_readable_and_new_writes_use_the_current_key() -> None:
    old, new = parse_key(generate_key()), parse_key(generate_key())
    sealed = Keyring(old).seal(USER, "google", "AIza-value")
    ring = Keyring(new, [old])
    assert ring.open(USER, "google", sealed) == "AIza-value"
    assert ring.seal(USER, "google", "AIza-value").key_id == key_id(new)
    with pytest.raises(VaultError, match="SECRETS_PREVIOUS_KEYS"):
        Keyring(new).open(USER, "google", sealed)


@pytest.mark.parametrize(
    "text", ["", "not base64!", "c2hvcnQ=", generate_key() + "AAAA"]
)
def test_malformed_keys_are_refused(text: str) -> None:
    with pytest.raises(VaultError):
        parse_key(text)


def test_key_sources_in_order(tmp_path: Path) -> None:
    env_key, file_key = generate_key(), generate_key()
    key_file = tmp_path / "key"
    key_file.write_text(file_key + "\n")
    ring, origin = load_keyring(
        key=env_key, key_file=key_file, previous=[], dev_key_file=None
    )
    assert (ring.current_id, origin) == (key_id(parse_key(env_key)), "SECRETS_KEY")
    ring, origin = load_keyring(
        key=None, key_file=key_file, previous=[], dev_key_file=None
    )
    assert ring.current_id == key_id(parse_key(file_key))
    with pytest.raises(VaultError, match="SECRETS_KEY"):
        load_keyring(key=None, key_file=None, previous=[], dev_key_file=None)
    with pytest.raises(VaultError, match="cannot read"):
        load_keyring(
            key=None, key_file=tmp_path / "missing", previous=[], dev_key_file=None
        )


def test_dev_key_is_generated_once_and_private(tmp_path: Path) -> None:
    dev = tmp_path / "var" / "secrets.key"
    first, origin = load_keyring(key=None, key_file=None, previous=[], dev_key_file=dev)
    second, _ = load_keyring(key=None, key_file=None, previous=[], dev_key_file=dev)
    assert origin == f"dev:{dev}"
    assert first.current_id == second.current_id
    assert stat.S_IMODE(dev.stat().st_mode) == 0o600


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RABBITMQ_URL", "amqp://u:p@127.0.0.1/v")
    monkeypatch.setenv("DATABASE_URL", "postgresql://postgres@127.0.0.1/db")
    for name in ("SECRETS_KEY", "SECRETS_KEY_FILE", "INTERNAL_API_TOKEN", "AUTH_MODE"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_token_mode_refuses_to_start_without_a_key(env: pytest.MonkeyPatch) -> None:
    env.setenv("AUTH_MODE", "token")
    env.setenv("INTERNAL_API_TOKEN", "t" * 40)
    with pytest.raises(ValueError, match="SECRETS_KEY"):
        Settings()
    env.setenv("SECRETS_KEY", generate_key())
    env.setenv("INTERNAL_API_TOKEN", "short")
    with pytest.raises(ValueError, match="INTERNAL_API_TOKEN"):
        Settings()
    env.setenv("INTERNAL_API_TOKEN", "t" * 40)
    assert Settings().auth_mode == "token"


@pytest.mark.usefixtures("env")
def test_disabled_mode_needs_no_key() -> None:
    assert Settings().auth_mode == "disabled"
