"""Builds the API process: settings, logging, metrics, DB, broker and app (its error
answers: `http_errors`).

Run with `python -m services.api` (uvicorn on API_HOST:API_PORT).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from faststream import FastStream
from faststream.rabbit import RabbitBroker
from faststream.rabbit.schemas import Channel
from loguru import logger
from sqlalchemy import text

from services.api import (
    accounts,
    credential_routes,
    credentials,
    db,
    events,
    http_errors,
    internal_routes,
    log_routes,
    outbox,
    routes,
)
from services.api.fastpath import FastPath
from services.api.models import DEFAULT_USER_ID
from services.api.settings import AuthMode, Settings
from services.api.tokencache import TokenCache, TokenWatcher
from services.api.vault import Keyring, dev_secret_file, load_keyring
from shared.logging import configure_logging
from shared.logship import LogShipper
from shared.logship import install as install_log_shipper
from shared.metrics import configure_metrics
from shared.redaction import register_settings_secrets
from shared.topology import declare_topology


def load_secrets(settings: Settings) -> tuple[Keyring, str | None]:
    """The keyring and the internal service token; dev files only in disabled mode."""
    dev = settings.auth_mode is AuthMode.DISABLED
    key = settings.secrets_key.get_secret_value() if settings.secrets_key else None
    keyring, origin = load_keyring(
        key=key,
        key_file=settings.secrets_key_file,
        previous=settings.previous_keys(),
        dev_key_file=settings.dev_secrets_key_file if dev else None,
    )
    if origin.startswith("dev:"):
        logger.warning(
            "No SECRETS_KEY: provider keys are encrypted with a generated development "
            "key in {path}; set SECRETS_KEY or SECRETS_KEY_FILE in production",
            path=origin.removeprefix("dev:"),
        )
    token = settings.internal_api_token
    if token is not None:
        return keyring, token.get_secret_value()
    if dev:
        path = settings.dev_secrets_key_file.with_name("internal_api_token")
        logger.warning(
            "INTERNAL_API_TOKEN is not set; the development token in {path} is used",
            path=str(path),
        )
        return keyring, dev_secret_file(path)
    return keyring, None


@asynccontextmanager
async def startup(api: FastAPI) -> AsyncIterator[None]:
    """Make sure the default user exists; in disabled mode, seed its missing keys;
    run the token watcher. Without the broker: `serve` adds it."""
    settings: Settings = api.state.settings
    database: db.Database = api.state.database

    async def prepare() -> list[str]:
        async with database.new_session() as session, session.begin():
            await accounts.ensure_default_user(session)
            if settings.auth_mode is not AuthMode.DISABLED:
                return []
            values = {p: v.get_secret_value() for p, v in settings.seed_keys().items()}
            return await credentials.seed(
                session, api.state.keyring, DEFAULT_USER_ID, values
            )

    seeded = await db.retry_while_unavailable(prepare)
    if seeded:
        logger.info(
            "Seeded the default user's missing keys: {providers}", providers=seeded
        )
    watcher: TokenWatcher | None = None
    cache: TokenCache | None = api.state.token_cache
    if cache is not None:
        watcher = TokenWatcher(cache, settings.plain_database_url())
        watcher.start()
    try:
        yield
    finally:
        if watcher is not None:
            await watcher.stop()
        shipper: LogShipper = api.state.log_shipper
        await shipper.stop()
        fast_path: FastPath = api.state.fast_path
        await fast_path.close()
        await database.dispose()


@asynccontextmanager
async def serve(api: FastAPI) -> AsyncIterator[None]:
    """The app's lifespan: `startup`, then the broker (connected, topology declared,
    consumers started; a failure fails the startup), stopped first at shutdown."""
    broker: RabbitBroker = api.state.broker
    async with startup(api):
        await broker.connect()
        try:
            await declare_topology(broker, api.state.settings.codex_shards)
            await broker.start()
            api.state.log_shipper.start()
            yield
        finally:
            await broker.stop()


def create_app(settings: Settings | None = None) -> FastAPI:
    """The ASGI app: FastAPI routes, and the AMQP subscribers run by its lifespan.

    The subscribers are the broker's own (FastStream's), not wrapped by faststream's
    FastAPI integration: they take their message only (`events.build_router`), and
    that wrapping ran FastAPI's dependency resolution for every message. Everything
    the routes need is on `app.state`, so one process may hold several apps (the
    tests do).
    """
    settings = settings or Settings()
    configure_logging("api", level=settings.log_level, json=settings.log_json)
    register_settings_secrets(settings)
    configure_metrics(settings)
    keyring, internal_token = load_secrets(settings)
    database = db.Database(  # no overflow: see DATABASE_POOL_SIZE
        str(settings.database_url),
        pool_size=settings.database_pool_size,
        max_overflow=0,
    )
    broker = RabbitBroker(
        str(settings.rabbitmq_url),
        # on_return_raises: an unroutable fast-path command must fail, not vanish.
        default_channel=Channel(
            prefetch_count=settings.prefetch, on_return_raises=True
        ),
        graceful_timeout=settings.graceful_timeout,
        logger=logging.getLogger("api.broker"),
    )
    fast_path = FastPath(broker, database, grace=settings.outbox_fast_path_grace)
    if settings.outbox_fast_path:
        outbox.attach(database.sessions, fast_path)
    broker.include_router(events.build_router(settings, database))
    shipper = install_log_shipper("api", broker)

    token_mode = settings.auth_mode is AuthMode.TOKEN
    api = FastAPI(
        title="MoonMind Spec Workflow",
        version="0.1.0",
        lifespan=serve,
        # Every endpoint but health needs a token in token mode: no anonymous docs.
        openapi_url=None if token_mode else "/openapi.json",
        docs_url=None if token_mode else "/docs",
        redoc_url=None,
    )
    api.state.settings = settings
    api.state.database = database
    api.state.keyring = keyring
    api.state.internal_token = internal_token
    api.state.log_shipper = shipper
    api.state.broker = broker
    api.state.fast_path = fast_path
    # Answers from memory only once `startup`'s watcher listens for token changes.
    api.state.token_cache = (
        TokenCache(settings.token_cache_seconds)
        if token_mode and settings.token_cache_seconds > 0
        else None
    )
    for router in (
        routes.router,
        credential_routes.me,
        internal_routes.internal,
        log_routes.logs,
    ):
        api.include_router(router, responses=http_errors.ERROR_RESPONSES)
    http_errors.install(api)
    api.add_middleware(http_errors.BodyLimit, limit=settings.max_body_bytes)

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

    return api


def asyncapi(settings: Settings | None = None) -> FastStream:
    """The app's AMQP side as a FastStream application: what `faststream docs gen`
    documents (`scripts/asyncapi.sh`). Never started."""
    broker: RabbitBroker = create_app(settings).state.broker
    return FastStream(broker)
