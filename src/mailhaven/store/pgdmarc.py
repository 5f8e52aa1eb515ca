"""PostgreSQL store: DMARC aggregate report data (RFC 7489 7.2), what we received and
what others reported about our domains. Mixed into :class:`mailhaven.store.postgres.PostgresStore`."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar

import asyncpg

from .api import DmarcEvent, DmarcReport

if TYPE_CHECKING:
    from .pgmessages import Tx

T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS dmarc_events (
    day BIGINT NOT NULL,
    header_from TEXT NOT NULL,
    source_ip TEXT NOT NULL,
    disposition TEXT NOT NULL,
    dkim TEXT NOT NULL,
    spf TEXT NOT NULL,
    dkim_domain TEXT NOT NULL,
    dkim_result TEXT NOT NULL,
    spf_domain TEXT NOT NULL,
    spf_result TEXT NOT NULL,
    override TEXT NOT NULL,
    count BIGINT NOT NULL,
    PRIMARY KEY (day, header_from, source_ip, disposition, dkim, spf, dkim_domain, dkim_result,
                 spf_domain, spf_result, override)
);
CREATE TABLE IF NOT EXISTS dmarc_reports (
    org_name TEXT NOT NULL,
    report_id TEXT NOT NULL,
    domain TEXT NOT NULL,
    begin_at BIGINT NOT NULL,
    end_at BIGINT NOT NULL,
    received DOUBLE PRECISION NOT NULL,
    records TEXT NOT NULL,
    PRIMARY KEY (org_name, report_id)
);
CREATE INDEX IF NOT EXISTS dmarc_reports_domain ON dmarc_reports (domain, begin_at);
"""

_KEY = ("day", "header_from", "source_ip", "disposition", "dkim", "spf", "dkim_domain", "dkim_result",
        "spf_domain", "spf_result", "override")


class DmarcMethods:
    if TYPE_CHECKING:
        async def write(self, fn: Callable[[Tx], Awaitable[T]]) -> T: ...

        async def read(self, fn: Callable[[asyncpg.Connection], Awaitable[T]]) -> T: ...

    async def record_dmarc_event(self, event: DmarcEvent) -> None:
        values = [getattr(event, k) for k in _KEY]
        params = ", ".join(f"${i}" for i in range(1, len(_KEY) + 2))

        async def upsert(tx: Tx) -> None:
            await tx.conn.execute(
                f"INSERT INTO dmarc_events ({', '.join(_KEY)}, count) VALUES ({params}) "
                f"ON CONFLICT ({', '.join(_KEY)}) DO UPDATE SET count = dmarc_events.count + EXCLUDED.count",
                *values, event.count)

        await self.write(upsert)

    async def take_dmarc_events(self, before_day: int) -> list[DmarcEvent]:
        async def take(tx: Tx) -> list[DmarcEvent]:
            rows = await tx.conn.fetch(
                f"DELETE FROM dmarc_events WHERE day < $1 RETURNING {', '.join(_KEY)}, count", before_day)
            events = [DmarcEvent(**dict(zip((*_KEY, "count"), r, strict=True))) for r in rows]
            return sorted(events, key=lambda e: (e.day, e.header_from, e.source_ip))

        return await self.write(take)

    async def add_dmarc_report(self, report: DmarcReport) -> bool:
        async def add(tx: Tx) -> bool:
            done = await tx.conn.execute(
                "INSERT INTO dmarc_reports (org_name, report_id, domain, begin_at, end_at, received, records) "
                "VALUES ($1,$2,$3,$4,$5,$6,$7) ON CONFLICT DO NOTHING", report.org_name, report.report_id,
                report.domain.lower(), report.begin, report.end, report.received, report.records)
            return str(done).endswith(" 1")

        return await self.write(add)

    async def list_dmarc_reports(self, domain: str) -> list[DmarcReport]:
        async def fetch(conn: asyncpg.Connection) -> list[DmarcReport]:
            rows = await conn.fetch(
                "SELECT domain, org_name, report_id, begin_at, end_at, received, records FROM dmarc_reports "
                'WHERE domain=$1 ORDER BY begin_at, org_name COLLATE "C", report_id COLLATE "C"', domain.lower())
            return [DmarcReport(domain=r[0], org_name=r[1], report_id=r[2], begin=r[3], end=r[4],
                                received=r[5], records=r[6]) for r in rows]

        return await self.read(fetch)
