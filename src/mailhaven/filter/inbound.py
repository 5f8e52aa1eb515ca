"""The inbound check of one message: SPF, DKIM and DMARC in parallel, one verdict.

Called once per message at the end of DATA / BDAT LAST (smtp/transaction.py), for
port-25 sessions that did not authenticate. Nothing here writes to the client: the
verdict says what to prepend, what to deliver, where, or that the reply is a refusal.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from publicsuffixlist import PublicSuffixList

from ..config import Config
from ..queue.mx import make_resolver
from . import authresults
from .dkimverify import DkimResult, verify_dkim
from .dmarc import DmarcChecker, DmarcResult
from .dnslookup import make_sync_resolver
from .spf import SpfResult, check_spf


@dataclass(frozen=True, kw_only=True)
class Verdict:
    action: str
    """``deliver``, ``junk`` (file in the Junk mailbox) or ``reject`` (550 5.7.1)."""
    message: bytes
    """The message to store: our Authentication-Results first, forged ones removed."""
    spf: SpfResult | None
    dkim: list[DkimResult] | None
    dmarc: DmarcResult | None

    @property
    def mailbox(self) -> str:
        return "Junk" if self.action == "junk" else "INBOX"


def split_message(message: bytes) -> tuple[bytes, bytes]:
    """(header section with its last CRLF, the rest from the empty line on)."""
    if message.startswith(b"\r\n"):
        return b"", message
    end = message.find(b"\r\n\r\n")
    if end < 0:
        return message, b""
    return message[:end + 2], message[end + 2:]


class InboundFilter:
    """One per process; ``config.filter`` says which checks run."""

    def __init__(self, config: Config, psl: PublicSuffixList | None = None) -> None:
        self.config = config
        self.settings = config.filter
        self.hostname = config.hostname
        self.sync_resolver = make_sync_resolver(config)
        self.dmarc = DmarcChecker(make_resolver(config), psl or PublicSuffixList())

    async def check(self, message: bytes, *, ip: str, helo: str, mail_from: str) -> Verdict:
        s = self.settings
        timeout = s.timeout
        head, body = split_message(message)
        head, _ = authresults.strip_ours(head, self.hostname)       # RFC 8601 5
        spf_task = (asyncio.ensure_future(check_spf(self.sync_resolver, ip, mail_from, helo, timeout))
                    if s.spf else None)
        dkim_results = await verify_dkim(message, self.sync_resolver, timeout) if s.dkim else None
        spf = await spf_task if spf_task is not None else None
        dmarc = None
        if s.dmarc:
            dmarc = await self.dmarc.check(head, spf, dkim_results or [])
        action = "deliver"
        if dmarc is not None and dmarc.result == "fail" and s.dmarc_enforce:
            action = {"reject": "reject", "quarantine": "junk"}.get(dmarc.disposition, "deliver")
        ar = authresults.header(self.hostname, spf, dkim_results, dmarc)
        return Verdict(action=action, message=ar + head + body, spf=spf, dkim=dkim_results, dmarc=dmarc)
