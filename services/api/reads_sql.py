"""The SQL behind `reads`: each run a JSON document built by Postgres.

Keys and their order come from the response models (`RunOut`, `TaskOut`, ...), each
value from the column the model validates it from, so a field added to a model and to
its table shows up here too. `row_to_json` over a subselect aliased by the JSON names
writes compact JSON; jsonb values inside it keep jsonb's own spacing (`reads` removes
that). Timestamps are written as pydantic writes them.
"""

from __future__ import annotations

from datetime import datetime
from functools import cache
from typing import Any, get_args

from pydantic import BaseModel

from services.api.models import Artifact, Base, CredentialAudit, Run, TaskState
from services.api.schemas import ArtifactOut, CredentialAuditOut, RunOut, TaskOut
from shared.messages import PIPELINE

_PIPELINE = "ARRAY[" + ", ".join(f"'{task.value}'" for task in PIPELINE) + "]::text[]"
_RELATIONS = (
    "tasks",
    "task_summary",
    "artifacts",
    "credential_audit",
    "credential_audits",
)


def _timestamp(column: str) -> str:
    """A timestamptz as pydantic writes it: `2024-05-01T12:00:00.250000Z`, or
    `2024-05-01T12:00:00Z` when the fraction is zero; NULL stays NULL."""
    return (
        f"replace(to_char({column} AT TIME ZONE 'UTC', "
        "'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), '.000000Z', 'Z')"
    )


def _fields(
    model: type[BaseModel], table: type[Base], row: str, special: dict[str, str]
) -> str:
    """`model`'s fields as a select list aliased by their JSON names, in the model's
    order: each from `special`, or from the column of `table` (aliased `row`) the
    model validates it from (its validation alias, else its name)."""
    columns = table.__table__.columns
    items = []
    for name, field in model.model_fields.items():
        key = field.serialization_alias or field.alias or name
        if name in special:
            value = special[name]
        else:
            source = field.validation_alias
            column = source if isinstance(source, str) and source in columns else name
            value = f"{row}.{columns[column].name}"
            if field.annotation is datetime or datetime in get_args(field.annotation):
                value = _timestamp(value)
        items.append(f'{value} AS "{key}"')
    return ", ".join(items)


def _run_fields(root: str, relations: dict[str, str]) -> str:
    """`root`: the parameter holding the artifacts root, separator included."""
    special = dict.fromkeys(_RELATIONS, "NULL") | relations
    special["artifacts_path"] = f"{root} || r.id::text"
    return _fields(RunOut, Run, "r", special)


def _order(relationship: Any, row: str) -> str:
    """The relationship's ORDER BY (`models.Run`), on `row`. No tiebreaker: over the
    same index scan, rows that tie come in the order the ORM's query gave them."""
    return ", ".join(
        f"{row}.{column.name}" for column in relationship.property.order_by
    )


def _array(model: type[BaseModel], table: type[Base], row: str, order: str) -> str:
    """SELECT the JSON array (`items`) of the run's rows of `table` as `model`; `[]`
    when there are none."""
    return (
        f"SELECT coalesce(json_agg(row_to_json(d) ORDER BY {order}), '[]') AS items"
        f" FROM {table.__tablename__} {row}"
        f" CROSS JOIN LATERAL (SELECT {_fields(model, table, row, {})}) d"
        f" WHERE {row}.run_id = r.id"
    )


_TASK_ORDER = [column.name for column in Run.tasks.property.order_by]
_TASKS = "CROSS JOIN LATERAL ({}) tk".format(  # the task rows once, aggregated twice
    "SELECT coalesce(json_agg(x.j ORDER BY {}), '[]') AS items,"
    # runs.task_summary: the latest attempt of each pipeline task, in pipeline order
    " coalesce(json_agg(x.j ORDER BY x.pos) FILTER (WHERE x.latest), '[]') AS summary"
    " FROM (SELECT row_to_json(d) AS j, {},"
    " array_position({}, t.task_name::text) AS pos,"
    " t.task_name::text = ANY({}) AND t.attempt = (SELECT max(l.attempt)"
    " FROM {} l WHERE l.run_id = r.id AND l.task_name = t.task_name) AS latest"
    " FROM {} t CROSS JOIN LATERAL (SELECT {}) d"
    " WHERE t.run_id = r.id) x".format(
        ", ".join(f"x.{name}" for name in _TASK_ORDER),
        ", ".join(f"t.{name}" for name in _TASK_ORDER),
        _PIPELINE,
        _PIPELINE,
        TaskState.__tablename__,
        TaskState.__tablename__,
        _fields(TaskOut, TaskState, "t", {}),
    )
)
_ARTIFACTS = f"({_array(ArtifactOut, Artifact, 'a', _order(Run.artifacts, 'a'))})"
_AUDITS = "CROSS JOIN LATERAL ({}) au".format(  # one aggregate, read twice
    _array(
        CredentialAuditOut,
        CredentialAudit,
        "c",
        _order(Run.credential_audits, "c"),
    )
)


@cache
def run_sql(tasks: bool, artifacts: bool, audits: bool, owned: bool) -> str:
    """One row (the run's `RunOut` JSON) or none. $1 the run id, $2 the artifacts root
    with its trailing separator, $3 the owner when `owned`."""
    relations: dict[str, str] = {}
    joins = []
    if tasks:
        relations |= {"tasks": "tk.items", "task_summary": "tk.summary"}
        joins.append(_TASKS)
    if artifacts:
        relations["artifacts"] = _ARTIFACTS
    if audits:
        relations |= {
            "credential_audits": "au.items",
            "credential_audit": "au.items -> -1",  # the latest, as run_out did
        }
        joins.append(_AUDITS)
    return "\n".join(
        [
            "SELECT row_to_json(d)::text",
            f"FROM {Run.__tablename__} r",
            *joins,
            f"CROSS JOIN LATERAL (SELECT {_run_fields('$2::text', relations)}) d",
            "WHERE r.id = $1" + (" AND r.created_by = $3" if owned else ""),
        ]
    )


@cache
def list_sql(
    limit: int, owned: bool, status: bool, feature: bool, repo: bool, after: bool
) -> str:
    """Up to `limit` rows (`RunOut` JSON, created_at, id), newest first. $1 the
    artifacts root with its trailing separator, then a parameter per filter given, in
    this order: owner, status, feature key, lower-cased repository, cursor (two).

    The limit is written out: behind a parameter, a generic plan assumes 10% of the
    table.
    """
    conditions = []
    number = 1
    for wanted, condition in (
        (owned, "r.created_by = ${}::uuid"),
        (status, "r.status = ${}::text"),
        (feature, "r.feature_key = ${}::text"),
        (repo, "lower(r.repository) = ${}::text"),
        # a row value: an index condition on ix_spec_workflow_runs_listing
        (after, "(r.created_at, r.id) < (${}::timestamptz, ${}::uuid)"),
    ):
        if wanted:
            count = condition.count("{}")
            conditions.append(condition.format(*range(number + 1, number + 1 + count)))
            number += count
    return "\n".join(
        [
            "SELECT row_to_json(d)::text, r.created_at, r.id",
            f"FROM {Run.__tablename__} r",
            f"CROSS JOIN LATERAL (SELECT {_run_fields('$1::text', {})}) d",
            f"WHERE {' AND '.join(conditions)}" if conditions else "",
            f"ORDER BY r.created_at DESC, r.id DESC LIMIT {int(limit)}",
        ]
    )
