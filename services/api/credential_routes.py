"""HTTP routes for the caller's provider keys (`/api/me/credentials`)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Response
from loguru import logger

from services.api import credentials
from services.api.credentials import Provider
from services.api.db import SessionDep
from services.api.deps import (
    KeyringDep,
    PrincipalDep,
    get_principal,
)
from services.api.errors import CredentialNotFound
from services.api.models import ProviderSecret
from services.api.schemas import (
    CredentialIn,
    CredentialList,
    CredentialOut,
)

me = APIRouter(prefix="/api/me/credentials", dependencies=[Depends(get_principal)])


def out(row: ProviderSecret) -> CredentialOut:
    return CredentialOut(
        provider=row.provider,
        masked=credentials.masked(row),
        source=row.source,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


@me.get("")
async def list_credentials(session: SessionDep, caller: PrincipalDep) -> CredentialList:
    async with session.begin():
        rows = await credentials.listing(session, caller.user_id)
    return CredentialList(items=[out(r) for r in rows])


@me.get("/{provider}")
async def get_credential(
    provider: Provider, session: SessionDep, caller: PrincipalDep
) -> CredentialOut:
    async with session.begin():
        row = await credentials.find(session, caller.user_id, provider)
    if row is None:
        raise CredentialNotFound(f"no {provider} key is stored")
    return out(row)


@me.put("/{provider}")
async def put_credential(
    provider: Provider,
    body: CredentialIn,
    session: SessionDep,
    caller: PrincipalDep,
    keyring: KeyringDep,
) -> CredentialOut:
    async with session.begin():
        row = await credentials.store(
            session, keyring, caller.user_id, provider, body.value
        )
    logger.info(
        "Stored the {provider} key of user {user}",
        provider=provider,
        user=str(caller.user_id),
    )
    return out(row)


@me.delete("/{provider}", status_code=204)
async def delete_credential(
    provider: Provider, session: SessionDep, caller: PrincipalDep
) -> Response:
    async with session.begin():
        removed = await credentials.remove(session, caller.user_id, provider)
    if not removed:
        raise CredentialNotFound(f"no {provider} key is stored")
    return Response(status_code=204)
