"""What the `spec-workflow` CLI reads from the environment or `.env`, by concern."""

from __future__ import annotations

from pathlib import Path

from pydantic import AmqpDsn, Field, HttpUrl, PostgresDsn, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

_CONFIG = SettingsConfigDict(env_file=".env", env_ignore_empty=True, extra="ignore")
_WILDCARD_HOSTS = ("", "0.0.0.0", "::")


class LauncherSettings(BaseSettings):
    """`up`, `down`, `status` and `demo`."""

    model_config = _CONFIG

    # pid files in <VAR_DIR>/run, logs in <VAR_DIR>/log
    var_dir: Path = Field(Path("var"), validation_alias="VAR_DIR")
    # where the CLI reaches the API; unset: http://API_HOST:API_PORT
    api_url: HttpUrl | None = Field(None, validation_alias="API_URL")
    api_host: str = Field("127.0.0.1", validation_alias="API_HOST")
    api_port: int = Field(8000, ge=1, le=65535, validation_alias="API_PORT")
    codex_shards: int = Field(3, ge=1, le=64, validation_alias="CODEX_SHARDS")
    ready_timeout: float = Field(60.0, gt=0, validation_alias="LAUNCHER_READY_TIMEOUT")
    # keep above GRACEFUL_TIMEOUT, so a clean shutdown is never cut short
    stop_timeout: float = Field(25.0, gt=0, validation_alias="LAUNCHER_STOP_TIMEOUT")

    @property
    def base_url(self) -> str:
        """API_URL, else API_HOST:API_PORT, a wildcard bind reached on loopback."""
        if self.api_url is not None:
            return str(self.api_url).rstrip("/")
        host = "127.0.0.1" if self.api_host in _WILDCARD_HOSTS else self.api_host
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.api_port}"


class ClientSettings(LauncherSettings):
    """`runs`: where the API is, and who the CLI calls it as."""

    # sent as `Authorization: Bearer …` (AUTH_MODE=token); from `tokens create`
    api_token: SecretStr | None = Field(None, validation_alias="SPEC_WORKFLOW_TOKEN")


class TapSettings(BaseSettings):
    """`tap`: the broker whose exchanges it listens to."""

    model_config = _CONFIG

    rabbitmq_url: AmqpDsn = Field(validation_alias="RABBITMQ_URL")


class BrokerSettings(BaseSettings):
    """`broker setup`: vhost, permissions and policy, over the management API."""

    model_config = _CONFIG

    # the vhost to set up, and the user (and credentials) of the management API
    rabbitmq_url: AmqpDsn = Field(validation_alias="RABBITMQ_URL")
    management_url: HttpUrl = Field(
        HttpUrl("http://127.0.0.1:15672"), validation_alias="RABBITMQ_MANAGEMENT_URL"
    )
    delivery_limit: int = Field(5, ge=1, validation_alias="DELIVERY_LIMIT")


class DatabaseSettings(BaseSettings):
    """`db upgrade`, `users`."""

    model_config = _CONFIG

    database_url: PostgresDsn = Field(validation_alias="DATABASE_URL")


class TokenSettings(DatabaseSettings):
    """`tokens`."""

    # lifetime of a new token unless --expires-in-days says; 0: never expires
    token_default_ttl_days: int = Field(
        90, ge=0, validation_alias="API_TOKEN_DEFAULT_TTL_DAYS"
    )


class SecretsSettings(DatabaseSettings):
    """`secrets rotate`: the current key and the older ones still to be read."""

    secrets_key: SecretStr | None = Field(None, validation_alias="SECRETS_KEY")
    secrets_key_file: Path | None = Field(None, validation_alias="SECRETS_KEY_FILE")
    # comma-separated
    secrets_previous_keys: SecretStr | None = Field(
        None, validation_alias="SECRETS_PREVIOUS_KEYS"
    )

    def previous_keys(self) -> list[str]:
        raw = self.secrets_previous_keys
        if raw is None:
            return []
        return [key.strip() for key in raw.get_secret_value().split(",") if key.strip()]


class DemoSettings(ClientSettings):
    """`demo`: the container engine, the Codex image and the model it may use."""

    # the Docker API (Podman's under `make demo` without a Docker engine); unset: local
    docker_host: str | None = Field(None, validation_alias="DOCKER_HOST")
    codex_image: str = Field("moonmind/codex:0.171.0", validation_alias="CODEX_IMAGE")
    # set: the demo logs its volumes in with this key and uses the real model
    openai_api_key: SecretStr | None = Field(None, validation_alias="OPENAI_API_KEY")
    # the offline model's port on 127.0.0.1 (host-networked Codex containers reach it)
    demo_model_port: int = Field(
        8765, ge=1, le=65535, validation_alias="DEMO_MODEL_PORT"
    )
    # the demo's own auth volumes, <prefix><n> (never an operator's codex_auth_<n>)
    demo_volume_prefix: str = Field(
        "demo_codex_auth_",
        pattern=r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,100}$",
        validation_alias="DEMO_VOLUME_PREFIX",
    )
    artifacts_root: Path = Field(
        Path("var/artifacts/spec_workflows"), validation_alias="ARTIFACTS_ROOT"
    )
