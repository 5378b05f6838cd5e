"""Errors a request can hit; `main.py` maps each to one HTTP status."""

from __future__ import annotations

from typing import Any


class RunError(Exception):
    """A request broke a run-state rule.

    * RunError
      + RunNotFound
      + ArtifactNotFound
      + RunNotRetryable
      + RunNotCancellable
      + ActiveRunExists
      + IdempotencyKeyReused
      + InvalidCursor
      + InvalidLogQuery
      + Unauthorized
      + CredentialNotFound
      + ShardNotAssigned
      + NoFreeShard
    """

    code = "run_error"

    def extra(self) -> dict[str, Any]:
        """Fields added to the error body next to `code` and `message`."""
        return {}

    def headers(self) -> dict[str, str]:
        return {}


class RunNotFound(RunError):
    """No run has this id (or the caller may not see it)."""

    code = "workflow_not_found"


class ArtifactNotFound(RunError):
    """No such artifact in the run, or its file is gone or escapes the artifact root."""

    code = "artifact_not_found"


class RunNotRetryable(RunError):
    """The run is still in progress or already succeeded."""

    code = "retry_not_allowed"


class RunNotCancellable(RunError):
    """The run has already ended."""

    code = "cancel_not_allowed"


class ActiveRunExists(RunError):
    """Another run of the same repository and feature is still pending or running."""

    code = "active_run_exists"

    def __init__(self, message: str, active_run_id: str | None) -> None:
        super().__init__(message)
        self.active_run_id = active_run_id

    def extra(self) -> dict[str, Any]:
        return {"activeRunId": self.active_run_id}


class IdempotencyKeyReused(RunError):
    """The Idempotency-Key was used before with a different request body."""

    code = "idempotency_key_reused"


class InvalidCursor(RunError):
    """The pagination cursor was not issued by this API."""

    code = "invalid_cursor"


class InvalidLogQuery(RunError):
    """A `GET /api/logs` filter that is not valid (level, details key, time range)."""

    code = "invalid_log_query"


class Unauthorized(RunError):
    """No valid bearer token (or service token, on the internal API)."""

    code = "unauthorized"

    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": "Bearer"}


class CredentialNotFound(RunError):
    """The caller has no key stored for this provider."""

    code = "credential_not_found"


class ShardNotAssigned(RunError):
    """The run has no Codex shard yet (discovery has not finished)."""

    code = "shard_not_assigned"


class NoFreeShard(RunError):
    """Every Codex shard is served by a live runner (or the index is out of range)."""

    code = "no_free_shard"
