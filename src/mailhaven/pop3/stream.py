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
