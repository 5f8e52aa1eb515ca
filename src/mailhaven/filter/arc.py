"""ARC (RFC 8617): the chain verified on arrival, and sealed by us when we forward.

Verification runs dkimpy's ARC validator in a worker thread with our resolver (as DKIM
does) and keeps what Authentication-Results and the DMARC override need: the chain
status (5.2), the oldest instance whose AMS still validates (``header.oldest-pass``), the
sealing domains and each instance's ARC-Authentication-Results.

A chain that passes, sealed by a domain of ``[filter] arc_trusted`` whose own
ARC-Authentication-Results said ``dmarc=pass``, overrides a local DMARC failure (RFC 8617
7.2.1, as Gmail and rspamd do for mailing lists they trust): the message is delivered and
the override noted in our Authentication-Results.

Sealing (:class:`ArcSealer`) adds ARC-Authentication-Results / ARC-Message-Signature /
ARC-Seal (RFC 8617 4.1) to a message we forward, with an RSA key of the forwarding
domain from ``DATA/dkim`` (ARC is rsa-sha256 only, RFC 8617 4.1.3 / 4.1.2), built from
the Authentication-Results our inbound check wrote (authserv-id = our hostname).
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import dkim
import dns.resolver

from ..queue.dkim import Key, load_keys
from .dnslookup import DnsTemporaryError, txt_records

log = logging.getLogger("mailhaven.filter")

MAX_INSTANCES = 50
"""RFC 8617 4.2.1: i= is at most 50; longer chains fail."""

SEALED_HEADERS = (b"from", b"to", b"cc", b"subject", b"date", b"message-id", b"reply-to",
                  b"in-reply-to", b"references", b"mime-version", b"content-type",
                  b"content-transfer-encoding")
"""What our ARC-Message-Signature covers (RFC 8617 4.1.2: as a DKIM signature would)."""

_DMARC_PASS = re.compile(r"(?:^|[;\s])dmarc\s*=\s*pass\b", re.IGNORECASE)


@dataclass(frozen=True, kw_only=True)
class ArcResult:
    result: str
    """RFC 8617 4.4: ``none``, ``pass`` or ``fail`` (``temperror`` when DNS failed)."""
    instances: int = 0
    oldest_pass: int | None = None
    """RFC 8617 5.2 step 6 / 10.1 ``header.oldest-pass``: 0 when every AMS validates."""
    sealers: tuple[str, ...] = ()
    """The ARC-Seal ``d=`` of each instance, newest first."""
    aar: tuple[str, ...] = ()
    """Each instance's ARC-Authentication-Results value, newest first."""
    reason: str = ""

    def trusted_dmarc_pass(self, trusted: Iterable[str]) -> str | None:
        """The trusted sealer whose ARC-Authentication-Results said dmarc=pass, when the
        chain passed; None otherwise (RFC 8617 7.2.1: the receiver decides whom it trusts)."""
        if self.result != "pass":
            return None
        names = {t.lower().rstrip(".") for t in trusted}
        for sealer, aar in zip(self.sealers, self.aar, strict=False):
            if sealer in names and _DMARC_PASS.search(aar):
                return sealer
        return None


def _verify(message: bytes, resolver: dns.resolver.Resolver) -> ArcResult:
    def dnsfunc(name: bytes | str, timeout: int = 5) -> bytes | None:
        qname = name.decode("ascii") if isinstance(name, bytes) else name
        records = txt_records(resolver, qname.rstrip("."))
        return records[0] if records else None

    try:
        cv, data, reason = dkim.ARC(message, minkey=1024).verify(dnsfunc=dnsfunc)
    except DnsTemporaryError as exc:
        return ArcResult(result="temperror", reason=str(exc))
    except dkim.DKIMException as exc:
        cv, data, reason = dkim.CV_Fail, [], str(exc)
    if cv == dkim.CV_None and not data:
        return ArcResult(result="none")
    sealers = tuple(d.get("as-domain", b"").decode("ascii", "replace").lower() for d in data)
    aar = tuple(d.get("aar-value", b"").decode("utf-8", "replace") for d in data)
    oldest: int | None = None
    for d in data:                                  # newest first: the run of AMS that validate
        if not d.get("ams-valid"):
            break
        oldest = d["instance"]
    if oldest == 1:
        oldest = 0                                  # every AMS validates
    result = "pass" if cv == dkim.CV_Pass else "fail"
    if len(data) > MAX_INSTANCES:
        result, reason = "fail", "more than 50 instances"
    return ArcResult(result=result, instances=len(data), oldest_pass=oldest if result == "pass" else None,
                     sealers=sealers, aar=aar, reason="" if result == "pass" else str(reason))


async def verify_arc(message: bytes, resolver: dns.resolver.Resolver, timeout: float) -> ArcResult:
    try:
        return await asyncio.wait_for(asyncio.to_thread(_verify, message, resolver), timeout)
    except TimeoutError:
        return ArcResult(result="temperror", reason="timed out")


class ArcSealer:
    """Seals messages we forward, with the first RSA DKIM key of the forwarding domain."""

    def __init__(self, keys: list[Key], authserv_id: str) -> None:
        self.authserv_id = authserv_id
        self.keys: dict[str, Key] = {}
        for key in keys:
            if key.algorithm == "rsa":
                self.keys.setdefault(key.domain, key)

    @classmethod
    def load(cls, data_dir: Path, authserv_id: str) -> ArcSealer:
        return cls(load_keys(data_dir), authserv_id)

    def seal(self, message: bytes, domain: str, now: float | None = None) -> bytes:
        """The ARC set (RFC 8617 4.1) to put on top of ``message``, forwarded by ``domain``;
        ``b""`` without an RSA key for the domain or our Authentication-Results to seal."""
        key = self.keys.get(domain.lower().rstrip("."))
        if key is None:
            return b""
        try:
            lines = dkim.arc_sign(message, key.selector.encode(), key.domain.encode(), key.private,
                                  self.authserv_id.encode(), include_headers=list(SEALED_HEADERS),
                                  timestamp=None if now is None else int(now))
        except (dkim.DKIMException, ValueError) as exc:           # authres.SyntaxError is a ValueError
            log.warning("ARC seal by %s failed: %s", domain, exc)
            return b""
        return b"".join(lines)

    async def seal_async(self, message: bytes, domain: str) -> bytes:
        if domain.lower().rstrip(".") not in self.keys:
            return b""
        return await asyncio.to_thread(self.seal, message, domain)
