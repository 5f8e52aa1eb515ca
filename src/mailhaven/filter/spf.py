"""SPF (RFC 7208) of the envelope sender, with pyspf in a worker thread.

pyspf enforces the RFC's processing limits itself (4.6.4: 10 DNS-querying terms, 2 void
lookups) and maps DNS failures to temperror (2.6.6) and bad records to permerror (2.6.7).
Its DNS goes through our resolver: pyspf calls the module function ``spf.DNSLookup``,
which is replaced once by :func:`_lookup`, reading the resolver of the calling thread.
The whole check is bounded by ``timeout`` on the event loop side too.

An outcome is remembered (:class:`SpfMemo`) for as long as every DNS answer it read stays
in the resolver's cache (each answer's TTL; a negative one for its SOA's negative TTL,
RFC 2308 5): within that time pyspf would read the same answers and reach the same result,
so the next message from the same address, sender and HELO skips the check (a thread hop
and about a tenth of a 4 KB inbound message's CPU, issue 18). A temperror is never kept.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import dns.exception
import dns.name
import dns.rdataclass
import dns.rdatatype
import dns.resolver
import spf as pyspf

_thread = threading.local()


def _lookup(name: str, qtype: str, strict: bool = True, timeout: float = 20) -> list[Any]:
    """pyspf's DNSLookup contract: [((name, qtype), value), ...]."""
    resolver: dns.resolver.Resolver = _thread.resolver
    out: list[Any] = []
    try:
        answer = resolver.resolve(name, qtype, lifetime=timeout)
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer) as exc:
        _read_until(_negative_expiry(resolver, name, qtype, exc))
        return out
    except (dns.exception.Timeout, dns.resolver.NoNameservers) as exc:
        _read_until(0.0)
        raise pyspf.TempError(f"DNS {exc}") from exc
    _read_until(answer.expiration)
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


def _read_until(expiration: float) -> None:
    """The check in this thread read an answer its resolver keeps until ``expiration``."""
    _thread.expires = min(getattr(_thread, "expires", 0.0), expiration)


def _negative_expiry(resolver: dns.resolver.Resolver, name: str, qtype: str, exc: Exception) -> float:
    """When the resolver's cache forgets this NXDOMAIN / empty answer (0: it did not keep it)."""
    if resolver.cache is None:
        return 0.0
    kind = dns.rdatatype.ANY if isinstance(exc, dns.resolver.NXDOMAIN) else dns.rdatatype.from_text(qtype)
    try:
        cached = resolver.cache.get((dns.name.from_text(name), kind, dns.rdataclass.IN))
    except dns.exception.DNSException:
        return 0.0
    return float(cached.expiration) if cached is not None else 0.0


MEMO_ENTRIES = 10_000
"""SPF outcomes an :class:`SpfMemo` keeps (emptied when it fills)."""
MEMO_LONGEST = 3600.0
"""Seconds an outcome that read no DNS at all (an address literal...) is kept."""


class SpfMemo:
    """(client address, sender, HELO) -> the check's (result, reason), until the first of
    the DNS answers it read would leave the resolver's cache."""

    def __init__(self, clock: Callable[[], float] = time.time, entries: int = MEMO_ENTRIES) -> None:
        self.clock = clock
        self.entries = entries
        self._memo: dict[tuple[str, str, str], tuple[float, tuple[str, str]]] = {}

    def get(self, key: tuple[str, str, str]) -> tuple[str, str] | None:
        hit = self._memo.get(key)
        if hit is None:
            return None
        if hit[0] <= self.clock():
            del self._memo[key]
            return None
        return hit[1]

    def put(self, key: tuple[str, str, str], expires: float, outcome: tuple[str, str]) -> None:
        now = self.clock()
        if outcome[0] == "temperror" or expires <= now:
            return
        if len(self._memo) >= self.entries:
            self._memo.clear()
        self._memo[key] = (min(expires, now + MEMO_LONGEST), outcome)


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


def _check(resolver: dns.resolver.Resolver, ip: str, sender: str, helo: str,
           timeout: float) -> tuple[str, str, float]:
    """(result, explanation, until when the DNS answers it read stay cached)."""
    _thread.resolver = resolver
    _thread.expires = math.inf
    try:
        result, explanation = pyspf.check2(i=ip, s=sender, h=helo, querytime=timeout)
    finally:
        _thread.resolver = None
    return str(result), str(explanation), _thread.expires


def _identity(mail_from: str, helo: str) -> tuple[str, str, str]:
    """(identity, sender, domain): RFC 7208 2.4 MAIL FROM; for the null sender postmaster@HELO (2.2)."""
    if mail_from:
        return "mailfrom", mail_from, mail_from.rpartition("@")[2]
    return "helo", f"postmaster@{helo}", helo


def remembered_spf(ip: str, mail_from: str, helo: str, memo: SpfMemo) -> SpfResult | None:
    """:func:`check_spf`'s result when ``memo`` holds it (no task, no thread); else None."""
    identity, sender, domain = _identity(mail_from, helo)
    known = memo.get((ip, sender, helo))
    if known is None:
        return None
    return SpfResult(result=known[0], identity=identity, domain=domain.lower(),
                     sender=sender if mail_from else helo, reason=known[1])


async def check_spf(resolver: dns.resolver.Resolver, ip: str, mail_from: str, helo: str,
                    timeout: float, memo: SpfMemo | None = None) -> SpfResult:
    """RFC 7208 2.4: check MAIL FROM; for the null sender, postmaster@HELO (2.2).
    ``memo``: outcomes kept while their DNS answers are (see the module's docstring)."""
    identity, sender, domain = _identity(mail_from, helo)
    key = (ip, sender, helo)
    known = memo.get(key) if memo is not None else None
    if known is not None:
        result, reason = known
    else:
        try:
            result, reason, expires = await asyncio.wait_for(
                asyncio.to_thread(_check, resolver, ip, sender, helo, timeout), timeout + 1)
        except TimeoutError:
            result, reason = "temperror", "SPF check timed out"         # RFC 7208 4.6.4
        else:
            if memo is not None:
                memo.put(key, expires, (result, reason))
    return SpfResult(result=result, identity=identity, domain=domain.lower(),
                     sender=sender if mail_from else helo, reason=reason)
