"""Provider secrets of a user: stored encrypted, shown masked, revealed only to workers.

Every value this process encrypts or decrypts is registered with the log redactor.
"""

from __future__ import annotations

from enum import StrEnum
from uuid import UUID, uuid4

from sqlalchemy import delete, func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.api.models import ProviderSecret
from services.api.vault import Keyring, Sealed
from shared.redaction import register_secret

HINT_MIN_LENGTH = 16


class Provider(StrEnum):
    OPENAI = "openai"
    GOOGLE = "google"
    GITHUB = "github"
    ANTHROPIC = "anthropic"


class Source(StrEnum):
    API = "api"
    ENVIRONMENT = "environment"


def hint_of(value: str) -> str | None:
    """The last four characters of a long key; nothing of a short one."""
    return value[-4:] if len(value) >= HINT_MIN_LENGTH else None


def masked(row: ProviderSecret) -> str:
    return f"****{row.hint}" if row.hint else "****"


def _values(
    keyring: Keyring, user_id: UUID, provider: str, value: str
) -> dict[str, object]:
    register_secret(value)
    sealed = keyring.seal(user_id, provider, value)
    return {
        "key_id": sealed.key_id,
        "nonce": sealed.nonce,
        "ciphertext": sealed.ciphertext,
        "hint": hint_of(value),
    }


async def store(
    session: AsyncSession,
    keyring: Keyring,
    user_id: UUID,
    provider: Provider,
    value: str,
) -> ProviderSecret:
    """Create or replace the user's key for `provider`."""
    values = _values(keyring, user_id, provider, value)
    statement = (
        insert(ProviderSecret)
        .values(
            id=uuid4(), user_id=user_id, provider=provider, source=Source.API, **values
        )
        .on_conflict_do_update(
            constraint="uq_provider_secrets_user",
            set_={
                **values,
                "source": Source.API,
                "updated_at": func.clock_timestamp(),
            },
        )
        .returning(ProviderSecret)
    )
    row = (
        await session.scalars(statement, execution_options={"populate_existing": True})
    ).one()
    return row


async def seed(
    session: AsyncSession, keyring: Keyring, user_id: UUID, values: dict[str, str]
) -> list[str]:
    """Fill the user's missing keys; a key already stored is never overwritten."""
    seeded = []
    for provider, value in values.items():
        statement = (
            insert(ProviderSecret)
            .values(
                id=uuid4(),
                user_id=user_id,
                provider=provider,
                source=Source.ENVIRONMENT,
                **_values(keyring, user_id, provider, value),
            )
            .on_conflict_do_nothing(constraint="uq_provider_secrets_user")
            .returning(ProviderSecret.provider)
        )
        if (await session.execute(statement)).first() is not None:
            seeded.append(provider)
    return seeded


async def listing(session: AsyncSession, user_id: UUID) -> list[ProviderSecret]:
    query = select(ProviderSecret).where(ProviderSecret.user_id == user_id)
    return list((await session.scalars(query.order_by(ProviderSecret.provider))).all())


async def find(
    session: AsyncSession, user_id: UUID, provider: Provider
) -> ProviderSecret | None:
    query = select(ProviderSecret).where(
        ProviderSecret.user_id == user_id, ProviderSecret.provider == provider
    )
    return (await session.scalars(query)).one_or_none()


async def remove(session: AsyncSession, user_id: UUID, provider: Provider) -> bool:
    result = await session.execute(
        delete(ProviderSecret)
        .where(ProviderSecret.user_id == user_id, ProviderSecret.provider == provider)
        .returning(ProviderSecret.id)
    )
    return result.first() is not None


def _open(keyring: Keyring, row: ProviderSecret) -> str:
    value = keyring.open(
        row.user_id, row.provider, Sealed(row.key_id, row.nonce, row.ciphertext)
    )
    register_secret(value)
    return value


async def reveal(
    session: AsyncSession, keyring: Keyring, user_id: UUID, providers: list[Provider]
) -> dict[str, str]:
    """The plaintext keys the user has among `providers` (for the internal endpoint)."""
    query = select(ProviderSecret).where(
        ProviderSecret.user_id == user_id, ProviderSecret.provider.in_(providers)
    )
    return {
        row.provider: _open(keyring, row)
        for row in (await session.scalars(query)).all()
    }


async def rotate(session: AsyncSession, keyring: Keyring) -> int:
    """Re-encrypt every row not sealed with the current key; returns how many."""
    query = (
        select(ProviderSecret)
        .where(ProviderSecret.key_id != keyring.current_id)
        .with_for_update()
    )
    rows = (await session.scalars(query)).all()
    for row in rows:
        sealed = keyring.seal(row.user_id, row.provider, _open(keyring, row))
        row.key_id, row.nonce, row.ciphertext = (
            sealed.key_id,
            sealed.nonce,
            sealed.ciphertext,
        )
    return len(rows)
