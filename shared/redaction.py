"""Secret redaction for log lines and payloads: by key, by known value, by token shape.

Keys are matched by rule, not by substring: `github_token`, `api_key` and
`Authorization` are masked; identifiers such as `feature_key`, `idempotency_key`,
`task_key`, `codex_task_id` and `token_count` are not.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from pydantic import AnyUrl, BaseModel, SecretBytes, SecretStr

from shared.secret_values import KnownValues, mask

MASK = "***"
MIN_SECRET_LENGTH = 8
"""Shorter registered values are ignored: masking them would shred ordinary words."""

_SECRET_WORDS = (
    "authorization|token|secret|password|passwd|passphrase|api_key|apikey|private_key|secret_key"
    "|access_key|credential|credentials|cookie|set_cookie"
)
_SECRET_KEY = re.compile(
    rf"(?:{_SECRET_WORDS})"
    r"|.+_(?:token|secret|password|passwd|passphrase|api_key|apikey|private_key|secret_key"
    r"|credential|credentials|authorization|cookie)"
)
_CAMEL_BOUNDARY = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_KEY_SEPARATORS = re.compile(r"[\s\-.]+")

# Ordered: the more specific prefixes come first, so `sk-ant-` is not reported as `sk-`.
_PATTERNS: tuple[str, ...] = (
    r"\b(?P<gh>gh[pousr]_)[A-Za-z0-9]{20,}",
    r"\b(?P<ghpat>github_pat_)[A-Za-z0-9_]{20,}",
    r"\b(?P<ant>sk-ant-)[A-Za-z0-9_\-]{10,}",
    r"\b(?P<proj>sk-proj-)[A-Za-z0-9_\-]{10,}",
    r"\b(?P<sk>sk-)[A-Za-z0-9_\-]{20,}",
    r"\b(?P<aiza>AIza)[0-9A-Za-z_\-]{35}",
    r"\b(?P<bearer>[Bb]earer\s+)[A-Za-z0-9._~+/=\-]{8,}",
    r"\b(?P<basic>[Bb]asic\s+)(?P<basic_value>[A-Za-z0-9+/]{6,}={0,2})",
    r"(?P<url>\b[A-Za-z][A-Za-z0-9+.\-]*://)[^/\s@\"'<>]+(?P<url_at>@)",
    # `password=hunter22`, `"api_key": "abcd…"` in free text (CLI output, exceptions)
    r"(?P<assign>(?i:token|secret|password|passwd|api[_\-]?key|private[_\-]?key)"
    r"[\"']?\s*[:=]\s*[\"']?)(?P<assign_value>[^\s\"',;&]{4,})",
)
_PATTERN = re.compile("|".join(_PATTERNS))
# Substring checks are far cheaper than the alternation above, and most text has none.
_TRIGGERS = (
    *(
        "ghp_",
        "gho_",
        "ghu_",
        "ghs_",
        "ghr_",
        "github_pat_",
        "sk-",
        "aiza",
        "bearer",
        "basic",
        "://",
    ),
    *(
        "token",
        "secret",
        "passw",
        "api_key",
        "api-key",
        "apikey",
        "private_key",
        "private-key",
    ),
)

RECENT_SECRETS = 512
"""Registered values kept besides the settings' own (a run's credentials, as they
are stored or revealed): the oldest is dropped first. A dropped value is still
masked by shape (`sk-`, `ghp_`, `Bearer`, ...) when it has one, and again by value
once it is revealed again."""

_settings_values = KnownValues()  # for good
_recent_values = KnownValues(RECENT_SECRETS)


def register_secret(value: str | None, *, pinned: bool = False) -> None:
    """Mask `value` wherever it appears from now on (env tokens, run credentials).

    `pinned` values (the process's own settings) are never dropped; others are
    kept while among the last RECENT_SECRETS registered.
    """
    if value is None or len(value) < MIN_SECRET_LENGTH or value in _settings_values:
        return
    (_settings_values if pinned else _recent_values).add(value)


def register_settings_secrets(settings: BaseModel) -> None:
    """Register every `SecretStr` field and every URL password of a settings object."""
    for value in settings.__dict__.values():
        if isinstance(value, SecretStr | SecretBytes):
            raw = value.get_secret_value()
            register_secret(
                raw.decode(errors="replace") if isinstance(raw, bytes) else raw,
                pinned=True,
            )
        elif isinstance(value, AnyUrl) and value.password:
            register_secret(value.password, pinned=True)


def forget_secrets() -> None:
    """Drop every registered value (tests)."""
    _settings_values.clear()
    _recent_values.clear()


@lru_cache(maxsize=4096)
def is_secret_key(key: str) -> bool:
    """True for `apiKey`, `X-Api-Key`, `github_token`; False for `feature_key`."""
    normalized = _KEY_SEPARATORS.sub("_", _CAMEL_BOUNDARY.sub("_", key)).lower()
    return _SECRET_KEY.fullmatch(normalized) is not None


def _replace(match: re.Match[str]) -> str:
    # Each alternative ends with a named group: `<name>` (the prefix kept visible),
    # `<name>_value` or `url_at`.
    group = match.lastgroup or ""
    if group == "basic_value" and not _looks_like_basic_credentials(match.group(group)):
        return match.group(0)
    if group == "url_at":
        return match.group("url") + MASK + "@"
    return match.group(group.removesuffix("_value")) + MASK


def _looks_like_basic_credentials(value: str) -> bool:
    # "Basic authentication failed" is prose; `Basic dXNlcjpwYXNz` is "user:pass".
    try:
        decoded = base64.b64decode(value + "=" * (-len(value) % 4), validate=True)
    except (binascii.Error, ValueError):
        return False
    return b":" in decoded


def redact_text(text: str) -> str:
    """Mask registered secret values and known token shapes inside free text."""
    if len(text) < MIN_SECRET_LENGTH:
        return text
    spans = _settings_values.spans(text) + _recent_values.spans(text)
    if spans:
        text = mask(text, spans, MASK)
    lowered = text.lower()
    if not any(trigger in lowered for trigger in _TRIGGERS):
        return text
    return _PATTERN.sub(_replace, text)


def redact(obj: Any) -> Any:
    """A copy of `obj` with secrets masked.

    Mappings (returned as dicts), lists, tuples and pydantic models (dumped to
    JSON-able dicts) are walked; other objects are returned as they are.
    """
    if isinstance(obj, str):
        return redact_text(obj)
    if isinstance(obj, Mapping):
        return {key: _redact_item(key, value) for key, value in obj.items()}
    if isinstance(obj, list | tuple):
        items = [redact(item) for item in obj]
        return items if isinstance(obj, list) else tuple(items)
    if isinstance(obj, SecretStr | SecretBytes):
        return MASK
    if isinstance(obj, BaseModel):
        return redact(obj.model_dump(mode="json"))
    return obj


def _redact_item(key: Any, value: Any) -> Any:
    if (
        isinstance(key, str)
        and is_secret_key(key)
        and value is not None
        and value != ""
    ):
        return MASK
    return redact(value)
