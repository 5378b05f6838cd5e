"""Jepsen-style accounting over runs (`make chaos`).

A scenario's history has three parts, as in ../shared/notes/messaging-reliability.md §7:
the driver's log of every submission and the API's answer (`History`), the final
state of every run in Postgres (`FinalRun`), and the side effects the fakes saw
(pull requests created, ref updates pushed). `check()` classifies them:

- lost: accepted (202) or recovered (no answer, yet the run exists) and not terminal
  by the deadline, or accepted and absent from the database;
- duplicated: more than one pull request created for one run's branch, or more than
  one distinct commit pushed to it (publishing is deterministic: a second SHA is a
  second, different side effect);
- unexpected: a run or pull request nobody submitted, a run created by a refused
  request, an API answer >= 500 other than 503, a failure without an error code or
  with a code the scenario does not allow, a cancel nobody asked for, a success
  without its pull request, and whatever the scenario itself reports.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from typing import Any

from tests.support.chaosrig import Push
from tests.support.github import PullRequest

TERMINAL = frozenset({"succeeded", "failed", "cancelled"})
ZERO_SHA = "0" * 40


@dataclass
class Submission:
    """One `POST …/runs` as the driver saw it."""

    repository: str
    status: int | None = None  # None: no answer (connection refused, reset, timeout)
    run_id: str | None = None
    error: str | None = None


@dataclass(frozen=True)
class FinalRun:
    id: str
    repository: str
    status: str
    attempt: int
    error_code: str | None
    branch_name: str | None
    pr_url: str | None
    result: str | None


@dataclass
class History:
    """What the driver did and saw during one scenario."""

    submissions: list[Submission] = field(default_factory=list)
    server_errors: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    cancelled_by_us: set[str] = field(default_factory=set)
    started: float = field(default_factory=time.monotonic)

    def answer(self, what: str, status: int, body: str = "") -> None:
        """Record any API answer: a 5xx other than 503 is unexpected."""
        if status >= 500 and status != 503:
            self.server_errors.append(f"{what} -> {status} {body[:200]}")

    def flag(self, finding: str) -> None:
        self.unexpected.append(finding)

    def note(self, finding: str) -> None:
        self.notes.append(finding)

    @property
    def accepted(self) -> list[Submission]:
        return [s for s in self.submissions if s.status == 202]


@dataclass
class Verdict:
    scenario: str
    runs: int
    succeeded: int
    failed_with_reason: int
    cancelled: int
    lost: int
    duplicated: int
    unexpected: int
    duration: float
    findings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    skipped: str | None = None

    @property
    def passed(self) -> bool:
        return (
            self.skipped is None
            and self.lost == 0
            and self.duplicated == 0
            and self.unexpected == 0
        )

    @property
    def result(self) -> str:
        if self.skipped is not None:
            return "SKIPPED"
        return "pass" if self.passed else "FAIL"


def skipped(scenario: str, why: str) -> Verdict:
    return Verdict(scenario, 0, 0, 0, 0, 0, 0, 0, 0.0, skipped=why)


def check(
    scenario: str,
    history: History,
    finals: Iterable[FinalRun],
    pulls: Iterable[PullRequest],
    pushes: Iterable[Push],
    *,
    allowed_errors: Collection[str],
    duration: float,
) -> Verdict:
    runs = {r.id: r for r in finals}
    by_repo: dict[str, list[FinalRun]] = {}
    for run in runs.values():
        by_repo.setdefault(run.repository.lower(), []).append(run)
    findings = list(history.unexpected)
    findings += [f"API error: {e}" for e in history.server_errors]
    lost: list[str] = []
    counted: dict[str, FinalRun] = {}  # the runs the history accounts for

    submitted = {s.repository.lower() for s in history.submissions}
    for sub in history.submissions:
        found = by_repo.get(sub.repository.lower(), [])
        if sub.status == 202:
            stored = runs.get(sub.run_id or "")
            if stored is None:
                lost.append(f"{sub.repository}: accepted as {sub.run_id}, not stored")
                continue
            counted[stored.id] = stored
        elif sub.status is None:  # indeterminate: the run may or may not exist
            for run in found:
                counted[run.id] = run
                history.note(f"{sub.repository}: no answer, run {run.id} recovered")
        else:
            for run in found:
                if run.id not in counted:
                    findings.append(
                        f"{sub.repository}: refused with {sub.status} yet run "
                        f"{run.id} exists"
                    )
    for run in runs.values():
        if run.repository.lower() not in submitted:
            findings.append(f"run {run.id} for {run.repository} was never submitted")

    succeeded = failed = cancelled = 0
    for run in counted.values():
        if run.status not in TERMINAL:
            lost.append(f"{run.repository}: run {run.id} still {run.status}")
        elif run.status == "succeeded":
            succeeded += 1
            if run.result == "published" and not run.pr_url:
                findings.append(f"run {run.id} succeeded without a pull request")
        elif run.status == "cancelled":
            cancelled += 1
            if run.id not in history.cancelled_by_us:
                findings.append(f"run {run.id} cancelled, yet nobody cancelled it")
        elif not run.error_code:
            findings.append(f"run {run.id} failed without an error code")
        elif run.error_code not in allowed_errors:
            findings.append(f"run {run.id} failed with {run.error_code}")
        else:
            failed += 1

    duplicated = _duplicates(counted.values(), pulls, pushes, findings)
    return Verdict(
        scenario,
        runs=len(counted),
        succeeded=succeeded,
        failed_with_reason=failed,
        cancelled=cancelled,
        lost=len(lost),
        duplicated=len(duplicated),
        unexpected=len(findings),
        duration=duration,
        findings=lost + duplicated + findings,
        notes=history.notes,
    )


def _duplicates(
    runs: Iterable[FinalRun],
    pulls: Iterable[PullRequest],
    pushes: Iterable[Push],
    findings: list[str],
) -> list[str]:
    """Runs with more than one pull request, or more than one distinct commit pushed
    to their branch; pull requests and pushes no run explains go to `findings`."""
    branches = {_branch_key(r.repository, r.id): r for r in runs}
    pulls_of: dict[str, list[PullRequest]] = {}
    for pull in pulls:
        key = _key_of(pull.repo, pull.head)
        if key not in branches:
            findings.append(f"pull request {pull.repo}#{pull.number} of no run")
            continue
        pulls_of.setdefault(key, []).append(pull)
    shas_of: dict[str, set[str]] = {}
    for push in pushes:
        if not push.ref.startswith("refs/heads/") or push.new == ZERO_SHA:
            continue
        key = _key_of(push.repo, push.ref.removeprefix("refs/heads/"))
        if key not in branches:
            findings.append(f"push to {push.repo} {push.ref} of no run")
            continue
        shas_of.setdefault(key, set()).add(push.new)
    duplicated = []
    for key, run in branches.items():
        prs, shas = pulls_of.get(key, []), shas_of.get(key, set())
        if len(prs) > 1 or len(shas) > 1:
            duplicated.append(
                f"run {run.id}: {len(prs)} pull requests, {len(shas)} distinct "
                "commits pushed"
            )
    return duplicated


def _branch_key(repository: str, run_id: str) -> str:
    return f"{repository.lower()}|{run_id[:8]}"


def _key_of(repo: str, branch: str) -> str:
    # Branches are <prefix>/<feature>/<task>-<run id[:8]> (architecture.md §15).
    return f"{repo.lower()}|{branch.rsplit('-', 1)[-1]}"


def table(verdicts: Iterable[Verdict]) -> str:
    """One Markdown table: a row per scenario."""
    head = (
        "| scenario | runs | succeeded | failed (reason) | cancelled | lost "
        "| duplicated | unexpected | duration | result |"
    )
    rows = [head, "|" + "---|" * 10]
    for v in verdicts:
        if v.skipped is not None:
            rows.append(
                f"| {v.scenario} | - | - | - | - | - | - | - | - | "
                f"SKIPPED: {v.skipped} |"
            )
            continue
        rows.append(
            f"| {v.scenario} | {v.runs} | {v.succeeded} | {v.failed_with_reason} "
            f"| {v.cancelled} | {v.lost} | {v.duplicated} | {v.unexpected} "
            f"| {v.duration:.0f} s | {v.result} |"
        )
    return "\n".join(rows)


def details(verdicts: Iterable[Verdict], limit: int = 15) -> str:
    """Each scenario's findings (what made it fail) and notes, capped."""
    out: list[str] = []
    for v in verdicts:
        lines = [f"- FAIL: {f}" for f in v.findings[:limit]]
        if len(v.findings) > limit:
            lines.append(f"- … and {len(v.findings) - limit} more findings")
        lines += [f"- {n}" for n in v.notes[:limit]]
        if len(v.notes) > limit:
            lines.append(f"- … and {len(v.notes) - limit} more notes")
        if lines:
            out += [f"**{v.scenario}**", "", *lines, ""]
    return "\n".join(out)


def as_final(row: Any) -> FinalRun:
    """A `spec_workflow_runs` record (asyncpg) as a `FinalRun`."""
    return FinalRun(
        id=str(row["id"]),
        repository=row["repository"],
        status=row["status"],
        attempt=row["attempt"],
        error_code=row["error_code"],
        branch_name=row["branch_name"],
        pr_url=row["pr_url"],
        result=row["result"],
    )
