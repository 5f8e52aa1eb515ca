"""The inbound check of one message: SPF, DKIM and DMARC in parallel, one verdict.

Called once per message at the end of DATA / BDAT LAST (smtp/transaction.py), for
port-25 sessions that did not authenticate. Nothing here writes to the client: the
verdict says what to prepend, what to deliver, where, or that the reply is a refusal.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO

import dns.resolver
from publicsuffixlist import PublicSuffixList

from ..config import Config
from ..queue.mx import make_resolver
from . import authresults
from .dkimverify import DkimResult, too_large, verify_dkim
from .dmarc import DmarcChecker, DmarcResult
from .dnslookup import ANSWER_CACHE, make_sync_resolver
from .rspamd import strip_spam_fields
from .scanners import Scanners, worse
from .spf import SpfResult, check_spf


@dataclass(frozen=True, kw_only=True)
class Verdict:
    action: str
    """``deliver``, ``junk`` (file in the Junk mailbox) or ``reject`` (550 5.7.1)."""
    header: bytes
    """What to store before the held content from ``body_offset`` on: our
    Authentication-Results, then the message's header section without forged ones."""
    body_offset: int
    spf: SpfResult | None
    dkim: list[DkimResult] | None
    dmarc: DmarcResult | None
    refusal: Any = None
    """The reply refusing the message when a content scanner (filter/scanners.py) did."""
    scan: Any = None
    """The content scanners' ``ScanResult``, when any ran."""

    @property
    def mailbox(self) -> str:
        return "Junk" if self.action == "junk" else "INBOX"


MAX_HEADER = 1024 * 1024
"""Header sections longer than this are stored as they came (no A-R removal, no DMARC)."""


def header_length(start: bytes, size: int) -> int:
    """Length of the header section (with its last CRLF) from the first bytes of a message."""
    if start.startswith(b"\r\n"):
        return 0
    end = start.find(b"\r\n\r\n")
    if end >= 0:
        return end + 2
    return size if len(start) >= size else 0


class InboundFilter:
    """One per process; ``config.filter`` says which checks run."""

    def __init__(self, config: Config, psl: PublicSuffixList | None = None) -> None:
        self.config = config
        self.settings = config.filter
        self.hostname = config.hostname
        self.sync_resolver = make_sync_resolver(config)
        resolver = make_resolver(config)
        resolver.cache = dns.resolver.LRUCache(ANSWER_CACHE)
        self.dmarc = DmarcChecker(resolver, psl or PublicSuffixList())
        self.scanners = Scanners(config)

    async def check(self, content: BinaryIO, size: int, *, ip: str, helo: str, mail_from: str,
                    rcpts: Sequence[str] = (), queue_id: str = "") -> Verdict:
        """``content`` holds the message (``size`` bytes); it is read, never written.
        Messages up to ``filter.dkim_max_size`` are read whole for dkimpy; larger ones
        get ``dkim=policy`` and their DMARC failures are reported, not enforced."""
        s = self.settings
        timeout = s.timeout
        content.seek(0)
        start = content.read(MAX_HEADER + 4)
        head_len = header_length(start, size)
        original_head = start[:head_len]
        head, _ = authresults.strip_ours(original_head, self.hostname)       # RFC 8601 5
        spf_task = (asyncio.ensure_future(check_spf(self.sync_resolver, ip, mail_from, helo, timeout))
                    if s.spf else None)
        dkim_results: list[DkimResult] | None = None
        if s.dkim and size <= s.dkim_max_size:
            content.seek(0)
            dkim_results = await verify_dkim(content.read(), self.sync_resolver, timeout)
        elif s.dkim:
            dkim_results = too_large(original_head)
        spf = await spf_task if spf_task is not None else None
        dmarc = None
        if s.dmarc:
            dmarc = await self.dmarc.check(head, spf, dkim_results or [])
        action = "deliver"
        unverified = any(r.result == "policy" for r in dkim_results or [])
        if dmarc is not None and dmarc.result == "fail" and s.dmarc_enforce and not unverified:
            action = {"reject": "reject", "quarantine": "junk"}.get(dmarc.disposition, "deliver")
        ar = authresults.header(self.hostname, spf, dkim_results, dmarc)
        scan = None
        if action != "reject" and self.scanners.enabled:                  # clamd, rspamd
            scan = await self.scanners.scan(content, size, ip=ip, helo=helo, mail_from=mail_from,
                                            rcpts=rcpts, queue_id=queue_id)
            action = worse(action, scan.action)
            if scan.header:
                ar += scan.header
                head = strip_spam_fields(head)
        return Verdict(action=action, header=ar + head, body_offset=head_len,
                       spf=spf, dkim=dkim_results, dmarc=dmarc,
                       refusal=scan.refusal if scan is not None else None, scan=scan)
