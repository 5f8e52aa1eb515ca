"""Building messages: new ones, replies, forwards and drafts (RFC 5322, MIME, RFC 2231/2047
through the stdlib's ``email.policy.SMTP``/``SMTPUTF8``). Pure functions: no I/O but reading
attachment files."""

from __future__ import annotations

import email.policy
import email.utils
import mimetypes
import uuid
from dataclasses import dataclass, field
from email.message import EmailMessage, Message
from pathlib import Path
from typing import Any

from ..message.summary import parse_addresses
from .render import header_text, plain_text


@dataclass
class Draft:
    """What the user is writing; turned into a message by :func:`build`."""

    sender: str
    """``Name <address>`` or an address."""
    to: list[str] = field(default_factory=list)
    cc: list[str] = field(default_factory=list)
    bcc: list[str] = field(default_factory=list)
    subject: str = ""
    body: str = ""
    attachments: list[Path] = field(default_factory=list)
    in_reply_to: str | None = None
    references: list[str] = field(default_factory=list)
    forwarded: bytes | None = None
    """A message attached whole (forward as attachment)."""
    message_id: str | None = None


def _fmt(pair: tuple[str, str]) -> str:
    """``Name <addr>``; an internationalised address (RFC 6532) is written as it is."""
    try:
        return email.utils.formataddr(pair)
    except UnicodeError:
        name, addr = pair
        return f"{name} <{addr}>" if name else addr


def _pairs(values: list[Any]) -> list[tuple[str, str]]:
    """(name, address) pairs from header values; never raises on hostile headers."""
    return [(a.get("name") or "", a.get("email") or "") for a in parse_addresses([str(v) for v in values])
            if a.get("email")]


def _domain(sender: str) -> str:
    return email.utils.parseaddr(sender)[1].rpartition("@")[2] or "localhost"


def _needs_utf8(addresses: list[str]) -> bool:
    return any(not email.utils.parseaddr(a)[1].isascii() for a in addresses)


def build(d: Draft) -> EmailMessage:
    everyone = [d.sender, *d.to, *d.cc, *d.bcc]
    msg = EmailMessage(policy=email.policy.SMTPUTF8 if _needs_utf8(everyone) else email.policy.SMTP)
    msg["From"] = d.sender
    if d.to:
        msg["To"] = ", ".join(d.to)
    if d.cc:
        msg["Cc"] = ", ".join(d.cc)
    if d.bcc:
        msg["Bcc"] = ", ".join(d.bcc)
    msg["Subject"] = d.subject
    msg["Date"] = email.utils.formatdate(localtime=True)
    msg["Message-ID"] = d.message_id or f"<{uuid.uuid4().hex}@{_domain(d.sender)}>"
    if d.in_reply_to:
        msg["In-Reply-To"] = d.in_reply_to
    if d.references:
        msg["References"] = " ".join(d.references)
    msg["MIME-Version"] = "1.0"
    body = d.body if d.body.endswith("\n") or not d.body else d.body + "\n"
    msg.set_content(body, subtype="plain", charset="utf-8",
                    cte="7bit" if body.isascii() and all(len(line) < 990 for line in body.splitlines()) else
                    "quoted-printable")
    for path in d.attachments:
        data = path.read_bytes()
        ctype, encoding = mimetypes.guess_type(path.name)
        if ctype is None or encoding is not None:
            ctype = "application/octet-stream"
        maintype, subtype = ctype.split("/", 1)
        # bytes as given, base64: the attachment comes back byte for byte, line ends included
        msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=path.name)
    if d.forwarded is not None:
        inner = email.message_from_bytes(d.forwarded, policy=email.policy.default)
        msg.add_attachment(inner, disposition="attachment", filename="forwarded.eml")
    return msg


def without_bcc(msg: EmailMessage) -> bytes:
    """The bytes to send: everything but the Bcc: header (RFC 5322 3.6.3)."""
    copy = email.message_from_bytes(msg.as_bytes(), policy=msg.policy)
    del copy["Bcc"]
    return copy.as_bytes()


def envelope_recipients(d: Draft) -> list[str]:
    return list(dict.fromkeys(email.utils.parseaddr(a)[1] for a in [*d.to, *d.cc, *d.bcc]
                              if email.utils.parseaddr(a)[1]))


