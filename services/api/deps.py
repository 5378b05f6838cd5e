"""Request-scoped dependencies besides the session: settings, keyring, the caller.

Everything comes from `request.app.state` (set by `main.create_app`), so several
apps can live in one process (tests) and AMQP handlers, whose request-like object
carries the same app, see the same objects.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Annotated
from uuid import UUID

from fastapi import Depends, Request

from services.api import accounts
from services.api.db import get_database
from services.api.errors import Unauthorized
from services.api.models import DEFAULT_USER_ID
from services.api.settings import AuthMode, Settings
from services.api.vault import Keyring


@dataclass(frozen=True)
class Principal:
    """Who is calling: the user requests act as, and whose runs they may see."""

    user_id: UUID


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_keyring(request: Request) -> Keyring:
    keyring: Keyring = request.app.state.keyring
    return keyring


def _bearer(request: Request) -> str | None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


async def get_principal(request: Request) -> Principal:
    """Disabled auth mode: the default user. Token mode: the bearer token's user."""
    if get_settings(request).auth_mode is AuthMode.DISABLED:
        return Principal(DEFAULT_USER_ID)
    token = _bearer(request)
    if token is None:
        raise Unauthorized("send Authorization: Bearer <token>")
    user_id = await accounts.authenticate(
        get_database(request).engine, token, request.app.state.token_cache
    )
    if user_id is None:
        raise Unauthorized("the token is unknown, revoked or expired")
    return Principal(user_id)


async def require_service_token(request: Request) -> None:
    """The internal API: only callers holding INTERNAL_API_TOKEN."""
    expected: str | None = request.app.state.internal_token
    token = _bearer(request)
    if not expected or token is None or not hmac.compare_digest(token, expected):
        raise Unauthorized("the internal API needs the service token")


async def _settings(request: Request) -> Settings:
    return get_settings(request)


async def _keyring(request: Request) -> Keyring:
    return get_keyring(request)


# `async def` dependencies: FastAPI runs plain `def` ones in its thread pool, a
# hand-off per request that costs more than these lookups themselves.
SettingsDep = Annotated[Settings, Depends(_settings)]
KeyringDep = Annotated[Keyring, Depends(_keyring)]
PrincipalDep = Annotated[Principal, Depends(get_principal)]
