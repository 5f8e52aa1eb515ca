"""The Authentication-Results header field (RFC 8601): written by us, forged ones removed."""

from __future__ import annotations

import re

from .arc import ArcResult
from .dkimverify import DkimResult
from .dmarc import DmarcResult
from .spf import SpfResult

_COMMENT = re.compile(r"\([^()]*\)")
_PLAIN = re.compile(r"(?:[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~.]+@)?[A-Za-z0-9][A-Za-z0-9.\-]*|[A-Za-z0-9.\-_+]+")


def _value(text: str) -> str:
    """RFC 8601 2.2 pvalue: an address or domain as it is, anything else a quoted-string
    (RFC 2045 tokens exclude "/" and "=", which a ``b=`` prefix may hold)."""
    if _PLAIN.fullmatch(text):
        return text
    safe = "".join(c if " " <= c <= "~" else "?" for c in text)
    return '"' + safe.replace("\\", "\\\\").replace('"', '\\"') + '"'


def header(authserv_id: str, spf: SpfResult | None, dkim: list[DkimResult] | None,
           dmarc: DmarcResult | None, arc: ArcResult | None = None, *,
           override: str | None = None, ip: str = "") -> bytes:
    """RFC 8601 2.2: ``Authentication-Results: authserv-id; method=result ptype.prop=value``."""
    items: list[str] = []
    if spf is not None:
        prop = "smtp.mailfrom" if spf.identity == "mailfrom" else "smtp.helo"   # RFC 8601 2.7.2
        items.append(f"spf={spf.result} {prop}={_value(spf.sender)}")
    if dkim is not None:
        if not dkim:
            items.append("dkim=none")                              # RFC 8601 2.7.1
        for d in dkim:
            items.append(f"dkim={d.result} header.d={_value(d.domain)} "
                         f"header.s={_value(d.selector)} header.b={_value(d.b)}")
    if dmarc is not None:
        item = f"dmarc={dmarc.result}"
        if dmarc.from_domain:
            item += f" header.from={_value(dmarc.from_domain)}"   # RFC 7489 11.2
        if dmarc.result == "fail":
            item += f" policy.dmarc={dmarc.policy}"
            if override:                                           # RFC 7489 7.2 trusted_forwarder
                item += f" (policy overridden: trusted ARC sealer {override})"
        items.append(item)
    if arc is not None:
        item = f"arc={arc.result}"                                 # RFC 8617 10.1
        if arc.sealers:
            item += f" (i={arc.instances} as.d={','.join(arc.sealers)})"
        if arc.oldest_pass is not None:
            item += f" header.oldest-pass={arc.oldest_pass}"
        if ip:
            item += f" smtp.remote-ip={_value(ip)}"
        items.append(item)
    if not items:
        items.append("none")                                       # RFC 8601 2.2: no-result
    return ("Authentication-Results: " + ";\r\n\t".join([authserv_id, *items]) + "\r\n").encode()


def split_fields(header_section: bytes) -> list[bytes]:
    """Header fields with their folded lines, each ending in CRLF."""
    fields: list[bytes] = []
    for line in header_section.splitlines(keepends=True):
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1] += line
        else:
            fields.append(line)
    return fields


def authserv_id_of(field: bytes) -> str | None:
    """The authserv-id of an Authentication-Results field, or None for another field."""
    name, colon, value = field.partition(b":")
    if not colon or name.strip().lower() != b"authentication-results":
        return None
    text = _COMMENT.sub(" ", value.decode("utf-8", "replace"))
    first = text.split(";", 1)[0].split()
    return first[0].lower().rstrip(".") if first else ""


def strip_ours(header_section: bytes, authserv_id: str) -> tuple[bytes, int]:
    """RFC 8601 5: remove Authentication-Results fields that claim to be ours.
    Returns the header section and how many were removed."""
    if b"authentication-results" not in header_section.lower():
        return header_section, 0            # most messages: no field to look at one by one
    ours = authserv_id.lower().rstrip(".")
    kept: list[bytes] = []
    removed = 0
    for f in split_fields(header_section):
        if authserv_id_of(f) == ours:
            removed += 1
        else:
            kept.append(f)
    return b"".join(kept), removed
