"""Database preparation: create the database if missing, then run Alembic to head."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
from alembic import command
from alembic.config import Config
from sqlalchemy.engine import make_url

MIGRATIONS = Path(__file__).parent / "migrations"


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


async def create_database_if_missing(database_url: str) -> bool:
    """Create the database named in the URL (connecting to `postgres`).

    Returns True when it was created.
    """
    url = make_url(database_url)
    name = url.database
    if not name:
        raise ValueError("DATABASE_URL names no database")
    admin = url.set(drivername="postgresql", database="postgres").render_as_string(
        hide_password=False
    )
    conn = await asyncpg.connect(admin, timeout=10)
    try:
        if await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
            return False
        quoted = '"' + name.replace('"', '""') + '"'
        try:
            await conn.execute(f"CREATE DATABASE {quoted}")
        except asyncpg.DuplicateDatabaseError:
            return False  # created concurrently
        return True
    finally:
        await conn.close()


def asyncpg_url(database_url: str) -> str:
    """The URL with the asyncpg driver: `postgresql://…` alone would select psycopg."""
    url = make_url(database_url)
    return url.set(drivername="postgresql+asyncpg").render_as_string(
        hide_password=False
    )


async def prepare_database(database_url: str) -> None:
    """Create the database if needed and migrate it to head.

    Alembic runs its own event loop, so it runs in a thread.
    """
    await create_database_if_missing(database_url)
    await asyncio.to_thread(
        command.upgrade, alembic_config(asyncpg_url(database_url)), "head"
    )
