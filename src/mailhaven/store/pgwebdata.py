"""PostgreSQL store: what the web layer keeps (bearer tokens, JMAP identity settings) and
the account-wide message lookups JMAP makes. Mixed into :class:`mailhaven.store.postgres.PostgresStore`."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import asyncpg

from .api import IndexRow, TokenInfo

if TYPE_CHECKING:
    from .pgmessages import Tx

T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS web_tokens (
    hash TEXT PRIMARY KEY,
    account_id BIGINT NOT NULL,
    label TEXT NOT NULL,
    created DOUBLE PRECISION NOT NULL
);
CREATE TABLE IF NOT EXISTS jmap_identities (
    account_id BIGINT NOT NULL, email TEXT NOT NULL, data TEXT NOT NULL, PRIMARY KEY (account_id, email));
"""
_INDEX_COLUMNS = "id, mailbox_id, uid, size, internal_date, thread_id, flags"


class WebDataMethods:
    if TYPE_CHECKING:
        async def write(self, fn: Callable[[Tx], Awaitable[T]]) -> T: ...

        async def read(self, fn: Callable[[asyncpg.Connection], Awaitable[T]]) -> T: ...

    # -- account-wide message lookups (JMAP) ---------------------------------
    async def account_has_blob(self, account_id: int, blob_id: str) -> bool:
        async def fetch(conn: asyncpg.Connection) -> Any:
            return await conn.fetchval("SELECT 1 FROM messages WHERE blob_id=$1 AND account_id=$2 LIMIT 1",
                                       blob_id, account_id)

        return await self.read(fetch) is not None

    async def thread_members(self, account_id: int, thread_ids: Sequence[int]) -> dict[int, list[int]]:
        ids = list(thread_ids)
        if not ids:
            return {}

        async def fetch(conn: asyncpg.Connection) -> list[asyncpg.Record]:
            return list(await conn.fetch(
                "SELECT thread_id, id FROM messages WHERE account_id=$1 AND thread_id = ANY($2::bigint[]) "
                "ORDER BY internal_date, id", account_id, ids))

        out: dict[int, list[int]] = {t: [] for t in ids}
        for thread_id, message_id in await self.read(fetch):
            out.setdefault(int(thread_id), []).append(int(message_id))
        return out

    async def message_index(self, account_id: int, mailbox_ids: Sequence[int] | None = None) -> list[IndexRow]:
        async def fetch(conn: asyncpg.Connection) -> list[asyncpg.Record]:
            sql = f"SELECT {_INDEX_COLUMNS} FROM messages WHERE account_id=$1"
            if mailbox_ids is None:
                return list(await conn.fetch(sql, account_id))
            return list(await conn.fetch(sql + " AND mailbox_id = ANY($2::bigint[])", account_id, list(mailbox_ids)))

        return [(r[0], r[1], r[2], r[3], r[4], r[5], " ".join(r[6] or [])) for r in await self.read(fetch)]

    async def ordered_message_ids(self, account_id: int, mailbox_id: int | None, column: str,
                                  ascending: bool) -> list[tuple[int, int]]:
        if column not in ("internal_date", "size"):
            raise ValueError(f"cannot order by {column!r}")
        order = f"ORDER BY {column} {'ASC' if ascending else 'DESC'}, id DESC"

        async def fetch(conn: asyncpg.Connection) -> list[asyncpg.Record]:
            if mailbox_id is None:
                return list(await conn.fetch(f"SELECT id, thread_id FROM messages WHERE account_id=$1 {order}",
                                             account_id))
            return list(await conn.fetch(
                f"SELECT id, thread_id FROM messages WHERE account_id=$1 AND mailbox_id=$2 {order}",
                account_id, mailbox_id))

        return [(r[0], r[1]) for r in await self.read(fetch)]

    # -- bearer tokens --------------------------------------------------------
    async def add_token(self, account_id: int, digest: str, label: str, *, created: float) -> None:
        async def insert(tx: Tx) -> None:
            await tx.conn.execute("INSERT INTO web_tokens VALUES ($1,$2,$3,$4)", digest, account_id, label, created)

        await self.write(insert)

    async def list_tokens(self, account_id: int) -> list[TokenInfo]:
        async def fetch(conn: asyncpg.Connection) -> list[asyncpg.Record]:
            return list(await conn.fetch(
                "SELECT hash, label, created FROM web_tokens WHERE account_id=$1 ORDER BY created", account_id))

        return [TokenInfo(digest=r[0], label=r[1], created=float(r[2])) for r in await self.read(fetch)]

    async def revoke_tokens(self, account_id: int, digest_prefix: str) -> int:
        async def delete(tx: Tx) -> int:
            status = await tx.conn.execute("DELETE FROM web_tokens WHERE account_id=$1 AND starts_with(hash, $2)",
                                           account_id, digest_prefix)
            return int(status.split()[-1])

        return await self.write(delete)

    async def token_account(self, digest: str) -> int | None:
        async def fetch(conn: asyncpg.Connection) -> Any:
            return await conn.fetchval("SELECT account_id FROM web_tokens WHERE hash=$1", digest)

        account_id = await self.read(fetch)
        return int(account_id) if account_id is not None else None

    # -- JMAP identities ----------------------------------------------------
    async def identity_settings(self, account_id: int) -> dict[str, dict[str, Any]]:
        async def fetch(conn: asyncpg.Connection) -> list[asyncpg.Record]:
            return list(await conn.fetch("SELECT email, data FROM jmap_identities WHERE account_id=$1", account_id))

        return {r[0]: json.loads(r[1]) for r in await self.read(fetch)}

    async def save_identity_settings(self, account_id: int, address: str, settings: dict[str, Any]) -> None:
        text = json.dumps(settings)

        async def upsert(tx: Tx) -> None:
            await tx.conn.execute("INSERT INTO jmap_identities VALUES ($1,$2,$3) ON CONFLICT (account_id, email) "
                                  "DO UPDATE SET data=excluded.data", account_id, address, text)

        await self.write(upsert)
