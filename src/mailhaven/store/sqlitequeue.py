"""SQLite store: the outbound queue's table (rows as in queuerows.py). Mixed into
:class:`mailhaven.store.sqlite.SQLiteStore`."""

from __future__ import annotations

import sqlite3
import time
from typing import TYPE_CHECKING, Any

from .api import QueueEntry
from .queuerows import COLUMNS, INSERT_COLUMNS, entry, rows

if TYPE_CHECKING:
    from ..queue.api import OutboundMessage
    from .db import Database

# AUTOINCREMENT: an id is never given out twice, even after the rows above it were
# delivered and deleted (plain rowids restart after the highest row goes).
_TABLE = """
CREATE TABLE IF NOT EXISTS queue (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    msg TEXT NOT NULL,
    blob_id TEXT NOT NULL,
    size INTEGER NOT NULL,
    mail_from TEXT NOT NULL,
    rcpt TEXT NOT NULL,
    domain TEXT NOT NULL,
    notify TEXT,
    orcpt TEXT,
    envid TEXT,
    ret TEXT,
    body TEXT NOT NULL,
    smtputf8 INTEGER NOT NULL,
    submitted_by TEXT,
    created REAL NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt REAL NOT NULL,
    last_reply TEXT NOT NULL DEFAULT '',
    warned INTEGER NOT NULL DEFAULT 0,
    lease_owner TEXT,
    lease_until REAL,
    tls_policy TEXT NOT NULL DEFAULT ''
);
"""
_INDEX = "CREATE INDEX IF NOT EXISTS queue_due ON queue (state, next_attempt);\n"
SCHEMA = _TABLE + _INDEX


def upgrade(conn: sqlite3.Connection) -> None:
    """A queue table made by an older version gave ids again once the rows above them were
    gone (``id`` 1 named a new entry after every emptied queue): rebuild it with
    AUTOINCREMENT, keeping its rows and their ids."""
    columns = {r[1] for r in conn.execute("PRAGMA table_info(queue)")}
    if columns and "tls_policy" not in columns:  # RFC 8689: REQUIRETLS / TLS-Required: No per entry
        conn.execute("ALTER TABLE queue ADD COLUMN tls_policy TEXT NOT NULL DEFAULT ''")
    row = conn.execute("SELECT sql FROM sqlite_master WHERE type='table' AND name='queue'").fetchone()
    if row is None or "AUTOINCREMENT" in row[0].upper():
        return
    conn.execute("ALTER TABLE queue RENAME TO queue_before_upgrade")
    conn.execute("DROP INDEX IF EXISTS queue_due")
    conn.execute(_TABLE.strip().rstrip(";"))
    conn.execute(f"INSERT INTO queue ({COLUMNS}) SELECT {COLUMNS} FROM queue_before_upgrade")
    conn.execute("DROP TABLE queue_before_upgrade")
    conn.execute(_INDEX.strip().rstrip(";"))


class QueueMethods:
    if TYPE_CHECKING:
        db: Database

    async def queue_enqueue(self, message: OutboundMessage, *, now: float | None = None) -> list[int]:
        values = rows(message, time.time() if now is None else now)
        marks = ",".join("?" * len(values[0])) if values else ""

        def insert(conn: sqlite3.Connection) -> list[int]:
            return [conn.execute(f"INSERT INTO queue ({INSERT_COLUMNS}) VALUES ({marks}) RETURNING id",
                                 row).fetchone()[0] for row in values]

        return await self.db.write(insert)  # type: ignore[no-any-return]

    async def queue_claim(self, owner: str, *, now: float, lease: float, limit: int) -> list[QueueEntry]:
        def claim(conn: sqlite3.Connection) -> list[QueueEntry]:
            found = conn.execute(
                "UPDATE queue SET lease_owner=?, lease_until=? WHERE id IN (SELECT id FROM queue "
                "WHERE state='queued' AND next_attempt<=? AND (lease_until IS NULL OR lease_until<?) "
                f"ORDER BY next_attempt, id LIMIT ?) RETURNING {COLUMNS}",
                (owner, now + lease, now, now, limit)).fetchall()
            return sorted((entry(r) for r in found), key=lambda e: e.id)

        return await self.db.write(claim)  # type: ignore[no-any-return]

    async def queue_release_leases(self, owner: str) -> None:
        await self.db.write(lambda conn: conn.execute(
            "UPDATE queue SET lease_owner=NULL, lease_until=NULL WHERE lease_owner=?", (owner,)))

    async def queue_finish(self, entry_id: int) -> None:
        await self.db.write(lambda conn: conn.execute("DELETE FROM queue WHERE id=?", (entry_id,)))

    async def queue_defer(self, entry_id: int, *, next_attempt: float, reply: str, warned: bool) -> None:
        await self.db.write(lambda conn: conn.execute(
            "UPDATE queue SET attempts=attempts+1, next_attempt=?, last_reply=?, warned=?, lease_owner=NULL, "
            "lease_until=NULL WHERE id=?", (next_attempt, reply, warned, entry_id)))

    async def queue_list(self) -> list[QueueEntry]:
        return await self.db.read(  # type: ignore[no-any-return]
            lambda conn: [entry(r) for r in conn.execute(f"SELECT {COLUMNS} FROM queue ORDER BY id")])

    async def queue_get(self, entry_id: int) -> QueueEntry | None:
        row = await self.db.read(
            lambda conn: conn.execute(f"SELECT {COLUMNS} FROM queue WHERE id=?", (entry_id,)).fetchone())
        return entry(row) if row is not None else None

    async def queue_set_state(self, entry_id: int | None, state: str, *, now: float | None = None) -> int:
        sets = "state=?" + (", next_attempt=?" if now is not None else "")
        args: list[Any] = [state] + ([now] if now is not None else [])
        where = ""
        if entry_id is not None:
            where = " WHERE id=?"
            args.append(entry_id)
        return await self.db.write(  # type: ignore[no-any-return]
            lambda conn: conn.execute(f"UPDATE queue SET {sets}{where}", args).rowcount)

    async def queue_delete(self, entry_id: int) -> bool:
        n = await self.db.write(lambda conn: conn.execute("DELETE FROM queue WHERE id=?", (entry_id,)).rowcount)
        return bool(n)
