"""A large APPEND message literal written to a blob as it arrives (RFC 9051 6.3.12).

The session hands a :class:`LiteralSpool` to the command reader when an APPEND announces a
literal over :data:`SPOOL_MIN`; the reader passes each piece on as it is read, so the
message is never held in memory. Line ends are normalised on the way (bare CR / LF to
CRLF, as for a literal held whole); a literal8 (``~{n}``, RFC 3516) is kept as sent
(APPEND then re-encodes its binary parts from the file, message/binary.py).

Invariants: a full disk does not interrupt the reading (the rest of the literal is
dropped and APPEND answers NO); a spool that is not finished is aborted when its command
ends, however it ends, so nothing stays in ``DATA/tmp``.
"""

from __future__ import annotations

from ..smtp.content import ChunkNormalizer
from ..store.api import BlobRef, BlobWriter, StorageFull

SPOOL_MIN = 1024 * 1024
"""APPEND literals larger than this go to a blob writer as they arrive."""
PREFIX = 256 * 1024
"""The start of the message kept for the header cache."""


class LiteralSpool:
    def __init__(self, writer: BlobWriter, *, binary: bool) -> None:
        self._writer = writer
        self.binary = binary
        self._normalizer = None if binary else ChunkNormalizer()
        self.prefix = bytearray()
        self.size = 0
        self.full = False
        self._closed = False

    def write(self, data: bytes) -> None:
        """Called by the command reader with each piece of the literal."""
        if self._normalizer is not None:
            data = self._normalizer.feed(data)
        self._put(data)

    def _put(self, data: bytes) -> None:
        if self._closed or self.full or not data:
            return
        if len(self.prefix) < PREFIX:
            self.prefix += data[:PREFIX - len(self.prefix)]
        self.size += len(data)
        try:
            self._writer.write(data)
        except StorageFull:
            self.full = True                  # the writer removed its file; read on, answer NO

    async def finish(self) -> BlobRef:
        """Durable on return (fsynced). Raises :class:`StorageFull` after a full disk."""
        if self._normalizer is not None:
            self._put(self._normalizer.finish())
        if self.full:
            self.abort()
            raise StorageFull("not enough disk space for the APPEND literal")
        self._closed = True
        return await self._writer.finish()

    def abort(self) -> None:
        """Never raises; a no-op once finished."""
        if not self._closed:
            self._closed = True
            self._writer.abort()
