"""The inbound filter's async resolver, with its answers remembered in front of dnspython.

Every inbound message asks the same few names (the sender's ``_dmarc`` record, the
client's PTR, its DNSBL entries). dnspython's own cache answers them, but each hit still
builds a resolution, and each cached NXDOMAIN a new exception: about a tenth of an
inbound message's CPU at 4 KB. This keeps each outcome for exactly as long as dnspython
keeps it (the answer's TTL; an NXDOMAIN or empty answer for the negative TTL of its SOA,
RFC 2308 5), so what callers see never changes, only what it costs.

A lookup already in flight is not asked again: callers asking the same name and type
meanwhile wait for its outcome. The first message of each of 50 new sessions asks the
same names at once; as 50 queries apiece, a reply the resolver dropped in that burst cost
its session dnspython's whole lifetime (5 s), seen as seconds-long stalls in the
benchmarks at 50 sessions.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import dns.asyncresolver
import dns.name
import dns.rdataclass
import dns.rdatatype
import dns.resolver

MEMO_ENTRIES = 10_000
"""Outcomes remembered; the memo is emptied when it fills (it refills in a few messages)."""


class MemoResolver(dns.asyncresolver.Resolver):
    """``resolve(name, rdtype)`` answers from the memo while the outcome is fresh; any
    other call (TCP, a source address, no raise on no answer...) goes to dnspython."""

    _memo: dict[tuple[str, str], tuple[float, Any]]

    async def resolve(self, qname: dns.name.Name | str, rdtype: Any = dns.rdatatype.A,
                      *args: Any, **kwargs: Any) -> dns.resolver.Answer:
        if args or kwargs or self.cache is None:
            return await super().resolve(qname, rdtype, *args, **kwargs)
        memo = self.__dict__.setdefault("_memo", {})
        key = (str(qname).lower(), str(rdtype))
        hit = memo.get(key)
        if hit is not None and hit[0] > time.time():
            if isinstance(hit[1], dns.resolver.Answer):
                return hit[1]
            raise hit[1].with_traceback(None)
        flying = self.__dict__.setdefault("_flying", {})
        pending = flying.get(key)
        if pending is not None:                     # asked already: wait for that answer
            try:
                return await asyncio.shield(pending)
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if not pending.cancelled() or (task is not None and task.cancelling()):
                    raise                           # this caller was cancelled
            return await self.resolve(qname, rdtype)    # the asker was: ask again
        if len(memo) >= MEMO_ENTRIES:
            memo.clear()
        future: asyncio.Future[dns.resolver.Answer] = asyncio.get_running_loop().create_future()
        flying[key] = future
        try:
            answer = await super().resolve(qname, rdtype)
        except BaseException as exc:
            if isinstance(exc, (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer)):
                expires = self._negative_expiry(qname, rdtype, exc)
                if expires is not None:
                    memo[key] = (expires, exc)
            if isinstance(exc, Exception):
                future.set_exception(exc)
                future.exception()                  # retrieved: no "never retrieved" warning
            else:                                   # cancelled: the waiters ask again themselves
                future.cancel()
            raise
        finally:
            flying.pop(key, None)
        memo[key] = (answer.expiration, answer)
        future.set_result(answer)
        return answer

    def remembered(self, qname: dns.name.Name | str, rdtype: str,
                   expiry: list[float] | None = None) -> dns.resolver.Answer | Exception | None:
        """What :meth:`resolve` would answer at once without a lookup: the fresh Answer,
        the NXDOMAIN or NoAnswer it would raise; None when it would have to ask. Lets the
        inbound checks run in sequence without a task per lookup when all is remembered.
        ``expiry``: its one item is lowered to when this outcome stops being fresh (a
        caller remembering what it made of several outcomes keeps it that long)."""
        if self.cache is None:
            return None
        hit = self.__dict__.get("_memo", {}).get((str(qname).lower(), str(rdtype)))
        if hit is None or hit[0] <= time.time():
            return None
        if expiry is not None and hit[0] < expiry[0]:
            expiry[0] = hit[0]
        return hit[1]  # type: ignore[no-any-return]

    def _negative_expiry(self, qname: dns.name.Name | str, rdtype: Any, exc: Exception) -> float | None:
        """When dnspython's cache forgets this negative outcome (None: it did not keep it)."""
        name = qname if isinstance(qname, dns.name.Name) else dns.name.from_text(qname)
        kind = dns.rdatatype.ANY if isinstance(exc, dns.resolver.NXDOMAIN) else dns.rdatatype.RdataType.make(rdtype)
        assert self.cache is not None
        cached = self.cache.get((name, kind, dns.rdataclass.IN))
        return cached.expiration if cached is not None else None
