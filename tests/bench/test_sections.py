"""docs/benchmarks.md's sections (no I/O but a temporary file: runs with the unit
tests)."""

from __future__ import annotations

from pathlib import Path

from tests.bench.sections import DOC_HEADER, replace_section, write_section


def test_a_section_replaces_its_own_and_keeps_the_others() -> None:
    doc = "# Benchmarks\n\n## bench-a\n\nold a\n\n## bench-b\n\nb\n"
    new = replace_section(doc, "## bench-a\n\nnew a\n", "## bench-a")
    assert new == "# Benchmarks\n\n## bench-a\n\nnew a\n\n## bench-b\n\nb\n"
    last = replace_section(new, "## bench-b\n\nnew b\n", "## bench-b")
    assert last == "# Benchmarks\n\n## bench-a\n\nnew a\n\n## bench-b\n\nnew b\n"


def test_a_missing_section_is_appended_and_a_new_document_gets_the_header(
    tmp_path: Path,
) -> None:
    doc = "# Benchmarks\n\n## bench-a\n\na\n"
    assert replace_section(doc, "## bench-c\n\nc\n", "## bench-c") == (
        doc + "\n## bench-c\n\nc\n"
    )
    path = tmp_path / "benchmarks.md"
    write_section(path, "## bench-c\n\nc\n", "## bench-c")
    assert path.read_text() == DOC_HEADER + "## bench-c\n\nc\n"
