"""IMAP replies: the exceptions handlers raise, and the encoders for response data.

Handlers raise :class:`No`, :class:`Bad` or :class:`Bye` deep in the call stack; the
session catches them once per command and writes the tagged (or untagged) line. Response
codes are named here with the RFC that defines them.
"""

from __future__ import annotations

from collections.abc import Iterable

# -- response codes (RFC 9051 section 7.1 unless noted) --------------------------
ALERT = "ALERT"
ALREADYEXISTS = "ALREADYEXISTS"           # RFC 5530
AUTHENTICATIONFAILED = "AUTHENTICATIONFAILED"  # RFC 5530
CANNOT = "CANNOT"                         # RFC 5530
CLIENTBUG = "CLIENTBUG"                   # RFC 5530
EXPUNGEISSUED = "EXPUNGEISSUED"           # RFC 5530
LIMIT = "LIMIT"                           # RFC 5530
NONEXISTENT = "NONEXISTENT"               # RFC 5530
NOPERM = "NOPERM"                         # RFC 5530
OVERQUOTA = "OVERQUOTA"                   # RFC 5530
PRIVACYREQUIRED = "PRIVACYREQUIRED"       # RFC 5530
SERVERBUG = "SERVERBUG"                   # RFC 5530
TOOBIG = "TOOBIG"                         # RFC 7889 / RFC 4469
TRYCREATE = "TRYCREATE"
UNAVAILABLE = "UNAVAILABLE"               # RFC 5530
BADCHARSET = "BADCHARSET"
UNKNOWN_CTE = "UNKNOWN-CTE"               # RFC 3516 section 4.1
MODIFIED = "MODIFIED"                     # RFC 7162 section 3.1.3
NOMODSEQ = "NOMODSEQ"                     # RFC 7162 section 3.1.2.2
CLOSED = "CLOSED"                         # RFC 7162 section 3.2.11
USEATTR = "USEATTR"                       # RFC 6154 section 3
NOTSAVED = "NOTSAVED"                     # RFC 5182 section 2.1
INUSE = "INUSE"                           # RFC 5530


class Reply(Exception):
    """A reply raised from a handler."""

    status = "NO"

    def __init__(self, text: str, code: str | None = None) -> None:
        super().__init__(text)
        self.text = text
        self.code = code

    def line(self, tag: str) -> bytes:
        code = f"[{self.code}] " if self.code else ""
        return f"{tag} {self.status} {code}{self.text}\r\n".encode()


class No(Reply):
    """The command was understood but failed (tagged NO)."""

    status = "NO"


def not_enough_space() -> No:
    """A full disk (store.StorageFull): a temporary failure, worded and coded as Dovecot
    words its ENOSPC (``NO [OVERQUOTA] Not enough disk space``)."""
    return No("Not enough disk space, try again later", code=OVERQUOTA)


class Bad(Reply):
    """The command was malformed or not allowed in this state (tagged BAD)."""

    status = "BAD"


class Bye(Reply):
    """The server closes the connection after this untagged BYE."""

    status = "BYE"


# -- encoders -----------------------------------------------------------------

QUOTABLE_MAX = 1024
"""Longer strings go out as literals."""


def astring_bytes(value: bytes | str, *, utf8: bool = True) -> bytes:
    """A string as a quoted string when it can be, else a literal (RFC 9051 section 4.3)."""
    data = value.encode("utf-8") if isinstance(value, str) else value
    if (len(data) <= QUOTABLE_MAX and b"\r" not in data and b"\n" not in data and b"\x00" not in data
            and (utf8 or data.isascii())):
        return b'"' + data.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'
    return b"{%d}\r\n" % len(data) + data


def nstring(value: bytes | str | None, *, utf8: bool = True) -> bytes:
    if value is None:
        return b"NIL"
    return astring_bytes(value, utf8=utf8)


def literal(data: bytes, *, binary: bool = False) -> bytes:
    prefix = b"~" if binary else b""
    return prefix + b"{%d}\r\n" % len(data) + data


def text_literal(data: bytes) -> bytes:
    """An ordinary literal of message text: RFC 9051 4.3 forbids NUL in one, so a stored NUL
    is sent as 0x80, as Dovecot does (the size stays; BINARY[] has the bytes as stored)."""
    if b"\x00" in data:
        data = data.replace(b"\x00", b"\x80")
    return b"{%d}\r\n" % len(data) + data


def flag_list(flags: Iterable[str]) -> str:
    return "(" + " ".join(sorted(flags, key=_flag_order)) + ")"


def _flag_order(flag: str) -> tuple[int, str]:
    return (0 if flag.startswith("\\") else 1, flag.lower())


def sequence_set(numbers: Iterable[int]) -> str:
    """``[1,2,3,5]`` -> ``1:3,5`` (RFC 9051 section 9 sequence-set, compact)."""
    out: list[str] = []
    start = prev = None
    for n in sorted(set(numbers)):
        if start is None:
            start = prev = n
            continue
        assert prev is not None
        if n == prev + 1:
            prev = n
            continue
        out.append(f"{start}:{prev}" if start != prev else str(start))
        start = prev = n
    if start is not None:
        out.append(f"{start}:{prev}" if start != prev else str(start))
    return ",".join(out)


def sequence_list(numbers: Iterable[int]) -> str:
    """UIDPLUS copyuid/appenduid sets keep the order of the pairs (RFC 4315 section 3)."""
    nums = list(numbers)
    out: list[str] = []
    i = 0
    while i < len(nums):
        j = i
        while j + 1 < len(nums) and nums[j + 1] == nums[j] + 1:
            j += 1
        out.append(f"{nums[i]}:{nums[j]}" if j > i else str(nums[i]))
        i = j + 1
    return ",".join(out)
