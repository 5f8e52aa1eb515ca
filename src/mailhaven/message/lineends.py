"""Line ends as RFC 5322 has them: CRLF, never a bare CR or a bare LF."""

from __future__ import annotations

import re

_LINE_END = re.compile(rb"\r\n|\r|\n")


def normalize_line_ends(data: bytes) -> bytes:
    """Turn every bare CR and bare LF into CRLF (CRLF stays as it is).

    On a piece of a stream, ``data`` must not end in a CR whose LF is still to come
    (callers hold it back)."""
    crlf = data.count(b"\r\n")
    if data.count(b"\r") == crlf and data.count(b"\n") == crlf:
        return data                                     # the common case: nothing bare
    return _LINE_END.sub(b"\r\n", data)
