"""`runs list` and `runs show` output, and the HTTP error lines."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from services.cli.api_client import RunRequest, api_client, api_error
from services.cli.runs import list_lines, show_lines
from services.cli.settings import ClientSettings

RUN = {
    "id": "r-1",
    "status": "failed",
    "phase": "submit",
    "attempt": 2,
    "result": None,
    "errorCode": "codex_failed",
    "errorMessage": "codex exited 1",
    "repository": "acme/shop",
    "featureKey": "042-checkout",
    "baseBranch": "main",
    "baseSha": "0123456789abcdef",
    "publishMode": "pr",
    "codexQueue": "codex-1",
    "codexVolume": "codex_auth_1",
    "currentTask": "submit_codex_job",
    "createdAt": "2025-01-02T03:04:05.123456Z",
    "startedAt": "2025-01-02T03:04:06Z",
    "finishedAt": None,
    "taskSummary": [
        {
            "taskName": "discover_next_phase",
            "attempt": 1,
            "status": "succeeded",
            "startedAt": "2025-01-02T03:04:06Z",
            "finishedAt": "2025-01-02T03:04:07Z",
            "error": None,
        },
        {
            "taskName": "submit_codex_job",
            "attempt": 2,
            "status": "failed",
            "startedAt": None,
            "finishedAt": None,
            "error": {"code": "codex_failed"},
        },
    ],
}


def test_list_lines_are_a_table() -> None:
    assert list_lines([RUN]) == [
        "ID   STATUS  PHASE   REPOSITORY  FEATURE       TASK              CREATED",
        "r-1  failed  submit  acme/shop   042-checkout  submit_codex_job  "
        "2025-01-02 03:04:05",
    ]


def test_show_lines_give_outcome_and_tasks() -> None:
    lines = show_lines(RUN)

    assert lines[0] == "run r-1"
    assert lines[1] == "  status       failed: codex_failed: codex exited 1"
    assert "  base         main @ 0123456789ab" in lines
    assert "  finished     -" in lines
    assert lines[-2:] == [
        "discover_next_phase  1        succeeded  2025-01-02 03:04:06  "
        "2025-01-02 03:04:07  -",
        "submit_codex_job     2        failed     -                    -"
        "                    codex_failed",
    ]


def test_api_errors_read_the_detail_code() -> None:
    answer = httpx.Response(
        409, json={"detail": {"code": "retry_not_allowed", "message": "running"}}
    )
    proxy = httpx.Response(502, text="<html>Bad gateway</html>")

    assert str(api_error(answer)) == "retry_not_allowed: running"
    assert str(api_error(proxy)) == "http_502: <html>Bad gateway</html>"


def test_run_request_sends_only_what_was_given() -> None:
    request = RunRequest("acme/shop", "042", task_id="T012")

    assert request.body() == {
        "repository": "acme/shop",
        "featureKey": "042",
        "taskId": "T012",
    }


@pytest.fixture(autouse=True)
def no_dotenv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for name in ("API_URL", "API_HOST", "API_PORT", "SPEC_WORKFLOW_TOKEN"):
        monkeypatch.delenv(name, raising=False)


def test_the_client_sends_the_token_when_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPEC_WORKFLOW_TOKEN", "sw_abc")
    monkeypatch.setenv("API_URL", "http://api.test:9000/")

    client = api_client(ClientSettings())

    assert client.headers["Authorization"] == "Bearer sw_abc"
    assert str(client.base_url) == "http://api.test:9000"


def test_no_token_no_authorization() -> None:
    assert "Authorization" not in api_client(ClientSettings()).headers
