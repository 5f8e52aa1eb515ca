"""The content scanners of the inbound check: clamd (viruses) and rspamd (spam), run side
by side on the held message once SPF/DKIM/DMARC have not already refused it.

Outcome, most severe first: a virus -> 554 5.7.1; rspamd ``reject`` -> 550 5.7.1;
``soft reject`` / ``greylist`` -> 451 4.7.1; ``add header`` / ``rewrite subject`` -> Junk.
A scanner that cannot be reached is logged and, by its ``unreachable`` setting, either
skipped (``accept``) or answered with 451 4.3.0 (``tempfail``) so the sender retries.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import BinaryIO

from ..config import Config
from ..logs import Log
from ..smtp import codes
from ..smtp.codes import Reply
from .clamd import ClamdClient, ClamdUnavailable
from .rspamd import RspamdClient, RspamdResult, RspamdUnavailable

SEVERITY = {"deliver": 0, "junk": 1, "defer": 2, "reject": 3, "spam": 3}


def worse(a: str, b: str) -> str:
    return a if SEVERITY.get(a, 0) >= SEVERITY.get(b, 0) else b


@dataclass(frozen=True, kw_only=True)
class ScanResult:
    action: str
    """``deliver``, ``junk``, ``defer`` or ``reject``."""
    refusal: Reply | None
    header: bytes
    """X-Spam-Status / X-Spam-Score when rspamd scanned the message."""
    virus: str | None = None
    spam: RspamdResult | None = None


class Scanners:
    def __init__(self, config: Config) -> None:
        self.log = Log("filter")
        self.rspamd = (RspamdClient(config.rspamd.url, config.rspamd.timeout, config.hostname)
                       if config.rspamd.url else None)
        self.rspamd_tempfail = config.rspamd.unreachable == "tempfail"
        self.clamd = ClamdClient(config.clamd.socket, config.clamd.timeout) if config.clamd.socket else None
        self.clamd_tempfail = config.clamd.unreachable == "tempfail"
        self.clamd_max_size = config.clamd.max_size

    @property
    def enabled(self) -> bool:
        return self.rspamd is not None or self.clamd is not None

    async def _virus(self, content: BinaryIO, size: int, queue_id: str) -> str | None | Reply:
        if self.clamd is None:
            return None
        if size > self.clamd_max_size:
            self.log.info("not scanned for viruses: too large", id=queue_id, size=size)
            return None
        try:
            return await self.clamd.scan(content)
        except ClamdUnavailable as exc:
            self.log.warning("clamd unavailable", id=queue_id, error=str(exc),
                             then="tempfail" if self.clamd_tempfail else "accept")
            return codes.SCANNER_UNAVAILABLE if self.clamd_tempfail else None

    async def _spam(self, content: BinaryIO, size: int, **envelope: object) -> RspamdResult | Reply | None:
        if self.rspamd is None:
            return None
        try:
            return await self.rspamd.check(content, size, **envelope)  # type: ignore[arg-type]
        except RspamdUnavailable as exc:
            self.log.warning("rspamd unavailable", id=envelope.get("queue_id"), error=str(exc),
                             then="tempfail" if self.rspamd_tempfail else "accept")
            return codes.SCANNER_UNAVAILABLE if self.rspamd_tempfail else None

    async def scan(self, content: BinaryIO, size: int, *, ip: str, helo: str, mail_from: str,
                   rcpts: Sequence[str] = (), queue_id: str = "") -> ScanResult:
        # Both read the same file: clamd first, then rspamd (each seeks to the start).
        virus = await self._virus(content, size, queue_id)
        if isinstance(virus, str):
            self.log.warning("virus found", id=queue_id, virus=virus, sender=mail_from, ip=ip)
            return ScanResult(action="reject", refusal=codes.VIRUS_FOUND, header=b"", virus=virus)
        spam = await self._spam(content, size, ip=ip, helo=helo, mail_from=mail_from, rcpts=rcpts,
                                queue_id=queue_id)
        unavailable = virus if isinstance(virus, Reply) else spam if isinstance(spam, Reply) else None
        if unavailable is not None:
            return ScanResult(action="defer", refusal=unavailable, header=b"")
        if not isinstance(spam, RspamdResult):
            return ScanResult(action="deliver", refusal=None, header=b"")
        refusal = {"reject": codes.SPAM_REJECTED, "defer": codes.SPAM_DEFERRED}.get(spam.action)
        return ScanResult(action=spam.action, refusal=refusal, header=spam.header(), spam=spam)
