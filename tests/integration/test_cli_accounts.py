"""`spec-workflow users|tokens|secrets`, the real binary against a real database.

Tokens: on this session's database (the API's token-mode app checks them). Key
rotation re-encrypts every row of a database, so it runs on a private one: the
session's seeded secrets must stay readable by the session's app.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import UUID, uuid4

import asyncpg
import httpx
import pytest
import pytest_asyncio
from sqlalchemy import select, text
from sqlalchemy.engine import make_url

from services.api import accounts, credentials
from services.api.credentials import Provider
from services.api.db import Database
from services.api.migrate import prepare_database
from services.api.models import ApiToken, ProviderSecret
from services.api.settings import Settings
from services.api.vault import Keyring, generate_key, key_id, parse_key

CLI = Path(sys.executable).with_name("spec-workflow")
ROOT = Path(__file__).resolve().parents[2]
CREDENTIALS = "/api/me/credentials"


@dataclass(frozen=True)
class Result:
    code: int
    out: str
    err: str

    @property
    def clean_failure(self) -> bool:
        """Exit 1 with one line on stderr, no traceback."""
        return (
            self.code == 1
            and "Traceback" not in self.err
            and len(self.err.strip().splitlines()) == 1
        )


def plain(url: str) -> str:
    """`postgresql://…`, as an operator would write DATABASE_URL."""
    return (
        make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    )


@pytest.fixture(scope="module")
def base_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The environment minus every documented setting (no developer value leaks in)."""
    documented = set(
        re.findall(r"^([A-Z][A-Z0-9_]*)=", (ROOT / ".env.example").read_text(), re.M)
    )
    env = {k: v for k, v in os.environ.items() if k not in documented}
    env["CLI_TEST_CWD"] = str(tmp_path_factory.mktemp("cli"))  # where no .env is
    return env


