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

_FIELD_START = re.compile(r"[\x21-\x39\x3b-\x7e]+:")
"""The feed parser's header line (``headerRE``) without its empty name, unix-from and
continuation alternatives."""


def compat32_fields(head: bytes) -> list[tuple[str, str]] | None:
    """(name, value) of each field of ``head`` (a header section, its blank line optional)
    as compat32 gives them: the name as written, the value with the blanks after the
    colon and the final line end dropped, folds kept; None when ``head`` is not plain."""
    if not head.isascii():
        return None
    breaks = head.count(b"\n")
    if head.count(b"\r") != breaks or head.count(b"\r\n") != breaks:
        return None                              # a bare CR or LF: the parser splits there too
    lines = head.decode("ascii").split("\r\n")
    if lines[-1] == "":
        lines.pop()                              # the last line's end
    if lines and lines[-1] == "":
        lines.pop()                              # the blank line ending the section
    fields: list[tuple[str, list[str]]] = []
    last = len(lines) - 1
    for i, line in enumerate(lines):
        if line[:1] in (" ", "\t"):
            if not fields:
                return None                      # a first line that is a continuation: a defect
            fields[-1][1].append(line if i == last and not head.endswith(b"\n") else line + "\r\n")
            continue
        m = _FIELD_START.match(line)
        if m is None:
            return None                          # the parser would end the header here (or note a defect)
        name = line[:m.end() - 1]
        value = line[m.end():] if i == last and not head.endswith(b"\n") else line[m.end():] + "\r\n"
        fields.append((name, [value.lstrip(" \t")]))
    return [(name, "".join(parts).rstrip("\r\n")) for name, parts in fields]
