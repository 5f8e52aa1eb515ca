"""Blocking DNS for the libraries that want it (pyspf, dkimpy), through our resolver.

pyspf and dkimpy resolve synchronously; they run in worker threads (never on the event
loop), each with the resolver of ``[dns] nameservers`` built here.
"""

from __future__ import annotations

import dns.exception
import dns.nameserver
import dns.resolver

from ..config import Config

ANSWER_CACHE = 10_000
"""DNS answers remembered (each for its TTL) by the filter's resolvers."""


class DnsTemporaryError(Exception):
    """The resolver timed out or no server answered: a temperror, not a verdict."""


def make_sync_resolver(config: Config) -> dns.resolver.Resolver:
    """A blocking resolver honouring ``[dns] nameservers`` (as queue/mx.py's async one)."""
    from ..queue.mx import configured_resolver

    resolver = configured_resolver(dns.resolver.Resolver, config)
    resolver.cache = dns.resolver.LRUCache(ANSWER_CACHE)          # answers kept for their TTL
    return resolver


def txt_records(resolver: dns.resolver.Resolver, name: str) -> list[bytes]:
    """TXT strings joined per record; [] for NXDOMAIN / no records."""
    try:
        answer = resolver.resolve(name, "TXT")
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        return []
    except (dns.exception.Timeout, dns.resolver.NoNameservers) as exc:
        raise DnsTemporaryError(f"{name}: {exc}") from exc
    return [b"".join(r.strings) for r in answer]
