"""SQLite store: the MTA-STS policy cache of recipient domains (RFC 8461 5.1). Mixed into
:class:`mailhaven.store.sqlite.SQLiteStore`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .api import CachedPolicy

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
