"""PostgreSQL store: the spam classifier's token counts, allow/block lists and greylisting.
Mixed into :class:`mailhaven.store.postgres.PostgresStore`."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import asyncpg

from .api import SpamState
from .sqlitespam import spam_state_from_rows

if TYPE_CHECKING:
    from .pgmessages import Tx

T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS spam_tokens (
    scope BIGINT NOT NULL,
    token TEXT NOT NULL,
    spam BIGINT NOT NULL DEFAULT 0,
    ham BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (scope, token)
);
CREATE TABLE IF NOT EXISTS spam_totals (
    scope BIGINT PRIMARY KEY,
    spam BIGINT NOT NULL DEFAULT 0,
    ham BIGINT NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS spam_lists (
    account_id BIGINT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    entry TEXT NOT NULL,
    kind TEXT NOT NULL,
    PRIMARY KEY (account_id, entry)
);
CREATE TABLE IF NOT EXISTS greylist (
    key TEXT PRIMARY KEY,
    first DOUBLE PRECISION NOT NULL,
    passed BOOLEAN NOT NULL DEFAULT false
);
"""


class SpamMethods:
    if TYPE_CHECKING:
        async def write(self, fn: Callable[[Tx], Awaitable[T]]) -> T: ...

        async def read(self, fn: Callable[[asyncpg.Connection], Awaitable[T]]) -> T: ...

    async def spam_token_counts(self, scope: int, tokens: Sequence[str]) -> tuple[int, int, dict[str, tuple[int, int]]]:
        wanted = list(dict.fromkeys(tokens))

        async def read(conn: asyncpg.Connection) -> tuple[Any, list[asyncpg.Record]]:
            totals = await conn.fetchrow("SELECT spam, ham FROM spam_totals WHERE scope=$1", scope)
            rows = await conn.fetch("SELECT token, spam, ham FROM spam_tokens WHERE scope=$1 AND token = ANY($2)",
                                    scope, wanted)
            return totals, list(rows)

        totals, rows = await self.read(read)
        counts = {str(r[0]): (int(r[1]), int(r[2])) for r in rows}
        return (int(totals[0]), int(totals[1]), counts) if totals else (0, 0, counts)

    async def spam_train(self, account_id: int, tokens: Sequence[str], *, spam: bool) -> None:
        column = "spam" if spam else "ham"
        distinct = sorted(set(tokens))           # one order for every writer: no deadlocks

        async def train(tx: Tx) -> None:
            for scope in sorted((account_id, 0)):
                await tx.conn.execute(
                    f"INSERT INTO spam_totals (scope, {column}) VALUES ($1, 1) "
                    f"ON CONFLICT (scope) DO UPDATE SET {column}=spam_totals.{column}+1", scope)
                await tx.conn.execute(
                    f"INSERT INTO spam_tokens (scope, token, {column}) SELECT $1, t, 1 FROM unnest($2::text[]) t "
                    f"ON CONFLICT (scope, token) DO UPDATE SET {column}=spam_tokens.{column}+1", scope, distinct)

        await self.write(train)

    async def spam_lists(self, account_id: int) -> dict[str, str]:
        async def fetch(conn: asyncpg.Connection) -> list[asyncpg.Record]:
            return list(await conn.fetch("SELECT entry, kind FROM spam_lists WHERE account_id=$1", account_id))

        return {str(r[0]): str(r[1]) for r in await self.read(fetch)}

    async def spam_state(self, account_ids: Sequence[int]) -> SpamState:
        ids = list(dict.fromkeys(account_ids))

        async def fetch(conn: asyncpg.Connection) -> list[asyncpg.Record]:
            return list(await conn.fetch(
                "SELECT account_id, entry, kind, 0::bigint, 0::bigint FROM spam_lists WHERE account_id = ANY($1::bigint[]) "
                "UNION ALL SELECT scope, NULL, NULL, spam, ham FROM spam_totals WHERE scope = ANY($2::bigint[])",
                ids, [0, *ids]))

        return spam_state_from_rows(await self.read(fetch))

    async def set_spam_list(self, account_id: int, entry: str, kind: str | None) -> None:
        async def put(tx: Tx) -> None:
            if kind is None:
                await tx.conn.execute("DELETE FROM spam_lists WHERE account_id=$1 AND entry=$2",
                                      account_id, entry.lower())
            else:
                await tx.conn.execute(
                    "INSERT INTO spam_lists (account_id, entry, kind) VALUES ($1,$2,$3) "
                    "ON CONFLICT (account_id, entry) DO UPDATE SET kind=excluded.kind", account_id, entry.lower(), kind)

        await self.write(put)

    async def greylist_pass(self, key: str, *, now: float, delay: float, expire: float) -> bool:
        async def check(tx: Tx) -> bool:
            await tx.conn.execute("INSERT INTO greylist (key, first) VALUES ($1,$2) ON CONFLICT DO NOTHING", key, now)
            row = await tx.conn.fetchrow("SELECT first, passed FROM greylist WHERE key=$1 FOR UPDATE", key)
            first, passed = float(row[0]), bool(row[1])
            if passed or delay <= now - first <= expire:
                await tx.conn.execute("UPDATE greylist SET passed=true WHERE key=$1", key)
                return True
            if now - first > expire:
                await tx.conn.execute("UPDATE greylist SET first=$2 WHERE key=$1", key, now)
            return False

        return await self.write(check)
