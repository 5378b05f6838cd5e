"""Opaque keyset cursors for run listings."""

from __future__ import annotations

import base64
import binascii
from datetime import datetime
from uuid import UUID

import orjson

from services.api.errors import InvalidCursor


def encode(created_at: datetime, run_id: UUID) -> str:
    raw = orjson.dumps([created_at.isoformat(), str(run_id)])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode(cursor: str) -> tuple[datetime, UUID]:
    try:
        if len(cursor) > 200:
            raise ValueError("too long")
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created, run_id = orjson.loads(raw)
        when = datetime.fromisoformat(created)
        if when.tzinfo is None:
            raise ValueError("naive timestamp")
        return when, UUID(run_id)
    except (ValueError, TypeError, binascii.Error, orjson.JSONDecodeError) as exc:
        raise InvalidCursor("cursor is not one this API issued") from exc
