"""Builds the API process: settings, logging, metrics, DB, broker, app, error mapping.

Run with `python -m services.api` (uvicorn on API_HOST:API_PORT).
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from faststream.rabbit import RabbitBroker
from faststream.rabbit.schemas import Channel
from faststream_fastapi import FastStreamAPI
from loguru import logger
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.api import db, deps, events, routes
from services.api.errors import (
    ActiveRunExists,
    ArtifactNotFound,
    IdempotencyKeyReused,
    InvalidCursor,
    RunError,
    RunNotCancellable,
    RunNotFound,
    RunNotRetryable,
)
from services.api.settings import Settings
from shared.logging import configure_logging
from shared.metrics import configure_metrics
from shared.topology import declare_topology

HTTP_STATUS: dict[type[RunError], int] = {
    RunNotFound: 404,
    ArtifactNotFound: 404,
    RunNotRetryable: 409,
    RunNotCancellable: 409,
    ActiveRunExists: 409,
    IdempotencyKeyReused: 422,
    InvalidCursor: 422,
}
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


def _install_error_handlers(api: FastAPI) -> None:
    @api.exception_handler(RunError)
    async def run_error(_: Request, exc: RunError) -> JSONResponse:
        return error(HTTP_STATUS[type(exc)], exc.code, str(exc), **exc.extra())

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
    for kind in (DBAPIError, OSError, TimeoutError):
        api.add_exception_handler(kind, database_error)

    @api.exception_handler(Exception)
    async def unexpected(_: Request, exc: Exception) -> JSONResponse:
        return internal(exc)


def internal(exc: BaseException) -> JSONResponse:
    logger.opt(exception=exc).error("Unhandled error while serving a request")
    return error(
        500, "internal_error", "an unexpected error occurred; it has been logged"
    )


def create_app(settings: Settings | None = None) -> FastStreamAPI:
    """The ASGI app: FastAPI routes plus the AMQP subscribers, sharing dependencies.

    Built with faststream's FastAPI integration.
    """
    settings = settings or Settings()
    configure_logging("api", level=settings.log_level, json=settings.log_json)
    configure_metrics(settings)
    database = db.configure_database(str(settings.database_url))
    broker = RabbitBroker(
        str(settings.rabbitmq_url),
        default_channel=Channel(prefetch_count=settings.prefetch),
        graceful_timeout=settings.graceful_timeout,
        logger=logging.getLogger("api.broker"),
    )
    broker.include_router(events.router)
    deps.configure(settings, broker)

    api = FastAPI(title="MoonMind Spec Workflow", version="0.1.0")
    api.include_router(routes.router)
    _install_error_handlers(api)
    api.add_middleware(BodyLimit, limit=settings.max_body_bytes)

    @api.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @api.get("/readyz")
    async def readyz() -> JSONResponse:
        checks = {"database": False, "broker": False}
        try:
            async with database.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
            checks["database"] = True
        except Exception as exc:
            if not db.is_unavailable(exc):
                raise
        checks["broker"] = await broker.ping(timeout=2.0)
        ready = all(checks.values())
        return JSONResponse(
            {"status": "ready" if ready else "unavailable", "checks": checks},
            status_code=200 if ready else 503,
        )

    async def connect(b: Any) -> None:
        await b.connect()
        await declare_topology(b, settings.codex_shards)
        await b.start()

    return FastStreamAPI(
        broker, application=api, safe_connection=True, connection_hook=connect
    )
