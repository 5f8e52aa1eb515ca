"""Delivery status notifications: RFC 3464 reports, RFC 3461 NOTIFY rules.

A report is ``multipart/report; report-type=delivery-status`` with three parts: a
human-readable explanation, the machine-readable ``message/delivery-status`` (per-message
fields, then one block per recipient), and the original message (``message/rfc822``) or
only its header (``text/rfc822-headers``) when the sender asked for RET=HDRS. An original
that needs SMTPUTF8 gets the RFC 6533 types (``message/global-delivery-status``,
``message/global``). The report is sent with a null reverse-path by the caller, so it can
never cause another report (RFC 5321 4.5.5, RFC 3461 6.2).
"""

from __future__ import annotations

import email.utils
import os
import time
import uuid
from dataclasses import dataclass
from typing import Any

from ..message.lineends import normalize_line_ends
from .api import OutboundRecipient

HEADERS_ONLY_LIMIT = 256 * 1024
"""Originals larger than this are returned as headers only, whatever RET says."""


@dataclass(frozen=True, kw_only=True)
class DSNRecipient:
    address: str
    orcpt: str | None
    action: str
    """failed | delayed | delivered | relayed | expanded (RFC 3464 2.3.3)."""
    status: str
    """RFC 3463 code, e.g. ``5.1.1``."""
    remote_mta: str | None = None
    diagnostic: str | None = None
    """The remote reply, e.g. ``550 5.1.1 no such user``."""
    last_attempt: float | None = None
    will_retry_until: float | None = None


def wants_dsn(recipient: OutboundRecipient, action: str) -> bool:
    """RFC 3461 4.1: without NOTIFY, failures and (at our discretion) delays are reported;
    NEVER reports nothing; success only when asked for."""
    notify = recipient.notify
    if notify is None:
        return action in ("failed", "delayed")
    if "NEVER" in notify:
        return False
    wanted = {"failed": "FAILURE", "delayed": "DELAY", "delivered": "SUCCESS", "relayed": "SUCCESS",
              "expanded": "SUCCESS"}
    return wanted.get(action, "") in notify


def _date(when: float) -> str:
    return email.utils.formatdate(when, localtime=True)


def _header_section(original: bytes) -> bytes:
    for sep in (b"\r\n\r\n", b"\n\n"):
        end = original.find(sep)
        if end >= 0:
            return original[: end + len(sep)]
    return original


def _needs_utf8(original: bytes, recipients: list[DSNRecipient], envelope_from: str) -> bool:
    header = _header_section(original)
    return (not header.isascii() or not envelope_from.isascii()
            or any(not r.address.isascii() for r in recipients))


def _explanation(recipients: list[DSNRecipient], reporting_mta: str) -> str:
    failed = [r for r in recipients if r.action == "failed"]
    delayed = [r for r in recipients if r.action == "delayed"]
    done = [r for r in recipients if r.action in ("delivered", "relayed", "expanded")]
    lines = [f"This is the mail system at {reporting_mta}.", ""]
    if failed:
        lines += ["Your message could not be delivered to the following recipients, and the mail",
                  "system has given up:", ""]
        lines += [f"  <{r.address}>: {r.diagnostic or r.status}" for r in failed] + [""]
    if delayed:
        lines += ["Your message has not been delivered yet to the following recipients. The mail",
                  "system will keep trying; you do not need to send it again:", ""]
        for r in delayed:
            until = f" (trying until {_date(r.will_retry_until)})" if r.will_retry_until else ""
            lines.append(f"  <{r.address}>: {r.diagnostic or r.status}{until}")
        lines.append("")
    if done:
        lines += ["Your message was delivered to the following recipients, as you asked to be told:", ""]
        lines += [f"  <{r.address}>: {r.action}" for r in done] + [""]
    lines.append("The delivery report and the original message (or its header) are attached.")
    return "\r\n".join(lines) + "\r\n"


def _subject(recipients: list[DSNRecipient]) -> str:
    actions = {r.action for r in recipients}
    if "failed" in actions:
        return "Undelivered Mail Returned to Sender"
    if "delayed" in actions:
        return "Delayed Mail (still being retried)"
    return "Successful Mail Delivery Report"


HEADER_READ_LIMIT = 1024 * 1024
"""The most of a large original read for its header section."""


def read_original(path: str, chunk: int = 64 * 1024) -> tuple[bytes, int]:
    """What a report needs of the original in file ``path``, and its size: all of it up
    to :data:`HEADERS_ONLY_LIMIT`, else its header section alone, read a piece at a time
    up to the empty line (at most :data:`HEADER_READ_LIMIT`), never the body."""
    from ..message.fileview import FileView

    with open(path, "rb") as f:
        return original_of(FileView(f.fileno(), os.fstat(f.fileno()).st_size), chunk)


