"""Per-command grammar helpers: a cursor over the tokens, sequence sets, dates, mailbox names.

Every helper raises :class:`~mailhaven.imap.responses.Bad` on a syntax error, so a
handler reads its arguments top-down and never checks types itself.
"""

from __future__ import annotations

import base64
import bisect
import calendar
import re
from collections.abc import Sequence
from dataclasses import dataclass

from .parser import Atom, ParenList, String, Token
from .responses import Bad, No

_MONTHS = {m: i for i, m in enumerate(
    ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"), 1)}


_SECTION_ONLY = re.compile(r'[ ()"]')


class Args:
    """Reads a command's arguments left to right."""

    def __init__(self, tokens: tuple[Token, ...] | list[Token]) -> None:
        self.tokens = list(tokens)
        self.pos = 0

    def at_end(self) -> bool:
        return self.pos >= len(self.tokens)

    def end(self) -> None:
        if not self.at_end():
            raise Bad("Unexpected extra arguments")

    def peek(self) -> Token | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def next(self, what: str = "argument") -> Token:
        if self.pos >= len(self.tokens):
            raise Bad(f"Missing {what}")
        tok = self.tokens[self.pos]
        self.pos += 1
        return tok

    def atom(self, what: str = "argument") -> str:
        tok = self.next(what)
        if not isinstance(tok, Atom):
            raise Bad(f"Expected {what}")
        return tok.value

    def keyword(self, what: str = "keyword") -> str:
        return self.atom(what).upper()

    def peek_keyword(self) -> str | None:
        tok = self.peek()
        return tok.value.upper() if isinstance(tok, Atom) else None

    def astring(self, what: str = "string") -> bytes:
        tok = self.next(what)
        if isinstance(tok, String):
            return tok.value
        # ASTRING-CHAR includes "[" and "]" (RFC 9051 9), but not what the tokenizer lets
        # into a bracketed section spec (spaces, parentheses, quotes).
        if isinstance(tok, Atom) and not _SECTION_ONLY.search(tok.value):
            return tok.value.encode("utf-8")
        raise Bad(f"Expected {what}")

    def text(self, what: str = "string") -> str:
        try:
            return self.astring(what).decode("utf-8")
        except UnicodeDecodeError:
            raise Bad(f"{what} is not UTF-8") from None

    def string(self, what: str = "string") -> String:
        tok = self.next(what)
        if not isinstance(tok, String):
            raise Bad(f"Expected {what} as a string or literal")
        return tok

    def plist(self, what: str = "list") -> list[Token]:
        tok = self.next(what)
        if not isinstance(tok, ParenList):
            raise Bad(f"Expected {what} in parentheses")
        return list(tok.items)

    def peek_list(self) -> bool:
        return isinstance(self.peek(), ParenList)

    def number(self, what: str = "number", *, nonzero: bool = False) -> int:
        value = self.atom(what)
        return parse_number(value, what, nonzero=nonzero)

    def mailbox(self, utf8: bool) -> str:
        raw = self.astring("mailbox name")
        return decode_mailbox(raw, utf8)


def parse_number(value: str, what: str = "number", *, nonzero: bool = False,
                 limit: int = 2**63 - 1) -> int:
    if not value.isdigit() or not value.isascii():
        raise Bad(f"Expected {what}")
    n = int(value)
    if n > limit or (nonzero and n == 0):
        raise Bad(f"Invalid {what}")
    return n


# -- sequence sets --------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class SequenceSet:
    """``1:3,7,9:*`` as ranges; ``*`` is 0 until resolved against a maximum.

    ``saved`` marks ``$`` (RFC 5182 SEARCHRES: the last saved search result).
    """

    ranges: tuple[tuple[int, int], ...]
    saved: bool = False

    def resolve(self, largest: int) -> list[tuple[int, int]]:
        """Ranges with ``*`` replaced by ``largest`` and ends ordered (RFC 9051 9: "3:1" = "1:3")."""
        out = []
        for a, b in self.ranges:
            a = largest if a == 0 else a
            b = largest if b == 0 else b
            out.append((min(a, b), max(a, b)))
        return out

    def contains(self, n: int, largest: int) -> bool:
        return any(a <= n <= b for a, b in self.resolve(largest))

    def select(self, numbers: Sequence[int]) -> list[int]:
        """Members of the ascending sequence ``numbers`` in the set (``*`` = its last), ascending.

        Ranges are merged and each is cut out with bisect: O(R log N), never O(R * N)."""
        if not numbers:
            return []
        out: list[int] = []
        last_end = 0
        for a, b in sorted(self.resolve(numbers[-1])):
            a = max(a, last_end + 1)
            if a > b:
                continue
            out += numbers[bisect.bisect_left(numbers, a):bisect.bisect_right(numbers, b)]
            last_end = b
        return out


_SEQ_RE = re.compile(r"^(\d+|\*)(?::(\d+|\*))?$")


def parse_sequence_set(value: str) -> SequenceSet:
    """RFC 9051 section 9: sequence-set; ``$`` for a saved result (RFC 5182)."""
    if value == "$":
        return SequenceSet(ranges=(), saved=True)
    ranges = []
    for part in value.split(","):
        m = _SEQ_RE.match(part)
        if m is None:
            raise Bad("Invalid sequence set")
        a = 0 if m.group(1) == "*" else int(m.group(1))
        b = a if m.group(2) is None else (0 if m.group(2) == "*" else int(m.group(2)))
        if (m.group(1) != "*" and a == 0) or (m.group(2) not in (None, "*") and b == 0):
            raise Bad("Invalid sequence set: 0 is not a message number")
        if a > 0xFFFFFFFF or b > 0xFFFFFFFF:
            raise Bad("Invalid sequence set: number too large")
        ranges.append((a, b))
    return SequenceSet(ranges=tuple(ranges))


def is_sequence_set(value: str) -> bool:
    try:
        parse_sequence_set(value)
    except Bad:
        return False
    return True


# -- dates ----------------------------------------------------------------------

_DATE_RE = re.compile(r"^(\d{1,2})-([A-Za-z]{3})-(\d{4})$")
_DATETIME_RE = re.compile(r"^([ \d]\d)-([A-Za-z]{3})-(\d{4}) (\d\d):(\d\d):(\d\d) ([+-])(\d\d)(\d\d)$")


def parse_date(value: str) -> int:
    """``1-Feb-2024`` -> epoch seconds of that day's midnight UTC (SEARCH dates)."""
    m = _DATE_RE.match(value)
    if m is None or m.group(2).lower() not in _MONTHS:
        raise Bad("Invalid date")
    try:
        return calendar.timegm((int(m.group(3)), _MONTHS[m.group(2).lower()], int(m.group(1)), 0, 0, 0))
    except ValueError:
        raise Bad("Invalid date") from None


def parse_datetime(value: str) -> float:
    """APPEND's date-time ``"17-Jul-1996 02:44:25 -0700"`` -> epoch seconds."""
    m = _DATETIME_RE.match(value)
    if m is None or m.group(2).lower() not in _MONTHS:
        raise Bad("Invalid date-time")
    day, _, year, hh, mm, ss, sign, zh, zm = m.groups()
    try:
        import datetime
        dt = datetime.datetime(int(year), _MONTHS[m.group(2).lower()], int(day), int(hh), int(mm), int(ss),
                               tzinfo=datetime.UTC)
    except ValueError:
        raise Bad("Invalid date-time") from None
    offset = (int(zh) * 3600 + int(zm) * 60) * (1 if sign == "+" else -1)
    return dt.timestamp() - offset


def format_datetime(ts: float) -> str:
    """Epoch seconds -> ``"17-Jul-1996 09:44:25 +0000"`` (INTERNALDATE in UTC)."""
    import time
    t = time.gmtime(ts)
    month = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")[t.tm_mon - 1]
    return f"{t.tm_mday:02d}-{month}-{t.tm_year:04d} {t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} +0000"


# -- mailbox names: modified UTF-7 (RFC 3501 5.1.3) or UTF-8 (RFC 9051 / 6855) ------------


def _b64_decode(chunk: str) -> str:
    data = chunk.replace(",", "/")
    data += "=" * (-len(data) % 4)
    raw = base64.b64decode(data, validate=True)
    if len(raw) % 2:
        raise ValueError("odd UTF-16 length")
    return raw.decode("utf-16-be")


def mutf7_decode(value: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(value):
        c = value[i]
        if c != "&":
            if not (0x20 <= ord(c) <= 0x7E):
                raise ValueError("8-bit character in modified UTF-7")
            out.append(c)
            i += 1
            continue
        j = value.find("-", i + 1)
        if j < 0:
            raise ValueError("unterminated &")
        if j == i + 1:
            out.append("&")
        else:
            out.append(_b64_decode(value[i + 1:j]))
        i = j + 1
    return "".join(out)


def mutf7_encode(value: str) -> str:
    out: list[str] = []
    pending: list[str] = []

    def flush() -> None:
        if pending:
            raw = "".join(pending).encode("utf-16-be")
            out.append("&" + base64.b64encode(raw).decode().rstrip("=").replace("/", ",") + "-")
            pending.clear()

    for c in value:
        if 0x20 <= ord(c) <= 0x7E:
            flush()
            out.append("&-" if c == "&" else c)
        else:
            pending.append(c)
    flush()
    return "".join(out)


def decode_mailbox(raw: bytes, utf8: bool) -> str:
    """A mailbox name from the wire to the store's Unicode form."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise Bad("Mailbox name is not UTF-8") from None
    if not utf8:
        try:
            text = mutf7_decode(text)
        except (ValueError, UnicodeDecodeError):
            raise No("Mailbox name is not valid modified UTF-7") from None  # an astring all right
    if text.upper() == "INBOX":
        return "INBOX"
    if text[:6].upper() == "INBOX/":
        return "INBOX/" + text[6:]
    return text


def encode_mailbox(name: str, utf8: bool) -> str:
    return name if utf8 else mutf7_encode(name)
