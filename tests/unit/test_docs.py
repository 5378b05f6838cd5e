"""The published AsyncAPI documents (docs/asyncapi) match the code."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ("api", "preflight", "codex_runner", "publisher")


def test_asyncapi_documents_are_current(tmp_path: Path) -> None:
    subprocess.run(
        ["bash", "scripts/asyncapi.sh", str(tmp_path)],
        cwd=ROOT,
        check=True,
        capture_output=True,
        timeout=120,
    )
    for service in SERVICES:
        fresh = json.loads((tmp_path / f"{service}.json").read_text())
        committed = json.loads((ROOT / "docs/asyncapi" / f"{service}.json").read_text())
        assert fresh == committed, f"docs/asyncapi/{service}.json: run `make docs`"
        assert fresh["asyncapi"].startswith("3.")
        assert fresh["channels"], service
