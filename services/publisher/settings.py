"""Publisher settings: worker settings plus git, GitHub and the publishing policy."""

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
    branch_prefix: str = Field(
        "speckit", min_length=1, validation_alias="PUBLISH_BRANCH_PREFIX"
    )
    author_name: str = Field(
        "MoonMind Spec Workflow", validation_alias="PUBLISH_AUTHOR_NAME"
    )
    author_email: str = Field(
        "spec-workflow@users.noreply.github.com",
        validation_alias="PUBLISH_AUTHOR_EMAIL",
    )
    co_author: bool = Field(True, validation_alias="PUBLISH_CO_AUTHOR")
    """Credit the run's user (token mode) with a Co-authored-by trailer."""
    labels: list[str] = Field(default_factory=list, validation_alias="PUBLISH_LABELS")
    max_files: int = Field(200, ge=1, validation_alias="PUBLISH_MAX_FILES")
    max_lines: int = Field(20000, ge=1, validation_alias="PUBLISH_MAX_LINES")
