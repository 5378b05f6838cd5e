"""How the API answers errors: our error shape for every status, the exception to
status mapping, the request body limit, and what the OpenAPI document says of them.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from loguru import logger
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.api import db
from services.api.errors import (
    ActiveRunExists,
    ArtifactNotFound,
    CredentialNotFound,
    IdempotencyKeyReused,
    InvalidCursor,
    InvalidLogQuery,
    NoFreeShard,
    RunError,
    RunNotCancellable,
    RunNotFound,
    RunNotRetryable,
    ShardNotAssigned,
    Unauthorized,
)
from services.api.schemas import ErrorOut

HTTP_STATUS: dict[type[RunError], int] = {
    RunNotFound: 404,
    ArtifactNotFound: 404,
    RunNotRetryable: 409,
    RunNotCancellable: 409,
    ActiveRunExists: 409,
    IdempotencyKeyReused: 422,
    InvalidCursor: 422,
    InvalidLogQuery: 422,
    Unauthorized: 401,
    CredentialNotFound: 404,
    ShardNotAssigned: 409,
    NoFreeShard: 409,
}
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    422: {
        "model": ErrorOut,
        "description": "Invalid request (`code`: invalid_request)",
    },
    "default": {"model": ErrorOut, "description": "Any other error"},
}
"""What the OpenAPI document says errors look like: our shape, not FastAPI's default
`HTTPValidationError` (which no response of ours has)."""
HTTP_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    503: "service_unavailable",
}


def error(status: int, code: str, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse(
        {"detail": {"code": code, "message": message, **extra}}, status_code=status
    )


class BodyLimit:
    """Answer 413 to request bodies over `limit` bytes, whatever Content-Length says."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (
            not declared.isdigit() or int(declared) > self.limit
        ):
            await error(
                413,
                "payload_too_large",
                f"request bodies are limited to {self.limit} bytes",
            )(scope, receive, send)
            return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise _TooLarge
            return message

        try:
            await self.app(scope, limited, send)
        except _TooLarge:
            await error(
                413,
                "payload_too_large",
                f"request bodies are limited to {self.limit} bytes",
            )(scope, receive, send)


class _TooLarge(Exception):
    pass


def install(api: FastAPI) -> None:
    @api.exception_handler(RunError)
    async def run_error(_: Request, exc: RunError) -> JSONResponse:
        response = error(HTTP_STATUS[type(exc)], exc.code, str(exc), **exc.extra())
        response.headers.update(exc.headers())
        return response

    @api.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        # Echo where and what, never the input itself: it may be huge or carry a secret.
        problems = [
            {
                "loc": [str(p) for p in e.get("loc", ())],
                "msg": str(e.get("msg", ""))[:300],
                "type": e.get("type"),
            }
            for e in exc.errors()[:20]
        ]
        loc: list[str] = problems[0]["loc"] if problems else []
        msg = str(problems[0]["msg"]) if problems else "invalid request"
        where = ".".join(loc[1:] or loc)
        message = f"{where}: {msg}" if where else msg
        return error(422, "invalid_request", message, errors=problems)

    @api.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = HTTP_CODES.get(exc.status_code, "http_error")
        return error(exc.status_code, code, str(exc.detail))

    async def database_error(_: Request, exc: Exception) -> JSONResponse:
        if db.is_unavailable(exc):
            return error(
                503,
                "database_unavailable",
                "the database is unavailable; try again shortly",
            )
        return internal(exc)

    # Registered per class, not on Exception: the response is final, nothing re-raised.
    for kind in (DBAPIError, OSError, TimeoutError, PoolTimeout):
        api.add_exception_handler(kind, database_error)

    @api.exception_handler(Exception)
    async def unexpected(_: Request, exc: Exception) -> JSONResponse:
        return internal(exc)


def internal(exc: BaseException) -> JSONResponse:
    logger.opt(exception=exc).error("Unhandled error while serving a request")
    return error(
        500, "internal_error", "an unexpected error occurred; it has been logged"
    )
