"""Rows written straight to the database by tests, with no command behind them: the
session's stages and relay never move them."""

from __future__ import annotations

import uuid
from typing import Any

from services.api.models import DEFAULT_USER_ID, Run


def bare_run(run_id: uuid.UUID, **columns: Any) -> Run:
    """A run row of the default user, attempt 1, nothing dispatched; `columns`
    override the defaults."""
    values: dict[str, Any] = {
        "id": run_id,
        "repository": "acme/bare",
        "feature_key": f"bare-{run_id.hex[:8]}",
        "publish_mode": "none",
        "status": "pending",
        "phase": "discover",
        "attempt": 1,
        "outputs": {},
        "event_seq": 0,
        "created_by": DEFAULT_USER_ID,
    }
    return Run(**(values | columns))
