"""FETCH of a large message, sent from its file (or the store's pieces of it) a chunk at a time.

A message over :data:`~mailhaven.imap.fetch.STREAM_MIN` bytes is never read whole: the literals of
``BODY[]``, ``RFC822``, ``BODY[TEXT]``, ``BODY[1.2]``, ``BODY[HEADER]``, ``BODY[n.MIME]``
(and their ``<partial>`` forms) are byte ranges of the file, written through the
session's output in :data:`CHUNK` pieces with a flush (and drain) between them; every
other item is rendered as for any message, from the summary or from a
:class:`~mailhaven.message.fileview.FileView` of the file (header fields, a structure
missing from an old summary). Memory stays flat in the message's size.

Invariant: the response has the same items and bytes as the in-memory path would give;
BINARY and BINARY.SIZE decode a piece at a time (``message/transfer.py``), once to
measure, once to send.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..message import transfer
from ..message.fileview import FileView
from ..message.structure import header_end, structure_summary
from ..store.blobview import BlobView
from .fetch import STREAM_MIN, FetchItem, _render, find_part
from .responses import UNKNOWN_CTE, No
from .session import Session

if TYPE_CHECKING:
    from ..store.api import Message

CHUNK = 256 * 1024


def _range(view: FileView, msg: Message | None, item: FetchItem) -> tuple[int, int] | None:
    """The bytes of ``item`` as a (start, end) range of the file, or None when the item is
    not a plain range (rendered the ordinary way)."""
    size = len(view)
    name = item.name
    if name == "RFC822":
        return 0, size
    if name == "RFC822.TEXT":
        return header_end(view, 0, size), size               # type: ignore[arg-type]
    if name != "BODY" or not item.section or item.text in ("HEADER.FIELDS", "HEADER.FIELDS.NOT"):
        return None
    if not item.parts:
        body = header_end(view, 0, size)                      # type: ignore[arg-type]
        return {"": (0, size), "TEXT": (body, size), "HEADER": (0, body)}.get(item.text)
    imap = msg.summary.get("imap") if msg is not None else None
    root = imap["body"] if imap else structure_summary(view)["imap"]["body"]  # type: ignore[arg-type]
    node = find_part(root, item.parts)
    if node is None:
        return 0, 0
    if item.text == "MIME":
        return node["h"][0], node["h"][1]
    if not item.text:
        return node["h"][1], node["e"]
    message = node.get("msg")
    if message is None:
        return 0, 0
    if item.text == "TEXT":
        return message["h"][1], message["e"]
    return message["h"][0], message["h"][1]                  # HEADER


def _partial(span: tuple[int, int], item: FetchItem) -> tuple[int, int]:
    start, end = span
    if item.partial is not None:                              # RFC 9051 6.4.5 <origin.octets>
        origin, length = item.partial
        start = min(end, start + origin)
        if length is not None:
            end = min(end, start + length)
    return start, end


@dataclass
class _Binary:
    """A BINARY or BINARY.SIZE item (RFC 3516) of a large message: the encoded ranges of
    the file it decodes, measured before anything is written (the literal's length, and
    ``~`` when the bytes sent hold a NUL)."""

    item: FetchItem
    segments: list[tuple[int, int, str]]
    """(start, end, Content-Transfer-Encoding) ranges of the file, decoded in turn."""
    size: int = 0
    nul: bool = False

    def window(self) -> tuple[int, int]:
        """The decoded bytes sent: all, or the ``<origin.octets>`` partial (RFC 3516 4.3)."""
        if self.item.partial is None:
            return 0, self.size
        origin, length = self.item.partial
        start = min(origin, self.size)
        return start, self.size if length is None else min(self.size, start + length)

    def count(self, data: bytes) -> None:
        """Measuring: the next decoded bytes."""
        offset = self.size
        self.size += len(data)
        if self.nul or b"\x00" not in data:
            return
        if self.item.partial is None:
            self.nul = True
            return
        origin, length = self.item.partial
        lo = max(0, origin - offset)
        hi = len(data) if length is None else max(0, min(len(data), origin + length - offset))
        self.nul = b"\x00" in data[lo:hi]


def _binary_segments(view: FileView, msg: Message | None, item: FetchItem) -> list[tuple[int, int, str]]:
    """What ``fetch._render`` decodes for ``item``, as ranges of the file."""
    imap = msg.summary.get("imap") if msg is not None else None
    root = imap["body"] if imap else structure_summary(view)["imap"]["body"]  # type: ignore[arg-type]
    node = find_part(root, item.parts)
    if node is None:
        return []
    enc = str(node.get("enc", "7bit")).lower()
    if enc not in transfer.KNOWN:
        raise No("Unknown Content-Transfer-Encoding", code=UNKNOWN_CTE)
    if not item.parts:        # BINARY[]: the whole message; a single part's body decoded
        if "parts" in node or "msg" in node:
            return [(0, len(view), "binary")]
        return [(0, node["h"][1], "binary"), (node["h"][1], node["e"], enc)]
    return [(node["h"][1], node["e"], enc)]


def _layout(s: Session, uid: int, items: list[FetchItem], msg: Message | None, view: FileView,
            seen_now: bool) -> tuple[list[tuple[FetchItem, tuple[int, int]]], list[_Binary], list[bytes]]:
    """The literal items as byte ranges, the BINARY items as ranges to decode, and the
    other items rendered."""
    spans: list[tuple[FetchItem, tuple[int, int]]] = []
    binaries: list[_Binary] = []
    others: list[FetchItem] = []
    for item in items:
        if item.name in ("BINARY", "BINARY.SIZE"):
            binaries.append(_Binary(item, _binary_segments(view, msg, item)))
            continue
        span = _range(view, msg, item)
        if span is None:
            others.append(item)
        else:
            spans.append((item, _partial(span, item)))
    parts = _render(s, uid, others, msg, view, seen_now) if others or seen_now else []  # type: ignore[arg-type]
    return spans, binaries, parts


def _measure_file(fd: int, binaries: list[_Binary]) -> None:
    """In a worker thread: each BINARY item's decoded size, from the file."""
    for b in binaries:
        for start, end, enc in b.segments:
            decoder = transfer.Decoder(enc)
            pos = start
            while pos < end:
                data = os.pread(fd, min(CHUNK, end - pos), pos)
                if not data:
                    raise OSError("message file ended early")
                pos += len(data)
                b.count(decoder.feed(data))
            b.count(decoder.end())


