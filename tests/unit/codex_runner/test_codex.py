"""CodexAgent's command line and environment, and its JSONL parser."""

from __future__ import annotations

import itertools
import json
import tomllib
from pathlib import Path
from uuid import uuid4

from hypothesis import given, settings
from hypothesis import strategies as st

from services.codex_runner.agent import AgentRun
from services.codex_runner.codex import CodexAgent, CodexOutputParser, toml_value

PROMPT = "Implement T001"
KEY = "sk-test-0123456789abcdef"
SAMPLES = Path(__file__).parent / "jsonl"
"""Recorded from codex-cli 0.171.0 driven by the scripted model (codex-cli.md §9)."""

SUCCESS = (SAMPLES / "success.jsonl").read_text()
FAILED_500 = (SAMPLES / "failed_500.jsonl").read_text()
CUT_STREAM = (SAMPLES / "cut_stream.jsonl").read_text()
FAILED_EDIT = (SAMPLES / "failed_edit.jsonl").read_text()


def agent_run(credentials: dict[str, str] | None = None) -> AgentRun:
    return AgentRun(
        run_id=uuid4(),
        attempt=1,
        workspace=Path("/srv/ws"),
        output_dir=Path("/srv/out"),
        prompt=PROMPT,
        auth_volume="codex_auth_0",
        credentials=credentials or {},
    )


def parse(text: str) -> tuple[CodexOutputParser, list[str]]:
    parser = CodexOutputParser()
    kinds = [p.kind for line in text.splitlines() for p in parser.feed(line)]
    return parser, kinds


def overrides(argv: list[str]) -> list[str]:
    return [argv[i + 1] for i, arg in enumerate(argv) if arg == "-c"]


def test_command_has_the_fixed_exec_shape() -> None:
    argv = CodexAgent("img").command("/workspace", "/home/app/out/m.txt", PROMPT)

    assert argv[:6] == [
        *("codex", "exec", "--json"),
        *("--sandbox", "danger-full-access", "--ephemeral"),
    ]
    assert argv[argv.index("-C") + 1] == "/workspace"
    assert argv[argv.index("-o") + 1] == "/home/app/out/m.txt"
    assert argv[argv.index("-m") + 1] == "gpt-5.5"
    assert argv[-2:] == ["--", PROMPT]
    assert argv.count("--sandbox") == 1  # twice is a usage error (rc 2)
    assert "--skip-git-repo-check" not in argv
    assert "model_provider" not in " ".join(argv)


def test_command_hardens_codex() -> None:
    argv = CodexAgent("img").command("/w", "/o", PROMPT)

    pairs = list(itertools.pairwise(argv))
    assert ("--disable", "plugins") in pairs
    assert ("--disable", "unbounded_connection_retries") in pairs
    assert overrides(argv) == [
        "analytics.enabled=false",
        'shell_environment_policy.exclude=["*_API_KEY"]',
    ]


def test_command_adds_provider_table_with_retries_off() -> None:
    provider = {
        "name": "Scripted",
        "base_url": "http://127.0.0.1:8000/v1",
        "env_key": "CODEX_API_KEY",
    }
    argv = CodexAgent("img", provider=provider).command("/w", "/o", PROMPT)

    selected, table = overrides(argv)[2:4]
    assert selected == "model_provider=scripted"
    key, _, value = table.partition("=")
    assert key == "model_providers.scripted"
    assert tomllib.loads(f"t = {value}")["t"] == {
        "name": "Scripted",
        "base_url": "http://127.0.0.1:8000/v1",
        "env_key": "CODEX_API_KEY",
        "wire_api": "responses",
        "request_max_retries": 0,
        "stream_max_retries": 0,
    }


def test_command_provider_id_and_retries_are_overridable() -> None:
    provider = {"id": "proxy", "name": "My Proxy", "stream_max_retries": 2}
    argv = CodexAgent("img", provider=provider).command("/w", "/o", PROMPT)

    selected, table = overrides(argv)[2:4]
    assert selected == "model_provider=proxy"
    parsed = tomllib.loads(f"t = {table.partition('=')[2]}")["t"]
    assert parsed["stream_max_retries"] == 2
    assert parsed["name"] == "My Proxy"
    assert "id" not in parsed


def test_command_overrides_and_extra_args_come_after_ours() -> None:
    agent = CodexAgent(
        "img",
        model=None,
        config_overrides=["analytics.enabled=true", "model_reasoning_effort=low"],
        extra_args=["--strict-config"],
        codex_bin="/opt/codex/bin/codex",
        skip_git_repo_check=True,
    )
    argv = agent.command("/w", "/o", "-starts with a dash")

    assert argv[0] == "/opt/codex/bin/codex"
    assert "-m" not in argv
    assert "--skip-git-repo-check" in argv
    assert overrides(argv)[-2:] == [
        "analytics.enabled=true",
        "model_reasoning_effort=low",
    ]
    assert argv[-3:] == ["--strict-config", "--", "-starts with a dash"]


def test_toml_value_round_trips_awkward_strings() -> None:
    value = {"a b": 'quote " and \\ and \n and é', "n": [1, True, 2.5]}
    assert tomllib.loads(f"t = {toml_value(value)}")["t"] == value


