"""PostgreSQL store: the MTA-STS policy cache of recipient domains (RFC 8461 5.1). Mixed
into :class:`mailhaven.store.postgres.PostgresStore`."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

import asyncpg

from .api import CachedPolicy

if TYPE_CHECKING:
    from .pgmessages import Tx

T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS mta_sts_policies (
    domain TEXT PRIMARY KEY,
    policy_id TEXT NOT NULL,
    policy TEXT NOT NULL,
    fetched DOUBLE PRECISION NOT NULL,
    expires DOUBLE PRECISION NOT NULL
);
"""


class TLSPolicyMethods:
    if TYPE_CHECKING:
        async def write(self, work: Callable[[Tx], Awaitable[T]]) -> T: ...

        async def read(self, fn: Callable[[asyncpg.Connection], Awaitable[T]]) -> T: ...

    async def get_mta_sts_policy(self, domain: str) -> CachedPolicy | None:
        async def fetch(conn: asyncpg.Connection) -> Any:
            return await conn.fetchrow(
                "SELECT domain, policy_id, policy, fetched, expires FROM mta_sts_policies WHERE domain=$1",
                domain.lower())

        row = await self.read(fetch)
        if row is None:
            return None
        return CachedPolicy(domain=row[0], policy_id=row[1], text=row[2], fetched=row[3], expires=row[4])

    async def put_mta_sts_policy(self, policy: CachedPolicy) -> None:
        async def put(tx: Tx) -> None:
            await tx.conn.execute(
                "INSERT INTO mta_sts_policies (domain, policy_id, policy, fetched, expires) "
                "VALUES ($1,$2,$3,$4,$5) ON CONFLICT (domain) DO UPDATE SET policy_id=excluded.policy_id, "
                "policy=excluded.policy, fetched=excluded.fetched, expires=excluded.expires",
                policy.domain.lower(), policy.policy_id, policy.text, policy.fetched, policy.expires)

        await self.write(put)
