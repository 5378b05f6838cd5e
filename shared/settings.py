"""ServiceSettings: what every service reads from the environment.

The names are the ones `.env.example` documents.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from pydantic import AliasChoices, AmqpDsn, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.routing import CODEX_VOLUME_PREFIX


class ServiceSettings(BaseSettings):
    """Read once at the edge (`main.py`); logic takes plain arguments."""

    model_config = SettingsConfigDict(
        env_file=".env", env_ignore_empty=True, extra="ignore"
    )

    rabbitmq_url: AmqpDsn = Field(validation_alias="RABBITMQ_URL")
    log_level: str = Field("INFO", validation_alias="LOG_LEVEL")
    log_json: bool = Field(True, validation_alias="LOG_JSON")
    prefetch: int = Field(10, ge=1, validation_alias="PREFETCH")
    metrics_host: str | None = Field(
        None, validation_alias=AliasChoices("SPEC_WORKFLOW_METRICS_HOST", "STATSD_HOST")
    )
    metrics_port: int = Field(
        8125, validation_alias=AliasChoices("SPEC_WORKFLOW_METRICS_PORT", "STATSD_PORT")
    )
    metrics_prefix: str = Field(
        "moonmind.spec_workflow", validation_alias="SPEC_WORKFLOW_METRICS_PREFIX"
    )
    codex_shards: int = Field(3, ge=1, le=64, validation_alias="CODEX_SHARDS")
    codex_volume_prefix: str = Field(
        CODEX_VOLUME_PREFIX,
        pattern=r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,100}$",
        validation_alias="CODEX_VOLUME_PREFIX",
    )
    artifacts_root: Path = Field(
        Path("var/artifacts/spec_workflows"), validation_alias="ARTIFACTS_ROOT"
    )
    graceful_timeout: float = Field(20.0, gt=0, validation_alias="GRACEFUL_TIMEOUT")
    liveness_file: Path | None = Field(None, validation_alias="LIVENESS_FILE")
    """Touched while the broker connection is up (shared/liveness.py); workers and
    the relay, for the container health check. Unset: no file."""

    @field_validator(
        "artifacts_root", "workspaces_root", "codex_homes_root", check_fields=False
    )
    @classmethod
    def absolute(cls, path: Path) -> Path:
        """Resolved at start: git runs in other directories, and a container engine
        reads a relative bind source as the name of a volume to create."""
        return path.resolve()


class WorkerSettings(ServiceSettings):
    """What every stage worker adds: how to reach the API's internal endpoints."""

    api_url: str = Field("http://127.0.0.1:8000", validation_alias="API_URL")
    internal_api_token: SecretStr | None = Field(
        None, validation_alias="INTERNAL_API_TOKEN"
    )
    dev_secrets_key_file: Path = Field(
        Path("var/secrets.key"), validation_alias="DEV_SECRETS_KEY_FILE"
    )
    stage_started_after: float = Field(
        0.5, ge=0, validation_alias="STAGE_STARTED_AFTER"
    )
    """Seconds of work before a stage sends TaskStarted (0: at once); quicker work
    sends only its outcome. The Codex runner always sends it (its ack waits on it)."""

    @property
    def started_after(self) -> timedelta:
        return timedelta(seconds=self.stage_started_after)

    def service_token(self) -> str | None:
        """INTERNAL_API_TOKEN, else the development token the API generated beside
        DEV_SECRETS_KEY_FILE (disabled auth mode on one machine)."""
        if self.internal_api_token is not None:
            return self.internal_api_token.get_secret_value()
        dev = self.dev_secrets_key_file.with_name("internal_api_token")
        try:
            return dev.read_text().strip() or None
        except OSError:
            return None