def original_of(view: Any, chunk: int = 64 * 1024) -> tuple[bytes, int]:
    """:func:`read_original` of a message seen through a
    :class:`~mailhaven.message.fileview.FileView` (its file, or the store's ranges of it)."""
    size = len(view)
    if size <= HEADERS_ONLY_LIMIT:
        return view[0:size], size
    head = b""
    while len(head) < HEADER_READ_LIMIT and (piece := view[len(head):len(head) + chunk]):
        start = max(0, len(head) - 3)
        head += piece
        for sep in (b"\r\n\r\n", b"\n\n"):
            end = head.find(sep, start)
            if end >= 0:
                return head[:end + len(sep)], size
    return head[:HEADER_READ_LIMIT], size


def build_dsn(*, reporting_mta: str, original: bytes, envelope_from: str, envid: str | None,
              ret: str | None, recipients: list[DSNRecipient], arrival: float,
              now: float | None = None, original_size: int | None = None) -> bytes:
    """The complete report message (CRLF line ends), ready to deliver to ``envelope_from``.
    ``original_size``: the original's size when ``original`` is only its header section
    (:func:`read_original` of a large one)."""
    now = time.time() if now is None else now
    utf8 = _needs_utf8(original, recipients, envelope_from)
    boundary = f"{uuid.uuid4().hex}/{reporting_mta}"
    status_type = "message/global-delivery-status" if utf8 else "message/delivery-status"
    size = len(original) if original_size is None else original_size
    headers_only = (ret or "").upper() == "HDRS" or size > HEADERS_ONLY_LIMIT
    if headers_only:
        original_type = "message/global-headers" if utf8 else "text/rfc822-headers"
        returned = normalize_line_ends(_header_section(original))
    else:
        original_type = "message/global" if utf8 else "message/rfc822"
        returned = normalize_line_ends(original)
    if not returned.endswith(b"\r\n"):
        returned += b"\r\n"

    # RFC 3464 2.2: per-message fields.
    fields = [f"Reporting-MTA: dns; {reporting_mta}"]
    if envid:
        fields.append(f"Original-Envelope-Id: {envid}")
    fields.append(f"Arrival-Date: {_date(arrival)}")
    status = "\r\n".join(fields) + "\r\n"
    # RFC 3464 2.3: one block per recipient, separated by blank lines.
    for r in recipients:
        block = []
        if r.orcpt:
            kind, _, addr = r.orcpt.partition(";")
            block.append(f"Original-Recipient: {kind or 'rfc822'};{addr}")
        kind = "utf-8" if (utf8 and not r.address.isascii()) else "rfc822"
        block.append(f"Final-Recipient: {kind}; {r.address}")
        block.append(f"Action: {r.action}")
        block.append(f"Status: {r.status}")
        if r.remote_mta:
            block.append(f"Remote-MTA: dns; {r.remote_mta}")
        if r.diagnostic:
            block.append(f"Diagnostic-Code: smtp; {' '.join(r.diagnostic.split())}")
        if r.last_attempt:
            block.append(f"Last-Attempt-Date: {_date(r.last_attempt)}")
        if r.will_retry_until and r.action == "delayed":
            block.append(f"Will-Retry-Until: {_date(r.will_retry_until)}")
        status += "\r\n" + "\r\n".join(block) + "\r\n"

    msg_id = f"<{uuid.uuid4().hex}@{reporting_mta}>"
    head = [
        f"From: Mail Delivery System <MAILER-DAEMON@{reporting_mta}>",
        f"To: <{envelope_from}>",
        f"Subject: {_subject(recipients)}",
        f"Date: {_date(now)}",
        f"Message-ID: {msg_id}",
        "Auto-Submitted: auto-replied",                       # RFC 3834 5
        "MIME-Version: 1.0",
        f'Content-Type: multipart/report; report-type=delivery-status;\r\n\tboundary="{boundary}"',
    ]
    parts = [
        ("text/plain; charset=utf-8", "8bit" if utf8 else "7bit", _explanation(recipients, reporting_mta).encode()),
        (status_type, "8bit" if utf8 else "7bit", status.encode("utf-8")),
        (original_type, "8bit" if not returned.isascii() else "7bit", returned),
    ]
    out = bytearray(("\r\n".join(head) + "\r\n\r\nThis is a MIME-encapsulated delivery report.\r\n").encode())
    for content_type, cte, body in parts:
        out += f"\r\n--{boundary}\r\nContent-Type: {content_type}\r\n".encode()
        if content_type.startswith("text/plain"):
            out += b"Content-Description: Notification\r\n"
        out += f"Content-Transfer-Encoding: {cte}\r\n\r\n".encode()
        out += body
        if not body.endswith(b"\r\n"):
            out += b"\r\n"
    out += f"\r\n--{boundary}--\r\n".encode()
    return bytes(out)
