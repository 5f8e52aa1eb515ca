"""DMARC aggregate reports we send (RFC 7489 7.2): what we received from each domain.

Every inbound message with a DMARC verdict (pass or fail: the domain publishes a policy)
is counted in the store per day, header-from domain, source IP and verdicts
(:func:`record`). Once a day (:class:`ReportService`, and ``mailhaven dmarc send-reports``
on demand) the rows of the finished days are taken from the store, grouped per domain
and day, and for each ``mailto:`` URI of the domain's ``rua`` tag an XML report (the
RFC's Appendix C format), gzipped, is mailed through our own outbound queue. A ``rua``
address in another organizational domain gets reports only when it agrees to receive
them: a ``v=DMARC1`` TXT record at ``<domain>._report._dmarc.<its domain>`` (7.1).
Rows are taken atomically, so two nodes never report the same messages; what a failed
run took is not reported again (reports are best effort, 7.2).
"""

from __future__ import annotations

import asyncio
import email.utils
import gzip
import logging
import re
import time
import uuid
from collections import defaultdict
from collections.abc import Iterable
from email.message import EmailMessage
from typing import Any
from xml.etree import ElementTree as ET

import dns.asyncresolver
import dns.exception
import dns.resolver

from ..queue.api import OutboundMessage, OutboundRecipient
from ..queue.daily import DAY, DailyJob, lease_holder, seconds_until_after_midnight, utc_day
from ..store.api import DmarcEvent
from .dmarc import DmarcChecker, DmarcRecord

log = logging.getLogger("mailhaven.filter")

_SIZE = re.compile(r"(\d+)([kmgt]?)", re.IGNORECASE)
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def record_of(verdict: Any, ip: str, now: float) -> DmarcEvent | None:
    """The row one inbound verdict (filter/inbound.py ``Verdict``) adds, None when the
    From: domain publishes no DMARC policy or no ``rua`` (nobody to report to: no write)."""
    dmarc = verdict.dmarc
    if dmarc is None or dmarc.result not in ("pass", "fail") or not dmarc.from_domain:
        return None
    if dmarc.record is not None and not dmarc.record.rua:
        return None
    disposition = {"reject": "reject", "junk": "quarantine"}.get(verdict.action, "none")
    dkim = [d for d in verdict.dkim or [] if d.domain]
    best = next((d for d in dkim if d.result == "pass"), dkim[0] if dkim else None)
    spf = verdict.spf
    return DmarcEvent(
        day=int(now // DAY), header_from=dmarc.from_domain, source_ip=ip, disposition=disposition,
        dkim="pass" if dmarc.dkim_aligned else "fail", spf="pass" if dmarc.spf_aligned else "fail",
        dkim_domain=best.domain if best else "", dkim_result=best.result if best else "",
        spf_domain=spf.domain if spf else "", spf_result=spf.result if spf else "",
        override="trusted_forwarder" if getattr(verdict, "dmarc_override", None) else "")


async def record(store: Any, verdict: Any, ip: str, now: float | None = None) -> None:
    """Count the verdict; never fails the delivery (the report is best effort)."""
    event = record_of(verdict, ip, time.time() if now is None else now)
    if event is None:
        return
    try:
        await store.record_dmarc_event(event)
    except Exception:  # noqa: BLE001 - a report row must never cost a message
        log.exception("DMARC report row not recorded")


def _sub(parent: ET.Element, tag: str, text: str | int | None = None) -> ET.Element:
    el = ET.SubElement(parent, tag)
    if text is not None:
        el.text = str(text)
    return el


def report_xml(*, org_name: str, email_addr: str, report_id: str, begin: int, end: int,
               domain: str, policy: DmarcRecord, events: Iterable[DmarcEvent]) -> bytes:
    """RFC 7489 Appendix C: ``feedback`` with report_metadata, policy_published, records."""
    root = ET.Element("feedback")
    _sub(root, "version", "1.0")
    meta = _sub(root, "report_metadata")
    _sub(meta, "org_name", org_name)
    _sub(meta, "email", email_addr)
    _sub(meta, "report_id", report_id)
    dates = _sub(meta, "date_range")
    _sub(dates, "begin", begin)
    _sub(dates, "end", end)
    published = _sub(root, "policy_published")
    _sub(published, "domain", domain)
    _sub(published, "adkim", policy.adkim)
    _sub(published, "aspf", policy.aspf)
    _sub(published, "p", policy.p)
    _sub(published, "sp", policy.sp)
    _sub(published, "pct", policy.pct)
    for e in events:
        rec = _sub(root, "record")
        row = _sub(rec, "row")
        _sub(row, "source_ip", e.source_ip)
        _sub(row, "count", e.count)
        evaluated = _sub(row, "policy_evaluated")
        _sub(evaluated, "disposition", e.disposition)
        _sub(evaluated, "dkim", e.dkim)
        _sub(evaluated, "spf", e.spf)
        if e.override:
            _sub(_sub(evaluated, "reason"), "type", e.override)
        _sub(_sub(rec, "identifiers"), "header_from", e.header_from)
        auth = _sub(rec, "auth_results")
        if e.dkim_domain:
            dkim = _sub(auth, "dkim")
            _sub(dkim, "domain", e.dkim_domain)
            _sub(dkim, "result", e.dkim_result if e.dkim_result in _DKIM_RESULTS else "permerror")
        spf = _sub(auth, "spf")                                   # the schema wants one
        _sub(spf, "domain", e.spf_domain or e.header_from)
        _sub(spf, "result", e.spf_result if e.spf_result in _SPF_RESULTS else "none")
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="utf-8")


