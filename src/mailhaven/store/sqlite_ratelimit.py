"""SQLite half of the shared rate counters (``SQLiteRateLimits``, a mixin of
:class:`~.sqlite.SQLiteStore`), behind ``filter/ratelimit.py``.

One row per key holds the count of the current fixed window. The table lives in
``mailhaven.db``, so the server, its SMTP workers and the CLI count together; each call is
one write transaction, serialised across processes by the database's write lock.
"""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .db import Database

SCHEMA = """
CREATE TABLE IF NOT EXISTS rate_counters (
    key TEXT PRIMARY KEY,
    window_start REAL NOT NULL,
    count INTEGER NOT NULL,
    expires REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS rate_counters_expires ON rate_counters (expires);
"""


def window_start(now: float, window: float) -> float:
    """The start of the fixed window holding ``now`` (windows start at multiples of it)."""
    return now - now % window


class SQLiteRateLimits:
    db: Database

    async def rate_take(self, key: str, amount: int, *, now: float, window: float, limit: int) -> int | None:
        start = window_start(now, window)
        if amount > limit:
            return None

        def take(conn: sqlite3.Connection) -> int | None:
            conn.execute("DELETE FROM rate_counters WHERE expires <= ?", (now,))
            row = conn.execute("SELECT count FROM rate_counters WHERE key=? AND window_start=?",
                               (key, start)).fetchone()
            used = int(row[0]) + amount if row is not None else amount
            if used > limit:
                return None
            conn.execute("INSERT OR REPLACE INTO rate_counters VALUES (?,?,?,?)", (key, start, used, start + window))
            return used

        # Not fsynced: a crash may forget the last moments of a window (the limit then
        # counts from less), and the next durable commit's fsync covers it anyway. A
        # durable write here cost one or two fsyncs per inbound message from an address
        # the limits count (MAIL FROM and RCPT waited for them).
        result: int | None = await self.db.write(take, durable=False)
        return result
