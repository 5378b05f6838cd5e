"""The agent-agnostic contract: what to run (an `Agent`) and where (an `Executor`).

An agent CLI is described by its image, its command line, the environment its
credentials need and a parser for its output. Codex is the first; Gemini CLI with the
user's `GOOGLE_API_KEY` is meant to be another `Agent`, not a rewrite of the runner.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol
from uuid import UUID

CONTAINER_WORKSPACE = "/workspace"
CONTAINER_OUTPUT = "/home/app/out"
CONTAINER_AGENT_HOME = "/home/app/.codex"


@dataclass(frozen=True)
class AgentRun:
    """One agent execution for one run attempt."""

    run_id: UUID
    attempt: int
    workspace: Path
    """Host path of the fresh clone; mounted read-write at CONTAINER_WORKSPACE."""
    output_dir: Path
    """Host path outside the workspace for the last message (at CONTAINER_OUTPUT)."""
    prompt: str
    auth_volume: str
    """Docker volume (container executor) or host directory name (process executor)."""
    credentials: dict[str, str] = field(default_factory=dict)
    """Provider -> key, fetched just in time (e.g. `openai` for API-key mode)."""
    labels: dict[str, str] = field(default_factory=dict)


@dataclass
class Progress:
    """A summary-worthy moment in the agent's output (for the run's timeline)."""

    kind: str
    """thread_started | item_completed | command | file_change | usage | turn_failed"""
    data: dict[str, object] = field(default_factory=dict)


@dataclass
class AgentOutcome:
    """What the agent's output said, once it ended."""

    thread_id: str | None = None
    completed: bool = False
    """`turn.completed` was seen."""
    turn_error: str | None = None
    """The message of `turn.failed` (or a fatal top-level error)."""
    failed_changes: list[str] = field(default_factory=list)
    files_changed: list[str] = field(default_factory=list)
    commands: int = 0
    items: int = 0
    usage: dict[str, int] = field(default_factory=dict)
    last_message: str | None = None


class OutputParser(Protocol):
    def feed(self, line: str) -> list[Progress]:
        """Read one stdout line; return what is worth announcing."""
        ...

    def outcome(self) -> AgentOutcome: ...


class Agent(Protocol):
    name: str
    image: str

    def command(self, workspace: str, last_message: str, prompt: str) -> list[str]:
        """argv inside the executor, given where it sees the workspace and output."""
        ...

    def environment(self, run: AgentRun, agent_home: str) -> dict[str, str]:
        """Variables for the agent process (credentials included, never logged)."""
        ...

    def parser(self) -> OutputParser: ...


@dataclass
class ExecResult:
    exit_code: int | None
    timed_out: bool = False
    stalled: bool = False
    """No output line for the idle timeout."""
    cancelled: bool = False
    stderr_tail: str = ""
    """The last lines of stderr, redacted, at most 2,000 characters."""


OnLine = Callable[[str], Awaitable[None]]


class ExecutorError(Exception):
    """The executor could not run the agent: an infrastructure failure, not an outcome.

    `code` names it for the run's error (`codex_image_missing`, `codex_binary_missing`,
    `executor_unavailable`, `executor_failed`); `retryable` says whether another attempt
    may succeed.
    """

    def __init__(self, code: str, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.code = code
        self.retryable = retryable


class Executor(Protocol):
    async def run(
        self,
        run: AgentRun,
        agent: Agent,
        on_line: OnLine,
        *,
        timeout: float,  # noqa: ASYNC109 - a limit on the agent, reported in ExecResult
        idle_timeout: float,
    ) -> ExecResult:
        """Run the agent to its end (or a limit), feeding each stdout line to `on_line`
        as it arrives. Leaves nothing running behind."""
        ...

    async def cancel(self, run_id: UUID) -> bool:
        """Stop the run's agent (stop, then kill) and verify it is gone."""
        ...

    async def cleanup(self, labels: dict[str, str]) -> int:
        """Remove leftovers (e.g. containers of a crashed runner) with these labels."""
        ...
