"""``mailhaven tlsrpt send`` (the TLS reports now, rather than after midnight UTC) and
``mailhaven tlsrpt show ADDRESS`` (the reports other servers sent about our domains)."""

from __future__ import annotations

import argparse
import datetime
import json
from typing import Any

from ..cli import load, with_store
from ..store.api import Store
from . import tlsrpt
from .mx import make_resolver


def cmd_send(args: argparse.Namespace) -> int:
    config = load(args)
    tomorrow = (datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=1)).strftime("%Y-%m-%d")

    async def send(store: Store) -> int:
        return await tlsrpt.send_reports(store, make_resolver(config), hostname=config.hostname,
                                         before_day=tomorrow if args.include_today else None)

    print(f"{with_store(args, send)} TLS report(s) queued")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    async def reports(store: Store) -> list[dict[str, Any]]:
        account = await store.get_account(args.address)
        found = []
        for box in await store.list_mailboxes(account.id):
            messages = await store.list_messages(box.id, with_summary=True)
            # RFC 8460 5.3's subject marks a report: only those are read whole.
            wanted = [m.uid for m in messages if str(m.summary.get("subject", "")).startswith("Report Domain:")]
            for _uid, raw in await store.get_raw(box.id, wanted):
                report = tlsrpt.read_report(raw)
                if report is not None:
                    found.append(report)
        return found

    found = with_store(args, reports)
    if args.json:
        print(json.dumps(found, indent=2))
        return 0
    for report in found:
        span = report.get("date-range", {})
        print(f"{report.get('organization-name', '?')}  {span.get('start-datetime', '?')} .. "
              f"{span.get('end-datetime', '?')}  id {report.get('report-id', '?')}")
        for entry in report.get("policies", []):
            policy, summary = entry.get("policy", {}), entry.get("summary", {})
            print(f"  {policy.get('policy-domain', '?')} ({policy.get('policy-type', '?')}): "
                  f"{summary.get('total-successful-session-count', 0)} successful, "
                  f"{summary.get('total-failure-session-count', 0)} failed")
            for failure in entry.get("failure-details", []):
                print(f"    {failure.get('failed-session-count', 0)} x {failure.get('result-type', '?')} "
                      f"{failure.get('receiving-mx-hostname', '')} {failure.get('receiving-ip', '')}".rstrip())
    if not found:
        print("no TLS reports")
    return 0


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("tlsrpt", help="SMTP TLS reports (RFC 8460): send ours, show those received")
    sub = p.add_subparsers(dest="tlsrpt_command", required=True)
    a = sub.add_parser("send", help="queue the reports of the days that are over (the server does so daily)")
    a.add_argument("--include-today", action="store_true", help="report today's sessions too")
    a.set_defaults(func=cmd_send)
    a = sub.add_parser("show", help="the TLS reports in an account's mailboxes")
    a.add_argument("address")
    a.add_argument("--json", action="store_true")
    a.set_defaults(func=cmd_show)
