"""Keyset cursors round-trip and refuse anything this API did not issue."""

from __future__ import annotations

import base64
import contextlib
from datetime import UTC, datetime
from uuid import UUID

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.api import cursor
from services.api.errors import InvalidCursor


@given(st.datetimes(timezones=st.just(UTC)), st.uuids())
def test_cursor_round_trips(when: datetime, run_id: UUID) -> None:
    assert cursor.decode(cursor.encode(when, run_id)) == (when, run_id)


@pytest.mark.parametrize(
    "token",
    [
        "",
        "garbage",
        "!!!!",
        base64.urlsafe_b64encode(b"[1, 2]").decode(),
        base64.urlsafe_b64encode(
            b'["2026-01-01T00:00:00", "00000000-0000-0000-0000-000000000000"]'
        ).decode(),
        base64.urlsafe_b64encode(b'["yesterday", "x"]').decode(),
        "A" * 500,
    ],
)
def test_foreign_cursor_is_refused(token: str) -> None:
    with pytest.raises(InvalidCursor):
        cursor.decode(token)


@given(st.text(max_size=300))
def test_any_text_either_decodes_or_is_refused_cleanly(token: str) -> None:
    with contextlib.suppress(InvalidCursor):
        cursor.decode(token)
