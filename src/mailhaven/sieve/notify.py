"""enotify (RFC 5435) with the mailto method (RFC 5436): parse the URI, build the
notification; the caller queues it (sent with ``MAIL FROM:<>`` through the outbound queue).

Not sent (RFC 5436 2.7, 3): for a message that is itself Auto-Submitted (other than ``no``),
so that two notifying accounts cannot loop; to more than :data:`MAX_RECIPIENTS` addresses.
"""

from __future__ import annotations

import email.header
import email.utils
import logging
import re
import time
import uuid
from dataclasses import dataclass
from email.header import Header
from email.parser import BytesHeaderParser
from email.policy import compat32
from typing import Any
from urllib.parse import unquote

from ..queue.api import OutboundMessage, OutboundRecipient

log = logging.getLogger("mailhaven.sieve")

MAX_RECIPIENTS = 10
_ADDRESS = re.compile(r"[^\s@<>()\[\],;:\"\\]+@[A-Za-z0-9.-]+\.[A-Za-z0-9-]+\Z")
_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_IGNORED_HEADERS = frozenset({"from", "sender", "auto-submitted", "received", "message-id", "date",
                              "return-path", "bcc"})            # RFC 5436 2.2: never from the URI


@dataclass(frozen=True, kw_only=True, slots=True)
class Notify:
    """One ``notify`` action (RFC 5435 3)."""

    method: str
    recipients: tuple[tuple[str, str], ...]
    """("To"/"Cc", address), from the URI (RFC 6068)."""
    importance: str = "2"
    subject: str | None = None
    """:message, else the URI's subject (RFC 5436 2.7: the default is built at sending)."""
    sender: str | None = None
    """:from"""
    body: str | None = None
    """The URI's body header."""
    headers: tuple[tuple[str, str], ...] = ()
    """Other header fields the URI names (RFC 5436 2.2), harmless ones only."""


def encode_url(value: str) -> str:
    """RFC 5435 6 (:encodeurl): everything but RFC 3986 unreserved characters percent-encoded."""
    return "".join(chr(b) if b in _UNRESERVED else f"%{b:02X}" for b in value.encode())


def parse_mailto(uri: str) -> tuple[list[tuple[str, str]], dict[str, str]] | None:
    """RFC 6068: ([("To"|"Cc", address)], {header: value}); None when not a usable mailto."""
    if not uri.lower().startswith("mailto:"):
        return None
    to_part, _, query = uri[7:].partition("?")
    recipients = [("To", unquote(a).strip()) for a in to_part.split(",") if a.strip()]
    headers: dict[str, str] = {}
    for item in query.split("&") if query else []:
        name, eq, value = item.partition("=")
        if not eq:
            return None
        name, value = unquote(name).lower(), unquote(value)
        if name in ("to", "cc"):
            recipients += [(name.capitalize(), a.strip()) for a in value.split(",") if a.strip()]
        elif name not in _IGNORED_HEADERS:
            headers[name] = value
    if not recipients or not all(_ADDRESS.match(a) for _, a in recipients):
        return None
    return recipients, headers


def valid_method(uri: str) -> bool:
    """RFC 5435 5.1: only mailto here."""
    return parse_mailto(uri) is not None


def build(notify: Notify, *, sender: str, original_subject: str, original_from: str, hostname: str) -> bytes:
    """The notification (RFC 5436 2.7): Auto-Submitted: auto-notified, the subject given or
    one naming the new message, the URI's body or a short summary."""
    subject = notify.subject if notify.subject is not None else f"New mail from {original_from}: {original_subject}"
    subject = " ".join(subject.split())
    to = [a for kind, a in notify.recipients if kind == "To"][:MAX_RECIPIENTS]
    cc = [a for kind, a in notify.recipients if kind == "Cc"][:MAX_RECIPIENTS]
    lines = [
        f"From: {sender}",
        f"To: {', '.join(to)}" if to else "To: undisclosed-recipients:;",
        *([f"Cc: {', '.join(cc)}"] if cc else []),
        f"Subject: {Header(subject, 'utf-8').encode() if not subject.isascii() else subject}",
        f"Date: {email.utils.formatdate(localtime=True)}",
        f"Message-ID: <{uuid.uuid4().hex}@{hostname}>",
        "Auto-Submitted: auto-notified",                              # RFC 5436 2.7.1
        "MIME-Version: 1.0",
    ]
    if notify.importance in ("1", "3"):                               # RFC 5436 2.5
        lines.append(f"Importance: {'high' if notify.importance == '1' else 'low'}")
    for name, value in notify.headers:
        if name not in ("subject", "body") and value.isascii():
            lines.append(f"{name.title()}: {' '.join(value.split())}")
    body = notify.body if notify.body is not None else f"New mail from {original_from}: {original_subject}\n"
    body = body.replace("\r\n", "\n").replace("\n", "\r\n")
    lines += ["Content-Type: text/plain; charset=utf-8", "Content-Transfer-Encoding: 8bit"]
    return ("\r\n".join(lines) + "\r\n\r\n" + body + ("" if body.endswith("\r\n") else "\r\n")).encode()


async def send(store: Any, raw: bytes, account_id: int, rcpt: str, notify: Notify) -> bool:
    """Queue the notification with ``MAIL FROM:<>`` (RFC 5436 2.3); True when queued."""
    head = raw.split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0] + b"\r\n\r\n"
    header = BytesHeaderParser(policy=compat32).parsebytes(head)
    auto = str(header.get("Auto-Submitted") or "no").strip().lower()
    if not auto.startswith("no"):                                     # RFC 5436 2.7: no loops
        log.info("Sieve notify of account %d: not for an Auto-Submitted message", account_id)
        return False
    own = {a.lower() for a in await store.addresses_of(account_id)} | {rcpt.lower()}
    sender = rcpt
    if notify.sender is not None:                                     # RFC 5435 3.6: only our own
        found = email.utils.getaddresses([" ".join(notify.sender.split())])
        if len(found) == 1 and found[0][1].lower() in own:
            sender = " ".join(notify.sender.split())
    message = build(notify, sender=sender, original_subject=_decoded(header.get("Subject")),
                    original_from=_decoded(header.get("From")), hostname=rcpt.rpartition("@")[2])
    recipients = [a for _, a in notify.recipients][:MAX_RECIPIENTS]
    blob = await store.put_blob(message)
    await store.queue_enqueue(OutboundMessage(
        blob=blob, mail_from="", recipients=tuple(OutboundRecipient(address=a) for a in recipients),
        body="8BITMIME" if any(b > 127 for b in message) else "7BIT"), now=time.time())
    log.info("Sieve notify of account %d: to %s", account_id, ", ".join(recipients))
    return True


def _decoded(value: Any) -> str:
    if value is None:
        return ""
    try:
        return " ".join(str(email.header.make_header(email.header.decode_header(str(value)))).split())
    except (ValueError, LookupError, UnicodeError):
        return " ".join(str(value).split())
