"""The inbound check of one message: SPF, DKIM and DMARC in parallel, one verdict.

Called once per message at the end of DATA / BDAT LAST (smtp/transaction.py), for
port-25 sessions that did not authenticate. Nothing here writes to the client: the
verdict says what to prepend, what to deliver, where, or that the reply is a refusal.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO

import dns.resolver
from publicsuffixlist import PublicSuffixList

from ..config import Config
from ..queue.mx import configured_resolver
from . import authresults
from .arc import ArcResult, ArcSealer, verify_arc
from .dkimverify import DkimResult, too_large, verify_dkim
from .dmarc import DmarcChecker, DmarcResult
from .dnslookup import ANSWER_CACHE, make_sync_resolver
from .dnsmemo import MemoResolver
from .scanners import Scanners, worse
from .spam.scoring import SpamChecker, SpamResult, strip_spam_fields
from .spf import SpfMemo, SpfResult, check_spf, remembered_spf


@dataclass(frozen=True, kw_only=True)
class Verdict:
    action: str
    """``deliver``, ``junk`` (file in the Junk mailbox), ``reject`` (550 5.7.1, DMARC),
    ``spam`` (550 5.7.1, the spam score) or ``defer`` (451 4.7.1, greylisting)."""
    header: bytes
    """What to store before the held content from ``body_offset`` on: our
    Authentication-Results, then the message's header section without forged ones."""
    body_offset: int
    spf: SpfResult | None
    dkim: list[DkimResult] | None
    dmarc: DmarcResult | None
    arc: ArcResult | None = None
    dmarc_override: str | None = None
    """The trusted ARC sealer whose verdict overrode a DMARC failure (filter/arc.py)."""
    spam: SpamResult | None = None
    refusal: Any = None
    """The reply refusing the message when a content scanner (filter/scanners.py) did."""
    scan: Any = None
    """The content scanners' ``ScanResult``, when any ran."""

    @property
    def mailbox(self) -> str:
        return "Junk" if self.action == "junk" else "INBOX"


MAX_HEADER = 1024 * 1024

SIGNATURE_FIELD = re.compile(rb"^(dkim-signature|arc-seal|arc-message-signature|arc-authentication-results)"
                             rb"[ \t]*:", re.IGNORECASE | re.MULTILINE)
