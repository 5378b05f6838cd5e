"""Where an agent runs: a container through the Docker API, or a process on the host.

Both feed stdout to `on_line` line by line, end the agent on the overall timeout or
when no line came for `idle_timeout` (Codex has no stall detection of its own), keep
stdin closed (an open stdin hangs `codex exec`) and leave nothing running behind.
Background: ../shared/notes/container-engine.md §7-8 and its Codex appendix.
"""

from services.codex_runner.agent import ExecutorError
from services.codex_runner.executors.container import DockerExecutor, claim_for_agent
from services.codex_runner.executors.process import ProcessExecutor
from services.codex_runner.executors.streaming import LAST_MESSAGE

__all__ = [
    "LAST_MESSAGE",
    "DockerExecutor",
    "ExecutorError",
    "ProcessExecutor",
    "claim_for_agent",
]
