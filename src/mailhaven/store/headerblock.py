"""A message's header block as both backends store it beside the message, for the
one-message header FETCH (``UID FETCH n (BODY.PEEK[HEADER.FIELDS (...)] FLAGS)``) that
clients send for each new message, on every device.

Read from the message bytes, such a FETCH walks to the message's row, then to its blob,
and reads the whole message to cut the header off (at 100,000 messages most of those
pages are not in SQLite's cache). The block kept in a small row of its own, keyed by the
message's id, is one index walk and one row. Dovecot keeps the header fields clients ask
for in its cache file for the same reason.

Stored form: one byte saying how, then the block; blocks of at least
:data:`PACK_MIN` bytes (real mail with its Received and DKIM lines: about 40% of the
size) zlib-compressed, smaller ones as they are (inflating costs more than they take).
"""

from __future__ import annotations

import zlib

from ..message.structure import header_end

MAX_BLOCK = 64 * 1024
"""Bigger header blocks are not stored (the FETCH reads the message instead), as the
IMAP header cache does not keep them."""
PACK_MIN = 1024
"""Blocks from this size on are stored compressed."""
_PLAIN, _ZLIB = b"\x00", b"\x01"


def header_block(raw: bytes, *, whole: bool = True) -> bytes | None:
    """The header block of ``raw``, through the blank line that ends it (as the IMAP header
    cache cuts it); None when it is over :data:`MAX_BLOCK`, or when ``raw`` is only the
    start of the message (``whole`` False) and the blank line is not in it."""
    end = header_end(raw, 0, len(raw))
    if end > MAX_BLOCK or (not whole and end == len(raw)):
        return None
    return raw[:end]


def pack(block: bytes) -> bytes:
    """``block`` as stored (:func:`unpack` gives it back)."""
    if len(block) >= PACK_MIN:
        packed = zlib.compress(block, 6)
        if len(packed) < len(block):
            return _ZLIB + packed
    return _PLAIN + block


def unpack(stored: bytes) -> bytes:
    """:func:`pack` undone."""
    if stored[:1] == _ZLIB:
        return zlib.decompress(memoryview(stored)[1:])
    return stored[1:]
