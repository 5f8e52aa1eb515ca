"""PostgreSQL store: the MTA-STS policy cache of recipient domains (RFC 8461 5.1). Mixed
into :class:`mailhaven.store.postgres.PostgresStore`."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

import asyncpg

from .api import CachedPolicy, TLSSessions

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
CREATE TABLE IF NOT EXISTS tls_sessions (
    day TEXT NOT NULL,
    domain TEXT NOT NULL,
    policy_type TEXT NOT NULL,
    policy TEXT NOT NULL,
    mx TEXT NOT NULL,
    result TEXT NOT NULL,
    ip TEXT NOT NULL,
    count BIGINT NOT NULL,
    PRIMARY KEY (day, domain, policy_type, mx, result, ip)
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

    async def count_tls_session(self, *, day: str, domain: str, policy_type: str, policy: str, mx: str,
                                result: str, ip: str) -> None:
        async def count(tx: Tx) -> None:
            await tx.conn.execute(
                "INSERT INTO tls_sessions (day, domain, policy_type, policy, mx, result, ip, count) "
                "VALUES ($1,$2,$3,$4,$5,$6,$7,1) ON CONFLICT (day, domain, policy_type, mx, result, ip) "
                "DO UPDATE SET count=tls_sessions.count+1, policy=excluded.policy",
                day, domain.lower(), policy_type, policy, mx.lower(), result, ip)

        await self.write(count)

    async def tls_sessions(self, before_day: str) -> list[TLSSessions]:
        async def fetch(conn: asyncpg.Connection) -> Any:
            return await conn.fetch(
                "SELECT day, domain, policy_type, policy, mx, result, ip, count FROM tls_sessions WHERE day < $1 "
                "ORDER BY day, domain, policy_type, mx, result, ip", before_day)

        return [TLSSessions(day=r[0], domain=r[1], policy_type=r[2], policy=r[3], mx=r[4], result=r[5], ip=r[6],
                            count=int(r[7])) for r in await self.read(fetch)]

    async def forget_tls_sessions(self, day: str) -> None:
        async def forget(tx: Tx) -> None:
            await tx.conn.execute("DELETE FROM tls_sessions WHERE day=$1", day)

        await self.write(forget)

