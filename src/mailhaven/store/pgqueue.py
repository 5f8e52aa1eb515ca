"""PostgreSQL store: the outbound queue's table (rows as in queuerows.py). Mixed into
:class:`mailhaven.store.postgres.PostgresStore`. Claims use ``FOR UPDATE SKIP LOCKED``,
so runners on several nodes never wait on each other."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

import asyncpg

from .api import QueueEntry
from .queuerows import COLUMNS, INSERT_COLUMNS, entry, rows

if TYPE_CHECKING:
    from ..queue.api import OutboundMessage
    from .pgmessages import Tx

T = TypeVar("T")

SCHEMA = """
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
    lease_until DOUBLE PRECISION,
    tls_policy TEXT NOT NULL DEFAULT ''
);
ALTER TABLE queue ADD COLUMN IF NOT EXISTS tls_policy TEXT NOT NULL DEFAULT '';
CREATE INDEX IF NOT EXISTS queue_due ON queue (state, next_attempt);
"""


def _count(status: str) -> int:
    """The row count of a command status such as ``UPDATE 3``."""
    return int(status.split()[-1])


class QueueMethods:
    if TYPE_CHECKING:
        async def write(self, fn: Callable[[Tx], Awaitable[T]]) -> T: ...

        async def read(self, fn: Callable[[asyncpg.Connection], Awaitable[T]]) -> T: ...

    async def _queue_execute(self, sql: str, *args: Any) -> str:
        async def run(tx: Tx) -> str:
            return await tx.conn.execute(sql, *args)  # type: ignore[no-any-return]

        return await self.write(run)

    async def queue_enqueue(self, message: OutboundMessage, *, now: float | None = None) -> list[int]:
        values = rows(message, time.time() if now is None else now)
        marks = ",".join(f"${i}" for i in range(1, len(values[0]) + 1)) if values else ""

        async def insert(tx: Tx) -> list[int]:
            return [await tx.conn.fetchval(f"INSERT INTO queue ({INSERT_COLUMNS}) VALUES ({marks}) RETURNING id",
                                           *row) for row in values]

        return await self.write(insert)

    async def queue_claim(self, owner: str, *, now: float, lease: float, limit: int) -> list[QueueEntry]:
        async def claim(tx: Tx) -> list[QueueEntry]:
            found = await tx.conn.fetch(
                "UPDATE queue SET lease_owner=$1, lease_until=$2 WHERE id IN (SELECT id FROM queue "
                "WHERE state='queued' AND next_attempt<=$3 AND (lease_until IS NULL OR lease_until<$3) "
                f"ORDER BY next_attempt, id LIMIT $4 FOR UPDATE SKIP LOCKED) RETURNING {COLUMNS}",
                owner, now + lease, now, limit)
            return sorted((entry(r) for r in found), key=lambda e: e.id)

        return await self.write(claim)

    async def queue_release_leases(self, owner: str) -> None:
        await self._queue_execute("UPDATE queue SET lease_owner=NULL, lease_until=NULL WHERE lease_owner=$1", owner)

    async def queue_finish(self, entry_id: int) -> None:
        await self._queue_execute("DELETE FROM queue WHERE id=$1", entry_id)

    async def queue_defer(self, entry_id: int, *, next_attempt: float, reply: str, warned: bool) -> None:
        await self._queue_execute(
            "UPDATE queue SET attempts=attempts+1, next_attempt=$1, last_reply=$2, warned=$3, lease_owner=NULL, "
            "lease_until=NULL WHERE id=$4", next_attempt, reply, warned, entry_id)

    async def queue_list(self) -> list[QueueEntry]:
        async def fetch(conn: asyncpg.Connection) -> list[QueueEntry]:
            return [entry(r) for r in await conn.fetch(f"SELECT {COLUMNS} FROM queue ORDER BY id")]

        return await self.read(fetch)

    async def queue_get(self, entry_id: int) -> QueueEntry | None:
        async def fetch(conn: asyncpg.Connection) -> QueueEntry | None:
            row = await conn.fetchrow(f"SELECT {COLUMNS} FROM queue WHERE id=$1", entry_id)
            return entry(row) if row is not None else None

        return await self.read(fetch)

    async def queue_set_state(self, entry_id: int | None, state: str, *, now: float | None = None) -> int:
        args: list[Any] = [state]
        sets = "state=$1"
        if now is not None:
            args.append(now)
            sets += f", next_attempt=${len(args)}"
        where = ""
        if entry_id is not None:
            args.append(entry_id)
            where = f" WHERE id=${len(args)}"
        return _count(await self._queue_execute(f"UPDATE queue SET {sets}{where}", *args))

    async def queue_delete(self, entry_id: int) -> bool:
        return _count(await self._queue_execute("DELETE FROM queue WHERE id=$1", entry_id)) > 0
