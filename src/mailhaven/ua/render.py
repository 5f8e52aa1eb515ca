"""Messages for a terminal: the header fields people read, the text part (HTML converted to
text when there is no plain part), and the list of attachments. Never raises on a
malformed message: what cannot be decoded is shown replaced."""

from __future__ import annotations

import email.header
from email.message import Message
from typing import Any

from ..message.html import html_to_text
from ..message.summary import parse_addresses

ADDRESS_FIELDS = frozenset({"from", "sender", "reply-to", "to", "cc", "bcc", "resent-from", "resent-sender",
                            "resent-to", "resent-cc", "resent-bcc"})
_SPECIALS = frozenset('()<>[]:;@\\,."')


def address_text(values: list[Any]) -> str:
    """Address field values for a reader: parsed first, only display names decoded
    (RFC 2047 section 5), each shown with its address, a name with specials quoted."""
    out = []
    for a in parse_addresses([str(v) for v in values]):
        name, addr = a.get("name") or "", a.get("email") or ""
        if not name:
            out.append(addr)
            continue
        name = " ".join(name.split())
        if any(c in _SPECIALS for c in name):
            name = '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
        out.append(f"{name} <{addr}>")
    return ", ".join(out)


def header_text(msg: Message, name: str) -> str:
    value = msg.get(name)
    if value is None:
        return ""
    if name.lower() in ADDRESS_FIELDS:
        return address_text(msg.get_all(name) or [])
    try:
        return str(email.header.make_header(email.header.decode_header(str(value)))).replace("\n", " ")
    except Exception:  # noqa: BLE001
        return str(value).replace("\n", " ")


def _decode(part: Message) -> str:
    try:
        payload = part.get_payload(decode=True)
    except Exception:  # noqa: BLE001
        payload = None
    if not isinstance(payload, bytes):
        raw = part.get_payload()
        return raw if isinstance(raw, str) else ""
    charset = part.get_content_charset() or "utf-8"
    try:
        return payload.decode(charset, "replace")
    except LookupError:
        return payload.decode("utf-8", "replace")


def _leaves(msg: Message) -> list[Message]:
    """Leaf parts; an attached message (message/rfc822) counts as one leaf."""
    out: list[Message] = []

    def visit(part: Message, depth: int) -> None:
        payload = part.get_payload()
        if (part.is_multipart() and isinstance(payload, list) and depth < 50
                and (part.get_content_type() != "message/rfc822" or depth == 0)):
            for child in payload:
                if isinstance(child, Message):
                    visit(child, depth + 1)
        else:
            out.append(part)

    try:
        visit(msg, 0)
    except Exception:  # noqa: BLE001
        return [msg]
    return out


def is_attachment(part: Message) -> bool:
    disposition = part.get_content_disposition()
    return (disposition == "attachment" or part.get_content_type() == "message/rfc822"
            or (part.get_filename() is not None and part.get_content_maintype() not in ("text",)))


def plain_text(msg: Message) -> str:
    """The readable body: text/plain parts, else HTML converted to text."""
    leaves = [p for p in _leaves(msg) if not is_attachment(p)]
    plain = [p for p in leaves if p.get_content_type() == "text/plain"]
    if plain:
        return "\n".join(_decode(p) for p in plain)
    html = [p for p in leaves if p.get_content_type() == "text/html"]
    if html:
        return "\n".join(html_to_text(_decode(p)) for p in html)
    return ""


def attachments(msg: Message) -> list[dict[str, Any]]:
    out = []
    for n, part in enumerate(p for p in _leaves(msg) if is_attachment(p)):
        try:
            name = part.get_filename()
            name = header_text_value(name) if name else None
        except Exception:  # noqa: BLE001
            name = None
        if part.get_content_type() == "message/rfc822":
            inner = part.get_payload()
            body = inner[0].as_bytes() if isinstance(inner, list) and inner and isinstance(inner[0], Message) else b""
            name = name or "forwarded.eml"
        else:
            decoded = part.get_payload(decode=True)
            body = decoded if isinstance(decoded, bytes) else b""
        out.append({"index": n + 1, "name": name or f"part-{n + 1}", "type": part.get_content_type(),
                    "size": len(body), "part": part, "data": body})
    return out


def header_text_value(value: str) -> str:
    try:
        return str(email.header.make_header(email.header.decode_header(value)))
    except Exception:  # noqa: BLE001
        return value


def render(msg: Message) -> str:
    lines = [f"{name}: {header_text(msg, name)}" for name in ("From", "To", "Cc", "Date", "Subject") if msg.get(name)]
    lines.append("")
    lines.append(plain_text(msg).rstrip("\n"))
    atts = attachments(msg)
    if atts:
        lines.append("")
        lines.append("Attachments:")
        lines += [f"  [{a['index']}] {a['name']} ({a['type']}, {a['size']} bytes)" for a in atts]
    return "\n".join(lines) + "\n"
