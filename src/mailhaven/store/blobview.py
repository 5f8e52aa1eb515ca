"""A stored blob read from a worker thread, a range at a time, when it is not a file.

Code written for a message file (:class:`~mailhaven.message.fileview.FileView`'s slices
and searches, a sync iterator of pieces) runs unchanged on a blob the store keeps
elsewhere (PostgreSQL's ``blob_chunks`` rows): each read is the store's async range read,
run on the event loop that owns the store's connections while the worker thread waits.
Never used on the loop's own thread (that would wait on itself): doing so raises.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

from ..message.fileview import FileView


class BlobView(FileView):
    """A :class:`FileView` over ``read_range(blob_id, start, length)`` (the store's
    ``read_blob_range``); build it on the loop, use it off it."""

    def __init__(self, read_range: Callable[[str, int, int], Awaitable[bytes]], blob_id: str, size: int) -> None:
        super().__init__(-1, size)
        self._read_range = read_range
        self._blob_id = blob_id
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()

    def _pread(self, start: int, end: int) -> bytes:
        if end <= start:
            return b""
        if threading.get_ident() == self._loop_thread:
            raise RuntimeError("BlobView read on the event loop's thread")
        async def read() -> bytes:
            return await self._read_range(self._blob_id, start, end - start)

        return asyncio.run_coroutine_threadsafe(read(), self._loop).result()


def pieces_from_loop(pieces: AsyncIterator[bytes], loop: asyncio.AbstractEventLoop) -> Iterator[bytes]:
    """In a worker thread: each piece of an async iterator, fetched on ``loop``."""
    async def following() -> bytes | None:
        return await anext(pieces, None)

    while (piece := asyncio.run_coroutine_threadsafe(following(), loop).result()) is not None:
        yield piece
