"""PostgreSQL half of the shared login throttle and of leases (``PgSecurity``, a mixin of
:class:`~.postgres.PostgresStore`).

The tables sit in the store's schema, so every node sees one state. A failure is counted
by ``INSERT ... ON CONFLICT DO UPDATE``, which takes the row lock: two nodes counting at
once both count. Leases are a conditional upsert: taken when free, expired, or already ours.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import asyncpg

from .api import LoginRecord

T = TypeVar("T")

TABLES = """
CREATE TABLE IF NOT EXISTS login_failures (
    address text NOT NULL,
    account text NOT NULL,
    failures integer NOT NULL,
    last_failure double precision NOT NULL,
    blocked_until double precision NOT NULL DEFAULT 0,
    PRIMARY KEY (address, account)
);
CREATE INDEX IF NOT EXISTS login_failures_last ON login_failures (last_failure);
CREATE TABLE IF NOT EXISTS leases (
    name text PRIMARY KEY,
    holder text NOT NULL,
    expires double precision NOT NULL
);
"""

_COLUMNS = "address, account, failures, last_failure, blocked_until"

_COUNT = f"""
INSERT INTO login_failures AS f VALUES ($1, $2, 1, $3, 0)
ON CONFLICT (address, account) DO UPDATE SET
    failures = CASE WHEN $3 - f.last_failure <= $4 OR f.blocked_until > $3 THEN f.failures + 1 ELSE 1 END,
    last_failure = $3,
    blocked_until = CASE WHEN f.blocked_until > $3 THEN f.blocked_until ELSE 0 END
RETURNING {_COLUMNS}
"""


def _record(row: asyncpg.Record) -> LoginRecord:
    return LoginRecord(address=row["address"], account=row["account"], failures=row["failures"],
                       last_failure=row["last_failure"], blocked_until=row["blocked_until"])


async def _count(conn: asyncpg.Connection, address: str, account: str, now: float, window: float,
                 limit: int, block: float) -> LoginRecord:
    row = await conn.fetchrow(_COUNT, address, account, now, window)
    if limit and row["failures"] >= limit:
        row = await conn.fetchrow(
            f"UPDATE login_failures SET blocked_until = GREATEST(blocked_until, $3) "
            f"WHERE address=$1 AND account=$2 RETURNING {_COLUMNS}", address, account, now + block)
    return _record(row)


class PgSecurity:
    write: Callable[[Callable[[Any], Awaitable[Any]]], Awaitable[Any]]
    read: Callable[[Callable[[asyncpg.Connection], Awaitable[Any]]], Awaitable[Any]]

    async def login_records(self, address: str, account: str) -> list[LoginRecord]:
        async def fetch(conn: asyncpg.Connection) -> list[LoginRecord]:
            rows = await conn.fetch(f"SELECT {_COLUMNS} FROM login_failures WHERE address=$1 "
                                    "AND account IN ('', $2)", address, account)
            return [_record(r) for r in rows]

        return list(await self.read(fetch))

    async def login_failed(self, address: str, account: str, *, now: float, window: float,
                           address_limit: int, account_limit: int, block: float) -> list[LoginRecord]:
        async def count(tx: Any) -> list[LoginRecord]:
            conn = tx.conn
            await conn.execute("DELETE FROM login_failures WHERE last_failure < $1 AND blocked_until < $2",
                               now - window, now)
            out = [await _count(conn, address, "", now, window, address_limit, block)]
            if account:
                out.append(await _count(conn, address, account, now, window, account_limit, block))
            return out

        return list(await self.write(count))

    async def login_succeeded(self, address: str, account: str) -> None:
        async def delete(tx: Any) -> None:
            await tx.conn.execute("DELETE FROM login_failures WHERE address=$1 AND account=$2 "
                                  "AND account <> ''", address, account)

        await self.write(delete)

    async def login_blocks(self, now: float) -> list[LoginRecord]:
        async def fetch(conn: asyncpg.Connection) -> list[LoginRecord]:
            rows = await conn.fetch(f"SELECT {_COLUMNS} FROM login_failures WHERE blocked_until > $1 "
                                    "ORDER BY blocked_until DESC, address, account", now)
            return [_record(r) for r in rows]

        return list(await self.read(fetch))

    async def login_unblock(self, address: str) -> int:
        async def delete(tx: Any) -> int:
            status = await tx.conn.execute("DELETE FROM login_failures WHERE address=$1", address)
            return int(status.split()[-1])

        return int(await self.write(delete))

    async def acquire_lease(self, name: str, holder: str, *, ttl: float, now: float) -> bool:
        async def take(tx: Any) -> bool:
            status = await tx.conn.execute(
                "INSERT INTO leases AS l VALUES ($1, $2, $3) ON CONFLICT (name) DO UPDATE SET "
                "holder = EXCLUDED.holder, expires = EXCLUDED.expires "
                "WHERE l.holder = EXCLUDED.holder OR l.expires <= $4", name, holder, now + ttl, now)
            return bool(status.endswith(" 1"))

        return bool(await self.write(take))

    async def release_lease(self, name: str, holder: str) -> None:
        async def delete(tx: Any) -> None:
            await tx.conn.execute("DELETE FROM leases WHERE name=$1 AND holder=$2", name, holder)

        await self.write(delete)
