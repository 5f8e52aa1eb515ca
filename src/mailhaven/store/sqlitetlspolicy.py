"""SQLite store: the MTA-STS policy cache of recipient domains (RFC 8461 5.1). Mixed into
:class:`mailhaven.store.sqlite.SQLiteStore`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .api import CachedPolicy, TLSSessions

if TYPE_CHECKING:
    from .db import Database

SCHEMA = """
CREATE TABLE IF NOT EXISTS mta_sts_policies (
    domain TEXT PRIMARY KEY,
    policy_id TEXT NOT NULL,
    policy TEXT NOT NULL,
    fetched REAL NOT NULL,
    expires REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS tls_sessions (
    day TEXT NOT NULL,
    domain TEXT NOT NULL,
    policy_type TEXT NOT NULL,
    policy TEXT NOT NULL,
    mx TEXT NOT NULL,
    result TEXT NOT NULL,
    ip TEXT NOT NULL,
    count INTEGER NOT NULL,
    PRIMARY KEY (day, domain, policy_type, mx, result, ip)
);
"""


class TLSPolicyMethods:
    if TYPE_CHECKING:
        db: Database

    async def get_mta_sts_policy(self, domain: str) -> CachedPolicy | None:
        row = await self.db.read(lambda conn: conn.execute(
            "SELECT domain, policy_id, policy, fetched, expires FROM mta_sts_policies WHERE domain=?",
            (domain.lower(),)).fetchone())
        if row is None:
            return None
        return CachedPolicy(domain=row[0], policy_id=row[1], text=row[2], fetched=row[3], expires=row[4])

    async def put_mta_sts_policy(self, policy: CachedPolicy) -> None:
        await self.db.write(lambda conn: conn.execute(
            "INSERT INTO mta_sts_policies (domain, policy_id, policy, fetched, expires) VALUES (?,?,?,?,?) "
            "ON CONFLICT (domain) DO UPDATE SET policy_id=excluded.policy_id, policy=excluded.policy, "
            "fetched=excluded.fetched, expires=excluded.expires",
            (policy.domain.lower(), policy.policy_id, policy.text, policy.fetched, policy.expires)))

    async def count_tls_session(self, *, day: str, domain: str, policy_type: str, policy: str, mx: str,
                                result: str, ip: str) -> None:
        await self.db.write(lambda conn: conn.execute(
            "INSERT INTO tls_sessions (day, domain, policy_type, policy, mx, result, ip, count) "
            "VALUES (?,?,?,?,?,?,?,1) ON CONFLICT (day, domain, policy_type, mx, result, ip) "
            "DO UPDATE SET count=count+1, policy=excluded.policy",
            (day, domain.lower(), policy_type, policy, mx.lower(), result, ip)))

    async def tls_sessions(self, before_day: str) -> list[TLSSessions]:
        rows = await self.db.read(lambda conn: conn.execute(
            "SELECT day, domain, policy_type, policy, mx, result, ip, count FROM tls_sessions WHERE day < ? "
            "ORDER BY day, domain, policy_type, mx, result, ip", (before_day,)).fetchall())
        return [TLSSessions(day=r[0], domain=r[1], policy_type=r[2], policy=r[3], mx=r[4], result=r[5], ip=r[6],
                            count=r[7]) for r in rows]

    async def forget_tls_sessions(self, day: str) -> None:
        await self.db.write(lambda conn: conn.execute("DELETE FROM tls_sessions WHERE day=?", (day,)))