async def _pieces(s: Session, fd: int | None, blob_id: str, start: int, end: int) -> AsyncIterator[bytes]:
    """The bytes ``start:end`` of the message, :data:`CHUNK` at a time: from its file, or
    (PostgreSQL) the store's pieces."""
    if fd is None:
        if end > start:
            async for data in s.store.blob_chunks(blob_id, start, end):
                yield data
        return
    pos = start
    while pos < end:
        data = os.pread(fd, min(CHUNK, end - pos), pos)
        if not data:
            raise OSError("message file ended early")
        yield data
        pos += len(data)


async def _decoded(s: Session, fd: int | None, blob_id: str, b: _Binary) -> AsyncIterator[bytes]:
    for start, end, enc in b.segments:
        decoder = transfer.Decoder(enc)
        async for piece in _pieces(s, fd, blob_id, start, end):
            if out := decoder.feed(piece):
                yield out
        if out := decoder.end():
            yield out


async def _write_binary(s: Session, fd: int | None, blob_id: str, b: _Binary) -> None:
    """The decoded bytes of the item's window, a piece at a time."""
    start, end = b.window()
    offset = 0
    async for data in _decoded(s, fd, blob_id, b):
        if offset >= end:
            break
        lo, hi = max(start - offset, 0), min(end - offset, len(data))
        offset += len(data)
        if hi > lo:
            s.write(data if (lo, hi) == (0, len(data)) else data[lo:hi])
            await s.maybe_flush()


