"""ENVELOPE and BODYSTRUCTURE as IMAP sends them (RFC 9051 section 7.5.2), from the
structure the message summary holds (:mod:`mailhaven.message.structure`).

:func:`wire_forms` renders both once at delivery, for sessions without UTF8=ACCEPT (the
form nearly every client gets); the store keeps them beside the summary, so FETCH
ENVELOPE BODYSTRUCTURE of a whole mailbox neither decodes the summary nor renders, as
Dovecot keeps ``imap.envelope`` and ``imap.bodystructure`` in its cache file.
"""

from __future__ import annotations

import re
from typing import Any

from .responses import QUOTABLE_MAX, nstring

_PLAIN = re.compile(r'[\\"\r\n\x00]')


def _ns(value: Any, utf8: bool) -> bytes:
    if value is None:
        return b"NIL"
    text = str(value)
    if text.isascii() and len(text) <= QUOTABLE_MAX and not _PLAIN.search(text):   # the common case, fast
        return b'"' + text.encode("ascii") + b'"'
    return nstring(text, utf8=utf8)


def render_envelope(env: list[Any], utf8: bool, raw8: dict[str, str] | None = None) -> bytes:
    """8-bit text goes out as it is in the message, in a literal (RFC 9051 4.3 allows 8-bit
    octets there) for a session without UTF8=ACCEPT: as Dovecot does, so the client sees
    the bytes that BODY[HEADER] shows, not a re-encoding. ``raw8`` holds the values that
    are no UTF-8 (by position, see structure.envelope): their original bytes, in a literal
    even with UTF8=ACCEPT, whose quoted strings must be UTF-8 (RFC 6855 3)."""
    if not raw8:
        # Nearly every message: nothing to look up by position, so no position strings
        # built (twenty f-strings a message at delivery, where wire_forms renders this).
        return b"(" + b" ".join(
            (b"NIL" if not field else b"(" + b"".join(
                b"(" + b" ".join(_ns(x, utf8) for x in addr) + b")" for addr in field) + b")")
            if i in _ADDRESS_FIELDS else _ns(field, utf8)
            for i, field in enumerate(env)) + b")"

    def value(x: Any, path: str) -> bytes:
        if path in raw8:
            return nstring(raw8[path].encode("latin-1"), utf8=False)
        return _ns(x, utf8)

    parts: list[bytes] = []
    for i, field in enumerate(env):
        if i in _ADDRESS_FIELDS:
            if not field:
                parts.append(b"NIL")
            else:
                parts.append(b"(" + b"".join(
                    b"(" + b" ".join(value(x, f"{i}.{j}.{k}") for k, x in enumerate(addr)) + b")"
                    for j, addr in enumerate(field)) + b")")
        else:
            parts.append(value(field, str(i)))
    return b"(" + b" ".join(parts) + b")"


_ADDRESS_FIELDS = frozenset((2, 3, 4, 5, 6, 7))
"""ENVELOPE positions of from, sender, reply-to, to, cc, bcc (RFC 9051 7.5.2)."""


def _params(params: list[list[str]] | None, utf8: bool) -> bytes:
    if not params:
        return b"NIL"
    return b"(" + b" ".join(_ns(k, utf8) + b" " + _ns(v, utf8)
                            for k, v in params) + b")"


def _disp(disp: list[Any] | None, utf8: bool) -> bytes:
    if not disp:
        return b"NIL"
    return b"(" + _ns(disp[0], utf8) + b" " + _params(disp[1], utf8) + b")"


def _lang(lang: list[str] | None, utf8: bool) -> bytes:
    if not lang:
        return b"NIL"
    return b"(" + b" ".join(_ns(x, utf8) for x in lang) + b")"


_UNPARSED_MESSAGE: dict[str, Any] = {
    "t": "text", "s": "plain", "p": [["charset", "us-ascii"]], "id": None, "desc": None, "enc": "7bit",
    "h": [0, 0], "e": 0, "lines": 0, "md5": None, "disp": None, "lang": None, "loc": None}
"""The body of an encapsulated message that is not parsed: an empty text/plain part."""


def render_body(node: dict[str, Any], extended: bool, utf8: bool) -> bytes:
    if "parts" in node:
        # RFC 9051 7.5.2: a multipart has at least one part; one with none (no boundary, or
        # none found) shows an empty text/plain one, as Dovecot.
        inner = b"".join(render_body(p, extended, utf8) for p in node["parts"] or [_UNPARSED_MESSAGE])
        out = inner + b" " + _ns(node["s"], utf8)
        if extended:
            out += b" " + _params(node["p"], utf8) + b" " + _disp(node["disp"], utf8) + b" " + \
                _lang(node["lang"], utf8) + b" " + _ns(node["loc"], utf8)
        return b"(" + out + b")"
    size = node["e"] - node["h"][1]
    fields = [_ns(node["t"], utf8), _ns(node["s"], utf8),
              _params(node["p"], utf8), _ns(node["id"], utf8), _ns(node["desc"], utf8),
              _ns(node["enc"], utf8), b"%d" % size]
    if "msg" in node or (node["t"].lower(), node["s"].lower()) == ("message", "rfc822"):
        # body-type-msg always carries an envelope, a body and a line count; a message that
        # was not parsed (base64/quoted-printable, or nested too deep) gets empty ones.
        message = node.get("msg") or _UNPARSED_MESSAGE
        fields.append(render_envelope(message.get("env") or [None] * 10, utf8, message.get("env8")))
        fields.append(render_body(message, extended, utf8))
        fields.append(b"%d" % node.get("lines", 0))
    elif node["t"].lower() == "text":
        fields.append(b"%d" % node.get("lines", 0))
    if extended:
        fields += [_ns(node["md5"], utf8), _disp(node["disp"], utf8), _lang(node["lang"], utf8),
                   _ns(node["loc"], utf8)]
    return b"(" + b" ".join(fields) + b")"


def wire_forms(summary: dict[str, Any]) -> tuple[bytes, bytes] | None:
    """(ENVELOPE, BODYSTRUCTURE) for a session without UTF8=ACCEPT, or None when the summary
    has no structure (FETCH then parses the message itself)."""
    imap = summary.get("imap")
    if not imap or not imap.get("body"):
        return None
    try:
        return (render_envelope(imap.get("envelope") or [None] * 10, False, imap.get("envelope8")),
                render_body(imap["body"], True, False))
    except (KeyError, TypeError, IndexError, ValueError):
        return None                 # a summary from an older version: rendered at FETCH time
