"""Every run error maps to exactly one HTTP status."""

from __future__ import annotations

from services.api import errors
from services.api.http_errors import HTTP_STATUS


def _subclasses(cls: type[errors.RunError]) -> set[type[errors.RunError]]:
    found = set(cls.__subclasses__())
    for sub in list(found):
        found |= _subclasses(sub)
    return found


def test_every_run_error_has_an_http_status() -> None:
    assert _subclasses(errors.RunError) == set(HTTP_STATUS)
    assert all(400 <= status < 500 for status in HTTP_STATUS.values())


def test_every_run_error_has_its_own_code() -> None:
    codes = [cls.code for cls in HTTP_STATUS]
    assert len(codes) == len(set(codes))
    assert "run_error" not in codes
