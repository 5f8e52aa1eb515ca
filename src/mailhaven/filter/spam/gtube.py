"""GTUBE, the Generic Test for Unsolicited Bulk Email (SpamAssassin's test string): a
message that carries it scores above any threshold, so every action can be tested."""

from __future__ import annotations

from typing import BinaryIO

GTUBE = b"XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"
CHUNK = 1024 * 1024


def has_gtube(content: BinaryIO) -> bool:
    """Scan the held message a chunk at a time (chunks overlap by the string's length)."""
    content.seek(0)
    tail = b""
    while chunk := content.read(CHUNK):
        if GTUBE in tail + chunk:
            return True
        tail = chunk[-len(GTUBE):]
    return False
