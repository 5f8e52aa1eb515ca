"""Reverse DNS of the client address and the HELO name it gave.

A client with no PTR record, or whose PTR names do not resolve back to its address
(forward-confirmed reverse DNS, RFC 8601 2.7.3 ``iprev``), is more likely a hijacked
host; so is one that greets with a bare IP address, a name without a dot, or our own
name (RFC 5321 4.1.1.1 wants the client's FQDN or an address literal).
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
from functools import lru_cache

import dns.asyncresolver
import dns.exception
import dns.name
import dns.resolver
import dns.reversename

MAX_PTR = 5
"""PTR names followed to their addresses (RFC 8601 2.7.3: a bounded number)."""

ADDRESS_LITERAL = re.compile(r"\[(?:[0-9.]+|IPv6:[0-9A-Fa-f:.]+)\]", re.IGNORECASE)


async def _addresses(resolver: dns.asyncresolver.Resolver, name: str) -> set[str]:
    found: set[str] = set()
    for rdtype in ("A", "AAAA"):
        try:
            answer = await resolver.resolve(name, rdtype)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            continue
        found.update(str(ipaddress.ip_address(r.to_text())) for r in answer)
    return found


@lru_cache(maxsize=4096)
def _ptr_name(ip: str) -> tuple[str, dns.name.Name] | None:
    """(the address in its normal form, its PTR query name); None when unparsable. Asked
    for every message, and a client sends many: parsed once."""
    try:
        address = str(ipaddress.ip_address(ip.split("%")[0]))
    except ValueError:
        return None
    return address, dns.reversename.from_address(address)


async def reverse_dns(resolver: dns.asyncresolver.Resolver, ip: str, timeout: float) -> str:
    """``pass`` (a PTR name resolves back to ``ip``), ``unconfirmed``, ``none`` (no PTR)
    or ``temperror`` (DNS failed: no verdict)."""
    parsed = _ptr_name(ip)
    if parsed is None:
        return "temperror"
    address, ptr = parsed

    async def lookup() -> str:
        try:
            answer = await resolver.resolve(ptr, "PTR")
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return "none"
        names = [r.target.to_text(omit_final_dot=True) for r in answer][:MAX_PTR]
        for name in names:
            if address in await _addresses(resolver, name):
                return "pass"
        return "unconfirmed"

    try:
        return await asyncio.wait_for(lookup(), timeout)
    except (dns.exception.DNSException, TimeoutError):
        return "temperror"


def reverse_dns_memo(resolver: dns.asyncresolver.Resolver, ip: str, expiry: list[float] | None = None) -> str | None:
    """:func:`reverse_dns` from what the resolver remembers (dnsmemo.py), without a lookup
    or a task; None when an answer it needs is not remembered. ``expiry`` as the
    resolver's ``remembered`` takes it: lowered to when the first answer used expires."""
    remembered = getattr(resolver, "remembered", None)
    parsed = _ptr_name(ip)
    if remembered is None or parsed is None:
        return None
    address, ptr = parsed
    answer = remembered(_ptr_text(ptr), "PTR", expiry)
    if answer is None:
        return None
    if not isinstance(answer, dns.resolver.Answer):
        return "none"                                   # NXDOMAIN, NoAnswer
    for name in [r.target.to_text(omit_final_dot=True) for r in answer][:MAX_PTR]:
        found: set[str] = set()
        for rdtype in ("A", "AAAA"):
            outcome = remembered(name, rdtype, expiry)
            if outcome is None:
                return None
            if isinstance(outcome, dns.resolver.Answer):
                found.update(str(ipaddress.ip_address(r.to_text())) for r in outcome)
        if address in found:
            return "pass"
    return "unconfirmed"


@lru_cache(maxsize=4096)
def _ptr_text(ptr: dns.name.Name) -> str:
    """``str(ptr)``, as the resolver's memo keys it (the text of a Name is rebuilt each time)."""
    return str(ptr)


@lru_cache(maxsize=4096)
def _is_address(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def helo_problems(helo: str, own_names: set[str]) -> list[str]:
    """Test names for a bad greeting: HELO_BARE_IP, HELO_NOT_FQDN, HELO_OURS."""
    name = helo.strip().rstrip(".").lower()
    if ADDRESS_LITERAL.fullmatch(name):
        return []                                                        # RFC 5321 4.1.3
    if _is_address(name):
        return ["HELO_BARE_IP"]
    if name in own_names:
        return ["HELO_OURS"]
    if "." not in name:
        return ["HELO_NOT_FQDN"]                                         # RFC 5321 4.1.1.1
    return []
