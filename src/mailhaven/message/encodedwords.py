"""RFC 2047 encoded words decoded once for every reader of a delivery.

A message delivered through a Sieve script has its Subject (and any other field with
encoded words that a header test reads) decoded by the script's message view
(sieve/message.py) and again by the summary (message/summary.py), both with the stdlib's
``decode_header``/``make_header``, which cost 0.05-0.3 ms a field for the corpus's
ISO-2022-JP, GBK or TIS-620 subjects (issue 16). The last few answers for short values
are remembered here, the failures included, so that each reader keeps its own handling of
them.
"""

from __future__ import annotations

from dataclasses import dataclass
from email.header import decode_header, make_header
from functools import lru_cache
from typing import Any

MEMO_LENGTH = 2048
"""Values up to this many characters are remembered (the last 8: one delivery's)."""


@dataclass(frozen=True, slots=True)
class Decoded:
    text: str | None
    """``str(make_header(decode_header(value)))``; None when either raised."""
    parts: tuple[tuple[bytes | str, str | None], ...] | None
    """What ``decode_header`` gave; None when it raised."""
    error: tuple[type[Exception], tuple[Any, ...]] | None = None
    """The type and arguments of what was raised, by either step."""

    def raise_again(self) -> None:
        """Raise (a new one of) what the decoding raised."""
        assert self.error is not None
        raise self.error[0](*self.error[1])


def decoded_words(value: str) -> Decoded:
    """``value`` (a field's text holding ``=?``) through decode_header and make_header."""
    if len(value) > MEMO_LENGTH:
        return _decode(value)
    return _remembered(value)


def _decode(value: str) -> Decoded:
    try:
        parts = tuple(decode_header(value))
    except Exception as e:  # noqa: BLE001 - remembered; each reader handles it as before
        return Decoded(None, None, (type(e), e.args))
    try:
        return Decoded(str(make_header(list(parts))), parts)
    except Exception as e:  # noqa: BLE001
        return Decoded(None, parts, (type(e), e.args))


_remembered = lru_cache(maxsize=8)(_decode)