async def write_large(s: Session, uid: int, msn: int | None, items: list[FetchItem], msg: Message | None,
                      blob_id: str, seen_now: bool) -> None:
    """Write ``* msn FETCH (...)`` for one large message, its literals from its file, or
    (a store without files: PostgreSQL) from the store's pieces of the blob."""
    path = s.store.blob_path(blob_id)
    fd = os.open(path, os.O_RDONLY) if path is not None else None
    try:
        if fd is not None:
            spans, binaries, parts = _layout(s, uid, items, msg, FileView(fd, os.fstat(fd).st_size), seen_now)
            if binaries:
                await s.blocking(_measure_file, fd, binaries)
        else:               # its view reads through the event loop: used from a worker thread
            view = BlobView(s.store.read_blob_range, blob_id, await s.store.blob_size(blob_id))
            spans, binaries, parts = await s.blocking(_layout, s, uid, items, msg, view, seen_now)
            for b in binaries:
                async for data in _decoded(s, None, blob_id, b):
                    b.count(data)
        sizes = [b.item.label.encode() + b" %d" % b.size for b in binaries if b.item.name == "BINARY.SIZE"]
        s.write(f"* {msn} FETCH (".encode() + b" ".join(parts + sizes))
        written = bool(parts or sizes)
        for item, (start, end) in spans:
            label = item.label.encode() if item.name == "BODY" else item.name.encode()
            s.write((b" " if written else b"") + label + b" " + b"{%d}\r\n" % (end - start))
            written = True
            async for data in _pieces(s, fd, blob_id, start, end):
                s.write(data)
                await s.maybe_flush()
        for b in binaries:
            if b.item.name != "BINARY":
                continue
            start, end = b.window()
            head = (b"~" if b.nul else b"") + b"{%d}\r\n" % (end - start)
            s.write((b" " if written else b"") + b.item.label.encode() + b" " + head)
            written = True
            await _write_binary(s, fd, blob_id, b)
        s.write(b")\r\n")
        await s.maybe_flush()
    finally:
        if fd is not None:
            os.close(fd)


HEADER_CAP = 1024 * 1024
"""Most of a large message read for its header block (a header with no end stops here)."""


def read_header_block(path: str) -> bytes:
    """The header block of a message file (through its blank line), read a piece at a time."""
    out = bytearray()
    with open(path, "rb") as f:
        while len(out) < HEADER_CAP:
            data = f.read(64 * 1024)
            if not data:
                break
            out += data
            end = header_end(bytes(out), 0, len(out))
            if end < len(out):
                return bytes(out[:end])
    return bytes(out)


async def read_stored_header_block(store: Any, blob_id: str) -> bytes:
    """:func:`read_header_block` of a blob that is not a file, a range at a time."""
    out = bytearray()
    while len(out) < HEADER_CAP:
        data = await store.read_blob_range(blob_id, len(out), 64 * 1024)
        if not data:
            break
        out += data
        end = header_end(bytes(out), 0, len(out))
        if end < len(out):
            return bytes(out[:end])
    return bytes(out)


async def large_header_block(s: Session, blob_id: str) -> bytes:
    """The header block of a large message, from its file or by range; never read whole."""
    path = s.store.blob_path(blob_id)
    if path is not None:
        return await s.blocking(read_header_block, path)
    return await read_stored_header_block(s.store, blob_id)


async def large_headers(s: Session, mailbox_id: int, uidvalidity: int, uids: list[int],
                        sizes: dict[int, int], into: dict[int, bytes]) -> list[int]:
    """Header blocks of the large messages among ``uids`` read from the start of their
    files into ``into`` (and the header cache); returns the uids still to read."""
    from .headercache import header_cache

    big = [u for u in uids if sizes.get(u, 0) > STREAM_MIN]
    if not big:
        return uids
    cache = header_cache(s.store)
    for m in await s.store.get_messages(mailbox_id, big, with_summary=False):
        into[m.uid] = cache.put_message((mailbox_id, uidvalidity, m.uid), await large_header_block(s, m.blob_id))
    return [u for u in uids if u not in into]
