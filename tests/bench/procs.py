"""Child processes of `make bench`: start, stop (always), and their resident memory."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

PROC = Path("/proc")
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of `pid` so far (/proc/<pid>/stat); None once gone."""
    try:
        stat = (PROC / str(pid) / "stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    fields = stat.rsplit(")", 1)[1].split()  # after the command name
    return (int(fields[11]) + int(fields[12])) / TICKS


def pids_named(name: str) -> list[int]:
    """Pids whose command name (`/proc/<pid>/comm`) is `name`."""
    found = []
    for entry in PROC.iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if (entry / "comm").read_text().strip() == name:
                    found.append(int(entry.name))
    return found


def rss_kib(pid: int) -> int | None:
    """VmRSS of `pid` from /proc/<pid>/status, in KiB; None once it is gone."""
    try:
        for line in (PROC / str(pid) / "status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return None


def children(pid: int) -> list[int]:
    """Direct children of `pid` (all its threads' `children` files)."""
    found: list[int] = []
    try:
        tasks = list((PROC / str(pid) / "task").iterdir())
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return found
    for task in tasks:
        with contextlib.suppress(OSError):
            found.extend(int(c) for c in (task / "children").read_text().split())
    return sorted(set(found))


@dataclass
class Service:
    """One child process, in its own session, output to `log`."""

    name: str
    argv: list[str]
    env: dict[str, str]
    log: Path
    cwd: Path
    process: subprocess.Popen[bytes] | None = None
    peak_kib: dict[str, int] = field(default_factory=dict)

    def start(self) -> None:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                self.argv,
                env=self.env,
                cwd=self.cwd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C reaches us only; we stop it
            )

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def memory(self) -> dict[str, int]:
        """RSS (KiB) of the process and, as `<name>/child-<i>`, of its children."""
        if not self.alive():
            return {}
        found: dict[str, int] = {}
        own = rss_kib(self.pid)
        if own is not None:
            found[self.name] = own
        for i, child in enumerate(children(self.pid), 1):
            kib = rss_kib(child)
            if kib is not None:
                found[f"{self.name}/child-{i}"] = kib
        return found

    def cpu(self) -> float:
        """CPU seconds of the process and its live children."""
        if not self.alive():
            return 0.0
        pids = [self.pid, *children(self.pid)]
        return sum(cpu_seconds(pid) or 0.0 for pid in pids)

    def sample_peak(self) -> None:
        for name, kib in self.memory().items():
            self.peak_kib[name] = max(kib, self.peak_kib.get(name, 0))

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM, then SIGKILL its process group after `timeout`; reaps it."""
        process = self.process
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)  # its own session: its group
            process.wait(5)
        # Pool children of a stopped parent (Celery's prefork) go with their group.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)

    def tail(self, lines: int = 30) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])
