"""The header fields of a plain header section, as the stdlib's compat32 parser reads them.

``BytesHeaderParser(policy=compat32).parsebytes(head).items()`` builds a FeedParser, a
Message and a policy round for every field; the inbound checks ask it of every message
(DMARC's RFC5322.From) and it was 5% of a 4 KB message's CPU (issue 18). For a header
section the parser reads without any of its special cases (ASCII only, every line ending
in CRLF, every line a field start ``name:`` or a folded continuation, no unix-from),
:func:`compat32_fields` gives the same (name, value) pairs by splitting lines; for any
other it answers None and the caller runs the parser. tests/test_filter_units.py checks
the two agree on generated header sections.
"""

from __future__ import annotations

import re

_FIELD = re.compile(r"([\x21-\x39\x3b-\x7e]+):[ \t]*([^\r\n]*(?:\r\n[ \t][^\r\n]*)*)(?:\r\n|\Z)")
"""One field with its folded lines: the feed parser's header line (``headerRE``) without its
empty name, unix-from and continuation alternatives, then the continuations."""


def compat32_fields(head: bytes) -> list[tuple[str, str]] | None:
    """(name, value) of each field of ``head`` (a header section, its blank line optional)
    as compat32 gives them: the name as written, the value with the blanks after the
    colon and the final line end dropped, folds kept; None when ``head`` is not plain."""
    if not head.isascii():
        return None
    breaks = head.count(b"\n")
    if head.count(b"\r") != breaks or head.count(b"\r\n") != breaks:
        return None                              # a bare CR or LF: the parser splits there too
    text = head.decode("ascii")
    if text.endswith("\r\n\r\n"):
        text = text[:-2]                         # the blank line ending the section
    fields = []
    pos, end = 0, len(text)
    match = _FIELD.match
    while pos < end:
        m = match(text, pos)
        if m is None:
            return None                          # the parser would end the header here (or note a defect)
        fields.append((m[1], m[2]))
        pos = m.end()
    return fields
