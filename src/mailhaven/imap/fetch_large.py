"""FETCH of a large message, sent from its file (or the store's pieces of it) a chunk at a time.

A message over :data:`~mailhaven.imap.fetch.STREAM_MIN` bytes is never read whole: the literals of
``BODY[]``, ``RFC822``, ``BODY[TEXT]``, ``BODY[1.2]``, ``BODY[HEADER]``, ``BODY[n.MIME]``
(and their ``<partial>`` forms) are byte ranges of the file, written through the
session's output in :data:`CHUNK` pieces with a flush (and drain) between them; every
other item is rendered as for any message, from the summary or from a
:class:`~mailhaven.message.fileview.FileView` of the file (header fields, a structure
missing from an old summary). Memory stays flat in the message's size.

Invariant: the response has the same items and bytes as the in-memory path would give;
only BINARY of a part (which needs decoding) still reads that part whole.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from ..message.fileview import FileView
from ..message.structure import header_end, structure_summary
from ..store.blobview import BlobView
from .fetch import STREAM_MIN, FetchItem, _render, find_part
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


def _layout(s: Session, uid: int, items: list[FetchItem], msg: Message | None, view: FileView,
            seen_now: bool) -> tuple[list[tuple[FetchItem, tuple[int, int]]], list[bytes]]:
    """The literal items as byte ranges, and the other items rendered."""
    spans: list[tuple[FetchItem, tuple[int, int]]] = []
    others: list[FetchItem] = []
    for item in items:
        span = _range(view, msg, item)
        if span is None:
            others.append(item)
        else:
            spans.append((item, _partial(span, item)))
    parts = _render(s, uid, others, msg, view, seen_now) if others or seen_now else []  # type: ignore[arg-type]
    return spans, parts


async def write_large(s: Session, uid: int, msn: int | None, items: list[FetchItem], msg: Message | None,
                      blob_id: str, seen_now: bool) -> None:
    """Write ``* msn FETCH (...)`` for one large message, its literals from its file, or
    (a store without files: PostgreSQL) from the store's pieces of the blob."""
    path = s.store.blob_path(blob_id)
    fd = os.open(path, os.O_RDONLY) if path is not None else None
    try:
        if fd is not None:
            spans, parts = _layout(s, uid, items, msg, FileView(fd, os.fstat(fd).st_size), seen_now)
        else:               # its view reads through the event loop: used from a worker thread
            view = BlobView(s.store.read_blob_range, blob_id, await s.store.blob_size(blob_id))
            spans, parts = await s.blocking(_layout, s, uid, items, msg, view, seen_now)
        s.write(f"* {msn} FETCH (".encode() + b" ".join(parts))
        for n, (item, (start, end)) in enumerate(spans):
            label = item.label.encode() if item.name == "BODY" else item.name.encode()
            head = b"{%d}\r\n" % (end - start)
            s.write((b" " if parts or n else b"") + label + b" " + head)
            if fd is None:
                if end > start:
                    async for data in s.store.blob_chunks(blob_id, start, end):
                        s.write(data)
                        await s.maybe_flush()
                continue
            pos = start
            while pos < end:
                data = os.pread(fd, min(CHUNK, end - pos), pos)
                if not data:
                    raise OSError(f"{path} ended early")
                s.write(data)
                pos += len(data)
                await s.maybe_flush()
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
