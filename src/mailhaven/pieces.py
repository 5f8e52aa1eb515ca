"""Bytes written a piece at a time and joined once (the SMTP content spool, a blob writer).

Keeping each piece as its own ``bytes`` saves the copies of a buffer grown piece by piece
(issue 18), but a piece's object costs ~40 bytes beside its content: a client sending its
DATA a few bytes a segment would make each read a piece, and 1 MB of one-byte reads
~42 MB of objects. So pieces under :data:`SMALL` are gathered in a buffer of their own
and kept as one piece once it holds :data:`SMALL` bytes or a large piece follows: at most
one object per :data:`SMALL` bytes besides the large pieces, whatever the reads' sizes.
"""

from __future__ import annotations

SMALL = 16 * 1024
"""Pieces smaller than this are gathered before they are kept."""


class Pieces:
    __slots__ = ("_kept", "_small", "size")

    def __init__(self) -> None:
        self._kept: list[bytes] = []
        self._small = bytearray()
        self.size = 0
        """Bytes written."""

    def append(self, data: bytes | bytearray | memoryview) -> None:
        """Keep ``data`` (copied unless it is a ``bytes``: a bytearray may change)."""
        self.size += len(data)
        if len(data) < SMALL:
            self._small += data
            if len(self._small) >= SMALL:
                self._flush()
            return
        self._flush()
        self._kept.append(bytes(data))

    def _flush(self) -> None:
        if self._small:
            self._kept.append(bytes(self._small))
            self._small.clear()

    def parts(self) -> list[bytes]:
        """Every piece kept, in order (the gathered small ones as their own piece)."""
        self._flush()
        return self._kept

    def join(self) -> bytes:
        """The whole, kept from now on as one piece (a single piece: no copy)."""
        kept = self.parts()
        whole = kept[0] if len(kept) == 1 else b"".join(kept)
        self._kept = [whole] if whole else []
        return whole