def _prefixed(subject: str, prefix: str) -> str:
    s = subject.strip()
    if s.lower().startswith(prefix.lower()):
        return s
    return f"{prefix} {s}" if s else prefix


def quote(text: str) -> str:
    lines = text.replace("\r\n", "\n").replace("\r", "\n").rstrip("\n").split("\n")
    return "".join(f"> {line}\n" if line.strip() else ">\n" for line in lines)


def reply(original: Message, me: str, my_addresses: set[str], *, reply_all: bool) -> Draft:
    """RFC 5322 3.6.4: In-Reply-To is the parent's Message-ID, References the parent's
    References (or In-Reply-To) plus its Message-ID. Reply-To wins over From."""
    parent_id = str(original.get("Message-ID") or "").strip()
    refs = str(original.get("References") or original.get("In-Reply-To") or "").split()
    if parent_id:
        refs.append(parent_id)
    to_field = original.get_all("Reply-To") or original.get_all("From") or []
    to = [_fmt(a) for a in _pairs(to_field)]
    cc: list[str] = []
    if reply_all:
        others = _pairs((original.get_all("To") or []) + (original.get_all("Cc") or []))
        seen = {email.utils.parseaddr(a)[1].lower() for a in to} | {a.lower() for a in my_addresses}
        for name, addr in others:
            if addr and addr.lower() not in seen:
                seen.add(addr.lower())
                cc.append(_fmt((name, addr)))
    to = [a for a in to if email.utils.parseaddr(a)[1].lower() not in {m.lower() for m in my_addresses}] or to
    when = _header_text(original, "Date")
    who = _header_text(original, "From")
    intro = f"On {when}, {who} wrote:" if when else f"{who} wrote:"
    body = f"\n{intro}\n{quote(plain_text(original))}"
    return Draft(sender=me, to=to, cc=cc, subject=_prefixed(_header_text(original, "Subject"), "Re:"), body=body,
                 in_reply_to=parent_id or None, references=refs[-20:])


def forward(original: Message, raw: bytes, me: str, to: list[str], *, as_attachment: bool) -> Draft:
    subject = _prefixed(_header_text(original, "Subject"), "Fwd:")
    if as_attachment:
        return Draft(sender=me, to=to, subject=subject, body="", forwarded=raw)
    head = "\n".join(f"{h}: {_header_text(original, h)}" for h in ("From", "Date", "Subject", "To")
                     if original.get(h))
    return Draft(sender=me, to=to, subject=subject,
                 body=f"\n---------- Forwarded message ----------\n{head}\n\n{plain_text(original)}")


def _header_text(msg: Message, name: str) -> str:
    return header_text(msg, name)


def draft_from_message(msg: Message) -> Draft:
    """Resume a saved draft."""
    def addresses(name: str) -> list[str]:
        return [_fmt(a) for a in _pairs(msg.get_all(name) or [])]

    return Draft(sender=_header_text(msg, "From"), to=addresses("To"), cc=addresses("Cc"), bcc=addresses("Bcc"),
                 subject=_header_text(msg, "Subject"), body=plain_text(msg),
                 in_reply_to=str(msg.get("In-Reply-To") or "") or None,
                 references=str(msg.get("References") or "").split())


def edit_text(d: Draft) -> str:
    """The text an editor shows: header lines, a blank line, the body."""
    lines = [f"From: {d.sender}", f"To: {', '.join(d.to)}", f"Cc: {', '.join(d.cc)}", f"Bcc: {', '.join(d.bcc)}",
             f"Subject: {d.subject}"]
    return "\n".join(lines) + "\n\n" + d.body


def parse_edit(text: str, base: Draft) -> Draft:
    head, _, body = text.partition("\n\n")
    fields: dict[str, str] = {}
    for line in head.splitlines():
        name, sep, value = line.partition(":")
        if sep:
            fields[name.strip().lower()] = value.strip()

    def split(value: str) -> list[str]:
        return [_fmt(a) for a in email.utils.getaddresses([value]) if a[1]]

    return Draft(sender=fields.get("from", base.sender), to=split(fields.get("to", "")), cc=split(fields.get("cc", "")),
                 bcc=split(fields.get("bcc", "")), subject=fields.get("subject", base.subject), body=body,
                 attachments=base.attachments, in_reply_to=base.in_reply_to, references=base.references,
                 forwarded=base.forwarded)
