"""Spec Kit parsing: task lines, phases, markers, and what only looks like a task."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.preflight.speckit import (
    TaskChoiceError,
    choose,
    parse_tasks,
    spec_title,
)

TASKS_MD = """---
description: "Task list for Checkout"
tasks:
  - [ ] T900 in front matter, not a task
---

# Tasks: Checkout

- [Phase 1](#phase-1-setup)
- [Phase 2](#phase-2-foundational)

## Phase 1: Setup

- [x] T001 Create project structure per plan
- [X] T002 [P] Initialize the Python project

## Phase 2: Foundational

<!-- - [ ] T800 commented out -->
<!--
- [ ] T801 inside a multi-line comment
-->
- [ ] T003 [P] [US1] Add the cart model in src/models/cart.py
  - [ ] T004 Nested task still counts

**Checkpoint**: foundation ready

```markdown
- [ ] T802 an example inside a fence
```

~~~
- [ ] T803 another fence style
~~~

## Phase 3: User Story 1 - Pay (Priority: P1)

* [ ] T005 [US1] Wire the payment form
- [ ] T003 duplicate id is ignored
- [] T806 malformed checkbox
- [ ] t807 lower-case id is not Spec Kit
"""


def test_parse_reads_tasks_in_file_order_with_phases_and_markers() -> None:
    tasks = parse_tasks(TASKS_MD)

    assert [t.task_id for t in tasks] == ["T001", "T002", "T003", "T004", "T005"]
    assert [t.done for t in tasks] == [True, True, False, False, False]
    t003 = tasks[2]
    assert t003.parallel
    assert t003.user_story == "US1"
    assert t003.description == "Add the cart model in src/models/cart.py"
    assert t003.phase == "Phase 2: Foundational"
    assert TASKS_MD.splitlines()[t003.line - 1].endswith("src/models/cart.py")
    assert tasks[4].phase == "Phase 3: User Story 1 - Pay (Priority: P1)"
    assert (tasks[4].parallel, tasks[4].user_story) == (False, "US1")


def test_choose_takes_the_first_unchecked_task() -> None:
    chosen = choose(parse_tasks(TASKS_MD), None)
    assert chosen is not None
    assert chosen.task_id == "T003"


def test_choose_honours_a_requested_task_case_insensitively() -> None:
    chosen = choose(parse_tasks(TASKS_MD), "t005")
    assert chosen is not None
    assert chosen.task_id == "T005"


@pytest.mark.parametrize(
    ("requested", "code"), [("T001", "task_already_done"), ("T999", "task_not_found")]
)
def test_choose_refuses_done_or_unknown_tasks(requested: str, code: str) -> None:
    with pytest.raises(TaskChoiceError) as caught:
        choose(parse_tasks(TASKS_MD), requested)
    assert caught.value.code == code


def test_all_done_means_no_work() -> None:
    assert choose(parse_tasks("## Phase 1\n- [x] T001 a\n- [X] T002 b\n"), None) is None
    assert choose(parse_tasks(""), None) is None


def test_an_unclosed_fence_hides_the_rest() -> None:
    assert parse_tasks("- [ ] T001 a\n```\n- [ ] T002 b\n") == parse_tasks(
        "- [ ] T001 a\n"
    )


def test_unclosed_front_matter_is_not_front_matter() -> None:
    assert [t.task_id for t in parse_tasks("---\n- [ ] T001 a\n")] == ["T001"]


@given(st.text(max_size=2000))
def test_parser_never_crashes_and_ids_are_unique(text: str) -> None:
    tasks = parse_tasks(text)
    ids = [t.task_id for t in tasks]
    assert len(ids) == len(set(ids))
    assert all(t.task_id.startswith("T") for t in tasks)


@given(
    st.lists(
        st.tuples(
            st.booleans(), st.booleans(), st.text(alphabet="abc xyz/.", max_size=30)
        ),
        max_size=30,
    )
)
def test_generated_task_lists_round_trip(
    rows: list[tuple[bool, bool, str]],
) -> None:
    lines = ["## Phase 1: Setup"]
    for index, (done, parallel, words) in enumerate(rows, start=1):
        mark = "x" if done else " "
        tag = "[P] " if parallel else ""
        lines.append(f"- [{mark}] T{index:03d} {tag}{words}")
    tasks = parse_tasks("\n".join(lines))
    assert [(t.done, t.parallel) for t in tasks] == [(d, p) for d, p, _ in rows]
    assert [t.description for t in tasks] == [w.strip() for _, _, w in rows]
    first_open = next((i for i, (d, _, _) in enumerate(rows) if not d), None)
    chosen = choose(tasks, None)
    assert (chosen.task_id if chosen else None) == (
        f"T{first_open + 1:03d}" if first_open is not None else None
    )


@pytest.mark.parametrize(
    ("text", "title"),
    [
        ("# Feature Specification: Checkout\n\nbody", "Checkout"),
        ("intro\n## not this\n# Payments  \n", "Payments"),
        ("```\n# not a title\n```\n# Real", "Real"),
        ("no heading at all", None),
        ("# Feature Specification:   \n", None),
    ],
)
def test_spec_title(text: str, title: str | None) -> None:
    assert spec_title(text) == title
