"""What the publisher decides without the network: names, texts and pre-push policy.

Pure functions over the patch and the spec files; `publish.py` runs them in order.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from uuid import UUID

from shared.messages import DiscoveredTask, TaskError
from shared.redaction import redact_text

WORKFLOWS_DIR = ".github/workflows/"
TRAILER = "Spec-Workflow-Run"
MAX_TITLE = 256
_FENCE = re.compile(r"^\s*(```|~~~)")
_OPEN_TASK = re.compile(r"^\s*[-*]\s+\[ \]\s+T\d+\b")


@dataclass(frozen=True)
class FileStat:
    path: str
    added: int | None
    deleted: int | None
    """None for binary files."""


def branch_name(prefix: str, feature_key: str, task_id: str, run_id: UUID) -> str:
    """One branch per run, whatever the attempt: a retry reuses it."""
    return f"{prefix.strip('/')}/{feature_key}/{task_id}-{str(run_id)[:8]}"


def commit_message(
    feature_key: str, task: DiscoveredTask, run_id: UUID, co_author: str | None = None
) -> str:
    """`<feature>: <task id> <title>`, the run trailer, the requester as co-author."""
    trailers = f"{TRAILER}: {run_id}\n"
    if co_author:
        trailers += f"Co-authored-by: {co_author.split('@', 1)[0]} <{co_author}>\n"
    return f"{feature_key}: {task.task_id} {task.description}\n\n{trailers}"


def carries_run(message: str, run_id: UUID) -> bool:
    """Whether a commit message has this run's trailer (our own earlier push)."""
    return re.search(rf"^{TRAILER}: {run_id}\s*$", message, re.MULTILINE) is not None


def parse_numstat(output: str) -> list[FileStat]:
    """`git apply --numstat -z` output."""
    stats: list[FileStat] = []
    for record in output.split("\0"):
        fields = record.strip("\n").split("\t", 2)
        if len(fields) == 3 and fields[2]:
            added, deleted, path = fields
            stats.append(
                FileStat(
                    path,
                    int(added) if added.isdigit() else None,
                    int(deleted) if deleted.isdigit() else None,
                )
            )
    return stats


def _error(code: str, message: str) -> TaskError:
    return TaskError(code=code, message=message, retryable=False)


def check_limits(
    files: list[FileStat], max_files: int, max_lines: int
) -> TaskError | None:
    lines = sum((f.added or 0) + (f.deleted or 0) for f in files)
    if len(files) > max_files or lines > max_lines:
        return _error(
            "patch_too_large",
            f"the patch changes {len(files)} files and {lines} lines; the limits are "
            f"{max_files} files (PUBLISH_MAX_FILES) and {max_lines} lines "
            "(PUBLISH_MAX_LINES)",
        )
    return None


def touches_workflows(files: list[FileStat]) -> list[str]:
    return [f.path for f in files if f.path.startswith(WORKFLOWS_DIR)]


def added_lines(diff: str) -> list[tuple[str, int, str]]:
    """(file, line number in the new file, text) of every added line."""
    found: list[tuple[str, int, str]] = []
    path, number = "", 0
    for line in diff.splitlines():
        if line.startswith("+++ "):
            path = line[4:].removeprefix("b/")
        elif line.startswith("@@"):
            match = re.search(r"\+(\d+)", line)
            number = int(match.group(1)) if match else 0
        elif line.startswith("+"):
            found.append((path, number, line[1:]))
            number += 1
        elif line.startswith(" "):
            number += 1
    return found


def scan_secrets(diff: str) -> TaskError | None:
    """Anything the log redactor would mask, in an added line, blocks the push."""
    hits = [
        f"{path}:{number}"
        for path, number, text in added_lines(diff)
        if redact_text(text) != text
    ]
    if not hits:
        return None
    shown = ", ".join(hits[:10]) + (" …" if len(hits) > 10 else "")
    return _error(
        "secret_detected",
        f"the patch adds what looks like a secret at {shown}; nothing was pushed "
        "(the patch artifact is kept for review)",
    )


def _outside_fences(text: str) -> list[tuple[int, str]]:
    """(index, line) of lines outside fenced code blocks and HTML comments."""
    kept: list[tuple[int, str]] = []
    fenced = commented = False
    for index, line in enumerate(text.splitlines(keepends=True)):
        if _FENCE.match(line):
            fenced = not fenced
            continue
        if commented:
            commented = "-->" not in line
            continue
        if line.lstrip().startswith("<!--"):
            commented = "-->" not in line
            continue
        if not fenced:
            kept.append((index, line))
    return kept


def mark_done(text: str, task_id: str) -> str | None:
    """`tasks.md` with `- [X] <task id>`, or None when nothing had to change."""
    pattern = re.compile(rf"^(\s*[-*]\s+)\[ \](\s+{re.escape(task_id)}\b)")
    lines = text.splitlines(keepends=True)
    for index, line in _outside_fences(text):
        if pattern.match(line):
            lines[index] = pattern.sub(r"\1[X]\2", line, count=1)
            return "".join(lines)
    return None


def open_tasks(text: str) -> int:
    return sum(1 for _, line in _outside_fences(text) if _OPEN_TASK.match(line))


def pr_title(task: DiscoveredTask) -> str:
    title = f"{task.task_id}: {task.description}"
    return title if len(title) <= MAX_TITLE else title[: MAX_TITLE - 1] + "…"


def pr_body(
    *,
    task: DiscoveredTask,
    feature_key: str,
    spec_title: str | None,
    last_message: str | None,
    files: list[FileStat],
    remaining: int | None,
    run_id: UUID,
) -> str:
    feature = f"{spec_title} (`specs/{feature_key}`)" if spec_title else feature_key
    parts = [
        f"Implements **{task.task_id}** of the Spec Kit feature {feature}:",
        "",
        f"> {task.description}",
    ]
    if last_message and last_message.strip():
        parts += ["", "### Agent summary", "", redact_text(last_message.strip())[:6000]]
    parts += ["", f"### Files changed ({len(files)})", ""]
    for stat in files[:100]:
        counts = (
            "binary" if stat.added is None else f"+{stat.added} -{stat.deleted or 0}"
        )
        parts.append(f"- `{stat.path}` ({counts})")
    if len(files) > 100:
        parts.append(f"- … and {len(files) - 100} more")
    if remaining is not None:
        parts += ["", f"Remaining unchecked tasks in `tasks.md`: {remaining}"]
    parts += ["", "---", f"{TRAILER}: {run_id}"]
    return "\n".join(parts) + "\n"
