"""Reading dead letters: whose run, and which error fails it."""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import uuid4

import orjson

from services.api.dead_letters import DeadLetter, death, identify, inbox_copy
from shared.messages import TaskName


def letter(
    body: object, routing_key: str, reason: str = "rejected", queue: str = "q"
) -> DeadLetter:
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    return DeadLetter(
        raw=raw.decode("latin-1"), reason=reason, queue=queue, routing_key=routing_key
    )


def base(**extra: object) -> dict[str, object]:
    return {
        "message_id": str(uuid4()),
        "run_id": str(uuid4()),
        "task": "codex_preflight",
        "attempt": 2,
        "occurred_at": datetime.now(UTC).isoformat(),
        **extra,
    }


def test_unreadable_body_names_no_run() -> None:
    assert identify(letter(b"\xff\x00 not json", "cmd.codex_preflight")) is None
    assert identify(letter({"run_id": 1}, "cmd.codex_preflight")) is None
    assert identify(letter([1, 2], "evt.task.failed")) is None


def test_schema_violation_is_invalid_message() -> None:
    found = identify(
        letter(base(), "cmd.codex_preflight", queue="preflight.codex_preflight")
    )
    assert found is not None
    cause, error = found
    assert (cause.task, cause.attempt) == (TaskName.CODEX_PREFLIGHT, 2)
    assert error.code == "invalid_message"
    assert "preflight.codex_preflight" in error.message


def test_event_schema_is_chosen_by_routing_key() -> None:
    found = identify(letter(base(error={"code": 1}), "evt.task.failed"))
    assert found is not None
    assert found[1].code == "invalid_message"
    ok = identify(letter(base(error={"code": "x", "message": "y"}), "evt.task.failed"))
    assert ok is not None
    assert ok[1].code == "handler_crashed"


def test_valid_message_that_died_is_a_crash() -> None:
    body = base(
        task="submit_codex_job",
        repository="acme/shop",
        feature_key="f",
        base_branch="main",
        base_sha="a" * 40,
        shard={
            "codex_queue": "codex-1",
            "codex_volume": "codex_auth_1",
            "codex_shard_index": 1,
        },
        spec_task={"task_id": "T001", "description": "d"},
    )
    found = identify(
        letter(body, "cmd.submit_codex_job.1", reason="delivery_limit", queue="codex-1")
    )
    assert found is not None
    assert found[1].code == "handler_crashed"
    assert "repeated deliveries" in found[1].message
    assert found[1].retryable


def test_death_reads_the_first_x_death_entry() -> None:
    headers = {
        "x-death": [
            {
                "reason": b"rejected",
                "queue": "api.task_failed",
                "routing-keys": [b"evt.task.failed"],
            },
            {"reason": "expired", "queue": "other", "routing-keys": ["x"]},
        ]
    }
    assert death(headers) == ("rejected", "api.task_failed", "evt.task.failed")
    assert death({}) == ("unknown", "unknown", "")
    assert death({"x-death": "garbage"}) == ("unknown", "unknown", "")


def test_inbox_copy_has_its_own_deterministic_id() -> None:
    found = identify(letter(base(), "cmd.codex_preflight"))
    assert found is not None
    first, second = inbox_copy(found[0]), inbox_copy(found[0])
    assert first.message_id == second.message_id != found[0].message_id
    assert (first.run_id, first.task, first.attempt) == (
        found[0].run_id,
        found[0].task,
        found[0].attempt,
    )
