"""The header fields of a plain header section, as the stdlib's compat32 parser reads them.

``BytesHeaderParser(policy=compat32).parsebytes(head).items()`` builds a FeedParser, a
Message and a policy round for every field. For a *plain* header section (every line a
field start ``name:`` or a folded continuation, lines ending in LF or CRLF, no bare CR,
a first unix-from line allowed) :func:`plain_fields` gives the same (name, value) pairs
with one regular expression; for any other it answers None and the caller parses.

One splitter serves every reader: the summary (message/summary.py), DMARC's RFC5322.From
(filter/dmarc.py) and the Sieve message view (sieve/message.py). The summary and DMARC
want values the stdlib hands back as ``str`` (no ``Header`` objects for 8-bit bytes) and
no unix-from line: they split only a section :func:`crlf_ascii` accepts.
tests/test_filter_units.py, tests/test_corpus_summary.py and tests/test_sieve_program.py
check the splitter against the stdlib.
"""

from __future__ import annotations

import re

_FIELDS = re.compile(r"^([\041-\071\073-\176]++):[ \t]*+([^\r\n]*+(?:\r?\n[ \t][^\r\n]*+)*+)(?:\r?\n|\Z)", re.M)
"""A field at the start of a line whose line breaks are LF or CRLF: its name (the feed
parser's ``headerRE`` name characters, at least one), and its value as the parser keeps
it (blanks after the colon dropped, the continuation lines with their line breaks, the
last line break left out). Possessive: with no bare CR (plain_fields checks) nothing is
ever given back, and sre keeps no backtracking state for thousands of continuation lines."""


class _LastFields:
    """The last section split and its fields: a Sieve script's header tests split a
    delivery's header, then the summary splits the same text (issue 16)."""

    MAX_LENGTH = 256 * 1024
    """Longer sections are not held (as structure._LastReadable: a header section of 138 KB
    in the corpus was split twice, 64 KB being the limit before)."""

    def __init__(self) -> None:
        self.pair: tuple[str, list[tuple[str, str]] | None] | None = None


_LAST_FIELDS = _LastFields()


def plain_fields(text: str) -> list[tuple[str, str]] | None:
    """(name, value) of each field of a header section, as compat32's parser stores them
    (the name as written; the value with the blanks after the colon and the final line
    end dropped, folds kept, 8-bit bytes as ``text`` holds them: the caller decodes with
    ``surrogateescape``); None when the section is not plain (a line that is no field,
    the blank line inside, a bare CR, a continuation first), which the caller parses.

    ``text``: the header section, its blank line optional; a first ``From `` line (mbox's
    unix-from) is skipped as the parser skips it. The answer of the section split last is
    remembered (the same list: callers only read it)."""
    if text.endswith("\n\r\n"):                      # the blank line ending the header
        text = text[:-2]
    elif text.endswith("\n\n"):
        text = text[:-1]
    last = _LAST_FIELDS.pair
    if last is not None and last[0] == text:
        return last[1]
    found = _split(text)
    if len(text) <= _LastFields.MAX_LENGTH:
        _LAST_FIELDS.pair = (text, found)
    return found


def _split(text: str) -> list[tuple[str, str]] | None:
    first = 0
    if text.startswith("From "):                     # the unix-from line, skipped
        first = text.find("\n") + 1
        if first == 0:
            return None
    if first >= len(text):
        return [] if text.count("\r") == text.count("\r\n") else None
    if text[first] in " \t" or text.count("\r") != text.count("\r\n"):
        return None
    lines = text.count("\n", first) + (not text.endswith("\n"))
    continued = text.count("\n ", first) + text.count("\n\t", first)
    found: list[tuple[str, str]] = _FIELDS.findall(text, first)
    if len(found) != lines - continued:              # some line is no field: the blank line
        return None                                  # inside, a name the parser refuses...
    return found


def crlf_ascii(head: bytes) -> bool:
    """``head`` is ASCII with every line break CRLF and no unix-from line: the narrower
    case where the stdlib hands every value back as the ``str`` :func:`plain_fields`
    gives (8-bit values come back as ``Header`` objects, a unix-from line is no field)."""
    breaks = head.count(b"\n")
    return (head.isascii() and head.count(b"\r") == breaks and head.count(b"\r\n") == breaks
            and not head.startswith(b"From "))

