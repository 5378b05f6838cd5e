"""`up`, `down`, `status`: the API, relay and workers as local background processes."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable

import httpx
import typer

from services.cli.processes import PidDir, ProcessSpec, State, Tracked, process_table
from services.cli.settings import LauncherSettings

Started = list[tuple[ProcessSpec, subprocess.Popen[bytes]]]


def up(settings: LauncherSettings, prepare: Callable[[], None]) -> int:
    """Unless running: `prepare` broker and database, start all, wait for /readyz."""
    pids = PidDir(settings.var_dir)
    specs = process_table(sys.executable, settings.codex_shards, settings.base_url)
    expected = {s.name for s in specs}
    tracked = [pids.inspect(name) for name in sorted(expected | set(pids.names()))]
    running = [t for t in tracked if t.state is State.RUNNING]
    if running and {t.name for t in running} >= expected:
        typer.echo(f"already running ({_listing(running)}); API at {settings.base_url}")
        return 0
    if running:
        typer.echo(f"partly running ({_listing(running)}): `make down` first", err=True)
        return 1
    for t in tracked:  # none is running: what is left are stale pid files
        pids.remove(t.name)
    prepare()

    started: Started = [(spec, pids.start(spec)) for spec in specs]
    listing = ", ".join(f"{spec.name}={child.pid}" for spec, child in started)
    typer.echo(f"started {listing}; logs in {pids.log}")
    failure = _wait_ready(settings.base_url, settings.ready_timeout, started)
    if failure is None:
        typer.echo(f"ready: {settings.base_url}")
        return 0

    typer.echo(f"not ready: {failure}", err=True)
    dead = [spec.name for spec, child in started if child.poll() is not None]
    for name in dead or ["api"]:
        typer.echo(f"--- tail of {pids.log_file(name)}\n{pids.tail(name)}", err=True)
    _stop(pids, [pids.inspect(spec.name) for spec in specs], settings.stop_timeout)
    for _, child in started:
        child.poll()  # reap
    return 1


def down(settings: LauncherSettings) -> int:
    """Stop exactly the processes of the pid files, each checked to be still ours."""
    pids = PidDir(settings.var_dir)
    tracked = [pids.inspect(name) for name in pids.names()]
    if not tracked:
        typer.echo("nothing to stop")
    _stop(pids, tracked, settings.stop_timeout)
    return 0


def status(settings: LauncherSettings) -> int:
    """Print each process and the API's readiness; 0 only if all run and it is ready."""
    pids = PidDir(settings.var_dir)
    expected = {s.name for s in process_table(sys.executable, settings.codex_shards)}
    tracked = [pids.inspect(name) for name in sorted(expected | set(pids.names()))]
    for t in tracked:
        typer.echo(f"{t.name:<16} {t.state:<8} {t.pid or ''}")
    with httpx.Client(timeout=2.0) as client:
        ready = _ready(client, settings.base_url)
    readiness = "ready" if ready else "not ready"
    typer.echo(f"{'api /readyz':<16} {readiness:<8} {settings.base_url}")
    running = {t.name for t in tracked if t.state is State.RUNNING}
    return 0 if ready and running >= expected else 1


def _stop(pids: PidDir, tracked: list[Tracked], timeout: float) -> None:
    running = [t for t in tracked if t.state is State.RUNNING]
    if running:
        typer.echo(f"stopping {_listing(running)}")
    killed = pids.stop(running, timeout)
    if killed:
        typer.echo(f"killed after {timeout:g}s: {', '.join(killed)}", err=True)
    for t in tracked:
        if t.state is State.STALE:
            typer.echo(f"{t.name}: not running (pid file said {t.pid})")
        pids.remove(t.name)


def _wait_ready(base_url: str, timeout: float, started: Started) -> str | None:
    """None once /readyz answers 200 with every process alive, else why not."""
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=2.0) as client:
        while True:
            dead = [spec.name for spec, child in started if child.poll() is not None]
            if dead:
                return f"exited early: {', '.join(dead)}"
            if _ready(client, base_url):
                return None
            if time.monotonic() >= deadline:
                return f"{base_url}/readyz did not answer 200 within {timeout:g}s"
            time.sleep(0.5)


def _ready(client: httpx.Client, base_url: str) -> bool:
    try:
        return client.get(f"{base_url}/readyz").status_code == httpx.codes.OK
    except httpx.TransportError:
        return False


def _listing(tracked: list[Tracked]) -> str:
    return ", ".join(f"{t.name}={t.pid}" for t in tracked)
