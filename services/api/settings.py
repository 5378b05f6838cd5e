"""Settings of the API process and its outbox relay / lease reaper."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Self

from pydantic import Field, PostgresDsn, SecretStr, field_validator, model_validator

from shared.settings import ServiceSettings


class AuthMode(StrEnum):
    DISABLED = "disabled"
    TOKEN = "token"


PROVIDER_ENV = {
    "openai": "OPENAI_API_KEY",
    "google": "GOOGLE_API_KEY",
    "github": "GITHUB_TOKEN",
    "anthropic": "ANTHROPIC_API_KEY",
}
"""Provider keys that seed the default user's profile at start-up (disabled mode)."""


class Settings(ServiceSettings):
    database_url: PostgresDsn = Field(validation_alias="DATABASE_URL")
    database_pool_size: int = Field(20, ge=1, validation_alias="DATABASE_POOL_SIZE")
    """The API's connections to PostgreSQL, all pooled: an event handler or request
    holds one for its transaction and waits for one while all are busy (503 after the
    pool's 30 s timeout). No overflow: overflow connections were opened and closed
    over and over under load, each paying a connect and re-preparing statements."""
    api_host: str = Field("127.0.0.1", validation_alias="API_HOST")
    api_port: int = Field(8000, ge=1, le=65535, validation_alias="API_PORT")
    max_body_bytes: int = Field(
        1_048_576, ge=1024, validation_alias="API_MAX_BODY_BYTES"
    )
    relay_interval: float = Field(1.0, gt=0, validation_alias="RELAY_INTERVAL")
    relay_batch_size: int = Field(100, ge=1, validation_alias="RELAY_BATCH_SIZE")
    relay_publish_timeout: float = Field(
        10.0, gt=0, validation_alias="RELAY_PUBLISH_TIMEOUT"
    )
    outbox_fast_path: bool = Field(True, validation_alias="OUTBOX_FAST_PATH")
    """The API publishes its committed outbox rows itself; the relay is the net."""
    outbox_fast_path_grace: float = Field(
        5.0, gt=0, validation_alias="OUTBOX_FAST_PATH_GRACE"
    )
    """Seconds the relay leaves a fast-path row alone (the fast path gives up on a
    publish after half of it)."""
    reaper_interval: float = Field(15.0, gt=0, validation_alias="REAPER_INTERVAL")
    lease_max_redispatch: int = Field(2, ge=0, validation_alias="LEASE_MAX_REDISPATCH")
    outbox_retention_hours: float = Field(
        24.0, gt=0, validation_alias="OUTBOX_RETENTION_HOURS"
    )
    log_retention_days: float = Field(14.0, gt=0, validation_alias="LOG_RETENTION_DAYS")

    @field_validator("database_url", mode="before")
    @classmethod
    def _asyncpg_driver(cls, value: object) -> object:
        """Accept the usual `postgresql://` form and talk to it through asyncpg."""
        if isinstance(value, str):
            for plain in ("postgresql://", "postgres://"):
                if value.startswith(plain):
                    return "postgresql+asyncpg://" + value.removeprefix(plain)
        return value

    auth_mode: AuthMode = Field(AuthMode.DISABLED, validation_alias="AUTH_MODE")
    secrets_key: SecretStr | None = Field(None, validation_alias="SECRETS_KEY")
    secrets_key_file: Path | None = Field(None, validation_alias="SECRETS_KEY_FILE")
    secrets_previous_keys: SecretStr | None = Field(
        None, validation_alias="SECRETS_PREVIOUS_KEYS"
    )
    dev_secrets_key_file: Path = Field(
        Path("var/secrets.key"), validation_alias="DEV_SECRETS_KEY_FILE"
    )
    internal_api_token: SecretStr | None = Field(
        None, validation_alias="INTERNAL_API_TOKEN"
    )
    token_default_ttl_days: int = Field(
        90, ge=0, validation_alias="API_TOKEN_DEFAULT_TTL_DAYS"
    )
    token_cache_seconds: float = Field(
        30.0, ge=0, validation_alias="TOKEN_CACHE_SECONDS"
    )
    """Token mode: how long a verified token is answered from memory
    (`tokencache`); a revocation still takes effect within milliseconds, by NOTIFY.
    0: every request checks the database."""
    openai_api_key: SecretStr | None = Field(None, validation_alias="OPENAI_API_KEY")
    google_api_key: SecretStr | None = Field(None, validation_alias="GOOGLE_API_KEY")
    github_token: SecretStr | None = Field(None, validation_alias="GITHUB_TOKEN")
    anthropic_api_key: SecretStr | None = Field(
        None, validation_alias="ANTHROPIC_API_KEY"
    )

    @model_validator(mode="after")
    def token_mode_needs_its_secrets(self) -> Self:
        if self.auth_mode is AuthMode.TOKEN:
            if self.secrets_key is None and self.secrets_key_file is None:
                raise ValueError(
                    "AUTH_MODE=token needs SECRETS_KEY or SECRETS_KEY_FILE "
                    "(generate one with `spec-workflow secrets generate-key`)"
                )
            token = self.internal_api_token
            if token is None or len(token.get_secret_value()) < 32:
                raise ValueError(
                    "AUTH_MODE=token needs INTERNAL_API_TOKEN of at least 32 characters"
                )
        return self

    def plain_database_url(self) -> str:
        """DATABASE_URL for asyncpg itself (no SQLAlchemy driver name)."""
        return str(self.database_url).replace(
            "postgresql+asyncpg://", "postgresql://", 1
        )

    def previous_keys(self) -> list[str]:
        raw = self.secrets_previous_keys
        return (
            [k for k in raw.get_secret_value().split(",") if k.strip()] if raw else []
        )

    def seed_keys(self) -> dict[str, SecretStr]:
        """Provider keys present in the environment, by provider name."""
        values = {
            "openai": self.openai_api_key,
            "google": self.google_api_key,
            "github": self.github_token,
            "anthropic": self.anthropic_api_key,
        }
        return {name: value for name, value in values.items() if value is not None}