def test_environment_passes_the_key_only_as_codex_api_key() -> None:
    env = CodexAgent("img").environment(agent_run({"openai": KEY}), "/home/app/.codex")

    assert env == {
        "CODEX_HOME": "/home/app/.codex",
        "HOME": "/home/app",
        "CODEX_API_KEY": KEY,
    }


def test_environment_without_key_and_other_credentials_left_out() -> None:
    run = agent_run({"github": "ghp_" + "x" * 36})
    env = CodexAgent("img").environment(run, "/var/codex/codex_auth_0")

    assert env == {"CODEX_HOME": "/var/codex/codex_auth_0", "HOME": "/var/codex"}


def test_key_is_not_in_the_command_line() -> None:
    agent = CodexAgent("img", provider={"name": "p", "env_key": "CODEX_API_KEY"})
    argv = agent.command("/w", "/o", PROMPT)
    agent.environment(agent_run({"openai": KEY}), "/h/.codex")

    assert not any(KEY in arg for arg in argv)


def test_parser_reads_a_successful_run() -> None:
    parser, kinds = parse(SUCCESS)
    outcome = parser.outcome()

    assert kinds == [
        "thread_started",
        "item_completed",
        "file_change",
        "item_completed",
        "command",
        "item_completed",
        "usage",
    ]
    assert outcome.thread_id == "01a22186-e97b-7431-9f81-e3612f19883a"
    assert outcome.completed
    assert outcome.turn_error is None
    assert outcome.files_changed == ["/workspace/README.md", "/workspace/new.txt"]
    assert outcome.failed_changes == []
    assert (outcome.items, outcome.commands) == (3, 1)
    assert outcome.last_message == "Done."
    assert outcome.usage["input_tokens"] == 36
    assert outcome.usage["output_tokens"] == 9
    assert parser.malformed == 0


def test_parser_progress_carries_command_exit_code() -> None:
    parser = CodexOutputParser()
    progress = [p for line in FAILED_EDIT.splitlines() for p in parser.feed(line)]

    command = next(p for p in progress if p.kind == "command")
    assert command.data == {"commands": 1, "exit_code": 1, "status": "failed"}


def test_parser_records_turn_failed_and_keeps_top_level_error_non_fatal() -> None:
    parser, kinds = parse(FAILED_500)
    outcome = parser.outcome()

    assert kinds == ["thread_started", "turn_failed"]
    assert outcome.turn_error is not None
    assert outcome.turn_error.startswith(
        "We\u2019re currently experiencing high demand"
    )
    assert not outcome.completed
    assert parser.errors == [outcome.turn_error]


def test_parser_error_event_alone_is_not_a_failure() -> None:
    parser, _ = parse('{"type":"error","message":"Reconnecting... 1/5"}\n' + SUCCESS)

    assert parser.outcome().turn_error is None
    assert parser.outcome().completed


def test_parser_cut_stream_keeps_partial_message() -> None:
    parser, _ = parse(CUT_STREAM)

    assert parser.outcome().last_message == "partial"
    assert parser.outcome().turn_error == (
        "stream disconnected before completion: stream closed before response.completed"
    )


def test_parser_separates_failed_changes() -> None:
    parser, _ = parse(FAILED_EDIT)
    outcome = parser.outcome()

    assert outcome.failed_changes == ["/workspace/a.txt"]
    assert outcome.files_changed == []
    assert outcome.completed
    assert outcome.usage == {"input_tokens": 5, "output_tokens": 1}


def test_parser_counts_and_skips_malformed_lines() -> None:
    parser = CodexOutputParser()
    junk = [
        "Reading additional input from stdin...",
        "{not json",
        "[1, 2]",
        '{"no_type": 1}',
        '{"type": "thread.started"}',
        '{"type": "item.completed", "item": "text"}',
        '{"type": "turn.failed", "error": "plain"}',
        "",
    ]
    progress = [p for line in junk for p in parser.feed(line)]

    assert parser.malformed == 6
    assert [p.kind for p in progress] == ["turn_failed"]
    assert parser.outcome().turn_error == "plain"
    assert parser.outcome().thread_id is None


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)
item_types = st.sampled_from(["agent_message", "file_change", "command_execution"])
event_types = st.sampled_from(
    ["thread.started", "item.completed", "turn.completed", "turn.failed", "error"]
)
events = st.fixed_dictionaries(
    {"type": event_types},
    optional={
        "thread_id": json_values,
        "item": json_values
        | st.fixed_dictionaries(
            {"type": item_types},
            optional={
                k: json_values for k in ("changes", "status", "exit_code", "text")
            },
        ),
        "usage": json_values,
        "error": json_values,
        "message": json_values,
    },
)
lines = st.text() | events.map(json.dumps) | json_values.map(json.dumps)


@settings(max_examples=300, deadline=None)
@given(st.lists(lines, max_size=20))
def test_parser_never_raises(feed: list[str]) -> None:
    parser = CodexOutputParser()
    for line in feed:
        for progress in parser.feed(line):
            assert isinstance(progress.kind, str)
    outcome = parser.outcome()
    assert outcome.items >= outcome.commands
    assert all(isinstance(p, str) for p in outcome.files_changed)
    assert all(isinstance(v, int) for v in outcome.usage.values())
