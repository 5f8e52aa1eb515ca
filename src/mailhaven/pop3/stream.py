"""Large messages out of POP3 from their files, a chunk at a time (RETR and the exact
sizes LIST and STAT report), so memory does not grow with message size."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from . import protocol as P

STREAM_MIN = 1024 * 1024
"""Messages larger than this are sent from their file, not read whole."""
CHUNK = 256 * 1024


async def blob_chunks(store: Any, blob_id: str) -> AsyncIterator[bytes]:
    """The blob's bytes in pieces of at most :data:`CHUNK` (read off the event loop)."""
    path = store.blob_path(blob_id)
    if path is None:                                  # not a file (inline, PostgreSQL)
        yield bytes(await store.read_blob(blob_id))
        return
    f = await asyncio.to_thread(open, path, "rb")
    try:
        while True:
            data = await asyncio.to_thread(f.read, CHUNK)
            if not data:
                return
            yield data
    finally:
        f.close()


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
