"""The outbound queue's table: one row per recipient, in the same database as the mailboxes.

A row is ``queued`` (waiting for ``next_attempt``) or ``held`` (by the operator). A
delivered or finally failed recipient's row is deleted in the same transaction that
records the outcome; the sender learns of failures by DSN, and the log keeps the story.

Claiming (``claim``) sets ``lease_owner``/``lease_until`` on due rows in one statement,
so several runners (processes, or nodes sharing one PostgreSQL database) never deliver
the same row twice at once; a runner that dies leaves leases that expire and are claimed
again. PostgreSQL uses ``FOR UPDATE SKIP LOCKED`` so runners never wait on each other.

The blob garbage collector keeps every blob a ``queue.blob_id`` names (both backends).
"""

from __future__ import annotations

import sqlite3
import time
import uuid
from dataclasses import dataclass
from typing import Any, Protocol

from .api import OutboundMessage

COLUMNS = ("id, msg, blob_id, size, mail_from, rcpt, domain, notify, orcpt, envid, ret, body, smtputf8, "
           "submitted_by, created, state, attempts, next_attempt, last_reply, warned, lease_owner, lease_until")

SQLITE_SCHEMA = """
CREATE TABLE IF NOT EXISTS queue (
    id INTEGER PRIMARY KEY,
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
    lease_until REAL
);
CREATE INDEX IF NOT EXISTS queue_due ON queue (state, next_attempt);
"""

PG_SCHEMA = """
CREATE TABLE IF NOT EXISTS queue (
    id BIGSERIAL PRIMARY KEY,
    msg TEXT NOT NULL,
    blob_id TEXT NOT NULL REFERENCES blobs(id),
    size BIGINT NOT NULL,
    mail_from TEXT NOT NULL,
    rcpt TEXT NOT NULL,
    domain TEXT NOT NULL,
    notify TEXT,
    orcpt TEXT,
    envid TEXT,
    ret TEXT,
    body TEXT NOT NULL,
    smtputf8 BOOLEAN NOT NULL,
    submitted_by TEXT,
    created DOUBLE PRECISION NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt DOUBLE PRECISION NOT NULL,
    last_reply TEXT NOT NULL DEFAULT '',
    warned BOOLEAN NOT NULL DEFAULT FALSE,
    lease_owner TEXT,
    lease_until DOUBLE PRECISION
);
CREATE INDEX IF NOT EXISTS queue_due ON queue (state, next_attempt);
"""


@dataclass(frozen=True, kw_only=True)
class Entry:
    id: int
    msg: str
    """Shared by the rows of one submitted message (grouped into one transaction)."""
    blob_id: str
    size: int
    mail_from: str
    rcpt: str
    domain: str
    notify: frozenset[str] | None
    orcpt: str | None
    envid: str | None
    ret: str | None
    body: str
    smtputf8: bool
    submitted_by: str | None
    created: float
    state: str
    attempts: int
    next_attempt: float
    last_reply: str
    warned: bool
    lease_owner: str | None
    lease_until: float | None

    def as_json(self) -> dict[str, Any]:
        return {"id": self.id, "message": self.msg, "from": self.mail_from, "to": self.rcpt,
                "domain": self.domain, "size": self.size, "state": self.state, "attempts": self.attempts,
                "created": self.created, "next_attempt": self.next_attempt, "last_reply": self.last_reply,
                "notify": sorted(self.notify) if self.notify is not None else None, "envid": self.envid,
                "ret": self.ret, "blob": self.blob_id}


def _entry(row: Any) -> Entry:
    r = tuple(row)
    notify = frozenset(r[7].split(",")) if r[7] else None
    return Entry(id=int(r[0]), msg=r[1], blob_id=r[2], size=int(r[3]), mail_from=r[4], rcpt=r[5], domain=r[6],
                 notify=notify, orcpt=r[8], envid=r[9], ret=r[10], body=r[11], smtputf8=bool(r[12]),
                 submitted_by=r[13], created=float(r[14]), state=r[15], attempts=int(r[16]),
                 next_attempt=float(r[17]), last_reply=r[18], warned=bool(r[19]), lease_owner=r[20],
                 lease_until=float(r[21]) if r[21] is not None else None)


