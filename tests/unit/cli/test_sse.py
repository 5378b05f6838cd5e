"""The SSE parser the CLI reads the timeline with."""

from __future__ import annotations

from services.cli.sse import ServerEvent, SseParser


def feed(parser: SseParser, text: str) -> list[ServerEvent]:
    events = [parser.feed(line) for line in text.split("\n")]
    return [e for e in events if e is not None]


def test_events_carry_id_type_and_data() -> None:
    parser = SseParser()

    events = feed(
        parser,
        'retry: 2000\n\nid: 1\nevent: run_created\ndata: {"a": 1}\n\n'
        ": keep-alive\n\nid: 2\nevent: task_started\ndata:{}\n\n",
    )

    assert events == [
        ServerEvent("run_created", '{"a": 1}', "1"),
        ServerEvent("task_started", "{}", "2"),
    ]
    assert (parser.last_id, parser.retry_ms) == ("2", 2000)


def test_data_lines_join_and_an_unnamed_event_is_a_message() -> None:
    events = feed(SseParser(), "data: one\ndata: two\n\n")

    assert events == [ServerEvent("message", "one\ntwo", None)]


def test_a_block_without_data_dispatches_nothing() -> None:
    parser = SseParser()

    assert feed(parser, "id: 7\nevent: x\n\n") == []
    assert parser.last_id == "7"
