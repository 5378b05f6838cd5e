"""The publisher's pure decisions: names, messages, tasks.md and the pre-push policy."""

from __future__ import annotations

from uuid import UUID, uuid4

from services.publisher import policy
from services.publisher.policy import FileStat
from shared.messages import DiscoveredTask

RUN = UUID("1a2b3c4d-0000-4000-8000-000000000001")
TASK = DiscoveredTask(task_id="T003", description="Create the Order model")

TASKS_MD = """# Tasks
<!--
- [ ] T900 a decoy in a comment
-->
```
- [ ] T901 a decoy in a fence
```
- [x] T001 done
- [ ] T003 Create the Order model
- [ ] T004 [P] Gateway client
"""


def test_branch_name_is_per_run_not_per_attempt() -> None:
    name = policy.branch_name("speckit/", "042-checkout", "T003", RUN)
    assert name == "speckit/042-checkout/T003-1a2b3c4d"


def test_commit_message_carries_the_run_trailer() -> None:
    message = policy.commit_message("042-checkout", TASK, RUN)
    assert message.startswith("042-checkout: T003 Create the Order model\n\n")
    assert policy.carries_run(message, RUN)
    assert not policy.carries_run(message, UUID(int=7))


def test_mark_done_checks_the_real_line_only() -> None:
    changed = policy.mark_done(TASKS_MD, "T003")
    assert changed is not None
    assert "- [X] T003 Create the Order model" in changed
    assert policy.mark_done(changed, "T003") is None
    assert policy.mark_done(TASKS_MD, "T900") is None  # a decoy is never touched


def test_open_tasks_ignores_comments_and_fences() -> None:
    assert policy.open_tasks(TASKS_MD) == 2


def test_scan_secrets_names_the_added_line() -> None:
    diff = (
        "diff --git a/app.py b/app.py\n--- a/app.py\n+++ b/app.py\n@@ -1,1 +1,2 @@\n"
        " import os\n+KEY = 'ghp_" + "a1B2c3D4e5" * 4 + "'\n"
    )
    error = policy.scan_secrets(diff)
    assert error is not None
    assert error.code == "secret_detected"
    assert "app.py:2" in error.message
    assert policy.scan_secrets(diff.replace("ghp_", "plain")) is None


def test_limits_count_files_and_lines() -> None:
    files = [FileStat("a.py", 10, 5), FileStat("b.bin", None, None)]
    assert policy.check_limits(files, 2, 15) is None
    too_many = policy.check_limits(files, 1, 100)
    assert too_many is not None
    assert too_many.code == "patch_too_large"
    assert policy.check_limits(files, 5, 14) is not None


def test_workflow_paths_are_found() -> None:
    files = [FileStat(".github/workflows/ci.yml", 1, 0), FileStat("README.md", 1, 0)]
    assert policy.touches_workflows(files) == [".github/workflows/ci.yml"]


def test_numstat_parses_binary_files() -> None:
    stats = policy.parse_numstat("3\t1\tsrc/a.py\0-\t-\timg.png\0")
    assert stats == [FileStat("src/a.py", 3, 1), FileStat("img.png", None, None)]


def test_pr_title_is_capped() -> None:
    long = DiscoveredTask(task_id="T003", description="x" * 400)
    assert len(policy.pr_title(long)) == policy.MAX_TITLE


def test_commit_message_credits_the_requesting_user() -> None:
    task = DiscoveredTask(task_id="T003", description="Add the cart")
    run_id = uuid4()
    message = policy.commit_message(
        "042-checkout", task, run_id, co_author="ada@example.com"
    )
    assert message.splitlines() == [
        "042-checkout: T003 Add the cart",
        "",
        f"Spec-Workflow-Run: {run_id}",
        "Co-authored-by: ada <ada@example.com>",
    ]
    assert policy.carries_run(message, run_id)
    plain = policy.commit_message("042-checkout", task, run_id)
    assert "Co-authored-by" not in plain
