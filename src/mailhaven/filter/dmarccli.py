"""``mailhaven dmarc send-reports|reports``: DMARC aggregate reports (RFC 7489 7.2)."""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from ..cli import load, with_store


def cmd_send(args: argparse.Namespace) -> int:
    """Report everything recorded so far, today's rows included."""
    from ..queue.mx import make_resolver
    from .dmarcreports import DAY, ReportSender

    config = load(args)

    async def send(store: Any) -> list[tuple[str, str]]:
        return await ReportSender(config, store, make_resolver(config)).send(int(time.time() // DAY) + 1)

    sent = with_store(args, send)
    for domain, address in sent:
        print(f"report for {domain} queued to {address}")
    if not sent:
        print("no reports to send")
    return 0


def cmd_reports(args: argparse.Namespace) -> int:
    reports = with_store(args, lambda s: s.list_dmarc_reports(args.domain))
    if args.json:
        print(json.dumps([{"org_name": r.org_name, "report_id": r.report_id, "begin": r.begin, "end": r.end,
                           "records": json.loads(r.records)} for r in reports], indent=1))
        return 0
    if not reports:
        print(f"no DMARC reports about {args.domain}")
    for r in reports:
        begin = time.strftime("%Y-%m-%d %H:%M", time.gmtime(r.begin))
        end = time.strftime("%Y-%m-%d %H:%M", time.gmtime(r.end))
        print(f"{r.org_name}  {r.report_id}  {begin} .. {end} UTC")
        for row in json.loads(r.records):
            print(f"  {row['source_ip']:<40} {row['count']:>6}  disposition={row['disposition']} "
                  f"dkim={row['dkim']} spf={row['spf']}  from={row['header_from']}")
    return 0


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("dmarc", help="DMARC aggregate reports")
    sub = p.add_subparsers(dest="dmarc_command", required=True)
    a = sub.add_parser("send-reports", help="send the reports of everything received so far, now")
    a.set_defaults(func=cmd_send)
    a = sub.add_parser("reports", help="the reports others sent about DOMAIN")
    a.add_argument("domain")
    a.add_argument("--json", action="store_true")
    a.set_defaults(func=cmd_reports)