def _rows(message: OutboundMessage, now: float) -> list[tuple[Any, ...]]:
    msg = uuid.uuid4().hex
    out = []
    for r in message.recipients:
        domain = r.address.rpartition("@")[2].lower()
        notify = ",".join(sorted(r.notify)) if r.notify else None
        out.append((msg, message.blob.id, message.blob.size, message.mail_from, r.address, domain, notify,
                    r.orcpt, message.envid, message.ret, message.body, message.smtputf8,
                    message.authenticated_as, now, "queued", 0, now, "", False))
    return out


class QueueStore(Protocol):
    async def open(self) -> None: ...
    async def enqueue(self, message: OutboundMessage, *, now: float | None = None) -> list[int]: ...
    async def claim(self, owner: str, *, now: float, lease: float, limit: int) -> list[Entry]: ...
    async def release_leases(self, owner: str) -> None: ...
    async def finish(self, entry_id: int) -> None: ...
    async def defer(self, entry_id: int, *, next_attempt: float, reply: str, warned: bool) -> None: ...
    async def list(self) -> list[Entry]: ...
    async def get(self, entry_id: int) -> Entry | None: ...
    async def set_state(self, entry_id: int | None, state: str, *, now: float | None = None) -> int: ...
    async def delete(self, entry_id: int) -> bool: ...


class SQLiteQueue:
    def __init__(self, store: Any) -> None:
        self.db = store.db

    async def open(self) -> None:
        self.db.ensure_schema(SQLITE_SCHEMA)

    async def enqueue(self, message: OutboundMessage, *, now: float | None = None) -> list[int]:
        rows = _rows(message, time.time() if now is None else now)

        def insert(conn: sqlite3.Connection) -> list[int]:
            return [conn.execute(
                "INSERT INTO queue (msg, blob_id, size, mail_from, rcpt, domain, notify, orcpt, envid, ret, body, "
                "smtputf8, submitted_by, created, state, attempts, next_attempt, last_reply, warned) "
                "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?) RETURNING id", row).fetchone()[0] for row in rows]

        return await self.db.write(insert)  # type: ignore[no-any-return]

    async def claim(self, owner: str, *, now: float, lease: float, limit: int) -> list[Entry]:
        def claim(conn: sqlite3.Connection) -> list[Entry]:
            rows = conn.execute(
                f"UPDATE queue SET lease_owner=?, lease_until=? WHERE id IN (SELECT id FROM queue "
                "WHERE state='queued' AND next_attempt<=? AND (lease_until IS NULL OR lease_until<?) "
                f"ORDER BY next_attempt, id LIMIT ?) RETURNING {COLUMNS}",
                (owner, now + lease, now, now, limit)).fetchall()
            return sorted((_entry(r) for r in rows), key=lambda e: e.id)

        return await self.db.write(claim)  # type: ignore[no-any-return]

    async def release_leases(self, owner: str) -> None:
        await self.db.write(lambda conn: conn.execute(
            "UPDATE queue SET lease_owner=NULL, lease_until=NULL WHERE lease_owner=?", (owner,)))

    async def finish(self, entry_id: int) -> None:
        await self.db.write(lambda conn: conn.execute("DELETE FROM queue WHERE id=?", (entry_id,)))

    async def defer(self, entry_id: int, *, next_attempt: float, reply: str, warned: bool) -> None:
        await self.db.write(lambda conn: conn.execute(
            "UPDATE queue SET attempts=attempts+1, next_attempt=?, last_reply=?, warned=?, lease_owner=NULL, "
            "lease_until=NULL WHERE id=?", (next_attempt, reply, warned, entry_id)))

    async def list(self) -> list[Entry]:
        return await self.db.read(  # type: ignore[no-any-return]
            lambda conn: [_entry(r) for r in conn.execute(f"SELECT {COLUMNS} FROM queue ORDER BY id")])

    async def get(self, entry_id: int) -> Entry | None:
        row = await self.db.read(
            lambda conn: conn.execute(f"SELECT {COLUMNS} FROM queue WHERE id=?", (entry_id,)).fetchone())
        return _entry(row) if row is not None else None

    async def set_state(self, entry_id: int | None, state: str, *, now: float | None = None) -> int:
        """``queued`` with ``now``: due at once (retry); ``held``: never attempted."""
        def update(conn: sqlite3.Connection) -> int:
            sets = "state=?" + (", next_attempt=?" if now is not None else "")
            args: list[Any] = [state] + ([now] if now is not None else [])
            where = "" if entry_id is None else " WHERE id=?"
            if entry_id is not None:
                args.append(entry_id)
            return conn.execute(f"UPDATE queue SET {sets}{where}", args).rowcount

        return await self.db.write(update)  # type: ignore[no-any-return]

    async def delete(self, entry_id: int) -> bool:
        n = await self.db.write(lambda conn: conn.execute("DELETE FROM queue WHERE id=?", (entry_id,)).rowcount)
        return bool(n)


