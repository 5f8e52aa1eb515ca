"""Content-Transfer-Encoding removed a piece at a time (RFC 2045 6), for IMAP BINARY
(RFC 3516): the same bytes as decoding the whole content at once, with memory bounded by
the piece size, so a large attachment is never held whole.

Invariant: ``feed`` of any split of the content, then ``end``, gives what one ``feed`` of
all of it and ``end`` give (tests/test_message_transfer.py splits at every offset).
"""

from __future__ import annotations

import base64
import binascii
import re

IDENTITY = frozenset({"7bit", "8bit", "binary", ""})
KNOWN = IDENTITY | {"base64", "quoted-printable"}
_B64_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/="
_NOT_B64 = bytes(b for b in range(256) if b not in _B64_ALPHABET)
# RFC 2045 6.7 (3): blanks at the end of an encoded line were added in transport and are
# deleted, so "=" followed by blanks is still a soft line break.
_QP_TRAILING_BLANKS = re.compile(rb"[ \t]+(?=\r?\n|\Z)")


class UnknownEncoding(ValueError):
    """A Content-Transfer-Encoding this module cannot remove."""


class Decoder:
    """``feed`` pieces of encoded content, get decoded bytes; ``end`` gives the rest."""

    def __init__(self, encoding: str) -> None:
        self.encoding = encoding.lower()
        if self.encoding not in KNOWN:
            raise UnknownEncoding(encoding)
        self._carry = b""
        self._done = False              # base64: the padding was seen; the rest is ignored

    def feed(self, data: bytes) -> bytes:
        if self.encoding in IDENTITY:
            return data
        if self.encoding == "base64":
            return self._base64(data)
        data = self._carry + data
        cut = data.rfind(b"\n") + 1                # decode whole lines: soft breaks end lines
        self._carry = data[cut:]
        return binascii.a2b_qp(_QP_TRAILING_BLANKS.sub(b"", data[:cut])) if cut else b""

    def end(self) -> bytes:
        rest, self._carry = self._carry, b""
        if self.encoding == "quoted-printable":
            return binascii.a2b_qp(_QP_TRAILING_BLANKS.sub(b"", rest))
        if self.encoding != "base64" or len(rest) < 2:
            return b""                            # a lone sixth of a byte carries nothing
        return base64.b64decode(rest + b"=" * (-len(rest) % 4))

    def _base64(self, data: bytes) -> bytes:
        if self._done:
            return b""
        cleaned = data.translate(None, _NOT_B64)
        pad = cleaned.find(b"=")
        if pad >= 0:                              # everything after the padding is ignored
            cleaned, self._done = cleaned[:pad], True
        cleaned = self._carry + cleaned
        whole = len(cleaned) // 4 * 4
        self._carry = cleaned[whole:]
        return base64.b64decode(cleaned[:whole]) if whole else b""


def decode(data: bytes, encoding: str) -> bytes:
    """All of ``data`` decoded at once."""
    decoder = Decoder(encoding)
    return decoder.feed(data) + decoder.end()
