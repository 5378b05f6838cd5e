"""Codex runner settings: worker settings, the shard, the executor and Codex itself."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Self

from pydantic import Field, model_validator

from shared.settings import WorkerSettings


class Settings(WorkerSettings):
    """Built once, in `main.py`. `prefetch` is ignored: one job at a time per shard."""

    codex_shard_index: int | None = Field(
        None, ge=0, validation_alias="CODEX_SHARD_INDEX"
    )
    executor: Literal["docker", "process"] = Field(
        "docker", validation_alias="EXECUTOR"
    )
    docker_host: str | None = Field(None, validation_alias="DOCKER_HOST")
    codex_image: str = Field("moonmind/codex:0.171.0", validation_alias="CODEX_IMAGE")
    codex_bin: str = Field("codex", validation_alias="CODEX_BIN")
    codex_homes_root: Path = Field(
        Path("var/codex-homes"), validation_alias="CODEX_HOMES_ROOT"
    )
    codex_model: str = Field("gpt-5.5", validation_alias="CODEX_MODEL")
    codex_config_overrides: list[str] = Field(
        default_factory=list, validation_alias="CODEX_CONFIG_OVERRIDES"
    )
    codex_provider: dict[str, str | int | bool] | None = Field(
        None, validation_alias="CODEX_PROVIDER"
    )
    codex_timeout: float = Field(3600.0, gt=0, validation_alias="CODEX_TIMEOUT")
    codex_idle_timeout: float = Field(
        600.0, gt=0, validation_alias="CODEX_IDLE_TIMEOUT"
    )
    codex_stop_timeout: int = Field(10, ge=0, validation_alias="CODEX_STOP_TIMEOUT")
    """Cancel: seconds between SIGTERM and SIGKILL. Codex as a container's PID 1 ignores
    SIGTERM, so a cancelled container lives this long (without an init entrypoint)."""
    codex_network_mode: str = Field("bridge", validation_alias="CODEX_NETWORK_MODE")
    codex_memory_mb: int = Field(4096, ge=256, validation_alias="CODEX_MEMORY_MB")
    codex_cpus: float = Field(2.0, gt=0, validation_alias="CODEX_CPUS")
    heartbeat_interval: float = Field(30.0, gt=0, validation_alias="HEARTBEAT_INTERVAL")
    codex_lease_seconds: float = Field(
        180.0, gt=0, validation_alias="CODEX_LEASE_SECONDS"
    )
    """How long a job's lease (TaskStarted, then each heartbeat) runs: the API's reaper
    re-sends the job once it expires. Longer than HEARTBEAT_INTERVAL."""
    github_git_url: str = Field("https://github.com", validation_alias="GITHUB_GIT_URL")
    git_timeout: float = Field(120.0, gt=0, validation_alias="GIT_TIMEOUT")
    workspaces_root: Path = Field(
        Path("var/workspaces"), validation_alias="WORKSPACES_ROOT"
    )

    @model_validator(mode="after")
    def shard_exists(self) -> Self:
        index = self.codex_shard_index
        if index is not None and index >= self.codex_shards:
            raise ValueError(
                f"CODEX_SHARD_INDEX={index} is outside "
                f"CODEX_SHARDS={self.codex_shards} (valid: 0..{self.codex_shards - 1})"
            )
        if self.codex_lease_seconds <= self.heartbeat_interval:
            raise ValueError(
                f"CODEX_LEASE_SECONDS={self.codex_lease_seconds:g} must exceed "
                f"HEARTBEAT_INTERVAL={self.heartbeat_interval:g}: heartbeats extend it"
            )
        return self