async def run_cli(env: dict[str, str], *args: str) -> Result:
    process = await asyncio.create_subprocess_exec(
        str(CLI),
        *args,
        env=env,
        cwd=env["CLI_TEST_CWD"],
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return Result(process.returncode, out.decode(), err.decode())


@pytest.fixture
def env(base_env: dict[str, str], settings: Settings) -> dict[str, str]:
    return {**base_env, "DATABASE_URL": plain(str(settings.database_url))}


async def authenticate(database: Database, token: str) -> UUID | None:
    return await accounts.authenticate(database.engine, token)


async def new_user(env: dict[str, str]) -> tuple[UUID, str]:
    email = f"cli-{uuid4().hex[:10]}@example.com"
    created = await run_cli(env, "users", "create", "--email", email.upper())
    assert created.code == 0, created.err
    user_id, shown = created.out.split()
    assert shown == email  # stored lower-case
    return UUID(user_id), email


async def new_token(env: dict[str, str], *args: str) -> tuple[str, UUID, str]:
    """The token (last stdout line), its id and the stderr line."""
    created = await run_cli(env, "tokens", "create", *args)
    assert created.code == 0, created.err
    token = created.out.splitlines()[-1]
    assert created.out == token + "\n"  # alone on stdout
    token_id = re.search(r"token ([0-9a-f-]{36})", created.err)
    assert token_id, created.err
    assert token not in created.err
    return token, UUID(token_id.group(1)), created.err


async def test_token_lifecycle(
    env: dict[str, str], database: Database, token_api: httpx.AsyncClient
) -> None:
    user_id, email = await new_user(env)
    listed = await run_cli(env, "users", "list")
    assert listed.code == 0
    assert listed.out.startswith("ID")
    assert any(
        str(user_id) in line and email in line for line in listed.out.splitlines()
    )

    token, token_id, note = await new_token(env, "--user", email, "--name", "ci")
    assert token.startswith(accounts.TOKEN_PREFIX)
    assert "expires 20" in note  # the 90-day default

    bearer = {"Authorization": f"Bearer {token}"}
    assert (await token_api.get(CREDENTIALS, headers=bearer)).status_code == 200
    assert await authenticate(database, token) == user_id

    async with database.new_session() as session:
        row = (await session.scalars(select(ApiToken).filter_by(id=token_id))).one()
        dump = await session.execute(text("SELECT api_tokens::text FROM api_tokens"))
        stored = " ".join(line for (line,) in dump.all())
    assert row.user_id == user_id
    assert row.name == "ci"
    assert row.token_hash == hashlib.sha256(token.encode()).hexdigest()
    assert token not in stored  # only the hash, and a short prefix
    assert row.expires_at is not None
    assert abs(row.expires_at - (row.created_at + timedelta(days=90))) < timedelta(
        minutes=1
    )

    tokens = await run_cli(env, "tokens", "list", "--user", str(user_id))
    assert tokens.code == 0
    line = next(x for x in tokens.out.splitlines() if str(token_id) in x)
    assert "ci" in line
    assert row.prefix in line
    assert row.token_hash not in tokens.out
    assert token not in tokens.out

    revoked = await run_cli(env, "tokens", "revoke", str(token_id))
    assert revoked.code == 0, revoked.err
    assert (await token_api.get(CREDENTIALS, headers=bearer)).status_code == 401
    assert await authenticate(database, token) is None
    again = await run_cli(env, "tokens", "revoke", str(token_id))
    assert again.code == 0
    assert "already revoked" in again.out


async def test_expired_and_never_expiring_tokens(
    env: dict[str, str], database: Database, token_api: httpx.AsyncClient
) -> None:
    user_id, email = await new_user(env)
    forever, forever_id, note = await new_token(
        env, "--user", str(user_id), "--expires-in-days", "0"
    )
    assert "expires never" in note
    short, short_id, _ = await new_token(env, "--user", email, "--expires-in-days", "1")
    assert await authenticate(database, short) == user_id

    async with database.new_session() as session, session.begin():
        forever_row = await session.get(ApiToken, forever_id)
        assert forever_row is not None
        assert forever_row.expires_at is None
        expired = await session.get(ApiToken, short_id)
        assert expired is not None
        assert expired.expires_at is not None
        assert expired.expires_at - datetime.now(UTC) < timedelta(days=1)
        expired.expires_at = datetime.now(UTC) - timedelta(minutes=1)

    assert await authenticate(database, short) is None
    bearer = {"Authorization": f"Bearer {short}"}
    assert (await token_api.get(CREDENTIALS, headers=bearer)).status_code == 401
    assert await authenticate(database, forever) == user_id


async def last_used(database: Database, token_id: UUID) -> datetime | None:
    async with database.new_session() as session:
        row = await session.get(ApiToken, token_id)
        assert row is not None
        return row.last_used_at


async def set_last_used(database: Database, token_id: UUID, when: datetime) -> None:
    async with database.new_session() as session, session.begin():
        row = await session.get(ApiToken, token_id)
        assert row is not None
        row.last_used_at = when


async def test_last_use_is_recorded_at_most_once_a_minute(
    env: dict[str, str], database: Database
) -> None:
    user_id, email = await new_user(env)
    token, token_id, _ = await new_token(env, "--user", email)
    assert await last_used(database, token_id) is None

    before = datetime.now(UTC)
    assert await authenticate(database, token) == user_id
    first = await last_used(database, token_id)
    assert first is not None
    assert first >= before

    # Used again within TOUCH_EVERY: no write.
    assert await authenticate(database, token) == user_id
    assert await last_used(database, token_id) == first

    stale = datetime.now(UTC) - accounts.TOUCH_EVERY - timedelta(seconds=5)
    await set_last_used(database, token_id, stale)
    assert await authenticate(database, token) == user_id
    touched = await last_used(database, token_id)
    assert touched is not None
    assert touched > stale + accounts.TOUCH_EVERY

    # A revoked token is refused and its last use is left as it was.
    await set_last_used(database, token_id, stale)
    assert (await run_cli(env, "tokens", "revoke", str(token_id))).code == 0
    assert await authenticate(database, token) is None
    assert await last_used(database, token_id) == stale
    # Unknown and malformed tokens: refused, nothing else touched.
    assert await authenticate(database, accounts.new_token()) is None
    assert await authenticate(database, "not-a-token") is None


async def test_default_lifetime_comes_from_the_environment(
    env: dict[str, str], database: Database
) -> None:
    _, email = await new_user(env)
    _, token_id, _ = await new_token(
        {**env, "API_TOKEN_DEFAULT_TTL_DAYS": "2"}, "--user", email
    )
    async with database.new_session() as session:
        row = await session.get(ApiToken, token_id)
    assert row is not None
    assert row.expires_at is not None
    assert abs(row.expires_at - row.created_at - timedelta(days=2)) < timedelta(
        minutes=1
    )


async def test_mistakes_are_one_line_and_exit_1(env: dict[str, str]) -> None:
    _, email = await new_user(env)
    cases = [
        ("exists", ["users", "create", "--email", email]),
        ("not an email", ["users", "create", "--email", "nobody"]),
        ("no user", ["tokens", "create", "--user", "ghost@example.com"]),
        ("no user", ["tokens", "list", "--user", str(uuid4())]),
        ("no token", ["tokens", "revoke", str(uuid4())]),
        ("not a token id", ["tokens", "revoke", "sw_nope"]),
    ]
    for expected, args in cases:
        result = await run_cli(env, *args)
        assert result.clean_failure, (args, result)
        assert expected in result.err, (args, result.err)

    down = {**env, "DATABASE_URL": "postgresql://postgres:pw@127.0.0.1:9/nowhere"}
    result = await run_cli(down, "users", "list")
    assert result.clean_failure, result
    assert "127.0.0.1:9/nowhere" in result.err
    assert ":pw@" not in result.err


# --- key rotation, on a private database -----------------------------------------


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def rotation_url(settings: Settings) -> AsyncIterator[str]:
    """A migrated database of its own (`<session database>_rotate`)."""
    url = make_url(str(settings.database_url))
    name = f"{url.database}_rotate"
    own = url.set(database=name).render_as_string(hide_password=False)
    await prepare_database(own)
    yield own
    admin = url.set(drivername="postgresql", database="postgres")
    connection = await asyncpg.connect(admin.render_as_string(hide_password=False))
    try:
        await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await connection.close()


@pytest_asyncio.fixture(loop_scope="session")
async def rotation_db(rotation_url: str) -> AsyncIterator[Database]:
    database = Database(rotation_url, pool_size=1)
    async with database.new_session() as session, session.begin():
        await session.execute(text("DELETE FROM provider_secrets"))
    yield database
    await database.dispose()


async def store_secret(database: Database, keyring: Keyring, value: str) -> UUID:
    async with database.new_session() as session, session.begin():
        user = await accounts.create_user(session, f"{uuid4().hex}@example.com")
        await credentials.store(session, keyring, user.id, Provider.OPENAI, value)
    return user.id


async def stored(database: Database, user_id: UUID) -> ProviderSecret:
    async with database.new_session() as session:
        query = select(ProviderSecret).filter_by(user_id=user_id)
        return (await session.scalars(query)).one()


async def test_rotate_reencrypts_under_the_current_key(
    base_env: dict[str, str], rotation_url: str, rotation_db: Database
) -> None:
    key_a, key_b = generate_key(), generate_key()
    old = await store_secret(rotation_db, Keyring(parse_key(key_a)), "sk-rotate-me-1")
    current = await store_secret(rotation_db, Keyring(parse_key(key_b)), "sk-new-2")
    untouched = await stored(rotation_db, current)
    env = {
        **base_env,
        "DATABASE_URL": plain(rotation_url),
        "SECRETS_KEY": key_b,
        "SECRETS_PREVIOUS_KEYS": f"{key_a},",
    }

    result = await run_cli(env, "secrets", "rotate")

    assert result.code == 0, result.err
    assert "re-encrypted 1 provider secret;" in result.out
    row = await stored(rotation_db, old)
    assert row.key_id == key_id(parse_key(key_b))
    only_b = Keyring(parse_key(key_b))
    async with rotation_db.new_session() as session:
        revealed = await credentials.reveal(session, only_b, old, [Provider.OPENAI])
    assert revealed == {"openai": "sk-rotate-me-1"}
    assert (await stored(rotation_db, current)).ciphertext == untouched.ciphertext

    again = await run_cli(env, "secrets", "rotate")
    assert again.code == 0
    assert "re-encrypted 0 provider secrets" in again.out


async def test_rotate_without_the_old_key_changes_nothing(
    base_env: dict[str, str], rotation_url: str, rotation_db: Database
) -> None:
    key_a, key_b = generate_key(), generate_key()
    user_id = await store_secret(rotation_db, Keyring(parse_key(key_a)), "sk-keep-me")
    before = await stored(rotation_db, user_id)
    env = {**base_env, "DATABASE_URL": plain(rotation_url), "SECRETS_KEY": key_b}

    result = await run_cli(env, "secrets", "rotate")

    assert result.clean_failure, result
    assert "SECRETS_PREVIOUS_KEYS" in result.err
    assert before.key_id in result.err
    after = await stored(rotation_db, user_id)
    assert (after.key_id, after.nonce, after.ciphertext) == (
        before.key_id,
        before.nonce,
        before.ciphertext,
    )

    no_key = await run_cli({**env, "SECRETS_KEY": ""}, "secrets", "rotate")
    assert no_key.clean_failure, no_key
    assert "SECRETS_KEY" in no_key.err
