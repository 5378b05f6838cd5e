"""Preflight settings: worker settings plus git, GitHub and the Codex probe."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from shared.settings import WorkerSettings


class Settings(WorkerSettings):
    """Built once, in `main.py`."""

    github_api_url: str = Field(
        "https://api.github.com", validation_alias="GITHUB_API_URL"
    )
    github_git_url: str = Field("https://github.com", validation_alias="GITHUB_GIT_URL")
    git_timeout: float = Field(120.0, gt=0, validation_alias="GIT_TIMEOUT")
    workspaces_root: Path = Field(
        Path("var/workspaces"), validation_alias="WORKSPACES_ROOT"
    )
    docker_host: str | None = Field(None, validation_alias="DOCKER_HOST")
    codex_image: str = Field("moonmind/codex:0.171.0", validation_alias="CODEX_IMAGE")
    probe_timeout: float = Field(60.0, gt=0, validation_alias="CODEX_PROBE_TIMEOUT")
    probe_cache_seconds: float = Field(
        300.0, ge=0, validation_alias="PREFLIGHT_CACHE_SECONDS"
    )
