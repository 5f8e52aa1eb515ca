"""SMTP TLS Reporting (RFC 8460), the sending side: how our deliveries to domains with an
MTA-STS policy or DANE records fared, told to those domains once a day.

The queue counts every session it opens (or fails to open) to a host under such a policy
in the store (:meth:`Store.count_tls_session`, one row per day, domain, MX, outcome and
address, shared by every node). Once a UTC day is over, :func:`send_reports` builds one
JSON report per policy domain (4.4), gzips it and mails it (5.3) to each ``mailto:`` of
the domain's ``_smtp._tls`` TXT record (3) through our own outbound queue, where it is
DKIM-signed as it leaves (5.3: MUST be signed). Domains without such a record get none.
"""

from __future__ import annotations

import datetime
import gzip
import json
import re
import secrets
import time
from collections import defaultdict
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from typing import Any

import dns.exception
import dns.resolver

from ..logs import Log
from ..store.api import TLSSessions
from .api import OutboundMessage, OutboundRecipient

MEDIA_TYPE = "application/tlsrpt+gzip"                  # RFC 8460 6.4
log = Log("tlsrpt")


def today(now: float | None = None) -> str:
    return datetime.datetime.fromtimestamp(time.time() if now is None else now, datetime.UTC).strftime("%Y-%m-%d")


async def count(store: Any, hop: Any, *, result: str = "", ip: str = "", domain: str,
                now: float | None = None) -> None:
    """Count one session to ``hop`` (a :class:`~mailhaven.queue.mx.Hop`) when a TLS policy
    governs it: MTA-STS enforce (``sts``) or DANE (``tlsa``)."""
    if hop.policy == "mta-sts":
        kind = "sts"
    elif hop.policy == "DANE":
        kind = "tlsa"
    else:
        return
    await store.count_tls_session(day=today(now), domain=domain, policy_type=kind, policy=hop.policy_text,
                                  mx=hop.name, result=result, ip=ip or (hop.addresses[0] if hop.addresses else ""))


async def count_route_failure(store: Any, domain: str, tls: tuple[str, str, str], now: float | None = None) -> None:
    """A policy that left no host to try (no MX matched, TLSA lookups failed)."""
    kind, policy, result = tls
    await store.count_tls_session(day=today(now), domain=domain, policy_type=kind, policy=policy, mx="",
                                  result=result, ip="")


def build_report(rows: list[TLSSessions], *, organization: str, contact: str, report_id: str) -> dict[str, Any]:
    """One RFC 8460 4.4 report for the rows of one day and one policy domain."""
    day = rows[0].day
    policies: dict[tuple[str, str], list[TLSSessions]] = defaultdict(list)
    for row in rows:
        policies[(row.policy_type, row.policy)].append(row)
    out = []
    for (kind, text), group in policies.items():
        mx = sorted({r.mx for r in group if r.mx})
        policy: dict[str, Any] = {"policy-type": kind, "policy-string": text.split("\n") if text else [],
                                  "policy-domain": group[0].domain}
        if mx:
            policy["mx-host"] = mx
        failures = [{"result-type": r.result, "sending-mta-ip": "", "receiving-mx-hostname": r.mx,
                     "receiving-ip": r.ip, "failed-session-count": r.count} for r in group if r.result]
        for failure in failures:                      # optional fields: only what we know
            for key in ("sending-mta-ip", "receiving-mx-hostname", "receiving-ip"):
                if not failure[key]:
                    del failure[key]
        out.append({"policy": policy,
                    "summary": {"total-successful-session-count": sum(r.count for r in group if not r.result),
                                "total-failure-session-count": sum(r.count for r in group if r.result)},
                    **({"failure-details": failures} if failures else {})})
    return {"organization-name": organization,
            "date-range": {"start-datetime": f"{day}T00:00:00Z", "end-datetime": f"{day}T23:59:59Z"},
            "contact-info": contact, "report-id": report_id, "policies": out}


def rua_of(records: list[str]) -> list[str]:
    """RFC 8460 3: the ``mailto:`` addresses of the one ``v=TLSRPTv1`` record."""
    ours = [r for r in records if re.match(r"v=TLSRPTv1\s*;", r)]
    if len(ours) != 1:
        return []
    fields = dict(re.findall(r"\s*([a-z]+)\s*=\s*([^;]*)", ours[0]))
    addresses = []
    for uri in fields.get("rua", "").split(","):
        uri = uri.strip()
        if uri.lower().startswith("mailto:"):
            addresses.append(uri[7:].split("?", 1)[0])
    return addresses


