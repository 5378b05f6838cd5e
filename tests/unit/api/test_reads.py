"""The pure parts of the fast read path: compacting Postgres' JSON as the ORM path
wrote it, the artifacts path, the statements' parameters."""

from __future__ import annotations

import itertools
import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import uuid4

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import TypeAdapter

from services.api import reads
from services.api.db import Database
from services.api.reads_sql import run_sql
from services.api.runs import ListFilter

ANY: TypeAdapter[Any] = TypeAdapter(Any)

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=2**63 - 2, max_value=2**80)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: (
        st.lists(inner, max_size=5)
        | st.dictionaries(st.text(max_size=8), inner, max_size=5)
    ),
    max_leaves=25,
)


def orm_way(text: str) -> bytes:
    """What the ORM path makes of a jsonb value: the engine's JSON decoder, then
    pydantic (FastAPI's response model)."""
    return ANY.dump_json(orjson.loads(text))


def test_the_engine_decodes_json_as_compact_assumes() -> None:
    engine = Database("postgresql+asyncpg://nobody@127.0.0.1:9/none").engine
    assert engine.dialect._json_deserializer is orjson.loads


@given(json_values)
def test_compact_writes_what_pydantic_wrote(value: Any) -> None:
    spaced = json.dumps(value, separators=(", ", ": "), ensure_ascii=False)  # jsonb's

    assert reads.compact(spaced) == orm_way(spaced)


@pytest.mark.parametrize(
    "text",
    [
        # numbers as jsonb prints them: numeric, never an exponent; beyond 64 bits
        # the engine's decoder (orjson) reads floats
        '{"a": 0.0000001, "b": 100000000000000000000, "c": -0, "d": 1.0}',
        '{"big": 123456789012345678901234567890, "neg": -9223372036854775809}',
        '{"u64": 18446744073709551615, "i64": -9223372036854775808}',
        '{"pi": 3.14159265358979323846264338327950288}',
        '{"s": "tab\\t nl\\n \\u0001 \\"q\\" \\\\ é 😀 \u2028", "e": [], "o": {}}',
    ],
)
def test_compact_keeps_numbers_and_strings(text: str) -> None:
    assert reads.compact(text) == orm_way(text)


@pytest.mark.parametrize(
    "root", [Path("/srv/artifacts"), Path("relative/dir"), Path("."), Path("/"), "/x/"]
)
def test_artifacts_prefix_is_what_the_path_join_gave(root: Path | str) -> None:
    run_id = uuid4()

    assert reads.artifacts_prefix(root) + str(run_id) == str(Path(root) / str(run_id))


def placeholders(sql: str) -> set[int]:
    return {int(n) for n in re.findall(r"\$(\d+)", sql)}


@pytest.mark.parametrize("flags", list(itertools.product([False, True], repeat=5)))
def test_list_parameters_match_the_statement(flags: tuple[bool, ...]) -> None:
    owned, status, feature, repo, after = flags
    filters = ListFilter(
        status="failed" if status else None,
        feature_key="f-1" if feature else None,
        repository="Acme/Shop" if repo else None,
    )

    sql, args = reads.list_query(
        filters,
        owner=uuid4() if owned else None,
        limit=20,
        after=(datetime.now(UTC), uuid4()) if after else None,
        artifacts_root="/a",
    )

    assert placeholders(sql) == set(range(1, len(args) + 1))
    assert "LIMIT 21" in sql
    if repo:
        assert "acme/shop" in args


@pytest.mark.parametrize("flags", list(itertools.product([False, True], repeat=4)))
def test_run_parameters_match_the_statement(flags: tuple[bool, ...]) -> None:
    *relations, owned = flags

    assert placeholders(run_sql(*relations, owned)) == set(range(1, 3 + owned))
