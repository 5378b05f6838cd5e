"""The Codex CLI as an `Agent`: `codex exec` command line, environment, JSONL parser.

Flags and events: ../shared/notes/codex-cli.md §6 and §9. `codex exec` is always run
with `--json`, `--ephemeral`, `--sandbox danger-full-access` (the container is the
sandbox) and stdin closed; the executor enforces the timeouts Codex has none of.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from pathlib import PurePosixPath
from typing import Any

from services.codex_runner.agent import AgentOutcome, AgentRun, Progress

DEFAULT_MODEL = "gpt-5.5"
API_KEY_ENV = "CODEX_API_KEY"
"""Where API-key mode puts the user's OpenAI key; `codex exec` reads it (§5)."""
OPENAI_CREDENTIAL = "openai"
HARDENING = (
    # Plugins and analytics reach out to github.com / chatgpt.com; unbounded retries
    # hang forever on an unreachable model; `*_API_KEY` keeps keys out of tool shells.
    *("--disable", "plugins", "--disable", "unbounded_connection_retries"),
    *("-c", "analytics.enabled=false"),
    *("-c", 'shell_environment_policy.exclude=["*_API_KEY"]'),
)
PROVIDER_DEFAULTS: dict[str, object] = {
    "wire_api": "responses",
    # Codex's default stream retries take ~24 s against a dead server: fail fast.
    "request_max_retries": 0,
    "stream_max_retries": 0,
}
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def toml_value(value: object) -> str:
    """A TOML literal for an inline `-c key=value` override."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # JSON string escapes are valid TOML basic strings
    if isinstance(value, Mapping):
        return toml_table(value)
    if isinstance(value, Sequence):
        return "[" + ",".join(toml_value(v) for v in value) + "]"
    raise TypeError(f"no TOML form for {type(value).__name__}")


def toml_table(table: Mapping[str, object]) -> str:
    parts = []
    for key, value in table.items():
        name = key if _BARE_KEY.fullmatch(key) else json.dumps(key)
        parts.append(f"{name}={toml_value(value)}")
    return "{" + ",".join(parts) + "}"


def provider_id(provider: Mapping[str, object]) -> str:
    """`id`, else the slug of `name` (`My Proxy` -> `my_proxy`)."""
    raw = str(provider.get("id") or provider.get("name") or "custom")
    return re.sub(r"[^a-z0-9_-]+", "_", raw.lower()).strip("_") or "custom"


class CodexAgent:
    """`codex exec --json` in the Codex image (or from `codex_bin` on the host)."""

    name = "codex"

    def __init__(
        self,
        image: str,
        model: str | None = DEFAULT_MODEL,
        config_overrides: Sequence[str] = (),
        provider: Mapping[str, object] | None = None,
        extra_args: Sequence[str] = (),
        *,
        codex_bin: str = "codex",
        skip_git_repo_check: bool = False,
    ) -> None:
        self.image = image
        self.model = model
        self.config_overrides = list(config_overrides)
        self.provider = dict(provider) if provider is not None else None
        self.extra_args = list(extra_args)
        self.codex_bin = codex_bin
        self.skip_git_repo_check = skip_git_repo_check

    def command(self, workspace: str, last_message: str, prompt: str) -> list[str]:
        argv = [self.codex_bin, "exec", "--json", "--sandbox", "danger-full-access"]
        argv.append("--ephemeral")
        if self.skip_git_repo_check:  # only for a workspace that is no git checkout
            argv.append("--skip-git-repo-check")
        argv += ["-C", workspace, "-o", last_message]
        if self.model:
            argv += ["-m", self.model]
        argv += HARDENING
        argv += self._provider_args()
        for override in self.config_overrides:  # after ours: a later `-c` wins
            argv += ["-c", override]
        argv += self.extra_args
        # `--` so that a prompt starting with "-" is never taken for a flag.
        return [*argv, "--", prompt]

    def _provider_args(self) -> list[str]:
        if self.provider is None:
            return []
        ident = provider_id(self.provider)
        table = {k: v for k, v in self.provider.items() if k != "id"}
        table = {"name": ident, **PROVIDER_DEFAULTS, **table}
        return [
            *("-c", f"model_provider={ident}"),
            *("-c", f"model_providers.{ident}={toml_table(table)}"),
        ]

    def environment(self, run: AgentRun, agent_home: str) -> dict[str, str]:
        """CODEX_HOME, HOME (its parent) and, in API-key mode, CODEX_API_KEY only."""
        env = {
            "CODEX_HOME": agent_home,
            "HOME": str(PurePosixPath(agent_home).parent),
        }
        key = run.credentials.get(OPENAI_CREDENTIAL)
        if key:
            env[API_KEY_ENV] = key
        return env

    def parser(self) -> CodexOutputParser:
        return CodexOutputParser()


class CodexOutputParser:
    """Folds `codex exec --json` events into an `AgentOutcome`; never raises on input.

    Lines that are not JSON objects, or events of an unexpected shape, are counted in
    `malformed` and otherwise ignored.
    """

    def __init__(self) -> None:
        self._outcome = AgentOutcome()
        self.malformed = 0
        self.errors: list[str] = []
        """Top-level `error` events (retry notices): reported, not fatal."""

    def feed(self, line: str) -> list[Progress]:
        text = line.strip()
        if not text:
            return []
        try:
            event = json.loads(text)
        except (ValueError, RecursionError):
            self.malformed += 1
            return []
        if not isinstance(event, dict) or not isinstance(event.get("type"), str):
            self.malformed += 1
            return []
        try:
            return self._event(event)
        except (TypeError, ValueError, AttributeError, KeyError):
            self.malformed += 1
            return []

    def outcome(self) -> AgentOutcome:
        return self._outcome

    def _event(self, event: dict[str, Any]) -> list[Progress]:
        out = self._outcome
        kind = event["type"]
        if kind == "thread.started":
            thread_id = _text(event.get("thread_id"))
            if thread_id is None:
                raise ValueError("thread.started without thread_id")
            out.thread_id = thread_id
            return [Progress("thread_started", {"thread_id": thread_id})]
        if kind == "item.completed":
            item = event.get("item")
            if not isinstance(item, dict):
                raise ValueError("item.completed without item")
            return self._item(item)
        if kind == "turn.completed":
            out.completed = True
            out.usage = _usage(event.get("usage"))
            return [Progress("usage", dict(out.usage))]
        if kind == "turn.failed":
            error = event.get("error")
            message = _text(error.get("message")) if isinstance(error, dict) else None
            out.turn_error = message or _text(error) or "turn failed"
            return [Progress("turn_failed", {"message": out.turn_error})]
        if kind == "error":
            self.errors.append(_text(event.get("message")) or "")
        return []

    def _item(self, item: dict[str, Any]) -> list[Progress]:
        out = self._outcome
        out.items += 1
        item_type = _text(item.get("type")) or "unknown"
        progress = [Progress("item_completed", {"type": item_type, "items": out.items})]
        if item_type == "agent_message":
            out.last_message = _text(item.get("text"))
        elif item_type == "command_execution":
            out.commands += 1
            exit_code = item.get("exit_code")
            data: dict[str, object] = {
                "commands": out.commands,
                "exit_code": exit_code if isinstance(exit_code, int) else None,
                "status": _text(item.get("status")),
            }
            progress.append(Progress("command", data))
        elif item_type == "file_change":
            paths = _paths(item.get("changes"))
            failed = item.get("status") == "failed"
            target = out.failed_changes if failed else out.files_changed
            target.extend(p for p in paths if p not in target)
            status = "failed" if failed else _text(item.get("status"))
            progress.append(Progress("file_change", {"paths": paths, "status": status}))
        return progress


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _paths(changes: object) -> list[str]:
    if not isinstance(changes, list):
        return []
    paths = (c.get("path") for c in changes if isinstance(c, dict))
    return [p for p in paths if isinstance(p, str)]


def _usage(usage: object) -> dict[str, int]:
    if not isinstance(usage, dict):
        return {}
    return {
        str(k): v
        for k, v in usage.items()
        if isinstance(v, int) and not isinstance(v, bool)
    }
