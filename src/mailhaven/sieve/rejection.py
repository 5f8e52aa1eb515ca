"""reject/ereject when SMTP can no longer refuse (other recipients took the message, or it
did not come over SMTP): RFC 5429 2.1 and 2.2.1 have the refusal sent to the envelope
sender instead, and the message is not kept.

- ``reject``: an MDN (RFC 8098, was 3798) with disposition ``deleted`` and the reason as
  its human-readable part (RFC 5429 2.2.1);
- ``ereject``: a DSN (RFC 3464) with ``Action: failed`` and ``Status: 5.7.1``;
- never to the null sender, nor for Auto-Submitted mail (RFC 5429 2.2.1, RFC 3834): then
  the message is only dropped (RFC 5429 2.1: no notice is sent where none may be).

Both go through the outbound queue with ``MAIL FROM:<>``.
"""

from __future__ import annotations

import email.utils
import logging
import time
import uuid
from email.parser import BytesHeaderParser
from email.policy import compat32
from typing import Any

from ..queue.api import OutboundMessage, OutboundRecipient

log = logging.getLogger("mailhaven.sieve")


def _header_block(raw: bytes) -> bytes:
    return raw.split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0].replace(b"\r\n", b"\n").replace(b"\n", b"\r\n") + b"\r\n"


def build(raw: bytes, *, kind: str, reason: str, rcpt: str, mail_from: str, hostname: str) -> bytes:
    """The multipart/report for ``kind`` ("reject": MDN, "ereject": DSN)."""
    header = BytesHeaderParser(policy=compat32).parsebytes(_header_block(raw) + b"\r\n")
    boundary = f"=_{uuid.uuid4().hex}"
    reason = reason.replace("\r\n", "\n").replace("\n", "\r\n").rstrip("\r\n") + "\r\n"
    subject = " ".join(str(header.get("Subject") or "").split())
    message_id = " ".join(str(header.get("Message-ID") or "").split())
    if kind == "reject":                                              # RFC 5429 2.2.1, RFC 8098 3
        report_type, title = "disposition-notification", "Disposition notification"
        fields = [f"Reporting-UA: {hostname}; Mailhaven Sieve", f"Final-Recipient: rfc822; {rcpt}",
                  *([f"Original-Message-ID: {message_id}"] if message_id else []),
                  "Disposition: automatic-action/MDN-sent-automatically; deleted"]
        part = "message/disposition-notification"
    else:                                                             # RFC 5429 2.1, RFC 3464 2
        report_type, title = "delivery-status", "Delivery Status Notification (Failure)"
        fields = [f"Reporting-MTA: dns; {hostname}", f"Arrival-Date: {email.utils.formatdate(localtime=True)}",
                  "", f"Final-Recipient: rfc822; {rcpt}", "Action: failed", "Status: 5.7.1",
                  f"Diagnostic-Code: smtp; 550 5.7.1 {' '.join(reason.split())[:200]}"]
        part = "message/delivery-status"
    lines = [
        f"From: Mail Delivery System <MAILER-DAEMON@{hostname}>",
        f"To: <{mail_from}>",
        f"Subject: {'Rejected' if kind == 'reject' else 'Undeliverable'}: {subject}"[:900],
        f"Date: {email.utils.formatdate(localtime=True)}",
        f"Message-ID: <{uuid.uuid4().hex}@{hostname}>",
        *([f"In-Reply-To: {message_id}"] if message_id else []),
        "Auto-Submitted: auto-replied",                                # RFC 3834 5
        "MIME-Version: 1.0",
        f'Content-Type: multipart/report; report-type={report_type}; boundary="{boundary}"',
        "",
        f"--{boundary}",
        "Content-Type: text/plain; charset=utf-8",
        "Content-Transfer-Encoding: 8bit",
        "",
        f"{title}: your message to {rcpt} was refused by the recipient's filter:",
        "",
        reason.rstrip("\r\n"),
        f"--{boundary}",
        f"Content-Type: {part}",
        "",
        *fields,
        "",
        f"--{boundary}",
        "Content-Type: text/rfc822-headers",
        "",
    ]
    return ("\r\n".join(lines) + "\r\n").encode() + _header_block(raw) + f"--{boundary}--\r\n".encode()


def may_notify(raw: bytes, mail_from: str) -> bool:
    """Not to the null sender, nor about automatic mail (RFC 5429 2.2.1, RFC 3834 2)."""
    if not mail_from:
        return False
    header = BytesHeaderParser(policy=compat32).parsebytes(_header_block(raw) + b"\r\n")
    return str(header.get("Auto-Submitted") or "no").strip().lower().startswith("no")


async def send(store: Any, raw: bytes, *, kind: str, reason: str, rcpt: str, mail_from: str) -> bool:
    """Queue the refusal; True when one was queued (False: the message is only dropped)."""
    if not may_notify(raw, mail_from):
        log.info("Sieve %s for %s: no notice (null sender or automatic mail)", kind, rcpt)
        return False
    report = build(raw, kind=kind, reason=reason, rcpt=rcpt, mail_from=mail_from,
                   hostname=rcpt.rpartition("@")[2] or "localhost")
    blob = await store.put_blob(report)
    await store.queue_enqueue(OutboundMessage(
        blob=blob, mail_from="", recipients=(OutboundRecipient(address=mail_from),),
        body="8BITMIME" if any(b > 127 for b in report) else "7BIT"), now=time.time())
    log.info("Sieve %s for %s: notice queued to %s", kind, rcpt, mail_from)
    return True
