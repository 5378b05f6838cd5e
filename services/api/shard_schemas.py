"""HTTP bodies of the Codex shards' routes and of the internal (service-to-service)
API: what operators see of the shards, and what the stages ask the API for."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from services.api.credentials import Provider
from services.api.schemas import CamelModel


class ShardOut(CamelModel):
    shard_index: int
    queue: str
    volume: str
    status: str
    hostname: str | None = None
    registered_at: datetime | None = None
    heartbeat_at: datetime | None = None
    volume_status: str | None = None
    """ready | needs_auth | error; None until the volume was probed."""
    volume_state: str | None = None
    volume_message: str | None = None
    volume_checked_at: datetime | None = None


class ShardList(CamelModel):
    items: list[ShardOut]


class ProbeRequest(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, extra="forbid")

    force_refresh: bool = True


class ProbeAccepted(CamelModel):
    run_id: UUID
    codex_volume: str
    codex_shard_index: int
    force_refresh: bool


class SecretsRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    providers: list[Provider] = Field(min_length=1, max_length=8)


class SecretsOut(CamelModel):
    run_id: UUID
    user_id: UUID
    secrets: dict[str, str]
    missing: list[str]


class ShardClaim(BaseModel):
    model_config = ConfigDict(extra="forbid")

    hostname: str = Field(min_length=1, max_length=255, pattern=r"^[A-Za-z0-9._:-]+$")


class ShardClaimed(CamelModel):
    shard_index: int
    queue: str
    volume: str
