"""`spec-workflow`: local launcher, set-up, demo, accounts, runs and taps."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Annotated

import httpx
import typer

from services.cli import demo, launcher
from services.cli import logs as log_view
from services.cli import tap as taps
from services.cli.accounts import secrets_app, tokens_app, users_app
from services.cli.broker import amqp_target, management_client, setup_broker
from services.cli.common import read_settings
from services.cli.runs import call, runs_app
from services.cli.settings import (
    BrokerSettings,
    DatabaseSettings,
    DemoSettings,
    LauncherSettings,
    TapSettings,
)

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)
db_app = typer.Typer(no_args_is_help=True, help="The Postgres database.")
broker_app = typer.Typer(no_args_is_help=True, help="The RabbitMQ vhost and policy.")
app.add_typer(db_app, name="db")
app.add_typer(broker_app, name="broker")
app.add_typer(users_app, name="users")
app.add_typer(tokens_app, name="tokens")
app.add_typer(secrets_app, name="secrets")
app.add_typer(runs_app, name="runs")
demo_app = typer.Typer(no_args_is_help=True, help="The local demo (make demo).")
app.add_typer(demo_app, name="demo")


@app.command()
def up() -> None:
    """Set up broker and database, start API, relay and workers, wait for /readyz."""
    settings = read_settings(LauncherSettings)
    broker, database = read_settings(BrokerSettings), read_settings(DatabaseSettings)
    raise typer.Exit(
        launcher.up(settings, prepare=lambda: asyncio.run(_prepare(broker, database)))
    )


@app.command()
def down() -> None:
    """Stop what `up` started: SIGTERM, SIGKILL after LAUNCHER_STOP_TIMEOUT."""
    raise typer.Exit(launcher.down(read_settings(LauncherSettings)))


@app.command()
def status() -> None:
    """List the local processes and the API's readiness; exit 1 unless all run."""
    raise typer.Exit(launcher.status(read_settings(LauncherSettings)))


@demo_app.command("prepare")
def demo_prepare() -> None:
    """Sample remote, model (real or offline), auth volumes, <VAR_DIR>/demo/env."""
    raise typer.Exit(demo.prepare(read_settings(DemoSettings)))


@demo_app.command("run")
def demo_run(
    timeout: Annotated[
        float, typer.Option(help="seconds to wait for the run's end")
    ] = 600.0,
) -> None:
    """Run the sample feature's next task, follow it, show the branch; 0 on success."""
    raise typer.Exit(demo.run(read_settings(DemoSettings), timeout))


@demo_app.command("down")
def demo_down() -> None:
    """Stop the stack and the offline model; delete the demo's auth volumes."""
    settings = read_settings(DemoSettings)
    raise typer.Exit(demo.down(settings, launcher.down(settings)))


@app.command()
def logs(
    run: Annotated[str | None, typer.Option("--run", help="the run's id")] = None,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="keep polling for new records")
    ] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="one JSON record per line (JSONL)")
    ] = False,
    level: Annotated[
        str | None, typer.Option("--level", help="minimum level, e.g. warning")
    ] = None,
    service: Annotated[
        str | None, typer.Option("--service", help="only this service")
    ] = None,
) -> None:
    """Stored log records (GET /api/logs), oldest first; Ctrl-C ends --follow."""
    filters: dict[str, str | int | None] = {
        "runId": run,
        "level": level,
        "service": service,
    }
    with contextlib.suppress(KeyboardInterrupt):
        call(
            lambda client: log_view.print_logs(
                client, filters, emit=typer.echo, as_json=as_json, follow=follow
            )
        )


@app.command()
def tap(
    patterns: Annotated[
        list[str] | None,
        typer.Argument(help="routing-key patterns on spec_workflow (default '#')"),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="one JSON object per message")
    ] = False,
    logs: Annotated[
        bool,
        typer.Option(
            "--logs", help="also (alone: only) the spec_workflow.logs exchange"
        ),
    ] = False,
    save: Annotated[
        Path | None, typer.Option(help="append every message as JSONL to this file")
    ] = None,
    count: Annotated[
        int | None, typer.Option(min=1, help="stop after N messages")
    ] = None,
    seconds: Annotated[
        float | None, typer.Option(min=0.1, help="stop after S seconds")
    ] = None,
) -> None:
    """Print live commands and events; the system's own queues lose nothing."""
    for pattern in patterns or []:
        if not 0 < len(pattern.encode()) <= 255:
            raise typer.BadParameter(
                f"{pattern!r}: 1 to 255 bytes", param_hint="PATTERN"
            )
    url = str(read_settings(TapSettings).rabbitmq_url)
    pairs = taps.bindings(patterns or [], logs=logs)
    with contextlib.ExitStack() as stack:
        sink = stack.enter_context(save.open("a", encoding="utf-8")) if save else None
        code = taps.run_tap(
            url, pairs, as_json=as_json, save=sink, count=count, seconds=seconds
        )
    raise typer.Exit(code)


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Create the DATABASE_URL database if missing and migrate it to head."""
    asyncio.run(_db_upgrade(read_settings(DatabaseSettings)))


@broker_app.command("setup")
def broker_setup() -> None:
    """Create RABBITMQ_URL's vhost if missing, grant its user, apply the policy."""
    asyncio.run(_broker_setup(read_settings(BrokerSettings)))


async def _prepare(broker: BrokerSettings, database: DatabaseSettings) -> None:
    await _broker_setup(broker)
    await _db_upgrade(database)


async def _broker_setup(settings: BrokerSettings) -> None:
    target = amqp_target(str(settings.rabbitmq_url))
    url = str(settings.management_url)
    try:
        async with management_client(url, target) as client:
            done = await setup_broker(client, target, settings.delivery_limit)
    except httpx.HTTPError as error:
        typer.echo(f"RabbitMQ management API at {url}: {error!r}", err=True)
        typer.echo("is the management plugin enabled? `make services`", err=True)
        raise typer.Exit(1) from None
    created = " (created)" if done.vhost_created else ""
    typer.echo(f"RabbitMQ {done.rabbitmq_version}: vhost {done.vhost!r}{created}")
    typer.echo(f"  {target.user} granted; policy {done.policy}")


async def _db_upgrade(settings: DatabaseSettings) -> None:
    # imported here: the other commands need none of the api
    from services.api.migrate import prepare_database

    await prepare_database(str(settings.database_url))
    name = (settings.database_url.path or "").lstrip("/")
    typer.echo(f"database {name!r} migrated to head")
