"""A message's MIME structure as JMAP sees it (RFC 8621 4.1.4): EmailBodyPart objects,
textBody / htmlBody / attachments by the RFC's parseStructure algorithm, body values.

Part ids are the IMAP section numbers ("1", "1.2", ...; "1" for a single-part message), so
a JMAP part and an IMAP BODY[section] name the same bytes. The stdlib parser is tolerant:
malformed structure degrades to fewer parts, never to an exception.
"""

from __future__ import annotations

import email
import email.policy
from email.message import Message
from typing import Any

from ...message.structure import stdlib_bounded
from .largeparts import file_of

_POLICY = email.policy.compat32


def parse_message(raw: bytes) -> Message:
    """The message as the stdlib reads it, its header block read as IMAP reads it."""
    return email.message_from_bytes(stdlib_bounded(raw), policy=_POLICY)


def _children(part: Message) -> list[Message]:
    payload = part.get_payload()
    if part.is_multipart() and isinstance(payload, list):
        return [p for p in payload if isinstance(p, Message)]
    return []


def walk(msg: Message) -> list[tuple[str, Message]]:
    """(part id, part) for every part, depth first, multiparts included."""
    out: list[tuple[str, Message]] = []

    def visit(part: Message, pid: str) -> None:
        out.append((pid, part))
        for i, child in enumerate(_children(part), 1):
            visit(child, f"{pid}.{i}" if pid else str(i))

    if msg.is_multipart():
        out.append(("", msg))
        for i, child in enumerate(_children(msg), 1):
            visit(child, str(i))
    else:
        out.append(("1", msg))
    return out


def find_part(msg: Message, part_id: str) -> Message | None:
    for pid, part in walk(msg):
        if pid == part_id and not part.is_multipart():
            return part
    return None


def _decoded_header(part: Message, name: str) -> str | None:
    value = part.get(name)
    if value is None:
        return None
    try:
        return str(email.header.make_header(email.header.decode_header(str(value))))
    except Exception:  # noqa: BLE001
        return str(value)


def body_part(message_id: int, pid: str, part: Message, *, with_headers: bool = False) -> dict[str, Any]:
    from .blobs import part_blob_id

    name = None
    try:
        name = part.get_filename()
        if name is not None:
            name = str(email.header.make_header(email.header.decode_header(name)))
    except Exception:  # noqa: BLE001
        name = None
    disposition = part.get_content_disposition()
    multipart = part.is_multipart()
    size = 0
    file = file_of(part)
    if file is not None:
        size = file.decoded_size()
    elif not multipart:
        try:
            payload = part.get_payload(decode=True)
            size = len(payload) if isinstance(payload, bytes) else 0
        except Exception:  # noqa: BLE001
            size = 0
    ctype = part.get_content_type()
    out: dict[str, Any] = {
        "partId": None if multipart else pid,
        "blobId": None if multipart else part_blob_id(message_id, pid),
        "size": size,
        "name": name,
        "type": ctype,
        "charset": (part.get_content_charset() or ("us-ascii" if ctype.startswith("text/") else None))
        if not multipart else None,
        "disposition": disposition,
        "cid": (_decoded_header(part, "Content-ID") or "").strip("<> ") or None,
        "language": None,
        "location": _decoded_header(part, "Content-Location"),
    }
    if with_headers:
        out["headers"] = [{"name": k, "value": str(v)} for k, v in part.items()]
    if multipart:
        out["subParts"] = [body_part(message_id, cid, child) for cid, child in _direct(pid, part)]
    return out


def _direct(pid: str, part: Message) -> list[tuple[str, Message]]:
    return [(f"{pid}.{i}" if pid else str(i), child) for i, child in enumerate(_children(part), 1)]


def _is_inline_media(part: Message) -> bool:
    return part.get_content_maintype() in ("image", "audio", "video")


def body_lists(msg: Message) -> tuple[list[tuple[str, Message]], list[tuple[str, Message]], list[tuple[str, Message]]]:
    """RFC 8621 4.1.4 parseStructure: (textBody, htmlBody, attachments) as (part id, part)."""
    text: list[tuple[str, Message]] = []
    html: list[tuple[str, Message]] = []
    attachments: list[tuple[str, Message]] = []

    def parse(parts: list[tuple[str, Message]], multipart_type: str, in_alternative: bool,
              html_body: list[tuple[str, Message]] | None, text_body: list[tuple[str, Message]] | None) -> None:
        text_length = len(text_body) if text_body is not None else -1
        html_length = len(html_body) if html_body is not None else -1
        for i, (pid, part) in enumerate(parts):
            is_multipart = part.is_multipart()
            disposition = part.get_content_disposition()
            ctype = part.get_content_type()
            is_inline = disposition != "attachment" and (
                ctype in ("text/plain", "text/html") or _is_inline_media(part)) and (
                i == 0 or (multipart_type != "related" and (_is_inline_media(part) or part.get_filename() is None)))
            if is_multipart:
                sub = part.get_content_subtype()
                parse(_direct(pid, part), sub, in_alternative or sub == "alternative", html_body, text_body)
            elif is_inline:
                if multipart_type == "alternative":
                    if ctype == "text/plain" and text_body is not None:
                        text_body.append((pid, part))
                    elif ctype == "text/html" and html_body is not None:
                        html_body.append((pid, part))
                    else:
                        attachments.append((pid, part))
                    continue
                if in_alternative:
                    if ctype == "text/plain":
                        html_body = None
                    if ctype == "text/html":
                        text_body = None
                if text_body is not None:
                    text_body.append((pid, part))
                if html_body is not None:
                    html_body.append((pid, part))
                if (text_body is None or html_body is None) and _is_inline_media(part):
                    attachments.append((pid, part))
            else:
                attachments.append((pid, part))
        if multipart_type == "alternative" and text_body is not None and html_body is not None:
            if text_length == len(text_body) and html_length != len(html_body):
                text_body.extend(html_body[html_length:])
            if html_length == len(html_body) and text_length != len(text_body):
                html_body.extend(text_body[text_length:])

    top = [("1", msg)] if not msg.is_multipart() else [("", msg)]
    if msg.is_multipart():
        sub = msg.get_content_subtype()
        parse(_direct("", msg), sub, sub == "alternative", html, text)
    else:
        parse(top, "mixed", False, html, text)
    return text, html, attachments


def text_of(part: Message, limit: int | None = None) -> str:
    """The part's text; from its file (only about ``limit`` bytes of it) when it is a
    large part left there."""
    file = file_of(part)
    try:
        payload = file.decoded(limit) if file is not None else part.get_payload(decode=True)
    except Exception:  # noqa: BLE001
        payload = None
    if not isinstance(payload, bytes):
        return ""
    charset = part.get_content_charset() or "us-ascii"
    try:
        return payload.decode(charset, "replace")
    except LookupError:
        return payload.decode("utf-8", "replace")


def body_value(part: Message, max_bytes: int) -> dict[str, Any]:
    value = text_of(part, max_bytes or None)
    truncated = False
    if max_bytes and len(value.encode("utf-8")) > max_bytes:
        value = value.encode("utf-8")[:max_bytes].decode("utf-8", "ignore")
        truncated = True
    return {"value": value, "isEncodingProblem": False, "isTruncated": truncated}
