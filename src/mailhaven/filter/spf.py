"""SPF (RFC 7208) of the envelope sender, with pyspf in a worker thread.

pyspf enforces the RFC's processing limits itself (4.6.4: 10 DNS-querying terms, 2 void
lookups) and maps DNS failures to temperror (2.6.6) and bad records to permerror (2.6.7).
Its DNS goes through our resolver: pyspf calls the module function ``spf.DNSLookup``,
which is replaced once by :func:`_lookup`, reading the resolver of the calling thread.
The whole check is bounded by ``timeout`` on the event loop side too.
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass
from typing import Any

import dns.exception
import dns.resolver
import spf as pyspf

_thread = threading.local()


def _lookup(name: str, qtype: str, strict: bool = True, timeout: float = 20) -> list[Any]:
    """pyspf's DNSLookup contract: [((name, qtype), value), ...]."""
    resolver: dns.resolver.Resolver = _thread.resolver
    out: list[Any] = []
    try:
        answer = resolver.resolve(name, qtype, lifetime=timeout)
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        return out
    except (dns.exception.Timeout, dns.resolver.NoNameservers) as exc:
        raise pyspf.TempError(f"DNS {exc}") from exc
    for rdata in answer:
        if qtype in ("A", "AAAA"):
            out.append(((name, qtype), rdata.address))
        elif qtype == "MX":
            out.append(((name, qtype), (rdata.preference, rdata.exchange)))
        elif qtype == "PTR":
            out.append(((name, qtype), rdata.target.to_text(True)))
        elif qtype in ("TXT", "SPF"):
            out.append(((name, qtype), rdata.strings))
    return out


pyspf.DNSLookup = _lookup


@dataclass(frozen=True, kw_only=True)
class SpfResult:
    result: str
    """RFC 7208 2.6: none, neutral, pass, fail, softfail, temperror, permerror."""
    identity: str
    """``mailfrom`` or ``helo`` (RFC 7208 2.3 / 2.4)."""
    domain: str
    """The domain checked: MAIL FROM's, or the HELO name for the null sender."""
    sender: str
    """What goes in ``smtp.mailfrom`` / ``smtp.helo``."""
    reason: str = ""


def _check(resolver: dns.resolver.Resolver, ip: str, sender: str, helo: str, timeout: float) -> tuple[str, str]:
    _thread.resolver = resolver
    try:
        result, explanation = pyspf.check2(i=ip, s=sender, h=helo, querytime=timeout)
    finally:
        _thread.resolver = None
    return str(result), str(explanation)


async def check_spf(resolver: dns.resolver.Resolver, ip: str, mail_from: str, helo: str,
                    timeout: float) -> SpfResult:
    """RFC 7208 2.4: check MAIL FROM; for the null sender, postmaster@HELO (2.2)."""
    if mail_from:
        identity, sender = "mailfrom", mail_from
        domain = mail_from.rpartition("@")[2]
    else:
        identity, sender, domain = "helo", f"postmaster@{helo}", helo
    try:
        result, reason = await asyncio.wait_for(
            asyncio.to_thread(_check, resolver, ip, sender, helo, timeout), timeout + 1)
    except TimeoutError:
        result, reason = "temperror", "SPF check timed out"             # RFC 7208 4.6.4
    return SpfResult(result=result, identity=identity, domain=domain.lower(),
                     sender=sender if mail_from else helo, reason=reason)
