"""Large messages out of POP3 a piece at a time, from their files or PostgreSQL rows (RETR,
TOP and the exact sizes LIST and STAT report), so memory does not grow with message size."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from . import protocol as P

STREAM_MIN = 1024 * 1024
"""Messages larger than this are sent from their file, not read whole."""
CHUNK = 256 * 1024


def blob_chunks(store: Any, blob_id: str) -> AsyncIterator[bytes]:
    """The blob's bytes in bounded pieces, as the store streams them (a file on SQLite,
    its chunk rows on PostgreSQL), never the whole message at once."""
    return store.blob_chunks(blob_id)  # type: ignore[no-any-return]


async def wire_size(store: Any, blob_id: str) -> int:
    """:func:`protocol.wire_size` of a stored message, read a piece at a time."""
    enc = P.MessageEncoder()
    async for data in store.blob_chunks(blob_id):
        enc.feed(data)
    enc.finish()
    return enc.wire_size


def file_wire_size(path: str) -> int:
    """:func:`protocol.wire_size` of a message file, read a chunk at a time."""
    enc = P.MessageEncoder()
    with open(path, "rb") as f:
        while data := f.read(CHUNK):
            enc.feed(data)
    enc.finish()
    return enc.wire_size


async def top_prefix(store: Any, blob_id: str, body_lines: int) -> bytes:
    """Enough of the start of a message for TOP (RFC 1939 7): its complete lines through
    the blank line and ``body_lines`` more, read a chunk at a time; ``encode_message`` of
    it with the same ``body_lines`` gives what it gives for the whole message."""
    out = bytearray()
    tail = b""
    in_body = False
    left = body_lines
    async for data in blob_chunks(store, blob_id):
        data = tail + data
        end = len(data) - 1 if data.endswith(b"\r") else len(data)     # its LF may follow
        cut = max(data.rfind(b"\n", 0, end), data.rfind(b"\r", 0, end))
        if cut < 0:
            tail = data
            continue
        tail = data[cut + 1:]
        for line in data[:cut + 1].splitlines(keepends=True):
            if in_body:
                if not left:
                    return bytes(out)
                left -= 1
            elif line in (b"\r\n", b"\n", b"\r"):
                in_body = True
            out += line
        if in_body and not left:
            return bytes(out)
    return bytes(out + tail)
