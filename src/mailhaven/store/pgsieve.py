"""PostgreSQL store: users' Sieve scripts, at most one active per account. Mixed into
:class:`mailhaven.store.postgres.PostgresStore`."""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

import asyncpg

from .api import AlreadyExists, NotFound, SieveConflict, SieveScriptInfo

if TYPE_CHECKING:
    from .pgmessages import Tx

T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS sieve_scripts (
    account_id BIGINT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    script TEXT NOT NULL,
    active BOOLEAN NOT NULL DEFAULT false,
    id BIGSERIAL NOT NULL UNIQUE,
    PRIMARY KEY (account_id, name)
);
DO $$ BEGIN
    IF NOT EXISTS (SELECT 1 FROM information_schema.columns WHERE table_schema = current_schema()
                   AND table_name = 'sieve_scripts' AND column_name = 'id') THEN
        ALTER TABLE sieve_scripts ADD COLUMN id BIGSERIAL NOT NULL UNIQUE;   -- JMAP ids (RFC 9661)
    END IF;
END $$;
CREATE TABLE IF NOT EXISTS sieve_versions (
    account_id BIGINT PRIMARY KEY REFERENCES accounts(id) ON DELETE CASCADE,
    version BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS sieve_redirects (
    account_id BIGINT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    at DOUBLE PRECISION NOT NULL
);
CREATE INDEX IF NOT EXISTS sieve_redirects_account ON sieve_redirects (account_id, at);
CREATE TABLE IF NOT EXISTS alias_forwards (
    address TEXT NOT NULL,
    at DOUBLE PRECISION NOT NULL
);
CREATE INDEX IF NOT EXISTS alias_forwards_address ON alias_forwards (address, at);
CREATE TABLE IF NOT EXISTS sieve_vacation (
    account_id BIGINT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    sender TEXT NOT NULL,
    handle TEXT NOT NULL,
    until DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (account_id, sender, handle)
);
CREATE TABLE IF NOT EXISTS sieve_duplicates (
    account_id BIGINT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    key TEXT NOT NULL,
    until DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (account_id, key)
);
CREATE TABLE IF NOT EXISTS srs_key (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    key BYTEA NOT NULL
);
"""


async def _bump_sieve(tx: Tx, account_id: int, if_version: int | None = None) -> int:
    """The account's next Sieve version (SieveConflict unless it was ``if_version``): the
    upsert's row lock makes a second writer wait and then see the first one's version."""
    version = int(await tx.conn.fetchval(
        "INSERT INTO sieve_versions (account_id, version) VALUES ($1, 1) ON CONFLICT (account_id) "
        "DO UPDATE SET version = sieve_versions.version + 1 RETURNING version", account_id))
    if if_version is not None and version - 1 != if_version:
        raise SieveConflict(f"the Sieve scripts are at version {version - 1}, not {if_version}")
    tx.publish(account_id, None, "sieve", version)
    return version


async def _take_in_window(tx: Tx, table: str, column: str, key: object, *,
                          now: float, window: float, limit: int) -> bool:
    """One more use by ``key`` (``table``'s ``column``) at ``now``, unless its uses in the
    ``window`` seconds before reach ``limit``: then False, and nothing is counted. Older
    uses are deleted. The caller holds the lock that serialises ``key``'s uses."""
    await tx.conn.execute(f"DELETE FROM {table} WHERE {column}=$1 AND at<=$2", key, now - window)
    used = await tx.conn.fetchval(f"SELECT count(*) FROM {table} WHERE {column}=$1", key)
    if used >= limit:
        return False
    await tx.conn.execute(f"INSERT INTO {table} ({column}, at) VALUES ($1,$2)", key, now)
    return True


class SieveMethods:
    if TYPE_CHECKING:
        async def write(self, fn: Callable[[Tx], Awaitable[T]]) -> T: ...

        async def read(self, fn: Callable[[asyncpg.Connection], Awaitable[T]]) -> T: ...

    async def put_sieve_script(self, account_id: int, name: str, text: str, *, activate: bool = False,
                               if_version: int | None = None) -> int:
        async def upsert(tx: Tx) -> int:
            version = await _bump_sieve(tx, account_id, if_version)
            await tx.conn.execute(
                "INSERT INTO sieve_scripts (account_id, name, script) VALUES ($1,$2,$3) "
                "ON CONFLICT (account_id, name) DO UPDATE SET script=excluded.script", account_id, name, text)
            if activate:
                await tx.conn.execute("UPDATE sieve_scripts SET active = (name = $2) WHERE account_id=$1",
                                      account_id, name)
            return version

        return await self.write(upsert)

    async def sieve_version(self, account_id: int) -> int:
        async def fetch(conn: asyncpg.Connection) -> Any:
            return await conn.fetchval("SELECT version FROM sieve_versions WHERE account_id=$1", account_id)

        return int(await self.read(fetch) or 0)

    async def get_sieve_script(self, account_id: int, name: str) -> str:
        async def fetch(conn: asyncpg.Connection) -> Any:
            return await conn.fetchval("SELECT script FROM sieve_scripts WHERE account_id=$1 AND name=$2",
                                       account_id, name)

        text = await self.read(fetch)
        if text is None:
            raise NotFound(f"no Sieve script {name!r}")
        return str(text)

    async def list_sieve_scripts(self, account_id: int) -> list[SieveScriptInfo]:
        async def fetch(conn: asyncpg.Connection) -> list[asyncpg.Record]:
            return list(await conn.fetch(
                "SELECT name, active, id FROM sieve_scripts WHERE account_id=$1 ORDER BY name", account_id))

        return [SieveScriptInfo(name=r[0], active=bool(r[1]), id=int(r[2])) for r in await self.read(fetch)]

    async def delete_sieve_script(self, account_id: int, name: str) -> None:
        async def delete(tx: Tx) -> None:
            status = await tx.conn.execute("DELETE FROM sieve_scripts WHERE account_id=$1 AND name=$2",
                                           account_id, name)
            if status.split()[-1] == "0":
                raise NotFound(f"no Sieve script {name!r}")
            await _bump_sieve(tx, account_id)

        await self.write(delete)

    async def activate_sieve_script(self, account_id: int, name: str | None) -> None:
        async def activate(tx: Tx) -> None:
            if name is not None and await tx.conn.fetchval(
                    "SELECT 1 FROM sieve_scripts WHERE account_id=$1 AND name=$2", account_id, name) is None:
                raise NotFound(f"no Sieve script {name!r}")
            await tx.conn.execute("UPDATE sieve_scripts SET active = (name IS NOT DISTINCT FROM $2::text) "
                                  "WHERE account_id=$1", account_id, name)
            await _bump_sieve(tx, account_id)

        await self.write(activate)

    async def get_active_sieve_script(self, account_id: int) -> tuple[str, str] | None:
        async def fetch(conn: asyncpg.Connection) -> Any:
            return await conn.fetchrow("SELECT name, script FROM sieve_scripts WHERE account_id=$1 AND active",
                                       account_id)

        row = await self.read(fetch)
        return (str(row[0]), str(row[1])) if row is not None else None

    async def count_alias_forward(self, address: str, *, now: float, window: float, limit: int) -> bool:
        address = address.lower()

        async def count(tx: Tx) -> bool:
            # One alias's counter at a time, across nodes: a transaction-scoped advisory lock.
            await tx.conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", "mailhaven-fwd:" + address)
            return await _take_in_window(tx, "alias_forwards", "address", address,
                                         now=now, window=window, limit=limit)

        return await self.write(count)

    async def rename_sieve_script(self, account_id: int, old: str, new: str) -> None:
        async def rename(tx: Tx) -> None:
            # The account's row lock serialises renames (two onto one free name: one wins).
            await tx.conn.execute("SELECT 1 FROM accounts WHERE id=$1 FOR UPDATE", account_id)
            if await tx.conn.fetchval("SELECT 1 FROM sieve_scripts WHERE account_id=$1 AND name=$2",
                                      account_id, old) is None:
                raise NotFound(f"no Sieve script {old!r}")
            if old == new:
                return
            if await tx.conn.fetchval("SELECT 1 FROM sieve_scripts WHERE account_id=$1 AND name=$2",
                                      account_id, new) is not None:
                raise AlreadyExists(f"Sieve script {new!r} exists")
            await tx.conn.execute("UPDATE sieve_scripts SET name=$3 WHERE account_id=$1 AND name=$2",
                                  account_id, old, new)
            await _bump_sieve(tx, account_id)

        await self.write(rename)

    async def count_redirect(self, account_id: int, *, now: float, window: float, limit: int) -> bool:
        async def count(tx: Tx) -> bool:
            # One account's counter at a time: the row lock on the account serialises them.
            await tx.conn.execute("SELECT 1 FROM accounts WHERE id=$1 FOR UPDATE", account_id)
            return await _take_in_window(tx, "sieve_redirects", "account_id", account_id,
                                         now=now, window=window, limit=limit)

        return await self.write(count)

    async def vacation_reply_due(self, account_id: int, sender: str, handle: str, *,
                                 now: float, period: float) -> bool:
        async def due(tx: Tx) -> bool:
            # The upsert happens only when the remembered period is over: one reply wins.
            status = await tx.conn.execute(
                "INSERT INTO sieve_vacation (account_id, sender, handle, until) VALUES ($1,$2,$3,$4) "
                "ON CONFLICT (account_id, sender, handle) DO UPDATE SET until=excluded.until "
                "WHERE sieve_vacation.until <= $5", account_id, sender.lower(), handle, now + period, now)
            return bool(status.split()[-1] != "0")

        return await self.write(due)

    async def duplicate_keys(self, account_id: int, *, now: float) -> frozenset[str]:
        async def fetch(conn: asyncpg.Connection) -> list[asyncpg.Record]:
            return list(await conn.fetch("SELECT key FROM sieve_duplicates WHERE account_id=$1 AND until>$2",
                                         account_id, now))

        return frozenset(str(r[0]) for r in await self.read(fetch))

    async def remember_duplicates(self, account_id: int, until: Mapping[str, float], *, now: float) -> None:
        async def remember(tx: Tx) -> None:
            await tx.conn.execute("DELETE FROM sieve_duplicates WHERE account_id=$1 AND until<=$2", account_id, now)
            await tx.conn.executemany(
                "INSERT INTO sieve_duplicates (account_id, key, until) VALUES ($1,$2,$3) "
                "ON CONFLICT (account_id, key) DO UPDATE SET until=excluded.until",
                [(account_id, k, t) for k, t in until.items()])

        await self.write(remember)

    async def srs_key(self) -> bytes:
        async def key(tx: Tx) -> bytes:
            await tx.conn.execute("INSERT INTO srs_key (id, key) VALUES (1, $1) ON CONFLICT DO NOTHING",
                                  os.urandom(32))
            return bytes(await tx.conn.fetchval("SELECT key FROM srs_key WHERE id=1"))

        return await self.write(key)
