"""The chaos accounting (`tests/support/history.py`) classifies runs as it says."""

from __future__ import annotations

from tests.support.chaosrig import Push
from tests.support.github import PullRequest
from tests.support.history import FinalRun, History, Submission, check, table

RUN_A = "aaaaaaaa-0000-0000-0000-000000000001"
RUN_B = "bbbbbbbb-0000-0000-0000-000000000002"
RUN_C = "cccccccc-0000-0000-0000-000000000003"
SHA1, SHA2 = "1" * 40, "2" * 40


def final(run_id: str, repo: str, status: str, code: str | None = None) -> FinalRun:
    published = status == "succeeded"
    return FinalRun(
        id=run_id,
        repository=repo,
        status=status,
        attempt=1,
        error_code=code,
        branch_name=f"spec/042-checkout/T003-{run_id[:8]}",
        pr_url="https://github.com/x/pull/1" if published else None,
        result="published" if published else None,
    )


def pull(repo: str, run_id: str, number: int = 1) -> PullRequest:
    head = f"spec/042-checkout/T003-{run_id[:8]}"
    return PullRequest(repo, number, number, head, "main", "t", None, False, "octo")


def push(repo: str, run_id: str, sha: str) -> Push:
    return Push(repo, "0" * 40, sha, f"refs/heads/spec/042-checkout/T003-{run_id[:8]}")


def history(*subs: Submission) -> History:
    h = History()
    h.submissions.extend(subs)
    return h


def test_a_clean_history_has_nothing_to_report() -> None:
    h = history(Submission("o/a", 202, RUN_A), Submission("o/b", 202, RUN_B))
    verdict = check(
        "s",
        h,
        [final(RUN_A, "o/a", "succeeded"), final(RUN_B, "o/b", "failed", "boom")],
        [pull("o/a", RUN_A)],
        [push("o/a", RUN_A, SHA1), push("o/a", RUN_A, SHA1)],  # same commit again
        allowed_errors={"boom"},
        duration=1.0,
    )
    assert (verdict.runs, verdict.succeeded, verdict.failed_with_reason) == (2, 1, 1)
    assert (verdict.lost, verdict.duplicated, verdict.unexpected) == (0, 0, 0)
    assert verdict.passed
    assert "| s | 2 | 1 | 1 | 0 | 0 | 0 | 0 | 1 s | pass |" in table([verdict])


def test_accepted_runs_not_terminal_or_not_stored_are_lost() -> None:
    h = history(Submission("o/a", 202, RUN_A), Submission("o/b", 202, RUN_B))
    verdict = check(
        "s", h, [final(RUN_A, "o/a", "running")], [], [], allowed_errors=(), duration=0
    )
    assert verdict.lost == 2
    assert not verdict.passed


def test_second_pull_request_or_second_commit_is_a_duplicate() -> None:
    h = history(Submission("o/a", 202, RUN_A), Submission("o/b", 202, RUN_B))
    finals = [final(RUN_A, "o/a", "succeeded"), final(RUN_B, "o/b", "succeeded")]
    verdict = check(
        "s",
        h,
        finals,
        [pull("o/a", RUN_A, 1), pull("o/a", RUN_A, 2), pull("o/b", RUN_B)],
        [push("o/b", RUN_B, SHA1), push("o/b", RUN_B, SHA2)],
        allowed_errors=(),
        duration=0,
    )
    assert verdict.duplicated == 2


def test_unexplained_runs_codes_cancels_and_server_errors_are_unexpected() -> None:
    h = history(
        Submission("o/a", 202, RUN_A),
        Submission("o/b", 503),  # refused, yet stored
        Submission("o/c", 202, RUN_C),
    )
    h.answer("GET x", 500, "boom")
    h.answer("POST y", 503)  # a refusal is fine
    finals = [
        final(RUN_A, "o/a", "failed"),  # no error code
        final(RUN_B, "o/b", "cancelled"),
        final(RUN_C, "o/c", "failed", "surprise"),
        final("dddddddd-0000-0000-0000-000000000004", "o/z", "succeeded"),
    ]
    verdict = check(
        "s", h, finals, [pull("o/q", RUN_A)], [], allowed_errors=(), duration=0
    )
    # 500, no code, refused-yet-stored, not allowed code, never submitted,
    # the PR of no run (o/q), a success without its PR counts only for counted runs
    assert verdict.unexpected == 6, verdict.findings
    assert verdict.lost == 0


def test_a_run_of_an_unanswered_request_is_recovered_and_must_end() -> None:
    h = history(Submission("o/a", None), Submission("o/b", None))
    verdict = check(
        "s",
        h,
        [final(RUN_A, "o/a", "succeeded"), final(RUN_B, "o/b", "pending")],
        [pull("o/a", RUN_A)],
        [],
        allowed_errors=(),
        duration=0,
    )
    assert (verdict.runs, verdict.succeeded, verdict.lost) == (2, 1, 1)
    assert verdict.unexpected == 0
