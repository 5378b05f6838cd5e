"""Reading a dead-lettered message: whose run it was, and why it died."""

from __future__ import annotations

from typing import Any
from uuid import uuid5

import orjson
from pydantic import BaseModel, ValidationError

from shared.messages import CancelTask, Message, TaskError, TaskName
from shared.routing import COMMAND_TYPES, EVENT_ROUTES, STAGE_ROUTES, Route

_EVENT_TYPES = {route.value: kind for kind, route in EVENT_ROUTES.items()}
NOT_RUN_STEPS = {Route.PROBE_CODEX_VOLUME.value, Route.CODEX_VOLUME_CHECKED.value}
_COMMAND_BY_ROUTE = {
    route.value: COMMAND_TYPES[task] for task, route in STAGE_ROUTES.items()
}


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def death(headers: dict[str, Any]) -> tuple[str, str, str]:
    """(reason, queue, routing key) of the first death in `x-death`, as far as known."""
    deaths = headers.get("x-death")
    first = (
        deaths[0]
        if isinstance(deaths, list) and deaths and isinstance(deaths[0], dict)
        else {}
    )
    keys = first.get("routing-keys") or []
    key = _text(keys[0]) if isinstance(keys, list) and keys else ""
    return (
        _text(first.get("reason", "unknown")),
        _text(first.get("queue", "unknown")),
        key,
    )


def _full_type(routing_key: str) -> type[Message]:
    """The message type its routing key promises; the base type for an unknown key."""
    if routing_key in _EVENT_TYPES:
        return _EVENT_TYPES[routing_key]
    if routing_key.startswith("cmd.cancel."):
        return CancelTask
    if routing_key.startswith("cmd.submit_codex_job."):
        return COMMAND_TYPES[TaskName.SUBMIT_CODEX_JOB]
    return _COMMAND_BY_ROUTE.get(routing_key, Message)


class DeadLetter(BaseModel):
    """A dead-lettered delivery as the API's decoder hands it over.

    The body byte for byte, and x-death.
    """

    raw: str
    reason: str
    queue: str
    routing_key: str


def identify(dead: DeadLetter) -> tuple[Message, TaskError] | None:
    """The message's idempotency key and the error that fails its attempt.

    None when the message names no run.
    """
    try:
        data = orjson.loads(dead.raw.encode("latin-1"))
        cause = Message.model_validate(data)
    except (orjson.JSONDecodeError, ValidationError, TypeError, UnicodeEncodeError):
        return None
    reason, queue, routing_key = dead.reason, dead.queue, dead.routing_key
    if routing_key in NOT_RUN_STEPS:
        return None  # a probe request or a volume verdict: no run step to fail
    try:
        _full_type(routing_key).model_validate(data)
    except ValidationError as exc:
        message = (
            f"{queue} could not read a {cause.task} message"
            f" ({exc.error_count()} validation error(s))"
        )
        return cause, TaskError(code="invalid_message", message=message)
    if reason == "delivery_limit":
        message = (
            f"{queue} gave up on the {cause.task} message after repeated deliveries"
        )
    else:
        message = f"the {queue} handler failed on the {cause.task} message ({reason})"
    return cause, TaskError(code="handler_crashed", message=message, retryable=True)


def inbox_copy(cause: Message) -> Message:
    """The dead letter under its own inbox key.

    The original message id may already be in the inbox.
    """
    return Message(
        message_id=uuid5(cause.message_id, "dead_letter"),
        run_id=cause.run_id,
        task=cause.task,
        attempt=cause.attempt,
        occurred_at=cause.occurred_at,
    )
