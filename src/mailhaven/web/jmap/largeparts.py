"""Email/get of a large message without reading it whole (issue 14 item 4).

The MIME structure stored at delivery (``summary["imap"]["body"]``, byte offsets per
entity) says where every leaf's body lies in the file (or PostgreSQL's rows). :func:`skeleton` reads the message
with every large leaf body left out (headers, delimiters and small parts kept, so the
stdlib parser gives the same tree and part ids) and marks the parts it emptied with a
:class:`FilePart`; ``parts.body_part`` takes their decoded size and ``parts.text_of``
their text from the file, a chunk at a time.
"""

from __future__ import annotations

import base64
import binascii
import quopri
import re
from dataclasses import dataclass
from email.message import Message
from typing import Any

CUT = 64 * 1024
"""Leaf bodies larger than this are left in the file."""
CHUNK = 1024 * 1024
_B64 = re.compile(rb"[A-Za-z0-9+/]")
_NOT_B64 = re.compile(rb"[^A-Za-z0-9+/]")


@dataclass(frozen=True)
class FilePart:
    source: Any
    """The whole message as a :class:`~mailhaven.message.fileview.FileView` (its file, or
    a blob the store reads a range at a time): only slices are taken of it."""
    start: int
    end: int
    encoding: str

    def _chunks(self, limit: int | None = None) -> Any:
        end = self.end if limit is None else min(self.end, self.start + limit)
        pos = self.start
        while pos < end:
            data = self.source[pos:min(end, pos + CHUNK)]
            if not data:
                return
            pos += len(data)
            yield data

    def decoded_size(self) -> int:
        """What ``get_payload(decode=True)`` would give, counted a chunk at a time."""
        if self.encoding == "base64":
            return sum(len(_B64.findall(c)) for c in self._chunks()) * 3 // 4
        if self.encoding == "quoted-printable":
            return sum(len(d) for d in self._qp(None))
        return self.end - self.start

    def decoded(self, limit: int | None = None) -> bytes:
        """The decoded body (its start only, about ``limit`` bytes, when given)."""
        raw_limit = None if limit is None else limit * 3 + 1024
        if self.encoding == "base64":
            data = _NOT_B64.sub(b"", b"".join(self._chunks(raw_limit)))
            data = data[:len(data) // 4 * 4]
            try:
                return base64.b64decode(data)
            except binascii.Error:
                return b""
        if self.encoding == "quoted-printable":
            return b"".join(self._qp(raw_limit))
        return b"".join(self._chunks(raw_limit))

    def _qp(self, limit: int | None) -> Any:
        carry = b""
        for data in self._chunks(limit):
            data = carry + data
            cut = data.rfind(b"\n") + 1
            carry = data[cut:]
            if cut:
                yield quopri.decodestring(data[:cut])
        if carry:
            yield quopri.decodestring(carry)


def skeleton(source: Any, structure: dict[str, Any]) -> tuple[bytes, dict[str, FilePart]]:
    """The message with large leaf bodies left out, and those parts by JMAP part id."""
    cuts: dict[str, FilePart] = {}

    def visit(node: dict[str, Any], pid: str) -> None:
        if "parts" in node:
            for i, child in enumerate(node["parts"], 1):
                visit(child, f"{pid}.{i}" if pid else str(i))
            return
        if "msg" in node:
            return                      # an encapsulated message: left whole
        start, end = int(node["h"][1]), int(node["e"])
        if end - start > CUT:
            cuts[pid or "1"] = FilePart(source, start, end, str(node.get("enc") or "7bit").lower())

    visit(structure, "")
    pieces = []
    pos = 0
    for part in sorted(cuts.values(), key=lambda p: p.start):
        pieces.append(source[pos:part.start])
        pos = part.end
    pieces.append(source[pos:len(source)])
    return b"".join(pieces), cuts


def mark(msg: Message, cuts: dict[str, FilePart], walked: list[tuple[str, Message]]) -> None:
    """Attach each :class:`FilePart` to the part the stdlib parsed for it."""
    for pid, part in walked:
        file = cuts.get(pid)
        if file is not None and not part.is_multipart():
            part.mh_file = file  # type: ignore[attr-defined]


def file_of(part: Message) -> FilePart | None:
    return getattr(part, "mh_file", None)
