"""`runs watch`: the run's stages as a live table, fed by the SSE timeline.

`RunView` is pure (events in, rows and exit code out); `watch` connects it to the
stream, reconnecting with the last seen `seq` when the link breaks.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from services.cli import api_client
from shared.messages import PIPELINE

TERMINAL = frozenset({"succeeded", "failed", "cancelled"})
TASK_OUTCOMES = frozenset({"succeeded", "failed", "cancelled", "skipped"})
STYLES = {
    "running": "yellow",
    "succeeded": "green",
    "failed": "red",
    "cancelled": "magenta",
    "queued": "cyan",
}
Row = tuple[str, str, str, str, str]


@dataclass
class TaskRow:
    name: str
    status: str = "-"
    attempt: int | None = None
    started: datetime | None = None
    finished: datetime | None = None
    activity: str = ""


def _rows() -> dict[str, TaskRow]:
    return {task.value: TaskRow(task.value) for task in PIPELINE}


@dataclass
class RunView:
    """What the timeline says so far about one run and its tasks."""

    run_id: str
    status: str = "pending"
    attempt: int = 1
    last_seq: int = 0
    result: str | None = None
    error_code: str | None = None
    tasks: dict[str, TaskRow] = field(default_factory=_rows)

    @property
    def exit_code(self) -> int | None:
        """0 succeeded, 1 failed or cancelled, None while it is not over."""
        if self.status not in TERMINAL:
            return None
        return 0 if self.status == "succeeded" else 1

    def apply(self, event: dict[str, Any]) -> None:
        seq = event.get("seq")
        if isinstance(seq, int):
            if seq <= self.last_seq:  # replayed after a reconnect
                return
            self.last_seq = seq
        kind = str(event.get("kind", ""))
        attempt = event.get("attempt")
        data = event.get("data") or {}
        if kind.startswith("run_"):
            self._run(kind.removeprefix("run_"), attempt, data)
        elif kind.startswith("task_") and event.get("taskName"):
            row = self.tasks.setdefault(event["taskName"], TaskRow(event["taskName"]))
            at = _moment(event.get("createdAt"))
            _task(row, kind.removeprefix("task_"), attempt, at, data)

    def finish(self, run: dict[str, Any]) -> None:
        """Take the outcome from the run itself (the stream had nothing left)."""
        self.status = str(run.get("status", self.status))
        self.result, self.error_code = run.get("result"), run.get("errorCode")

    def rows(self, now: datetime) -> list[Row]:
        """task, status, attempt, elapsed, latest activity."""
        order = {task.value: i for i, task in enumerate(PIPELINE)}
        ordered = sorted(self.tasks.values(), key=lambda r: order.get(r.name, 99))
        return [
            (
                row.name,
                row.status,
                "" if row.attempt is None else str(row.attempt),
                _elapsed(row, now),
                row.activity,
            )
            for row in ordered
        ]

    def headline(self) -> str:
        parts = [f"run {self.run_id}", self.status, f"attempt {self.attempt}"]
        if self.result:
            parts.append(f"result {self.result}")
        if self.error_code:
            parts.append(f"error {self.error_code}")
        return "  ".join(parts)

    def _run(self, what: str, attempt: object, data: dict[str, Any]) -> None:
        if isinstance(attempt, int):
            self.attempt = attempt
        if what in ("created", "retried"):
            self.status, self.result, self.error_code = "pending", None, None
        else:
            self.status = what
            self.result, self.error_code = data.get("result"), data.get("errorCode")


def _task(
    row: TaskRow,
    what: str,
    attempt: object,
    at: datetime | None,
    data: dict[str, Any],
) -> None:
    if what == "dispatched":  # a new attempt of the task starts from scratch
        row.status, row.started, row.finished, row.activity = "queued", None, None, ""
    elif what == "redispatched":
        row.status, row.started = "queued", None
        row.activity = f"lease expired: re-dispatched ({data.get('redispatch')})"
    elif what == "started":
        row.status, row.started, row.finished = "running", at, None
    elif what == "progress":
        row.activity = summarize(data)
    elif what in TASK_OUTCOMES:
        row.status, row.finished = what, at
        if what == "failed":
            row.activity = f"error {data.get('errorCode')}"
        elif what == "cancelled" and data.get("reason"):
            row.activity = str(data["reason"])
    else:
        return
    if isinstance(attempt, int):
        row.attempt = attempt


def summarize(data: dict[str, Any], width: int = 72) -> str:
    """A progress note as `key=value …`: lists as counts, long text cut short."""
    parts = []
    for key, value in data.items():
        if value is None or value == "" or value == [] or value == {}:
            continue
        if isinstance(value, list | tuple):
            shown = str(len(value))
        elif isinstance(value, dict):
            shown = "{" + ",".join(map(str, value)) + "}"
        else:
            shown = str(value).replace("\n", " ")
        parts.append(f"{key}={shown[:32]}")
    text = " ".join(parts)
    return text if len(text) <= width else text[: width - 1] + "…"


def _elapsed(row: TaskRow, now: datetime) -> str:
    if row.started is None:
        return ""
    seconds = max(0.0, ((row.finished or now) - row.started).total_seconds())
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, rest = divmod(int(seconds), 60)
    return f"{minutes}m{rest:02d}s"


def _moment(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def render(view: RunView, now: datetime) -> Group:
    table = Table("task", "status", "attempt", "elapsed", "activity", box=None)
    for name, status, attempt, elapsed, activity in view.rows(now):
        styled = Text(status, style=STYLES.get(status, ""))
        table.add_row(name, styled, attempt, elapsed, activity)
    headline = Text(view.headline(), style=STYLES.get(view.status, "bold"))
    return Group(headline, table)


async def watch(
    client: httpx.AsyncClient,
    run_id: str,
    console: Console,
    *,
    retries: int = 5,
    backoff: float = 0.5,
) -> int:
    """Follow the run to its end; its exit code. Raises `ApiError`, and
    `httpx.TransportError` after `retries` failed reconnects in a row."""
    view = RunView(run_id)
    failures = 0
    with Live(
        get_renderable=lambda: render(view, datetime.now(UTC)),
        console=console,
        refresh_per_second=4,
    ):
        while (code := view.exit_code) is None:
            try:
                async for event in api_client.follow_events(
                    client, run_id, after=view.last_seq
                ):
                    view.apply(event)
                    failures = 0
                if view.exit_code is None:  # 204, or the server went away
                    run = await api_client.get_run(client, run_id)
                    if run.get("status") in TERMINAL:
                        view.finish(run)
                    else:
                        await asyncio.sleep(backoff)
            except httpx.TransportError:
                failures += 1
                if failures > retries:
                    raise
                await asyncio.sleep(min(backoff * 2**failures, 10.0))
    await _epilogue(client, run_id, console)
    return code


async def _epilogue(client: httpx.AsyncClient, run_id: str, console: Console) -> None:
    """The pull request, or the whole error message, which the table leaves out."""
    try:
        run = await api_client.get_run(client, run_id)
    except (api_client.ApiError, httpx.TransportError):
        return  # the outcome is known already; this is a courtesy
    if run.get("prUrl"):
        console.print(f"pull request {run['prUrl']}", highlight=False)
    if run.get("errorMessage"):
        console.print(
            f"{run.get('errorCode')}: {run['errorMessage']}",
            markup=False,
            highlight=False,
        )
