"""Carry out a Sieve ``vacation`` (RFC 5230, RFC 6131, RFC 3834): decide whether this
message gets an automatic reply, remember the sender in the store, and queue the reply
with the null envelope sender.

No reply (RFC 5230 4.5, 4.6; RFC 3834 2): to the null sender or a sender that looks like
a mailer or list robot; to mail with List-Id (or other List-* control lines), Precedence
bulk/list/junk or Auto-Submitted other than "no"; to one of the account's own addresses;
when none of the account's addresses (nor :addresses) is in To/Cc/Bcc/Resent-*; when a
reply with the same handle went to the same sender within the period."""

from __future__ import annotations

import email.utils
import hashlib
import logging
import re
import time
import uuid
from email.header import Header, decode_header
from email.parser import BytesHeaderParser
from email.policy import compat32
from typing import Any

from ..queue.api import OutboundMessage, OutboundRecipient
from .actions import Vacation

log = logging.getLogger("mailhaven.sieve")

_ROBOT = re.compile(r"\A(?:owner-.*|.*-request|mailer-daemon|listserv|majordomo|postmaster|"
                    r"majordom|mailer|.*-owner|.*-bounces?)\Z", re.IGNORECASE)   # RFC 5230 4.6
_RECIPIENT_HEADERS = ("To", "Cc", "Bcc", "Resent-To", "Resent-Cc", "Resent-Bcc")   # RFC 5230 4.5
_LIST_HEADERS = ("List-Id", "List-Help", "List-Subscribe", "List-Unsubscribe", "List-Post",
                 "List-Owner", "List-Archive")


def _header_text(value: Any) -> str:
    parts = decode_header(str(value))
    return "".join(p.decode(c or "utf-8", "replace") if isinstance(p, bytes) else p for p, c in parts)


def should_reply(header: Any, mail_from: str, own: set[str], extra: tuple[str, ...]) -> str | None:
    """Why not to reply (a short reason), None when a reply is due."""
    if not mail_from:
        return "null sender"                                            # RFC 5230 4.6
    if mail_from.lower() in own:
        return "own address"
    if _ROBOT.match(mail_from.rpartition("@")[0]):
        return "robot sender"
    auto = str(header.get("Auto-Submitted") or "no").split(";")[0].strip().lower()
    if auto != "no":                                                    # RFC 3834 2
        return "auto-submitted"
    if any(header.get(h) is not None for h in _LIST_HEADERS):           # RFC 2369, RFC 2919
        return "list message"
    if str(header.get("Precedence") or "").strip().lower() in ("bulk", "list", "junk"):
        return "bulk precedence"
    mine = own | {a.lower() for a in extra}
    named = {a.lower() for _, a in email.utils.getaddresses(
        [str(v) for h in _RECIPIENT_HEADERS for v in header.get_all(h) or []])}
    if not mine & named:                                                # RFC 5230 4.5
        return "not addressed to us"
    return None


def _one_line(text: str) -> str:
    return " ".join(text.split())                                       # no header injection


def reply_from(vacation: Vacation, rcpt: str, own: set[str]) -> str:
    """RFC 5230 4.4 :from, only when it names one of the account's own addresses (no
    replies in someone else's name); the recipient's address otherwise."""
    if vacation.sender is not None:
        found = email.utils.getaddresses([_one_line(vacation.sender)])
        if len(found) == 1 and found[0][1].lower() in own:
            return _one_line(vacation.sender)
    return rcpt


def build_reply(header: Any, vacation: Vacation, *, to: str, sender: str, hostname: str) -> bytes:
    """The reply (RFC 5230 5, RFC 3834 3)."""
    original = _one_line(_header_text(header.get("Subject") or ""))
    subject = _one_line(vacation.subject) if vacation.subject is not None else f"Auto: {original}"  # RFC 5230 4.3
    lines = [
        f"From: {sender}",
        f"To: <{to}>",
        f"Subject: {Header(subject, 'utf-8').encode() if not subject.isascii() else subject}",
        f"Date: {email.utils.formatdate(localtime=True)}",
        f"Message-ID: <{uuid.uuid4().hex}@{hostname}>",
        "Auto-Submitted: auto-replied",                                  # RFC 3834 5
        "MIME-Version: 1.0",
    ]
    message_id = _one_line(str(header.get("Message-ID") or ""))
    if message_id:                                                      # RFC 5230 5.8, RFC 3834 3.1.4
        lines.append(f"In-Reply-To: {message_id}")
        references = _one_line(str(header.get("References") or ""))
        lines.append(f"References: {(references + ' ' + message_id).strip()}")
    if vacation.mime:                                                   # RFC 5230 4.4: a MIME entity
        entity = vacation.reason.replace("\r\n", "\n").replace("\n", "\r\n")
        return ("\r\n".join(lines) + "\r\n" + entity + ("" if entity.endswith("\r\n") else "\r\n")).encode()
    body = vacation.reason.replace("\r\n", "\n").replace("\n", "\r\n")
    lines += ["Content-Type: text/plain; charset=utf-8", "Content-Transfer-Encoding: 8bit"]
    return ("\r\n".join(lines) + "\r\n\r\n" + body + ("" if body.endswith("\r\n") else "\r\n")).encode()


async def respond(store: Any, raw: bytes, account_id: int, rcpt: str, vacation: Vacation, *,
                  mail_from: str, now: float | None = None) -> Any:
    """Queue the reply when one is due: its blob (for an RFC 8580 :fcc copy), else None."""
    now = time.time() if now is None else now
    head = raw.split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0] + b"\r\n\r\n"
    header = BytesHeaderParser(policy=compat32).parsebytes(head)
    own = {a.lower() for a in await store.addresses_of(account_id)} | {rcpt.lower()}
    why = should_reply(header, mail_from, own, vacation.addresses)
    handle = hashlib.sha256(vacation.handle.encode()).hexdigest()       # the handle may be long
    if why is None and not await store.vacation_reply_due(account_id, mail_from, handle,
                                                          now=now, period=float(vacation.seconds)):
        why = "replied within the period"                               # RFC 5230 4.2
    if why is not None:
        log.info("Sieve vacation of account %d: no reply to %s (%s)", account_id, mail_from or "<>", why)
        return None
    reply = build_reply(header, vacation, to=mail_from, sender=reply_from(vacation, rcpt, own),
                        hostname=rcpt.rpartition("@")[2])
    blob = await store.put_blob(reply)
    await store.queue_enqueue(OutboundMessage(                          # RFC 5230 5.1 (RFC 3834 3.3)
        blob=blob, mail_from="", recipients=(OutboundRecipient(address=mail_from),),
        body="8BITMIME" if any(b > 127 for b in reply) else "7BIT"), now=now)
    log.info("Sieve vacation of account %d: replied to %s", account_id, mail_from)
    return blob
