"""Codex runner settings: the shared ones plus the shard this process serves."""

from __future__ import annotations

from typing import Self

from pydantic import Field, model_validator

from shared.settings import WorkerSettings


class Settings(WorkerSettings):
    """Built once, in `main.py`.

    `prefetch` is ignored: a shard takes one job at a time.
    """

    codex_shard_index: int = Field(0, ge=0, validation_alias="CODEX_SHARD_INDEX")

    @model_validator(mode="after")
    def shard_exists(self) -> Self:
        if self.codex_shard_index >= self.codex_shards:
            raise ValueError(
                f"CODEX_SHARD_INDEX={self.codex_shard_index} is outside "
                f"CODEX_SHARDS={self.codex_shards} (valid: 0..{self.codex_shards - 1})"
            )
        return self
