"""SQLite store: DMARC aggregate report data (RFC 7489 7.2), what we received and what
others reported about our domains. Mixed into :class:`mailhaven.store.sqlite.SQLiteStore`."""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING

from .api import DmarcEvent, DmarcReport

if TYPE_CHECKING:
    from .db import Database

SCHEMA = """
CREATE TABLE IF NOT EXISTS dmarc_events (
    day INTEGER NOT NULL,
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
    count INTEGER NOT NULL,
    PRIMARY KEY (day, header_from, source_ip, disposition, dkim, spf, dkim_domain, dkim_result,
                 spf_domain, spf_result, override)
);
CREATE TABLE IF NOT EXISTS dmarc_reports (
    org_name TEXT NOT NULL,
    report_id TEXT NOT NULL,
    domain TEXT NOT NULL,
    begin_at INTEGER NOT NULL,
    end_at INTEGER NOT NULL,
    received REAL NOT NULL,
    records TEXT NOT NULL,
    PRIMARY KEY (org_name, report_id)
);
CREATE INDEX IF NOT EXISTS dmarc_reports_domain ON dmarc_reports (domain, begin_at);
"""

_KEY = ("day", "header_from", "source_ip", "disposition", "dkim", "spf", "dkim_domain", "dkim_result",
        "spf_domain", "spf_result", "override")


class DmarcMethods:
    if TYPE_CHECKING:
        db: Database

    async def record_dmarc_event(self, event: DmarcEvent) -> None:
        values = [getattr(event, k) for k in _KEY]
        await self.db.write(lambda conn: conn.execute(
            f"INSERT INTO dmarc_events ({', '.join(_KEY)}, count) VALUES ({', '.join('?' * (len(_KEY) + 1))}) "
            f"ON CONFLICT ({', '.join(_KEY)}) DO UPDATE SET count = count + excluded.count",
            (*values, event.count)))

    async def take_dmarc_events(self, before_day: int) -> list[DmarcEvent]:
        def take(conn: sqlite3.Connection) -> list[DmarcEvent]:
            rows = conn.execute(f"SELECT {', '.join(_KEY)}, count FROM dmarc_events WHERE day < ? "
                                "ORDER BY day, header_from, source_ip", (before_day,)).fetchall()
            conn.execute("DELETE FROM dmarc_events WHERE day < ?", (before_day,))
            return [DmarcEvent(**dict(zip((*_KEY, "count"), r, strict=True))) for r in rows]

        return await self.db.write(take)

    async def add_dmarc_report(self, report: DmarcReport) -> bool:
        def add(conn: sqlite3.Connection) -> bool:
            cur = conn.execute(
                "INSERT OR IGNORE INTO dmarc_reports (org_name, report_id, domain, begin_at, end_at, received, "
                "records) VALUES (?,?,?,?,?,?,?)", (report.org_name, report.report_id, report.domain.lower(),
                                                    report.begin, report.end, report.received, report.records))
            return cur.rowcount == 1

        return await self.db.write(add)

    async def list_dmarc_reports(self, domain: str) -> list[DmarcReport]:
        rows = await self.db.read(lambda conn: conn.execute(
            "SELECT domain, org_name, report_id, begin_at, end_at, received, records FROM dmarc_reports "
            "WHERE domain=? ORDER BY begin_at, org_name, report_id", (domain.lower(),)).fetchall())
        return [DmarcReport(domain=r[0], org_name=r[1], report_id=r[2], begin=r[3], end=r[4], received=r[5],
                            records=r[6]) for r in rows]
