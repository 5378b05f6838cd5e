"""`runs`: list, show, create, retry, cancel and watch runs through the HTTP API.

The API is at API_URL (else API_HOST:API_PORT); SPEC_WORKFLOW_TOKEN, when set, is
sent as the bearer token. An error answer is `code: message` on stderr and exit 1;
an unreachable API is exit 2.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from enum import StrEnum
from typing import Annotated, Any, TypeVar
from uuid import UUID

import httpx
import typer
from rich.console import Console

from services.cli import api_client
from services.cli.accounts import table
from services.cli.api_client import ApiError, RunRequest
from services.cli.common import read_settings
from services.cli.settings import ClientSettings
from services.cli.watch import watch as watch_run
from shared.messages import PublishMode

runs_app = typer.Typer(
    no_args_is_help=True,
    help="Runs through the HTTP API at API_URL (token: SPEC_WORKFLOW_TOKEN).",
)
T = TypeVar("T")

JsonOption = Annotated[
    bool, typer.Option("--json", help="print the API's JSON answer as is")
]
RunId = Annotated[UUID, typer.Argument(help="the run's id")]


class Status(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


def call(work: Callable[[httpx.AsyncClient], Awaitable[T]]) -> T:
    """Run `work` with a client for the configured API, mapping failures to exits."""
    settings = read_settings(ClientSettings)

    async def session() -> T:
        async with api_client.api_client(settings) as client:
            return await work(client)

    try:
        return asyncio.run(session())
    except ApiError as error:
        typer.echo(str(error), err=True)
        raise typer.Exit(1) from None
    except httpx.TransportError as error:
        reason = str(error) or type(error).__name__
        typer.echo(f"cannot reach the API at {settings.base_url}: {reason}", err=True)
        raise typer.Exit(2) from None


def _echo_json(body: Any) -> None:
    typer.echo(json.dumps(body, indent=2))


def _short(value: Any, width: int = 7) -> str:
    return "-" if value in (None, "") else str(value)[:width]


def _when(value: Any) -> str:
    """An API timestamp to the second, or `-`."""
    return "-" if not value else str(value)[:19].replace("T", " ")


def list_lines(items: list[dict[str, Any]]) -> list[str]:
    header = ["ID", "STATUS", "PHASE", "REPOSITORY", "FEATURE", "TASK", "CREATED"]
    rows = [
        [
            str(run["id"]),
            str(run["status"]),
            str(run.get("phase") or "-"),
            str(run.get("repository") or "-"),
            str(run.get("featureKey") or "-"),
            str(run.get("currentTask") or "-"),
            _when(run.get("createdAt")),
        ]
        for run in items
    ]
    return table(header, rows)


def show_lines(run: dict[str, Any]) -> list[str]:
    """The run's outcome, where it works, and every task's latest attempt."""
    outcome = str(run["status"])
    if run.get("result"):
        outcome += f" ({run['result']})"
    if run.get("errorCode"):
        outcome += f": {run['errorCode']}: {run.get('errorMessage') or ''}".rstrip()
    base = f"{run.get('baseBranch') or '-'} @ {_short(run.get('baseSha'), 12)}"
    fields = [
        ("status", outcome),
        ("phase", f"{run.get('phase')}  attempt {run.get('attempt')}"),
        ("repository", f"{run.get('repository')}  feature {run.get('featureKey')}"),
        ("base", base),
        ("publish", str(run.get("publishMode") or "-")),
        ("codex", f"{run.get('codexQueue') or '-'} {run.get('codexVolume') or ''}"),
        ("branch", str(run.get("branchName") or "-")),
        ("pull request", str(run.get("prUrl") or "-")),
        ("created", _when(run.get("createdAt"))),
        ("started", _when(run.get("startedAt"))),
        ("finished", _when(run.get("finishedAt"))),
    ]
    lines = [f"run {run['id']}"]
    lines += [f"  {name:<13}{value.rstrip()}" for name, value in fields]
    tasks = run.get("taskSummary") or []
    if tasks:
        header = ["TASK", "ATTEMPT", "STATUS", "STARTED", "FINISHED", "ERROR"]
        rows = [
            [
                str(task["taskName"]),
                str(task["attempt"]),
                str(task["status"]),
                _when(task.get("startedAt")),
                _when(task.get("finishedAt")),
                str((task.get("error") or {}).get("code") or "-"),
            ]
            for task in tasks
        ]
        lines += ["", *table(header, rows)]
    return lines


@runs_app.command("list")
def list_(
    status: Annotated[Status | None, typer.Option(help="only this status")] = None,
    feature: Annotated[str | None, typer.Option(help="only this feature key")] = None,
    repository: Annotated[str | None, typer.Option(help="only this repository")] = None,
    limit: Annotated[int, typer.Option(min=1, max=100, help="page size")] = 20,
    cursor: Annotated[
        str | None, typer.Option(help="the next page: a previous nextCursor")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """The newest runs first."""
    page = call(
        lambda client: api_client.list_runs(
            client,
            status=status.value if status else None,
            feature_key=feature,
            repository=repository,
            limit=limit,
            cursor=cursor,
        )
    )
    if as_json:
        _echo_json(page)
        return
    for line in list_lines(page["items"]):
        typer.echo(line)
    if page.get("nextCursor"):
        typer.echo(f"more: --cursor {page['nextCursor']}", err=True)


@runs_app.command()
def show(run_id: RunId, as_json: JsonOption = False) -> None:
    """One run with its tasks."""
    run = call(lambda client: api_client.get_run(client, str(run_id)))
    if as_json:
        _echo_json(run)
        return
    for line in show_lines(run):
        typer.echo(line)


@runs_app.command()
def create(
    repository: Annotated[str, typer.Option(help="owner/name or git URL")],
    feature: Annotated[str, typer.Option(help="the Spec Kit feature key")],
    base_branch: Annotated[str | None, typer.Option(help="default: the repo's")] = None,
    task_id: Annotated[
        str | None, typer.Option(help="e.g. T012; default: next")
    ] = None,
    publish_mode: Annotated[
        PublishMode | None, typer.Option(help="default: pr")
    ] = None,
    notes: Annotated[str | None, typer.Option(help="extra notes for Codex")] = None,
    idempotency_key: Annotated[
        str | None, typer.Option(help="a repeat with this key returns the same run")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Start a run: the next (or the given) task of a feature becomes a PR."""
    request = RunRequest(
        repository=repository,
        feature_key=feature,
        base_branch=base_branch,
        task_id=task_id,
        publish_mode=publish_mode.value if publish_mode else None,
        notes=notes,
    )
    run, replayed = call(
        lambda client: api_client.create_run(client, request, idempotency_key)
    )
    if as_json:
        _echo_json(run)
        return
    how = "already created (idempotent replay)" if replayed else "created"
    typer.echo(f"run {run['id']} {how}: {run['status']}")


@runs_app.command()
def retry(
    run_id: RunId,
    notes: Annotated[str | None, typer.Option(help="notes for the new attempt")] = None,
) -> None:
    """Resume a failed or cancelled run at its first unfinished task."""
    run = call(lambda client: api_client.retry_run(client, str(run_id), notes))
    typer.echo(
        f"run {run['id']} retried: attempt {run['attempt']}, {run['status']}, "
        f"resuming at {run.get('currentTask')}"
    )


@runs_app.command()
def cancel(run_id: RunId) -> None:
    """Cancel a pending or running run."""
    run = call(lambda client: api_client.cancel_run(client, str(run_id)))
    typer.echo(f"run {run['id']} {run['status']}")


@runs_app.command()
def watch(run_id: RunId) -> None:
    """Follow a run live; exit 0 if it succeeds, 1 if it fails or is cancelled."""
    console = Console()
    try:
        code = call(lambda client: watch_run(client, str(run_id), console))
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    raise typer.Exit(code)
