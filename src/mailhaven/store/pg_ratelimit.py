"""PostgreSQL half of the shared rate counters (``PgRateLimits``, a mixin of
:class:`~.postgres.PostgresStore`), behind ``filter/ratelimit.py``.

One row per key holds the count of the current fixed window. A take is one conditional
``INSERT ... ON CONFLICT DO UPDATE ... WHERE``: the row lock makes two nodes taking at
once both count, and the ``WHERE`` leaves the row alone (no row returned) when the take
would pass the limit.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from .sqlite_ratelimit import window_start

TABLES = """
CREATE TABLE IF NOT EXISTS rate_counters (
    key text PRIMARY KEY,
    window_start double precision NOT NULL,
    count integer NOT NULL,
    expires double precision NOT NULL
);
CREATE INDEX IF NOT EXISTS rate_counters_expires ON rate_counters (expires);
"""

_TAKE = """
INSERT INTO rate_counters AS r VALUES ($1, $2, $3, $5)
ON CONFLICT (key) DO UPDATE SET
    window_start = $2,
    expires = $5,
    count = CASE WHEN r.window_start = $2 THEN r.count + $3 ELSE $3 END
WHERE r.window_start <> $2 OR r.count + $3 <= $4
RETURNING count
"""


class PgRateLimits:
    write: Callable[[Callable[[Any], Awaitable[Any]]], Awaitable[Any]]

    async def rate_take(self, key: str, amount: int, *, now: float, window: float, limit: int) -> int | None:
        start = window_start(now, window)
        if amount > limit:
            return None

        async def take(tx: Any) -> int | None:
            await tx.conn.execute("DELETE FROM rate_counters WHERE expires <= $1", now)
            count = await tx.conn.fetchval(_TAKE, key, start, amount, limit, start + window)
            return None if count is None else int(count)

        result: int | None = await self.write(take)
        return result