_DKIM_RESULTS = {"none", "pass", "fail", "policy", "neutral", "temperror", "permerror"}
_SPF_RESULTS = {"none", "neutral", "pass", "fail", "softfail", "temperror", "permerror"}


def report_message(*, sender: str, to: str, org_name: str, domain: str, report_id: str,
                   begin: int, end: int, xml: bytes, hostname: str) -> bytes:
    """RFC 7489 7.2.1.1: the gzipped report as an attachment named
    ``receiver!policy-domain!begin!end.xml.gz``, and the Subject it prescribes."""
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = f"Report Domain: {domain} Submitter: {org_name} Report-ID: <{report_id}>"
    msg["Date"] = email.utils.formatdate(time.time())
    msg["Message-ID"] = f"<{uuid.uuid4().hex}@{hostname}>"
    msg.set_content(f"DMARC aggregate report for {domain} from {org_name}.\n")
    msg.add_attachment(gzip.compress(xml, mtime=0), maintype="application", subtype="gzip",
                       filename=f"{org_name}!{domain}!{begin}!{end}.xml.gz")
    return msg.as_bytes(policy=msg.policy.clone(linesep="\r\n"))


def mailto_targets(rua: Iterable[str]) -> list[tuple[str, int | None]]:
    """(address, size limit) of the ``mailto:`` URIs (RFC 7489 6.2); others are ignored."""
    out = []
    for uri in rua:
        if not uri.lower().startswith("mailto:"):
            continue
        address, _, limit = uri[7:].partition("!")
        address = address.split("?", 1)[0].strip()
        size = None
        if m := _SIZE.fullmatch(limit.strip()):
            size = int(m.group(1)) * _UNITS[m.group(2).lower()]
        if "@" in address:
            out.append((address, size))
    return out


