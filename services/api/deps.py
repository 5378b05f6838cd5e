"""Request-scoped dependencies besides the session.

Settings, the caller, and the broker for readiness.
"""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from fastapi import Depends
from faststream.rabbit import RabbitBroker

from services.api.models import DEFAULT_USER_ID
from services.api.settings import Settings

_settings: Settings | None = None
_broker: RabbitBroker | None = None


def configure(settings: Settings, broker: RabbitBroker) -> None:
    global _settings, _broker
    _settings, _broker = settings, broker


def get_settings() -> Settings:
    if _settings is None:
        raise RuntimeError("deps.configure() was not called")
    return _settings


def get_broker() -> RabbitBroker:
    if _broker is None:
        raise RuntimeError("deps.configure() was not called")
    return _broker


def get_current_user() -> UUID:
    """AUTH_MODE=disabled: every request acts as the default user.

    Token auth arrives with issue 3.
    """
    return DEFAULT_USER_ID


def get_owner_filter() -> UUID | None:
    """Whose runs the caller may see: None means all (disabled auth mode)."""
    return None


SettingsDep = Annotated[Settings, Depends(get_settings)]
BrokerDep = Annotated[RabbitBroker, Depends(get_broker)]
CurrentUserDep = Annotated[UUID, Depends(get_current_user)]
OwnerDep = Annotated[UUID | None, Depends(get_owner_filter)]
