"""The local processes: the command table, pid files under `var/run`, start, stop."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path

# The one table of what runs. Arguments follow the interpreter. The last one also
# identifies the process in /proc/<pid>/cmdline, so a reused pid is never signalled.
COMMANDS: dict[str, tuple[str, ...]] = {
    "api": ("-m", "services.api"),
    "relay": ("-m", "services.api.relay"),
    "preflight": ("-m", "faststream", "run", "services.preflight.main:app"),
    "publisher": ("-m", "faststream", "run", "services.publisher.main:app"),
    "codex_runner": ("-m", "faststream", "run", "services.codex_runner.main:app"),
}
# started once per Codex shard, as codex_runner-<n> with CODEX_SHARD_INDEX=n
SHARDED = "codex_runner"
PROC = Path("/proc")


@dataclass(frozen=True)
class ProcessSpec:
    name: str  # stem of <var>/run/<name>.pid and <var>/log/<name>.log
    argv: tuple[str, ...]


def process_table(
    python: str, codex_shards: int, api_url: str | None = None
) -> list[ProcessSpec]:
    """Every process `up` starts, in start order.

    With `api_url`, every process gets API_URL=api_url, so the workers reach the API
    this launcher starts (API_HOST/API_PORT) rather than the default address.
    """
    # `env` execs the interpreter in place: the pid stays the one we record, and the
    # child environment is ours plus these variables.
    common = (f"API_URL={api_url}",) if api_url else ()
    specs: list[ProcessSpec] = []
    for name, args in COMMANDS.items():
        if name != SHARDED:
            argv = ("env", *common, python, *args) if common else (python, *args)
            specs.append(ProcessSpec(name, argv))
            continue
        specs.extend(
            ProcessSpec(
                f"{name}-{n}",
                ("env", *common, f"CODEX_SHARD_INDEX={n}", python, *args),
            )
            for n in range(codex_shards)
        )
    return specs


def marker_for(name: str) -> str | None:
    """The argv element that identifies process `name`; None for an unknown name."""
    kind = SHARDED if name.startswith(f"{SHARDED}-") else name
    args = COMMANDS.get(kind)
    return args[-1] if args else None


class State(StrEnum):
    RUNNING = "running"
    STALE = "stale"  # a pid file whose process is gone, or is now something else
    ABSENT = "absent"


@dataclass(frozen=True)
class Tracked:
    name: str
    pid: int | None
    state: State


class PidDir:
    """`<var>/run/<name>.pid` (the bare pid) and `<var>/log/<name>.log`."""

    def __init__(self, var_dir: Path, proc: Path = PROC) -> None:
        self.run = var_dir / "run"
        self.log = var_dir / "log"
        self._proc = proc

    def pid_file(self, name: str) -> Path:
        return self.run / f"{name}.pid"

    def log_file(self, name: str) -> Path:
        return self.log / f"{name}.log"

    def names(self) -> list[str]:
        """Names of every pid file present."""
        return sorted(path.stem for path in self.run.glob("*.pid"))

    def read_pid(self, name: str) -> int | None:
        try:
            text = self.pid_file(name).read_text().strip()
        except FileNotFoundError:
            return None
        return int(text) if text.isdigit() and int(text) > 0 else None

    def write_pid(self, name: str, pid: int) -> None:
        self.run.mkdir(parents=True, exist_ok=True)
        self.pid_file(name).write_text(f"{pid}\n")

    def remove(self, name: str) -> None:
        self.pid_file(name).unlink(missing_ok=True)

    def is_ours(self, pid: int, name: str) -> bool:
        """Whether `pid` is alive and runs the command of `name` (zombies: no)."""
        marker = marker_for(name)
        try:
            argv = (self._proc / str(pid) / "cmdline").read_bytes().split(b"\0")
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            return False
        return marker is not None and marker.encode() in argv

    def inspect(self, name: str) -> Tracked:
        if not self.pid_file(name).exists():
            return Tracked(name, None, State.ABSENT)
        pid = self.read_pid(name)
        if pid is None or not self.is_ours(pid, name):
            return Tracked(name, pid, State.STALE)
        return Tracked(name, pid, State.RUNNING)

    def start(self, spec: ProcessSpec) -> subprocess.Popen[bytes]:
        """Start `spec` detached (own session, output to its log); record its pid."""
        self.log.mkdir(parents=True, exist_ok=True)
        started = datetime.now(UTC).isoformat()
        with self.log_file(spec.name).open("ab") as log:
            log.write(
                f"--- {started} spec-workflow up: {' '.join(spec.argv)}\n".encode()
            )
            log.flush()
            child = subprocess.Popen(
                spec.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.write_pid(spec.name, child.pid)
        return child

    def stop(self, targets: Iterable[Tracked], timeout: float) -> list[str]:
        """SIGTERM the running targets, SIGKILL those left after `timeout`.

        Returns the names that had to be killed.
        """
        alive = {t.name: t.pid for t in targets if t.state is State.RUNNING and t.pid}
        for pid in alive.values():
            _signal(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while alive and time.monotonic() < deadline:
            time.sleep(0.2)
            alive = {
                name: pid for name, pid in alive.items() if self.is_ours(pid, name)
            }
        for pid in alive.values():
            _signal(pid, signal.SIGKILL)
        return sorted(alive)

    def tail(self, name: str, lines: int = 25) -> str:
        try:
            text = self.log_file(name).read_text(errors="replace")
        except FileNotFoundError:
            return f"(no log at {self.log_file(name)})"
        return "\n".join(text.splitlines()[-lines:])


def _signal(pid: int, sig: signal.Signals) -> None:
    # the process may have exited between the check and the signal
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)
