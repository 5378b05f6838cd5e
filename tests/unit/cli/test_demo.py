"""The demo's pieces: the sample repository and the offline model's protocol."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path

import httpx
import pytest

from services.cli import sample_repo
from services.cli.offline_model import OfflineModel
from services.preflight.speckit import parse_tasks

KEY = "offline-test-key"


@pytest.fixture
def model() -> Iterator[OfflineModel]:
    server = OfflineModel(("127.0.0.1", 0), KEY)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}
    )
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join()


def events(body: str) -> list[dict[str, object]]:
    return [
        json.loads(line.removeprefix("data: "))
        for line in body.splitlines()
        if line.startswith("data: ")
    ]


def ask(
    model: OfflineModel, body: Mapping[str, object], key: str = KEY
) -> httpx.Response:
    return httpx.post(
        f"{model.base_url}/responses",
        json=body,
        headers={"Authorization": f"Bearer {key}"},
    )


def test_first_turn_is_the_named_tasks_patch(model: OfflineModel) -> None:
    prompt = {"input": [{"type": "message", "content": "Implement task T003 only"}]}

    response = ask(model, prompt)

    assert response.status_code == 200
    assert response.headers["content-type"] == "text/event-stream"
    stream = events(response.text)
    assert [e["type"] for e in stream] == [
        "response.created",
        "response.output_item.added",
        "response.output_item.done",
        "response.completed",
    ]
    item = stream[2]["item"]
    assert isinstance(item, dict)
    assert item["name"] == "apply_patch"
    assert item["input"] == sample_repo.CHANGES["T003"].patch


def test_after_a_tool_result_the_model_ends_the_turn(model: OfflineModel) -> None:
    body = {
        "input": [
            {"type": "message", "content": "Implement task T002 only"},
            {"type": "custom_tool_call_output", "call_id": "c", "output": "ok"},
        ]
    }

    stream = events(ask(model, body).text)

    item = stream[2]["item"]
    assert isinstance(item, dict)
    assert item["type"] == "message"
    assert "offline scripted model" in json.dumps(item)


def test_wrong_key_unknown_path_and_bad_json_are_refused(model: OfflineModel) -> None:
    assert ask(model, {}, key="other").status_code == 401
    assert httpx.get(f"{model.base_url}/models").status_code == 404
    bad = httpx.post(
        f"{model.base_url}/responses",
        content=b"{not json",
        headers={"Authorization": f"Bearer {KEY}"},
    )
    assert bad.status_code == 400


def test_sample_feature_has_t002_next_and_stable_commit(tmp_path: Path) -> None:
    first = sample_repo.create(tmp_path / "a.git")
    second = sample_repo.create(tmp_path / "b.git")

    assert first == second  # fixed identity and dates
    assert sample_repo.branches(tmp_path / "a.git") == {"main": first}
    tasks = parse_tasks(sample_repo.FILES[f"{sample_repo.FEATURE_DIR}/tasks.md"])
    assert [(t.task_id, t.done) for t in tasks] == [
        ("T001", True),
        ("T002", False),
        ("T003", False),
    ]


@pytest.mark.parametrize("task_id", sorted(sample_repo.CHANGES))
def test_each_patch_checks_exactly_its_own_task_line(task_id: str) -> None:
    tasks_md = sample_repo.FILES[f"{sample_repo.FEATURE_DIR}/tasks.md"]
    patch = sample_repo.CHANGES[task_id].patch
    removed = [line[1:] for line in patch.splitlines() if line.startswith("-")]
    added = [line[1:] for line in patch.splitlines() if line.startswith("+- [X]")]

    assert len(removed) == 1
    assert removed[0] in tasks_md.splitlines()
    assert removed[0].startswith(f"- [ ] {task_id} ")
    assert added == [removed[0].replace("- [ ]", "- [X]", 1)]
