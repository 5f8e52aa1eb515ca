"""SQLite half of the shared login throttle and of leases (``SQLiteSecurity``, a mixin of
:class:`~.sqlite.SQLiteStore`).

Both tables live in ``mailhaven.db``, so every process on the data directory (the server,
its SMTP workers, the CLI) sees one state, and it survives restarts. Each call is one write
transaction, serialised across processes by the database's write lock.
"""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING

from .api import LoginRecord

if TYPE_CHECKING:
    from .db import Database

SCHEMA = """
CREATE TABLE IF NOT EXISTS login_failures (
    address TEXT NOT NULL,
    account TEXT NOT NULL,
    failures INTEGER NOT NULL,
    last_failure REAL NOT NULL,
    blocked_until REAL NOT NULL DEFAULT 0,
    PRIMARY KEY (address, account)
);
CREATE INDEX IF NOT EXISTS login_failures_last ON login_failures (last_failure);
CREATE TABLE IF NOT EXISTS leases (
    name TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    expires REAL NOT NULL
);
"""

_COLUMNS = "address, account, failures, last_failure, blocked_until"


def _record(row: sqlite3.Row) -> LoginRecord:
    return LoginRecord(address=str(row[0]), account=str(row[1]), failures=int(row[2]),
                       last_failure=float(row[3]), blocked_until=float(row[4]))


def _count(conn: sqlite3.Connection, address: str, account: str, now: float, window: float,
           limit: int, block: float) -> LoginRecord:
    row = conn.execute("SELECT failures, last_failure, blocked_until FROM login_failures "
                       "WHERE address=? AND account=?", (address, account)).fetchone()
    failures, blocked_until = 1, 0.0
    if row is not None:
        blocked_until = float(row[2]) if row[2] > now else 0.0
        if now - float(row[1]) <= window or blocked_until:
            failures = int(row[0]) + 1
    if limit and failures >= limit:
        blocked_until = max(blocked_until, now + block)
    conn.execute("INSERT OR REPLACE INTO login_failures VALUES (?,?,?,?,?)",
                 (address, account, failures, now, blocked_until))
    return LoginRecord(address=address, account=account, failures=failures, last_failure=now,
                       blocked_until=blocked_until)


class SQLiteSecurity:
    db: Database

    async def login_records(self, address: str, account: str) -> list[LoginRecord]:
        rows = await self.db.read(lambda c: c.execute(
            f"SELECT {_COLUMNS} FROM login_failures WHERE address=? AND account IN ('', ?)",
            (address, account)).fetchall())
        return [_record(r) for r in rows]

    async def login_failed(self, address: str, account: str, *, now: float, window: float,
                           address_limit: int, account_limit: int, block: float) -> list[LoginRecord]:
        def write(conn: sqlite3.Connection) -> list[LoginRecord]:
            conn.execute("DELETE FROM login_failures WHERE last_failure < ? AND blocked_until < ?",
                         (now - window, now))
            out = [_count(conn, address, "", now, window, address_limit, block)]
            if account:
                out.append(_count(conn, address, account, now, window, account_limit, block))
            return out

        return await self.db.write(write)

    async def login_succeeded(self, address: str, account: str) -> None:
        await self.db.write(lambda c: c.execute(
            "DELETE FROM login_failures WHERE address=? AND account=? AND account <> ''", (address, account)))

    async def login_blocks(self, now: float) -> list[LoginRecord]:
        rows = await self.db.read(lambda c: c.execute(
            f"SELECT {_COLUMNS} FROM login_failures WHERE blocked_until > ? "
            "ORDER BY blocked_until DESC, address, account", (now,)).fetchall())
        return [_record(r) for r in rows]

    async def login_unblock(self, address: str) -> int:
        return int(await self.db.write(lambda c: c.execute(
            "DELETE FROM login_failures WHERE address=?", (address,)).rowcount))

    async def acquire_lease(self, name: str, holder: str, *, ttl: float, now: float) -> bool:
        def write(conn: sqlite3.Connection) -> bool:
            cur = conn.execute(
                "INSERT INTO leases VALUES (?,?,?) ON CONFLICT (name) DO UPDATE SET "
                "holder=excluded.holder, expires=excluded.expires WHERE leases.holder=excluded.holder "
                "OR leases.expires <= ?", (name, holder, now + ttl, now))
            return cur.rowcount == 1

        return bool(await self.db.write(write))

    async def release_lease(self, name: str, holder: str) -> None:
        await self.db.write(lambda c: c.execute("DELETE FROM leases WHERE name=? AND holder=?", (name, holder)))
