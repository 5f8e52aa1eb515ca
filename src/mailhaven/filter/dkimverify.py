"""DKIM verification (RFC 6376 6, RFC 8463 ed25519) of every signature, with dkimpy.

The message is never held: each signature's body hash (its canonicalisation, hash and
``l=``) is computed from the spooled file a piece at a time, all in one pass, and dkimpy
is given the header section alone, to check ``bh=`` against those hashes and the header
signature with the key. Runs in worker threads (dkimpy hashes and resolves
synchronously); key records come through our resolver. Results per signature as
RFC 8601 2.7.1 names them.
"""

from __future__ import annotations

import asyncio
import base64
import re
from dataclasses import dataclass
from typing import Any, BinaryIO

import dkim
import dns.resolver
from dkim.canonicalization import InvalidCanonicalizationPolicyError
from dkim.util import InvalidTagValueList, parse_tag_value

from ..message.lineends import LineEndStream
from ..queue.dkim import BodyHash
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


BodyKey = tuple[bytes, bytes, "int | None"]
"""What a body hash depends on: body canonicalisation, ``a=``, ``l=``."""
READ_CHUNK = 1 << 20


def _body_key(value: bytes) -> BodyKey | None:
    """The body hash a DKIM-Signature's value needs, or None when its tags are too broken
    to say (dkimpy then reports why)."""
    try:
        sig = parse_tag_value(value)
        canon = dkim.CanonicalizationPolicy.from_c_value(sig.get(b"c", b"simple/simple"))
        limit = int(sig[b"l"]) if b"l" in sig and sig[b"l"].isdigit() else None
    except (dkim.DKIMException, InvalidTagValueList, InvalidCanonicalizationPolicyError, ValueError):
        return None
    algorithm = sig.get(b"a", b"")
    if algorithm not in dkim.HASH_ALGORITHMS:
        return None
    return canon.body_algorithm.name, algorithm, limit


def _signatures(verifier: dkim.DKIM) -> list[bytes]:
    return [v for k, v in verifier.headers if k.lower() == b"dkim-signature"]


def body_hashes(content: BinaryIO, start: int, size: int, keys: set[BodyKey]) -> dict[BodyKey, bytes]:
    """RFC 6376 3.7 body hashes of ``content[start:size]``, read a piece at a time (one
    :data:`READ_CHUNK` held, whatever the size); one pass computes every hash needed."""
    hashes = {key: BodyHash(key[0], dkim.HASH_ALGORITHMS[key[1]], key[2]) for key in keys}
    if not hashes:
        return {}
    lines = LineEndStream()
    content.seek(start)
    left = size - start
    while left > 0 and not all(h.full for h in hashes.values()):
        piece = content.read(min(READ_CHUNK, left))
        if not piece:
            break
        left -= len(piece)
        data = lines.feed(piece)
        for h in hashes.values():
            h.feed(data)
    tail = lines.finish()
    for h in hashes.values():
        h.feed(tail)
    return {key: base64.b64decode(h.digest()) for key, h in hashes.items()}


class HeaderVerifier(dkim.DKIM):  # type: ignore[misc]
    """dkimpy's verifier given the header block only and body hashes computed from the
    file (:func:`body_hashes`): it checks ``bh=`` against them (RFC 6376 6.1.3 step 1-4),
    then dkimpy's own code hashes the header fields and checks ``b=`` with the key."""

    def __init__(self, header: bytes, hashes: dict[BodyKey, bytes]) -> None:
        super().__init__(header + b"\r\n", minkey=1024)
        self.body_hashes = hashes

    def verify_sig_process(self, sig: dict[bytes, bytes], include_headers: list[bytes],
                           sig_header: tuple[bytes, bytes], dnsfunc: Any) -> bool:
        if not self.tlsrpt and self.seqtlsrpt:                     # as dkimpy checks first
            raise dkim.ValidationError("Message is not tlsrpt and Service Type is tlsrpt")
        key = _body_key(sig_header[1])
        if key is None or key not in self.body_hashes:
            raise dkim.MessageFormatError(f"invalid c= value: {sig.get(b'c')!r}")
        try:
            expected = base64.b64decode(re.sub(rb"\s+", b"", sig[b"bh"]))
        except (TypeError, ValueError) as exc:
            raise dkim.MessageFormatError(str(exc)) from exc
        if self.body_hashes[key] != expected:                      # RFC 6376 6.1.3
            raise dkim.ValidationError("body hash mismatch")
        rest = {k: v for k, v in sig.items() if k != b"bh"}       # dkimpy: header hash and b=
        return bool(super().verify_sig_process(rest, include_headers, sig_header, dnsfunc))


def _prepare(header: bytes, content: BinaryIO, body_start: int, size: int) -> HeaderVerifier:
    verifier = HeaderVerifier(header, {})
    keys = {k for v in _signatures(verifier)[:MAX_SIGNATURES] if (k := _body_key(v)) is not None}
    verifier.body_hashes = body_hashes(content, body_start, size, keys)
    return verifier


def _verify_all(verifier: HeaderVerifier, resolver: dns.resolver.Resolver) -> list[DkimResult]:
    def dnsfunc(name: bytes | str, timeout: int = 5) -> bytes | None:
        qname = name.decode("ascii") if isinstance(name, bytes) else name
        records = txt_records(resolver, qname.rstrip("."))
        return records[0] if records else None

    results: list[DkimResult] = []
    for idx, sig in enumerate(_signatures(verifier)):
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


async def verify_dkim(content: BinaryIO, header: bytes, body_start: int, size: int,
                      resolver: dns.resolver.Resolver, timeout: float) -> list[DkimResult]:
    """Every signature of the message in ``content`` (``size`` bytes; its header section
    ``header``, its body from ``body_start``). The body is hashed from the file first, a
    piece at a time in a worker thread (CPU bound by the size, so outside ``timeout``),
    then the signatures are checked with their keys within ``timeout``."""
    try:
        verifier = await asyncio.to_thread(_prepare, header, content, body_start, size)
    except dkim.DKIMException as exc:                             # a header dkimpy cannot parse
        return [DkimResult(result="permerror", domain=d.domain, selector=d.selector, b=d.b, reason=str(exc))
                for d in too_large(header)]
    try:
        return await asyncio.wait_for(asyncio.to_thread(_verify_all, verifier, resolver), timeout)
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
