"""Quoted strings (RFC 5322 3.2.4) read as Dovecot 2.3's rfc822-parser reads them: one
reading for the address lists (addresses.py) and the MIME parameters (mimeparams.py)."""

from __future__ import annotations


def read_quoted(s: str, i: int) -> tuple[str, int, bool]:
    """The quoted string whose opening ``"`` is at ``s[i]``: its text, the index after its
    closing ``"`` and True; unterminated, the text up to the end, ``len(s)`` and False.

    A backslash takes the character after it as it is, unless that is CR, LF or NUL (then
    the backslash is kept); CR and LF are dropped (folding)."""
    i += 1
    n = len(s)
    out: list[str] = []
    while i < n:
        c = s[i]
        if c == '"':
            return "".join(out), i + 1, True
        if c == "\\" and i + 1 < n and s[i + 1] not in "\r\n\x00":
            i += 1
            c = s[i]
        elif c in "\r\n":
            c = ""
        out.append(c)
        i += 1
    return "".join(out), i, False