class PostgresQueue:
    def __init__(self, store: Any) -> None:
        self.store = store

    async def open(self) -> None:
        await self.store.ensure_schema(PG_SCHEMA)

    async def enqueue(self, message: OutboundMessage, *, now: float | None = None) -> list[int]:
        rows = _rows(message, time.time() if now is None else now)

        async def insert(tx: Any) -> list[int]:
            return [await tx.conn.fetchval(
                "INSERT INTO queue (msg, blob_id, size, mail_from, rcpt, domain, notify, orcpt, envid, ret, body, "
                "smtputf8, submitted_by, created, state, attempts, next_attempt, last_reply, warned) "
                "VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16,$17,$18,$19) RETURNING id", *row)
                for row in rows]

        return await self.store.write(insert)  # type: ignore[no-any-return]

    async def claim(self, owner: str, *, now: float, lease: float, limit: int) -> list[Entry]:
        async def claim(tx: Any) -> list[Entry]:
            rows = await tx.conn.fetch(
                f"UPDATE queue SET lease_owner=$1, lease_until=$2 WHERE id IN (SELECT id FROM queue "
                "WHERE state='queued' AND next_attempt<=$3 AND (lease_until IS NULL OR lease_until<$3) "
                f"ORDER BY next_attempt, id LIMIT $4 FOR UPDATE SKIP LOCKED) RETURNING {COLUMNS}",
                owner, now + lease, now, limit)
            return sorted((_entry(r) for r in rows), key=lambda e: e.id)

        return await self.store.write(claim)  # type: ignore[no-any-return]

    async def _execute(self, sql: str, *args: Any) -> str:
        async def run(tx: Any) -> str:
            return await tx.conn.execute(sql, *args)  # type: ignore[no-any-return]

        return await self.store.write(run)  # type: ignore[no-any-return]

    async def release_leases(self, owner: str) -> None:
        await self._execute("UPDATE queue SET lease_owner=NULL, lease_until=NULL WHERE lease_owner=$1", owner)

    async def finish(self, entry_id: int) -> None:
        await self._execute("DELETE FROM queue WHERE id=$1", entry_id)

    async def defer(self, entry_id: int, *, next_attempt: float, reply: str, warned: bool) -> None:
        await self._execute(
            "UPDATE queue SET attempts=attempts+1, next_attempt=$1, last_reply=$2, warned=$3, lease_owner=NULL, "
            "lease_until=NULL WHERE id=$4", next_attempt, reply, warned, entry_id)

    async def list(self) -> list[Entry]:
        async def fetch(conn: Any) -> list[Entry]:
            return [_entry(r) for r in await conn.fetch(f"SELECT {COLUMNS} FROM queue ORDER BY id")]

        return await self.store.read(fetch)  # type: ignore[no-any-return]

    async def get(self, entry_id: int) -> Entry | None:
        async def fetch(conn: Any) -> Entry | None:
            row = await conn.fetchrow(f"SELECT {COLUMNS} FROM queue WHERE id=$1", entry_id)
            return _entry(row) if row is not None else None

        return await self.store.read(fetch)  # type: ignore[no-any-return]

    async def set_state(self, entry_id: int | None, state: str, *, now: float | None = None) -> int:
        args: list[Any] = [state]
        sets = "state=$1"
        if now is not None:
            args.append(now)
            sets += f", next_attempt=${len(args)}"
        where = ""
        if entry_id is not None:
            args.append(entry_id)
            where = f" WHERE id=${len(args)}"
        status = await self._execute(f"UPDATE queue SET {sets}{where}", *args)
        return int(status.split()[-1])

    async def delete(self, entry_id: int) -> bool:
        status = await self._execute("DELETE FROM queue WHERE id=$1", entry_id)
        return status.split()[-1] != "0"


def queue_store(store: Any) -> QueueStore:
    """The queue table of whichever backend ``store`` is."""
    from ..store.sqlite import SQLiteStore

    if isinstance(store, SQLiteStore):
        return SQLiteQueue(store)
    return PostgresQueue(store)
