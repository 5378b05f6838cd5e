"""Content negotiation and framing of the SSE timeline."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from services.api.schemas import EventOut
from services.api.timeline import sse_frame, wants_event_stream


@pytest.mark.parametrize(
    ("accept", "stream"),
    [
        (None, False),
        ("application/json", False),
        ("*/*", False),
        ("text/event-stream", True),
        ("Text/Event-Stream", True),
        ("application/json, text/event-stream;q=0.5", True),
        ("text/event-stream; q=0", False),
        ("text/event-stream;q=nonsense", False),
    ],
)
def test_only_an_explicit_event_stream_accept_streams(
    accept: str | None, stream: bool
) -> None:
    assert wants_event_stream(accept) is stream


def test_a_frame_is_id_event_and_one_line_of_json() -> None:
    event = EventOut(
        seq=7,
        kind="task_progress",
        task_name="submit_codex_job",
        attempt=2,
        data={"note": "two\nlines"},
        created_at=datetime(2025, 1, 2, tzinfo=UTC),
    )

    frame = sse_frame(event)

    assert frame == (
        "id: 7\nevent: task_progress\n"
        'data: {"seq":7,"kind":"task_progress","taskName":"submit_codex_job",'
        '"attempt":2,"data":{"note":"two\\nlines"},'
        '"createdAt":"2025-01-02T00:00:00Z"}\n\n'
    )
