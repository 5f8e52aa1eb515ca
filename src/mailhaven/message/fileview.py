"""A message file seen as read-only bytes, a chunk at a time.

The structure parser (:mod:`mailhaven.message.structure`) needs only ``len``, slices,
``find``, ``count(b"\\n")`` and ``startswith`` of the message bytes. :class:`FileView`
answers those from the file with ``pread``, never holding more than :data:`CHUNK` bytes,
so the structure of a 50 MB message costs the same memory as that of a 50 KB one.
"""

from __future__ import annotations

import os

CHUNK = 1 << 20
"""Largest read; a search starts with :data:`FIRST_CHUNK` and grows (most delimiters are near)."""
FIRST_CHUNK = 16 * 1024
SMALL = 4096
"""Slices up to this size are served from one cached block (the parser's byte peeks)."""


class FileView:
    def __init__(self, fd: int, size: int) -> None:
        self._fd = fd
        self._size = size
        self._block_start = 0
        self._block = b""

    def __len__(self) -> int:
        return self._size

    def _range(self, start: int | None, end: int | None) -> tuple[int, int]:
        return slice(start, end).indices(self._size)[:2]

    def _pread(self, start: int, end: int) -> bytes:
        return os.pread(self._fd, end - start, start) if end > start else b""

    def __getitem__(self, key: slice) -> bytes:
        if not isinstance(key, slice) or key.step not in (None, 1):
            raise TypeError("FileView supports plain slices only")
        start, stop = self._range(key.start, key.stop)
        if stop <= start:
            return b""
        if stop - start > SMALL:
            return self._pread(start, stop)
        block_end = self._block_start + len(self._block)
        if not (self._block_start <= start and stop <= block_end):
            self._block_start = start
            self._block = self._pread(start, min(self._size, start + FIRST_CHUNK))
        offset = start - self._block_start
        return self._block[offset:offset + stop - start]

    def startswith(self, prefix: bytes, start: int = 0, end: int | None = None) -> bool:
        start, stop = self._range(start, end)
        stop = min(stop, start + len(prefix))
        return stop - start == len(prefix) and self[start:stop] == prefix

    def find(self, sub: bytes, start: int | None = None, end: int | None = None) -> int:
        start, end = self._range(start, end)
        pos, chunk = start, FIRST_CHUNK
        while pos < end:
            chunk_end = min(end, pos + max(chunk, 2 * len(sub)))
            i = self._pread(pos, chunk_end).find(sub)
            if i >= 0:
                return pos + i
            if chunk_end >= end:
                break
            pos = chunk_end - len(sub) + 1              # a match may straddle the edge
            chunk = min(CHUNK, chunk * 4)
        return -1

    def count(self, sub: bytes, start: int | None = None, end: int | None = None) -> int:
        if len(sub) != 1:
            raise ValueError("FileView counts single bytes only")
        start, end = self._range(start, end)
        total = 0
        for pos in range(start, end, CHUNK):
            total += self._pread(pos, min(end, pos + CHUNK)).count(sub)
        return total