class ReportSender:
    """Takes the recorded rows and mails the reports; one per run of ``send``."""

    def __init__(self, config: Any, store: Any, resolver: dns.asyncresolver.Resolver,
                 checker: DmarcChecker | None = None) -> None:
        self.config = config
        self.store = store
        self.resolver = resolver
        self.checker = checker or DmarcChecker(resolver)
        self.org_name = config.dmarc.org_name or config.hostname
        self.sender = config.dmarc.report_from or f"dmarc-noreply@{config.hostname}"

    async def authorized(self, domain: str, address: str) -> bool:
        """RFC 7489 7.1: a destination outside the domain's organization must publish
        ``<domain>._report._dmarc.<destination domain>`` with ``v=DMARC1``."""
        target = address.rpartition("@")[2].lower().rstrip(".")
        if self.checker.organizational(target) == self.checker.organizational(domain):
            return True
        try:
            answer = await self.resolver.resolve(f"{domain}._report._dmarc.{target}", "TXT")
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer, dns.resolver.NoNameservers, dns.exception.Timeout):
            return False
        texts = [b"".join(r.strings).decode("utf-8", "replace") for r in answer]
        return any(t.replace(" ", "").upper().startswith("V=DMARC1") for t in texts)

    async def send(self, before_day: int) -> list[tuple[str, str]]:
        """Report every day before ``before_day``; returns (domain, address) of each sent."""
        events = await self.store.take_dmarc_events(before_day)
        groups: dict[tuple[str, int], list[DmarcEvent]] = defaultdict(list)
        for e in events:
            groups[(e.header_from, e.day)].append(e)
        sent: list[tuple[str, str]] = []
        for (domain, day), rows in sorted(groups.items()):
            try:
                policy, _ = await self.checker.discover(domain)
            except Exception as exc:  # noqa: BLE001 - one domain's DNS must not stop the others
                log.info("DMARC report for %s not sent: %s", domain, exc)
                continue
            if policy is None or not policy.rua:
                continue
            begin, end = day * DAY, (day + 1) * DAY - 1
            report_id = f"{day}.{uuid.uuid4().hex[:12]}@{self.config.hostname}"
            xml = report_xml(org_name=self.org_name, email_addr=self.sender, report_id=report_id, begin=begin,
                             end=end, domain=domain, policy=policy, events=rows)
            for address, limit in mailto_targets(policy.rua):
                if not await self.authorized(domain, address):
                    log.info("DMARC report for %s: %s did not agree to receive it (RFC 7489 7.1)", domain, address)
                    continue
                data = report_message(sender=self.sender, to=address, org_name=self.org_name, domain=domain,
                                      report_id=report_id, begin=begin, end=end, xml=xml,
                                      hostname=self.config.hostname)
                if limit is not None and len(data) > limit:
                    log.info("DMARC report for %s: larger than %s's limit", domain, address)
                    continue
                blob = await self.store.put_blob(data)
                await self.store.queue_enqueue(OutboundMessage(
                    blob=blob, mail_from=self.sender, recipients=(OutboundRecipient(address=address),)),
                    now=time.time())
                sent.append((domain, address))
                log.info("DMARC report for %s (%d rows) queued to %s", domain, len(rows), address)
        return sent


class ReportService:
    """Sends yesterday's (and any older) reports at start and shortly after each UTC midnight,
    on one node at a time (the store lease ``dmarc-reports``, queue/daily.py)."""

    def __init__(self, ctx: Any) -> None:
        from ..queue.mx import make_resolver

        self.sender = ReportSender(ctx.config, ctx.store, make_resolver(ctx.config))
        self.enabled = bool(ctx.config.dmarc.send)
        self.daily = DailyJob(ctx.store, "dmarc-reports", lease_holder(),
                              lambda now: self.sender.send(utc_day(now)))
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while self.enabled:
            try:
                await self.daily.run_if_due()
            except Exception:  # noqa: BLE001 - the service must never stop the server
                log.exception("DMARC reports failed")
            await asyncio.sleep(seconds_until_after_midnight(time.time()))

    def close(self) -> None:
        self._task.cancel()

    async def wait_closed(self) -> None:
        try:
            await self._task
        except asyncio.CancelledError:
            pass


async def start_service(ctx: Any) -> ReportService:
    """app.py's SERVICES entry; idle with ``[dmarc] send = false``."""
    return ReportService(ctx)