def report_message(report: dict[str, Any], *, domain: str, submitter: str, sender: str, to: list[str]) -> bytes:
    """RFC 8460 5.3: multipart/report (report-type=tlsrpt) with the gzipped JSON."""
    start = report["date-range"]["start-datetime"]
    end = report["date-range"]["end-datetime"]
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = ", ".join(to)
    msg["Subject"] = f"Report Domain: {domain} Submitter: {submitter} Report-ID: <{report['report-id']}>"
    msg["Date"] = format_datetime(datetime.datetime.now(datetime.UTC))
    msg["Message-ID"] = make_msgid(domain=submitter)
    msg["TLS-Report-Domain"] = domain
    msg["TLS-Report-Submitter"] = submitter
    msg["Auto-Submitted"] = "auto-generated"
    msg.set_content(f"This is an aggregate TLS report from {submitter} about mail sent to {domain} "
                    f"between {start} and {end} (RFC 8460).\n")
    stamp = lambda value: re.sub(r"\D", "", value)[:14]   # noqa: E731 - filename parts (5.3)
    name = f"{submitter}!{domain}!{stamp(start)}!{stamp(end)}!{report['report-id'].split('@')[0]}.json.gz"
    msg.add_attachment(gzip.compress(json.dumps(report, indent=1).encode()), maintype="application",
                       subtype="tlsrpt+gzip", filename=name)
    msg.replace_header("Content-Type", 'multipart/report; report-type="tlsrpt"; boundary="'
                       + str(msg.get_boundary()) + '"')
    return msg.as_bytes(policy=msg.policy.clone(linesep="\r\n"))


async def send_reports(store: Any, resolver: Any, *, hostname: str, before_day: str | None = None) -> int:
    """Report every complete day (before ``before_day``, default today); returns how many
    reports were queued. Each day's counts are dropped once its reports are queued."""
    rows = await store.tls_sessions(before_day or today())
    by_day: dict[str, dict[str, list[TLSSessions]]] = defaultdict(lambda: defaultdict(list))
    for row in rows:
        by_day[row.day][row.domain].append(row)
    queued = 0
    for day, domains in sorted(by_day.items()):
        for domain, group in sorted(domains.items()):
            try:
                answer = await resolver.resolve(f"_smtp._tls.{domain}", "TXT")
                rua = rua_of([b"".join(r.strings).decode("utf-8", "replace") for r in answer])
            except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
                rua = []
            except (dns.exception.Timeout, dns.resolver.NoNameservers) as exc:
                log.warning("no report sent: TXT lookup failed", domain=domain, day=day, error=str(exc))
                continue
            if not rua:
                continue
            report_id = f"{day}.{secrets.token_hex(6)}@{hostname}"
            report = build_report(group, organization=hostname, contact=f"postmaster@{hostname}",
                                  report_id=report_id)
            raw = report_message(report, domain=domain, submitter=hostname, sender=f"postmaster@{hostname}",
                                 to=rua)
            blob = await store.put_blob(raw)
            await store.queue_enqueue(OutboundMessage(
                blob=blob, mail_from=f"postmaster@{hostname}",
                recipients=tuple(OutboundRecipient(address=a, notify=frozenset({"NEVER"})) for a in rua)))
            log.info("report queued", domain=domain, day=day, to=",".join(rua), id=report_id)
            queued += 1
        await store.forget_tls_sessions(day)
    return queued


def read_report(raw: bytes) -> dict[str, Any] | None:
    """The JSON of a TLS report message (application/tlsrpt+gzip or +json), None if it is none."""
    from email import message_from_bytes, policy

    message = message_from_bytes(raw, policy=policy.default)
    for part in message.walk():
        kind = part.get_content_type()
        if kind not in ("application/tlsrpt+gzip", "application/tlsrpt+json"):
            continue
        data = part.get_payload(decode=True)
        if not isinstance(data, bytes):
            continue
        try:
            if kind.endswith("gzip"):
                data = gzip.decompress(data)
            report = json.loads(data)
        except (OSError, ValueError, EOFError):
            return None
        return report if isinstance(report, dict) else None
    return None