"""A field dkimpy would verify. Without one (most inbound mail) the verdicts are known
without handing the message to dkimpy in a thread: DKIM none (RFC 6376 6.1), ARC none
(RFC 8617 5.2); at 100 KB that parse and body hash was a fifth of a message's CPU."""
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
        self.spf_memo = SpfMemo()
        resolver = configured_resolver(MemoResolver, config)
        resolver.cache = dns.resolver.LRUCache(ANSWER_CACHE)
        self.dmarc = DmarcChecker(resolver, psl or PublicSuffixList())
        self.sealer = ArcSealer.load(config.data_dir, config.hostname)
        """Seals what we forward (sieve/forward.py); keys read at start, as the queue's."""
        self.scanners = Scanners(config)
        # rspamd, when configured, is the spam engine instead of the built-in one.
        self.spam = (SpamChecker(config, resolver) if config.spam.enabled and self.scanners.rspamd is None
                     else None)

    async def check(self, content: BinaryIO, size: int, *, ip: str, helo: str, mail_from: str,
                    store: Any = None, accounts: Sequence[int] = (), recipients: Sequence[str] = (),
                    rcpts: Sequence[str] = (), queue_id: str = "") -> Verdict:
        """``content`` holds the message (``size`` bytes); it is read, never written.
        DKIM body hashes are computed from ``content`` a piece at a time (any size);
        messages over ``filter.dkim_max_size`` (when set) or with a header section over
        :data:`MAX_HEADER` get ``dkim=policy`` and their DMARC failures are reported, not
        enforced."""
        s = self.settings
        timeout = s.timeout
        content.seek(0)
        start = content.read(MAX_HEADER + 4)
        head_len = header_length(start, size)
        original_head = start[:head_len]
        head, _ = authresults.strip_ours(original_head, self.hostname)       # RFC 8601 5
        lookups = self.spam.start_lookups(ip) if self.spam is not None else None
        # A remembered SPF outcome (spf.py SpfMemo, the usual case) needs no task.
        spf_known = remembered_spf(ip, mail_from, helo, self.spf_memo) if s.spf else None
        spf_task = (asyncio.ensure_future(check_spf(self.sync_resolver, ip, mail_from, helo, timeout,
                                                          self.spf_memo))
                    if s.spf and spf_known is None else None)
        dkim_results: list[DkimResult] | None = None
        arc: ArcResult | None = None
        arc_task = None
        signed = {m.lower() for m in SIGNATURE_FIELD.findall(original_head or start[:MAX_HEADER])}
        if s.arc and size <= s.arc_max_size:                # dkimpy's ARC verifier reads it whole
            if signed - {b"dkim-signature"}:
                content.seek(0)
                arc_task = asyncio.ensure_future(verify_arc(content.read(), self.sync_resolver, timeout))
            else:
                arc = ArcResult(result="none")              # RFC 8617 5.2: no ARC sets
        too_big = bool(s.dkim_max_size) and size > s.dkim_max_size
        if s.dkim and b"dkim-signature" not in signed:
            dkim_results = []                                # RFC 6376 6.1: nothing to verify
        elif s.dkim and not too_big and (head_len or start.startswith(b"\r\n")):
            body_start = min(size, head_len + 2)             # after the empty line
            dkim_results = await verify_dkim(content, original_head, body_start, size,
                                             self.sync_resolver, timeout)
        elif s.dkim:
            dkim_results = too_large(original_head or start)
        if arc_task is not None:
            arc = await arc_task
        spf = await spf_task if spf_task is not None else spf_known
        dmarc = None
        if s.dmarc:
            dmarc = await self.dmarc.check(head, spf, dkim_results or [])
        action = "deliver"
        unverified = any(r.result == "policy" for r in dkim_results or [])
        override = None
        if dmarc is not None and dmarc.result == "fail" and arc is not None:
            override = arc.trusted_dmarc_pass(s.arc_trusted)        # RFC 8617 7.2.1
        if (dmarc is not None and dmarc.result == "fail" and s.dmarc_enforce and not unverified
                and override is None):
            action = {"reject": "reject", "quarantine": "junk"}.get(dmarc.disposition, "deliver")
        ar = authresults.header(self.hostname, spf, dkim_results, dmarc, arc, override=override, ip=ip)
        spam = None
        if self.spam is not None and lookups is not None:
            # A DMARC failure a trusted ARC sealer vouched for is not held against the message.
            spam = await self.spam.check(content, head=head, lookups=lookups, ip=ip, helo=helo, mail_from=mail_from,
                                         spf=spf, dkim=dkim_results, dmarc=dmarc if override is None else None,
                                         store=store, accounts=accounts, recipients=recipients)
            if action != "reject" and spam.action != "deliver":
                action = {"reject": "spam"}.get(spam.action, spam.action)
            ar = spam.header() + ar
            head = strip_spam_fields(head)
        scan = None
        if action not in ("reject", "spam") and self.scanners.enabled:      # clamd, rspamd
            scan = await self.scanners.scan(content, size, ip=ip, helo=helo, mail_from=mail_from,
                                            rcpts=rcpts, queue_id=queue_id)
            action = worse(action, scan.action)
            if scan.header:
                ar += scan.header
                head = strip_spam_fields(head)
        return Verdict(action=action, header=ar + head, body_offset=head_len,
                       spf=spf, dkim=dkim_results, dmarc=dmarc, arc=arc, dmarc_override=override, spam=spam,
                       refusal=scan.refusal if scan is not None else None, scan=scan)
