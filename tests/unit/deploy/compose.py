"""docker-compose.yml as `docker compose` reads it, for tests that cannot run compose.

YAML with anchors and merge keys, then `${VAR}` interpolation of every string value
(Compose Specification, "Interpolation": `$$`, `$VAR`, `${VAR}`, `${VAR:-default}`,
`${VAR-default}`, `${VAR:?error}`, `${VAR?error}`, `${VAR:+alt}`, `${VAR+alt}`, nested).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml  # type: ignore[import-untyped]

ROOT = Path(__file__).resolve().parents[3]
COMPOSE_FILE = ROOT / "docker-compose.yml"
SCHEMA_FILE = ROOT / "tests" / "data" / "compose-spec" / "compose-spec.json"
ENV_EXAMPLE = ROOT / ".env.example"

REQUIRED_SECRETS = {
    "RABBITMQ_PASSWORD": "rabbit-password",
    "POSTGRES_PASSWORD": "postgres-password",
    "SECRETS_KEY": "k" * 43,
    "INTERNAL_API_TOKEN": "t" * 40,
    "DOCKER_GID": "998",
}
"""What an operator must provide (`${NAME:?...}` in the file), with sample values."""

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_EXPRESSION = re.compile(
    r"(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>.*))?\Z", re.S
)


class MissingVariable(ValueError):
    """A `${NAME:?message}` whose variable is unset (or empty)."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(f"required variable {name} is missing a value: {message}")
        self.name = name


def _closing_brace(text: str, start: int) -> int:
    """Index of the `}` closing the `${` whose body starts at `start`."""
    depth, i = 1, start
    while i < len(text):
        if text.startswith("${", i):
            depth, i = depth + 1, i + 2
            continue
        if text[i] == "}":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    raise ValueError(f"unclosed ${{ in {text!r}")


def _expand(expression: str, env: Mapping[str, str]) -> str:
    match = _EXPRESSION.match(expression)
    if match is None:
        raise ValueError(f"invalid interpolation ${{{expression}}}")
    name, op, arg = match["name"], match["op"], match["arg"] or ""
    value = env.get(name)
    missing = not value if op and op.startswith(":") else value is None
    if op in (":-", "-"):
        return interpolate(arg, env) if missing else str(value)
    if op in (":?", "?"):
        if missing:
            raise MissingVariable(name, interpolate(arg, env))
        return str(value)
    if op in (":+", "+"):
        return "" if missing else interpolate(arg, env)
    return value or ""


def interpolate(text: str, env: Mapping[str, str]) -> str:
    out: list[str] = []
    i = 0
    while i < len(text):
        if text[i] != "$":
            out.append(text[i])
            i += 1
        elif text.startswith("$$", i):
            out.append("$")
            i += 2
        elif text.startswith("${", i):
            end = _closing_brace(text, i + 2)
            out.append(_expand(text[i + 2 : end], env))
            i = end + 1
        elif name := _NAME.match(text, i + 1):
            out.append(env.get(name.group(), ""))
            i = name.end()
        else:
            out.append("$")
            i += 1
    return "".join(out)


def interpolate_values(node: Any, env: Mapping[str, str]) -> Any:
    """Every string value of a parsed document, interpolated (keys are left alone)."""
    if isinstance(node, str):
        return interpolate(node, env)
    if isinstance(node, dict):
        return {key: interpolate_values(value, env) for key, value in node.items()}
    if isinstance(node, list):
        return [interpolate_values(item, env) for item in node]
    return node


def text() -> str:
    return COMPOSE_FILE.read_text()


def raw() -> dict[str, Any]:
    """The parsed file, anchors and merge keys resolved, nothing interpolated."""
    document: dict[str, Any] = yaml.safe_load(text())
    return document


def load(env: Mapping[str, str]) -> dict[str, Any]:
    """The file as compose sees it with `env` as the shell environment plus .env."""
    document: dict[str, Any] = interpolate_values(raw(), env)
    return document


@cache
def schema() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(SCHEMA_FILE.read_text())
    return loaded


def env_example() -> dict[str, str]:
    """The non-empty settings of .env.example: what `make compose-up` copies to .env."""
    values = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        name, sep, value = line.partition("=")
        if sep and _NAME.fullmatch(name) and value:
            values[name] = value
    return values


def operator_env() -> dict[str, str]:
    """`make compose-up`'s .env (a copy of .env.example) plus the required secrets."""
    return {**env_example(), **REQUIRED_SECRETS}


@dataclass(frozen=True)
class Mount:
    kind: str
    """`bind` or `volume`."""
    source: str
    target: str


def mounts(service: Mapping[str, Any]) -> list[Mount]:
    """A service's `volumes`, short syntax (`src:dst[:mode]`) or long."""
    found = []
    for entry in service.get("volumes", []):
        if isinstance(entry, str):
            source, target = entry.split(":")[:2]
            kind = "bind" if source.startswith(("/", ".", "~")) else "volume"
            found.append(Mount(kind, source, target))
        else:
            found.append(Mount(entry["type"], entry.get("source", ""), entry["target"]))
    return found


def seconds(duration: str) -> float:
    """A compose duration such as `45s`, `1m30s`, `500ms`."""
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", duration)
    if not parts or "".join(n + u for n, u in parts) != duration:
        raise ValueError(f"not a duration: {duration!r}")
    return sum(float(n) * units[u] for n, u in parts)
