"""Carry out a Sieve ``redirect`` (RFC 5228 4.2), and forward to an alias's external
targets: a copy of the message goes to the outbound queue with a ``Delivered-To:`` line
for the redirecting recipient on top, an ARC set sealed by the recipient's domain (RFC
8617, filter/arc.py, when it has an RSA DKIM key) and an SRS envelope sender
(sieve/srs.py) in the recipient's domain, so the next hop's SPF checks us, its DMARC can
trust our seal, and bounces come back to the original sender through us.

Not sent (the caller keeps the message instead, nothing is lost):
- the message already carries our ``Delivered-To:`` for this recipient: it has been
  through this redirect before (a loop);
- the account (for an alias: the alias address) has forwarded :data:`REDIRECTS_PER_HOUR`
  messages in the last hour (the per-message cap is the interpreter's ``Limits.max_redirects``)."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from email.parser import BytesHeaderParser
from email.policy import compat32
from typing import Any

from ..queue.api import OutboundMessage, OutboundRecipient
from . import srs

log = logging.getLogger("mailhaven.sieve")

REDIRECTS_PER_HOUR = 100
HOUR = 3600.0
_RETURN_PATH = re.compile(rb"\A(?:Return-Path:[^\n]*\n(?:[ \t][^\n]*\n)*)+", re.IGNORECASE)
_ADDRESS = re.compile(r"[^\s@<>()\[\],;:\"\\]+@[A-Za-z0-9.-]+\Z")


def delivered_to(raw: bytes) -> list[str]:
    """The addresses of the message's Delivered-To: lines, lower-case."""
    header = raw.split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0]
    parsed = BytesHeaderParser(policy=compat32).parsebytes(header + b"\r\n\r\n")
    return [str(v).strip().strip("<>").lower() for v in parsed.get_all("Delivered-To") or []]


Copier = Callable[[bytes], Awaitable[tuple[Any, bool]]]


async def redirect(store: Any, raw: bytes, account_id: int, rcpt: str, target: str, *,
                   mail_from: str, now: float | None = None, sealer: Any = None,
                   copy: Copier | None = None) -> bool:
    """Queue the redirected copy; False when it was not sent (see the module's docstring).
    ``copy``: when ``raw`` is only the first part of a large message, writes the copy (the
    trace line given, then the message from its file, :func:`copy_from_file`) and returns
    its blob and whether it has 8-bit bytes; such a copy is not ARC-sealed."""
    now = time.time() if now is None else now
    if not _ADDRESS.match(target):
        log.info("Sieve redirect of account %d: %r is not an address; kept", account_id, target)
        return False
    if rcpt.lower() in delivered_to(raw):
        log.info("Sieve redirect of account %d to %s: loop (Delivered-To: %s); kept", account_id, target, rcpt)
        return False
    if not await store.count_redirect(account_id, now=now, window=HOUR, limit=REDIRECTS_PER_HOUR):
        log.info("Sieve redirect of account %d to %s: over %d an hour; kept", account_id, target,
                 REDIRECTS_PER_HOUR)
        return False
    sender = await _queue(store, raw, rcpt, [target], mail_from=mail_from, now=now, sealer=sealer, copy=copy)
    log.info("Sieve redirect of account %d to %s, envelope sender %s", account_id, target, sender or "<>")
    return True


async def forward_alias(store: Any, raw: bytes, rcpt: str, targets: Sequence[str], *,
                        mail_from: str, now: float | None = None, sealer: Any = None,
                        copy: Copier | None = None) -> str:
    """Queue one copy for the external targets of the alias ``rcpt``: ``sent``, or why
    not: ``loop`` (our Delivered-To for it is there) or ``limit`` (over the hour's)."""
    now = time.time() if now is None else now
    targets = [t for t in targets if _ADDRESS.match(t)]
    if not targets:
        return "sent"
    if rcpt.lower() in delivered_to(raw):
        log.info("alias %s: loop (Delivered-To: %s); not forwarded", rcpt, rcpt)
        return "loop"
    if not await store.count_alias_forward(rcpt, now=now, window=HOUR, limit=REDIRECTS_PER_HOUR):
        log.info("alias %s: over %d forwards an hour; not forwarded", rcpt, REDIRECTS_PER_HOUR)
        return "limit"
    sender = await _queue(store, raw, rcpt, targets, mail_from=mail_from, now=now, sealer=sealer, copy=copy)
    log.info("alias %s forwarded to %s, envelope sender %s", rcpt, ", ".join(targets), sender or "<>")
    return "sent"


async def _queue(store: Any, raw: bytes, rcpt: str, targets: Sequence[str], *, mail_from: str,
                 now: float, sealer: Any, copy: Copier | None = None) -> str:
    """Delivered-To, the ARC seal and the SRS sender; returns the envelope sender."""
    domain = rcpt.rpartition("@")[2]
    trace = f"Delivered-To: {rcpt}\r\n".encode()
    if copy is None:
        body = trace + _RETURN_PATH.sub(b"", raw, count=1)                 # RFC 5321 4.4
        if sealer is not None:
            body = await sealer.seal_async(body, domain) + body           # RFC 8617 5.1
        blob = await store.put_blob(body)
        eight_bit = any(b > 127 for b in body)
    else:                                  # a large message, copied from its file unsealed
        blob, eight_bit = await copy(trace)
    sender = srs.forward(mail_from, domain, await store.srs_key(), now)
    await store.queue_enqueue(OutboundMessage(
        blob=blob, mail_from=sender, recipients=tuple(OutboundRecipient(address=t) for t in targets),
        body="8BITMIME" if eight_bit else "7BIT"), now=now)
    return sender


_EIGHT_BIT = re.compile(rb"[\x80-\xff]")
COPY_CHUNK = 1 << 20


def strip_return_path(first: bytes) -> bytes:
    """The first piece of a message to be sent on without its Return-Path (RFC 5321 4.4)."""
    return _RETURN_PATH.sub(b"", first, count=1)


def has_eight_bit(piece: bytes) -> bool:
    return _EIGHT_BIT.search(piece) is not None


async def reverse_srs(store: Any, address: str, now: float | None = None) -> str | None:
    """The original sender behind an SRS0 address of ours (a bounce of a redirected
    message), None when ``address`` is not one."""
    if not address[:5].upper() == srs.PREFIX.upper():
        return None
    return srs.reverse(address, await store.srs_key(), time.time() if now is None else now)
