"""Binary MIME parts made safe to store and serve: base64 in place of Content-Transfer-Encoding
binary.

RFC 3516 lets a client APPEND a message with binary parts in a literal8. BODY[...] must still
be served in ordinary literals (RFC 9051 4.3: no NUL), so such a part is stored base64-encoded
with its header saying so, as Dovecot's APPEND does; BINARY[...] decodes it back to the same
bytes.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable
from typing import Any

from .structure import structure_summary

_CTE_BINARY = re.compile(rb"(?im)^(content-transfer-encoding[ \t]*:)[ \t]*binary[ \t]*(?=\r?$)")
_LINE = 76
"""RFC 2045 6.8: encoded lines are at most 76 characters."""


def _binary_leaves(node: dict[str, Any] | None, out: list[dict[str, Any]]) -> None:
    if node is None:
        return
    if "parts" in node:
        for part in node["parts"]:
            _binary_leaves(part, out)
    elif "msg" in node:
        _binary_leaves(node["msg"], out)
    elif str(node.get("enc", "")).lower() == "binary" and str(node.get("t", "")).lower() not in ("multipart", "message"):
        out.append(node)


def _binary_leaf_spans(raw: Any) -> list[tuple[int, int, int]]:
    """(part start, body start, end) of each binary leaf, in order, not overlapping."""
    leaves: list[dict[str, Any]] = []
    _binary_leaves(structure_summary(raw)["imap"]["body"], leaves)
    spans, pos = [], 0
    for node in sorted(leaves, key=lambda n: n["h"][0]):
        (start, body_start), end = node["h"], node["e"]
        if start >= pos:
            spans.append((start, body_start, end))
            pos = end
    return spans


COPY = 57 * 16 * 1024
"""Bytes copied or encoded at a time from a file (a multiple of 57: whole base64 lines)."""


def binary_parts_to_base64_file(view: Any, write: Callable[[bytes], None]) -> bool:
    """:func:`binary_parts_to_base64` of a message file seen through a
    :class:`~mailhaven.message.fileview.FileView`, written a piece at a time to ``write``
    (at most :data:`COPY` bytes read at once). False, and nothing written, when the
    message has no binary part (then it is stored as it is)."""
    spans = _binary_leaf_spans(view)
    if not spans:
        return False
    size = len(view)

    def copy(start: int, end: int) -> None:
        for at in range(start, end, COPY):
            write(view[at:min(end, at + COPY)])

    pos = 0
    for start, body_start, end in spans:
        copy(pos, start)
        write(_CTE_BINARY.sub(rb"\1 base64", view[start:body_start], count=1))
        for at in range(body_start, end, COPY):
            encoded = base64.b64encode(view[at:min(end, at + COPY)])
            write((b"\r\n" if at > body_start else b"")
                  + b"\r\n".join(encoded[i:i + _LINE] for i in range(0, len(encoded), _LINE)))
        if end == size or view[end:end + 1] not in (b"\r", b"\n"):
            write(b"\r\n")                      # the last part of the message: end its line
        pos = end
    copy(pos, size)
    return True


def binary_parts_to_base64(raw: bytes) -> bytes:
    """``raw`` with every leaf part of Content-Transfer-Encoding binary re-encoded as base64
    (header field rewritten, body base64 in 76-character CRLF lines); unchanged otherwise."""
    if not _CTE_BINARY.search(raw):
        return raw
    leaves: list[dict[str, Any]] = []
    _binary_leaves(structure_summary(raw)["imap"]["body"], leaves)
    if not leaves:
        return raw
    out: list[bytes] = []
    pos = 0
    for node in sorted(leaves, key=lambda n: n["h"][0]):
        (start, body_start), end = node["h"], node["e"]
        if start < pos:
            continue
        out.append(raw[pos:start])
        out.append(_CTE_BINARY.sub(rb"\1 base64", raw[start:body_start], count=1))
        encoded = base64.b64encode(raw[body_start:end])
        lines = [encoded[i:i + _LINE] for i in range(0, len(encoded), _LINE)]
        body = b"\r\n".join(lines)
        if end == len(raw) or raw[end:end + 1] not in (b"\r", b"\n"):
            body += b"\r\n"                     # the last part of the message: end its line
        out.append(body)
        pos = end
    out.append(raw[pos:])
    return b"".join(out)
