"""DNS block and allow lists of the client address (RFC 5782).

The address is reversed (IPv4 octets, IPv6 nibbles) under each zone and an A query asked;
an answer in 127.0.0.0/8 lists it (RFC 5782 2.1, 2.3). Spamhaus answers 127.255.255.x to
say a query was refused (public resolver, over quota), DNSWL.org 127.0.0.255: that is no
listing.
"""

from __future__ import annotations

import asyncio
import ipaddress
from functools import lru_cache

import dns.asyncresolver
import dns.exception
import dns.resolver


@lru_cache(maxsize=4096)          # asked for every message; a client sends many
def query_name(ip: str, zone: str) -> str | None:
    """``192.0.2.99`` under ``zen.example`` -> ``99.2.0.192.zen.example``; None for a
    non-global address family oddity (unparsable)."""
    try:
        address = ipaddress.ip_address(ip.split("%")[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    reverse = address.reverse_pointer                                   # RFC 5782 2.1 / 2.4
    base = reverse.rsplit(".", 2)[0]                                    # without in-addr.arpa / ip6.arpa
    return f"{base}.{zone.strip('.')}"


def _listing(addresses: list[str]) -> bool:
    for text in addresses:
        a = ipaddress.ip_address(text)
        refused = text.startswith("127.255.255.") or text == "127.0.0.255"
        if a in ipaddress.ip_network("127.0.0.0/8") and not refused:                         # RFC 5782 2.3
            return True
    return False


def listed_in_memo(resolver: dns.asyncresolver.Resolver, ip: str, zones: tuple[str, ...],
                   expiry: list[float] | None = None) -> list[str] | None:
    """:func:`listed_in` from what the resolver remembers (dnsmemo.py), without a lookup or
    a task; None when some zone's answer is not remembered. ``expiry`` as the resolver's
    ``remembered`` takes it: lowered to when the first answer used expires."""
    remembered = getattr(resolver, "remembered", None)
    if remembered is None:
        return None
    found = []
    for zone in zones:
        name = query_name(ip, zone)
        if name is None:
            continue
        outcome = remembered(name, "A", expiry)
        if outcome is None:
            return None
        if isinstance(outcome, dns.resolver.Answer) and _listing([r.to_text() for r in outcome]):
            found.append(zone)
    return found


async def listed_in(resolver: dns.asyncresolver.Resolver, ip: str, zones: tuple[str, ...],
                    timeout: float) -> list[str]:
    """The zones that list ``ip``; a zone that times out or fails lists nothing."""

    async def one(zone: str) -> str | None:
        name = query_name(ip, zone)
        if name is None:
            return None
        try:
            answer = await asyncio.wait_for(resolver.resolve(name, "A"), timeout)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer, dns.resolver.NoNameservers,
                dns.exception.DNSException, TimeoutError):
            return None
        return zone if _listing([r.to_text() for r in answer]) else None

    found = await asyncio.gather(*(one(z) for z in zones))
    return [z for z in found if z is not None]
