"""Schemathesis against an in-process app, driven from a worker thread.

The app, its database pool and broker live on the test session's event loop, so the
requests go through the session's own `httpx.AsyncClient` (ASGI transport) on that
loop: Hypothesis runs synchronously in a thread (`asyncio.to_thread(fuzz, ...)`) and
hands each request to the loop with `run_coroutine_threadsafe`. Schemathesis only
generates the cases and validates the responses.

Deterministic and bounded: `derandomize=True`, no example database, a fixed
`max_examples` per operation and generation mode, no shrinking (every failure is
collected and reported, not minimised).
"""

from __future__ import annotations

import asyncio
import warnings
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import HypothesisDeprecationWarning, Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.errors import FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
)

CHECKS = [
    not_a_server_error,
    response_schema_conformance,
    content_type_conformance,
    response_headers_conformance,
]
"""No 5xx; bodies, content types and headers as the OpenAPI document says."""

REQUEST_TIMEOUT = 30.0


@dataclass(frozen=True)
class Finding:
    operation: str
    title: str
    status: int
    message: str
    reproduce: str

    def __str__(self) -> str:
        return (
            f"{self.operation}: {self.title} (HTTP {self.status})\n"
            f"  {self.message[:600]}\n  {self.reproduce[:600]}"
        )


@dataclass
class Report:
    """What one fuzzing pass sent and saw."""

    statuses: Counter[tuple[str, int]] = field(default_factory=Counter)
    findings: dict[tuple[str, str, int], Finding] = field(default_factory=dict)
    unsendable: int = 0
    nothing_to_negate: list[str] = field(default_factory=list)
    sent: int = 0
    responses: list[tuple[str, httpx.Response]] = field(default_factory=list)

    def seen(self, operation: str) -> set[int]:
        return {status for (label, status) in self.statuses if label == operation}

    def summary(self) -> str:
        lines = []
        labels = sorted({label for label, _ in self.statuses})
        for label in labels:
            counts = {s: n for (op, s), n in self.statuses.items() if op == label}
            lines.append(f"  {label}: {dict(sorted(counts.items()))}")
        head = f"{self.sent} requests, {self.unsendable} unsendable"
        return "\n".join([head, *lines])


@dataclass(frozen=True)
class Target:
    """Where and as whom: an ASGI client on `loop`, and headers for every request."""

    client: httpx.AsyncClient
    loop: asyncio.AbstractEventLoop
    headers: Mapping[str, str] = field(default_factory=dict)
    known: Mapping[str, Sequence[Any]] = field(default_factory=dict)
    """Path parameter or top-level body field -> real values, put in about half the
    cases: a random UUID only ever reaches the not-found branch, and a random
    `repository` or `featureKey` never passes validation."""


def load_schema(raw: dict[str, Any]) -> Any:
    return schemathesis.openapi.from_dict(raw)


def operations(schema: Any) -> list[Any]:
    return [result.ok() for result in schema.get_all_operations()]


def fuzz(
    schema: Any,
    target: Target,
    *,
    max_examples: int,
    only: Callable[[str], bool] = lambda _: True,
    modes: Sequence[GenerationMode] = (
        GenerationMode.POSITIVE,
        GenerationMode.NEGATIVE,
    ),
    keep_responses: bool = False,
) -> Report:
    """Fuzz every operation whose label passes `only`; blocking (run it in a thread)."""
    report = Report()
    with warnings.catch_warnings():
        # Schemathesis' negative generators call `random` (seeded by Hypothesis, so
        # still deterministic); the warning would be an error under our settings.
        warnings.filterwarnings(
            "ignore",
            message="Do not use the `random` module inside strategies",
            category=HypothesisDeprecationWarning,
        )
        for operation in operations(schema):
            if not only(operation.label):
                continue
            for mode in modes:
                _fuzz_operation(
                    operation, mode, target, max_examples, report, keep_responses
                )
    return report


def _fuzz_operation(
    operation: Any,
    mode: GenerationMode,
    target: Target,
    max_examples: int,
    report: Report,
    keep_responses: bool,
) -> None:
    @settings(
        max_examples=max_examples,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
        print_blob=False,
    )
    @given(case=operation.as_strategy(generation_mode=mode), data=st.data())
    def probe(case: Any, data: st.DataObject) -> None:
        use_known: bool = data.draw(st.booleans())
        if target.known and use_known:
            for where in (case.path_parameters, case.body):
                if not isinstance(where, dict):
                    continue
                for name, values in target.known.items():
                    if name in where and values:
                        where[name] = data.draw(st.sampled_from(list(values)))
        response = _send(case, target)
        if response is None:
            report.unsendable += 1
            return
        report.sent += 1
        report.statuses[(operation.label, response.status_code)] += 1
        if keep_responses:
            report.responses.append((operation.label, response))
        try:
            case.validate_response(response, checks=CHECKS)
        except FailureGroup as group:
            for failure in group.exceptions:
                key = (operation.label, failure.title, response.status_code)
                report.findings.setdefault(
                    key,
                    Finding(
                        operation.label,
                        failure.title,
                        response.status_code,
                        failure.message,
                        case.as_curl_command(headers=dict(target.headers)),
                    ),
                )

    try:
        probe()
    except Unsatisfiable:
        # Negative mode on an operation with no input to break (GET /healthz).
        if mode is not GenerationMode.NEGATIVE:
            raise
        report.nothing_to_negate.append(operation.label)


def _send(case: Any, target: Target) -> httpx.Response | None:
    """The request Schemathesis would send, through the ASGI client; None if no HTTP
    client could put it on the wire (a header value with a line break, say)."""
    kwargs = case.as_transport_kwargs(
        base_url=str(target.client.base_url).rstrip("/"), headers=dict(target.headers)
    )
    wanted = ("method", "url", "headers", "params", "cookies", "json", "data", "files")
    try:
        prepared = requests.Request(
            **{k: v for k, v in kwargs.items() if k in wanted}
        ).prepare()
        headers = [
            (name.encode("latin-1"), str(value).encode("latin-1"))
            for name, value in prepared.headers.items()
        ]
        body = prepared.body
        content = body.encode() if isinstance(body, str) else body
        if content is not None and not isinstance(content, bytes):
            return None  # a streamed body: Schemathesis never builds one
        request = target.client.build_request(
            str(prepared.method), str(prepared.url), headers=headers, content=content
        )
    except (ValueError, TypeError, requests.RequestException, httpx.InvalidURL):
        return None
    future = asyncio.run_coroutine_threadsafe(
        _roundtrip(target.client, request), target.loop
    )
    return future.result(timeout=REQUEST_TIMEOUT)


async def _roundtrip(
    client: httpx.AsyncClient, request: httpx.Request
) -> httpx.Response:
    response = await client.send(request)
    await response.aread()
    return response
