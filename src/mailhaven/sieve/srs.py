"""The Sender Rewriting Scheme for mail we forward (Sieve ``redirect``), sans-IO.

A forwarded message leaves with ``SRS0=HASH=TT=domain=local@our-domain`` as its envelope
sender, so SPF at the next hop checks our domain, and a bounce comes back to us: the
address is accepted on port 25 when its HMAC is ours and not older than
:data:`MAX_AGE_DAYS`, and forwarded to ``local@domain``. HASH is the first
:data:`HASH_CHARS` base32 characters of HMAC-SHA256(key, "TT=domain=local" lower-cased),
TT the day number modulo 1024 in two base32 characters (the scheme of libsrs2 /
postsrsd: SRS0 only, an SRS address forwarded again is not rewritten twice)."""

from __future__ import annotations

import base64
import hashlib
import hmac

PREFIX = "SRS0="
HASH_CHARS = 6
MAX_AGE_DAYS = 21
_B32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
_DAY = 86400


def _stamp(now: float) -> str:
    day = int(now // _DAY) % 1024
    return _B32[day >> 5] + _B32[day & 31]


def _hash(key: bytes, text: str) -> str:
    digest = hmac.new(key, text.lower().encode("utf-8"), hashlib.sha256).digest()
    return base64.b32encode(digest).decode()[:HASH_CHARS]


def forward(sender: str, our_domain: str, key: bytes, now: float) -> str:
    """The envelope sender for a message from ``sender`` we forward; "" stays "" (a
    bounce is never bounced), and an SRS0 address of ours is kept as it is."""
    if not sender:
        return ""
    local, at, domain = sender.rpartition("@")
    if not at:
        return sender
    if local[:5].upper() == PREFIX.upper() and domain.lower() == our_domain.lower():
        return sender
    stamp = _stamp(now)
    body = f"{stamp}={domain}={local}"
    return f"{PREFIX}{_hash(key, body)}={body}@{our_domain}"


def reverse(address: str, key: bytes, now: float) -> str | None:
    """The original sender of an SRS0 address of ours, None when it is not one (wrong
    prefix, hash or expired stamp)."""
    local, at, _ = address.rpartition("@")
    if not at or local[:5].upper() != PREFIX.upper():
        return None
    parts = local[5:].split("=", 3)
    if len(parts) != 4:
        return None
    got, stamp, domain, original = parts
    if not domain or not original or len(stamp) != 2 or any(c not in _B32 for c in stamp.upper()):
        return None
    if not hmac.compare_digest(got.upper(), _hash(key, f"{stamp}={domain}={original}")):
        return None
    day = (_B32.index(stamp[0].upper()) << 5) | _B32.index(stamp[1].upper())
    if (int(now // _DAY) - day) % 1024 > MAX_AGE_DAYS:
        return None
    return f"{original}@{domain}"
