"""Blocks of base64 lines in a message's readable text, found for the search index to drop.

A block is what this regular expression matches, and :func:`drop_encoded_blocks` gives
what its ``sub("\\n", "\\n" + text)[1:]`` gives::

    \\n(?:B{60,}[ \\t]*\\r?\\n){2,}(?:B+[ \\t]*(?:\\r?\\n|\\Z))?      B = [A-Za-z0-9+/=]

that is, after a line end: two or more *full* lines (60 or more base64 characters, blanks,
a line end), then perhaps one more line of base64 characters (the short last line).

Matching that expression char by char was the largest piece of a 100 KB message's summary
(~2 ns a character in ``re``'s character-class loop: 140-230 us for the 64 KB of encoded
text read, issue 18). Here ``re`` only finds where a block starts (its first two lines), and
the run of full lines that follows is taken in bulk where its lines are all as long as its first
(what every base64 encoder writes): one ``bytes.translate`` deleting the base64 characters
leaves nothing but the line ends, and two stepped slices show the line ends sit where lines
of that length end. Whatever that does not cover (lines of other lengths, blanks before a
line end, the short last line) is matched by the expression's own parts, so the blocks and
the output are the expression's.
"""

from __future__ import annotations

import re

_B64 = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/="
_FULL = r"[A-Za-z0-9+/=]{60,}[ \t]*\r?\n"
_BLOCK_START = re.compile(r"\n" + _FULL + _FULL)
"""A line end and two full lines: where the expression matches (without a lookahead, which
cost ~15% more on every line of prose)."""
_FULL_LINES = re.compile(r"(?:" + _FULL + r")*")
_LAST_LINE = re.compile(r"(?:[A-Za-z0-9+/=]+[ \t]*(?:\r?\n|\Z))?")
MIN_FULL = 60
"""Base64 characters a full line has at least."""


def drop_encoded_blocks(text: str) -> str:
    """``text`` with every block replaced by a line end (see the module's expression)."""
    s = "\n" + text
    out: list[str] = []
    pos = 0
    ascii_: bytes | None = None
    while (found := _BLOCK_START.search(s, pos)) is not None:
        start = found.start()
        if ascii_ is None:
            # One byte a character (anything not ASCII a "?", no base64 character), so the
            # bytes' positions are the text's.
            ascii_ = s.encode("ascii", "replace")
        end = _match_end(_FULL_LINES, s, _equal_lines_end(ascii_, found.end()))
        end = _match_end(_LAST_LINE, s, end)
        out.append(s[pos:start])
        out.append("\n")
        pos = end
    if not out:
        return text
    out.append(s[pos:])
    return "".join(out)[1:]


def _equal_lines_end(data: bytes, start: int) -> int:
    """Where the run of full lines from ``start`` (a line's first byte) ends, as far as its
    lines are as long as the first and hold base64 characters and a line end only (CRLF or
    LF, as the first); ``start`` when not even the first is such a line."""
    nl = data.find(b"\n", start)
    if nl < 0:
        return start
    crlf = nl > start and data[nl - 1] == 13
    end_of_line = b"\r\n" if crlf else b"\n"
    width = nl + 1 - start
    if width - len(end_of_line) < MIN_FULL:
        return start
    lines = (len(data) - start) // width
    region = data[start:start + lines * width]
    left = region.translate(None, _B64)
    if left != end_of_line * lines:
        # Lines up to the first byte that is neither base64 nor the line end: a shorter run.
        lines = min(lines, _repeats(left, end_of_line))
        if lines < 1:
            return start
        region = region[:lines * width]
        if region.translate(None, _B64) != end_of_line * lines:
            return start
    # The region holds base64 characters and exactly `lines` line ends; each must end a line
    # of `width` bytes.
    if region[width - 1::width] != b"\n" * lines or (crlf and region[width - 2::width] != b"\r" * lines):
        return start
    return start + lines * width


def _match_end(pattern: re.Pattern[str], s: str, pos: int) -> int:
    """End of ``pattern``'s match at ``pos`` (the patterns here match the empty string)."""
    found = pattern.match(s, pos)
    return found.end() if found is not None else pos


def _repeats(data: bytes, unit: bytes) -> int:
    """How many copies of ``unit`` ``data`` starts with (a bisection of prefix compares)."""
    size = len(unit)
    pattern = unit * (len(data) // size)
    low, high = 0, len(pattern) // size + 1           # starts with `low` copies, not with `high`
    while high - low > 1:
        mid = (low + high) // 2
        if data.startswith(pattern[:mid * size]):
            low = mid
        else:
            high = mid
    return low
