"""Validation of the names that reach git and the file system.

Used by the API on input and again by the workers before any git call (defence in
depth: a command is data from the bus, not proof of validation).
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")
GITHUB_SLUG_RE = re.compile(
    r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})/[A-Za-z0-9._][A-Za-z0-9._-]{0,99}"
)
REF_FORBIDDEN = re.compile(r"[\x00-\x20\x7f~^:?*\[\\]|\.\.|@\{|//")


def spec_kit_name(value: str, what: str) -> str:
    """Feature keys and task ids: letters, digits, `.`, `_`, `-`.

    No separators, no leading `-` or `.`.
    """
    if not NAME_RE.fullmatch(value):
        raise ValueError(
            f"{what} must be 1-128 letters, digits, '.', '_' or '-',"
            " not starting with '-' or '.'"
        )
    return value


def repository_ref(value: str) -> str:
    """`owner/name` on GitHub, or an https/file git URL without credentials."""
    if (
        len(value) > 512
        or not value
        or value != value.strip()
        or any(c.isspace() or ord(c) < 32 for c in value)
    ):
        raise ValueError(
            "repository must be owner/name or a git URL,"
            " without whitespace or control characters"
        )
    if value.startswith("-"):
        raise ValueError("repository must not start with '-'")
    if "://" not in value:
        owner, _, name = value.partition("/")
        if (
            not GITHUB_SLUG_RE.fullmatch(value)
            or name in (".", "..")
            or owner.endswith("-")
        ):
            raise ValueError(
                "repository must be a GitHub owner/name such as acme/shop,"
                " or an https:// or file:// URL"
            )
        return value
    parts = urlsplit(value)
    if parts.scheme not in ("https", "file"):
        raise ValueError("repository URLs must use https:// or file://")
    if parts.username or parts.password:
        raise ValueError(
            "repository URLs must not carry credentials; store a token instead"
        )
    if parts.scheme == "https" and not parts.hostname:
        raise ValueError("https repository URLs need a host")
    if parts.scheme == "file" and (parts.netloc or not parts.path.startswith("/")):
        raise ValueError("file repository URLs must be file:///absolute/path")
    if parts.query or parts.fragment or ".." in parts.path.split("/"):
        raise ValueError(
            "repository URLs must not have a query, a fragment or '..' segments"
        )
    return value


def branch_name(value: str) -> str:
    """Branch names as `git check-ref-format --branch` accepts them.

    Anything option-like is refused as well.
    """
    if (
        not value
        or len(value) > 255
        or value.startswith(("-", "/", "."))
        or value.endswith(("/", ".", ".lock"))
        or REF_FORBIDDEN.search(value)
        or any(
            part.startswith(".") or part.endswith(".lock") for part in value.split("/")
        )
        or value == "@"
    ):
        raise ValueError("baseBranch is not a valid git branch name")
    return value
