"""DKIM verification (RFC 6376 6, RFC 8463 ed25519) of every signature, with dkimpy.

Runs in a worker thread (dkimpy hashes and resolves synchronously); key records come
through our resolver. Results per signature as RFC 8601 2.7.1 names them.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import dkim
import dns.resolver

from .dnslookup import DnsTemporaryError, txt_records

MAX_SIGNATURES = 8
"""Signatures verified per message; the rest are reported as ``policy`` (RFC 6376 6.1)."""


@dataclass(frozen=True, kw_only=True)
class DkimResult:
    result: str
    """pass, fail, neutral, policy, temperror, permerror (RFC 8601 2.7.1)."""
    domain: str
    """The signature's ``d=``."""
    selector: str
    b: str
    """First characters of ``b=`` to tell signatures apart (RFC 6008)."""
    reason: str = ""


def _tag(sig: bytes, name: bytes) -> str:
    for part in sig.split(b";"):
        key, eq, value = part.partition(b"=")
        if eq and key.strip().lower() == name:
            return b"".join(value.split()).decode("ascii", "replace")
    return ""


def _verify_all(message: bytes, resolver: dns.resolver.Resolver) -> list[DkimResult]:
    def dnsfunc(name: bytes | str, timeout: int = 5) -> bytes | None:
        qname = name.decode("ascii") if isinstance(name, bytes) else name
        records = txt_records(resolver, qname.rstrip("."))
        return records[0] if records else None

    verifier = dkim.DKIM(message, minkey=1024)
    signatures = [v for k, v in verifier.headers if k.lower() == b"dkim-signature"]
    results: list[DkimResult] = []
    for idx, sig in enumerate(signatures):
        d, s, b = _tag(sig, b"d").lower(), _tag(sig, b"s"), _tag(sig, b"b")[:8]
        if idx >= MAX_SIGNATURES:
            results.append(DkimResult(result="policy", domain=d, selector=s, b=b,
                                      reason="too many signatures"))
            continue
        try:
            ok = verifier.verify(idx=idx, dnsfunc=dnsfunc)
            result, reason = ("pass", "") if ok else ("fail", "signature did not verify")
        except DnsTemporaryError as exc:
            result, reason = "temperror", str(exc)                 # RFC 6376 6.1.2
        except dkim.KeyFormatError as exc:
            result, reason = "permerror", str(exc)                 # no key / bad key record
        except dkim.ValidationError as exc:
            if "body hash mismatch" in str(exc):                   # RFC 6376 3.7: the body changed
                result, reason = "neutral", "body hash did not verify"   # as Gmail and mailauth say
            else:
                result, reason = "permerror", str(exc)
        except dkim.DKIMException as exc:
            result, reason = "permerror", str(exc)
        results.append(DkimResult(result=result, domain=d, selector=s, b=b, reason=reason))
    return results


async def verify_dkim(message: bytes, resolver: dns.resolver.Resolver, timeout: float) -> list[DkimResult]:
    try:
        return await asyncio.wait_for(asyncio.to_thread(_verify_all, message, resolver), timeout)
    except TimeoutError:
        return [DkimResult(result="temperror", domain="", selector="", b="", reason="timed out")]


def too_large(header: bytes) -> list[DkimResult]:
    """``policy`` for each signature of a message over ``filter.dkim_max_size``."""
    from .authresults import split_fields

    out = []
    for f in split_fields(header):
        name, _, value = f.partition(b":")
        if name.strip().lower() == b"dkim-signature":
            out.append(DkimResult(result="policy", domain=_tag(value, b"d").lower(), selector=_tag(value, b"s"),
                                  b=_tag(value, b"b")[:8], reason="message too large to verify"))
    return out
