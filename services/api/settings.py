"""Settings of the API process and its outbox relay / lease reaper."""

from __future__ import annotations

from pydantic import Field, PostgresDsn, field_validator

from shared.settings import ServiceSettings


class Settings(ServiceSettings):
    database_url: PostgresDsn = Field(validation_alias="DATABASE_URL")
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
    reaper_interval: float = Field(15.0, gt=0, validation_alias="REAPER_INTERVAL")
    lease_max_redispatch: int = Field(2, ge=0, validation_alias="LEASE_MAX_REDISPATCH")
    outbox_retention_hours: float = Field(
        24.0, gt=0, validation_alias="OUTBOX_RETENTION_HOURS"
    )

    @field_validator("database_url", mode="before")
    @classmethod
    def _asyncpg_driver(cls, value: object) -> object:
        """Accept the usual `postgresql://` form and talk to it through asyncpg."""
        if isinstance(value, str):
            for plain in ("postgresql://", "postgres://"):
                if value.startswith(plain):
                    return "postgresql+asyncpg://" + value.removeprefix(plain)
        return value
