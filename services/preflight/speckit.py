"""Reading a GitHub Spec Kit feature: the tasks of `tasks.md`, the title of `spec.md`.

`tasks.md` follows Spec Kit's tasks-template: optional YAML front matter, `## Phase N:`
headings, task lines `- [ ] T012 [P] [US1] Description`, done ones `[x]`/`[X]`.
Plain list items, `**Checkpoint**` lines, HTML comments and fenced code blocks (which
often hold look-alike task lines as examples) are not tasks.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

TASK_LINE = re.compile(
    r"^\s{0,3}[-*+]\s+\[(?P<mark>[ xX])\]\s+(?P<id>T\d+)\b(?P<rest>.*)$"
)
MARKER = re.compile(r"^\s*\[(?P<tag>P|US\d+)\]")
FENCE = re.compile(r"^\s{0,3}(?P<fence>`{3,}|~{3,})")
HEADING = re.compile(r"^(?P<level>#{1,6})\s+(?P<text>.+?)\s*#*\s*$")
TITLE_PREFIX = re.compile(r"^(feature\s+specification|specification|spec)\s*:\s*", re.I)


@dataclass(frozen=True)
class SpecTask:
    task_id: str
    done: bool
    description: str
    phase: str | None
    line: int
    parallel: bool
    user_story: str | None


def _markers(rest: str) -> tuple[bool, str | None, str]:
    parallel, story = False, None
    while match := MARKER.match(rest):
        tag = match.group("tag")
        if tag == "P":
            parallel = True
        else:
            story = tag
        rest = rest[match.end() :]
    return parallel, story, rest.strip()


def _front_matter_end(lines: list[str]) -> int:
    """Index of the first line after YAML front matter (0 when there is none)."""
    if not lines or lines[0].strip() != "---":
        return 0
    for index in range(1, len(lines)):
        if lines[index].strip() in ("---", "..."):
            return index + 1
    return 0  # an unclosed block is not front matter


def parse_tasks(text: str) -> list[SpecTask]:
    """Every task line of `tasks.md`, in file order."""
    lines = text.splitlines()
    tasks: list[SpecTask] = []
    seen: set[str] = set()
    phase: str | None = None
    fence: str | None = None
    in_comment = False
    for index in range(_front_matter_end(lines), len(lines)):
        line = lines[index]
        if fence is not None:
            match = FENCE.match(line)
            closing = match.group("fence") if match else ""
            if closing[:1] == fence[0] and len(closing) >= len(fence):
                fence = None
            continue
        if in_comment:
            if "-->" in line:
                in_comment = False
                line = line.split("-->", 1)[1]
            else:
                continue
        line = re.sub(r"<!--.*?-->", "", line)
        if "<!--" in line:
            in_comment = True
            line = line.split("<!--", 1)[0]
        if match := FENCE.match(line):
            fence = match.group("fence")
            continue
        if match := HEADING.match(line):
            if len(match.group("level")) == 2:
                phase = match.group("text")
            continue
        if match := TASK_LINE.match(line):
            task_id = match.group("id")
            if task_id in seen:
                continue  # a repeated id is a typo in the file; the first one counts
            seen.add(task_id)
            parallel, story, description = _markers(match.group("rest"))
            tasks.append(
                SpecTask(
                    task_id=task_id,
                    done=match.group("mark") != " ",
                    description=description,
                    phase=phase,
                    line=index + 1,
                    parallel=parallel,
                    user_story=story,
                )
            )
    return tasks


class TaskChoiceError(Exception):
    """The requested task cannot be worked on."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def choose(tasks: list[SpecTask], requested: str | None) -> SpecTask | None:
    """The requested task, or the first unchecked one; None when all are done."""
    if requested is None:
        return next((task for task in tasks if not task.done), None)
    for task in tasks:
        if task.task_id.upper() == requested.upper():
            if task.done:
                raise TaskChoiceError(
                    "task_already_done", f"task {task.task_id} is already checked"
                )
            return task
    raise TaskChoiceError("task_not_found", f"tasks.md has no task {requested}")


def spec_title(text: str) -> str | None:
    """The first top-level heading of `spec.md`, without `Feature Specification:`."""
    fence: str | None = None
    for line in text.splitlines():
        if match := FENCE.match(line):
            fence = None if fence else match.group("fence")
            continue
        match = HEADING.match(line) if fence is None else None
        if match and len(match.group("level")) == 1:
            title = TITLE_PREFIX.sub("", match.group("text")).strip()
            return title or None
    return None
