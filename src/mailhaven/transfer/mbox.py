"""mbox files, read and written: mboxrd (default) and mboxcl2 (RFC 4155, plus the
qmail/mutt conventions RFC 4155 describes but does not fix).

Each message is ``From_ line``, the message, and one empty line. Flags travel in the
``Status:`` (``R`` seen, ``O`` old), ``X-Status:`` (``A`` answered, ``F`` flagged, ``T`` draft,
``D`` deleted) and ``X-Keywords:`` headers, the internal date in the From_ line (UTC).

Lossless by construction: the writer never edits the message. It puts its metadata
block *before* the first header line::

    Status: RO
    X-Status: AF
    X-Keywords: $Forwarded work        (only with keywords)
    Content-Length: 1234               (mboxrd: only when the message lacks a final
                                        line end, and then it is the exact stored size;
                                        mboxcl2: always, the body size as mutt counts it)

and the reader strips exactly that block when it finds it at the start, so export ->
import -> export gives the same bytes. In a foreign file the same headers anywhere in
the header give the flags, and the message bytes are kept as they are.

mboxrd quoting: a line matching ``>*From `` gets one more ``>`` on writing and loses one
on reading. mboxcl2 quotes nothing and frames by Content-Length.
"""

from __future__ import annotations

import calendar
import re
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

FORMATS = ("mboxrd", "mboxcl2")

# Status / X-Status letters <-> IMAP system flags (the mutt / Dovecot mapping).
X_STATUS_FLAGS = (("A", "\\Answered"), ("F", "\\Flagged"), ("T", "\\Draft"), ("D", "\\Deleted"))
SYSTEM_FLAGS = frozenset({"\\Seen", "\\Answered", "\\Flagged", "\\Draft", "\\Deleted"})

_FROM_LINE_DATE = re.compile(
    rb"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun),? +(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) +(\d{1,2})"
    rb" +(\d{1,2}):(\d{2})(?::(\d{2}))?(?: +(?:[A-Z]{2,5}|[+-]\d{4}))? +(\d{4})")
_MONTHS = {m: i for i, m in enumerate(
    (b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec"), 1)}
_QUOTED_FROM = re.compile(rb"^>+From ")
_RETURN_PATH = re.compile(rb"^Return-Path:[ \t]*<([^<>\s]+)>", re.IGNORECASE | re.MULTILINE)
_FROM_ADDR = re.compile(rb"^From:[^\n]*?([^\s<>\"(),:;]+@[^\s<>\"(),:;]+)", re.IGNORECASE | re.MULTILINE)
_KEYWORD = re.compile(r"^[!#-'*+\-./0-9;<=>?@A-Z^-z|~]+$")   # RFC 9051 atom, minus "\"


@dataclass(frozen=True, kw_only=True)
class MboxMessage:
    raw: bytes
    """The message bytes, metadata block removed and quoting undone."""
    flags: frozenset[str] = frozenset()
    internal_date: float | None = None
    """From the From_ line (UTC); None when it has none we can read."""
    index: int = 0
    """1-based position in the file (for reports)."""


@dataclass
class _Entry:
    from_line: bytes
    lines: list[bytes] = field(default_factory=list)
    """Lines with their line ends, separator line not yet removed."""


# -- flags -----------------------------------------------------------------------------


def flags_to_headers(flags: Iterable[str]) -> tuple[str, str, str]:
    """(Status, X-Status, X-Keywords) values for a flag set."""
    flags = set(flags)
    status = "RO" if "\\Seen" in flags else "O"
    x_status = "".join(letter for letter, flag in X_STATUS_FLAGS if flag in flags)
    keywords = " ".join(sorted(f for f in flags if not f.startswith("\\") and _KEYWORD.match(f)))
    return status, x_status, keywords


def headers_to_flags(status: str | None, x_status: str | None, keywords: str | None) -> frozenset[str]:
    flags: set[str] = set()
    if status and "R" in status:
        flags.add("\\Seen")
    for letter, flag in X_STATUS_FLAGS:
        if x_status and letter in x_status:
            flags.add(flag)
    for word in (keywords or "").replace(",", " ").split():
        if _KEYWORD.match(word):
            flags.add(word)
    return frozenset(flags)


# -- the From_ line ----------------------------------------------------------------------


_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTH_NAMES = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def from_line(raw: bytes, internal_date: float) -> bytes:
    """``From sender asctime`` (RFC 4155 2), the date in UTC, independent of the locale."""
    header = raw[: _header_end(raw)]
    m = _RETURN_PATH.search(header) or _FROM_ADDR.search(header)
    sender = m.group(1) if m else b"MAILER-DAEMON"
    t = time.gmtime(int(internal_date))
    stamp = (f"{_DAYS[t.tm_wday]} {_MONTH_NAMES[t.tm_mon - 1]} {t.tm_mday:2d} "
             f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} {t.tm_year}")
    return b"From " + sender + b" " + stamp.encode() + b"\n"


def parse_from_line_date(line: bytes) -> float | None:
    m = _FROM_LINE_DATE.search(line)
    if not m:
        return None
    mon, day, hour, minute, sec, year = m.groups()
    try:
        return float(calendar.timegm((int(year), _MONTHS[mon], int(day), int(hour), int(minute),
                                      int(sec or 0), 0, 0, 0)))
    except (ValueError, OverflowError):
        return None


def is_from_line(line: bytes) -> bool:
    """A separator: ``From `` and a date we can read (RFC 4155 2), not just any ``From`` line."""
    return line.startswith(b"From ") and _FROM_LINE_DATE.search(line) is not None


def _header_end(raw: bytes, start: int = 0, stop: int | None = None) -> int:
    """Offset (absolute) of the empty line ending the header that begins at ``start``."""
    stop = len(raw) if stop is None else stop
    if raw.startswith((b"\r\n", b"\n"), start):
        return start
    positions = [p for p in (raw.find(b"\n\n", start, stop), raw.find(b"\n\r\n", start, stop)) if p >= 0]
    return min(positions) + 1 if positions else stop


# -- the metadata block --------------------------------------------------------------------


def _eol(raw: bytes) -> bytes:
    first = raw.find(b"\n")
    return b"\r\n" if first > 0 and raw[first - 1:first] == b"\r" else b"\n"


def metadata_block(raw: bytes, flags: Iterable[str], content_length: int | None) -> bytes:
    status, x_status, keywords = flags_to_headers(flags)
    eol = _eol(raw)
    lines = [b"Status: " + status.encode(), b"X-Status: " + x_status.encode()]
    if keywords:
        lines.append(b"X-Keywords: " + keywords.encode())
    if content_length is not None:
        lines.append(b"Content-Length: %d" % content_length)
    return b"".join(line + eol for line in lines)


_BLOCK_STATUS = re.compile(rb"^Status: (R?O)\r?\n")
_BLOCK_X_STATUS = re.compile(rb"X-Status: ([AFTD]*)\r?\n")
_BLOCK_KEYWORDS = re.compile(rb"X-Keywords: ([^\r\n]*)\r?\n")
_BLOCK_LENGTH = re.compile(rb"Content-Length: (\d{1,12})\r?\n")


def strip_block(raw: bytes) -> tuple[bytes, frozenset[str] | None, int | None]:
    """(message, flags, content length) when ``raw`` starts with our block, else (raw, None, None)."""
    m1 = _BLOCK_STATUS.match(raw)
    if not m1:
        return raw, None, None
    m2 = _BLOCK_X_STATUS.match(raw, m1.end())
    if not m2:
        return raw, None, None
    pos = m2.end()
    keywords = None
    m3 = _BLOCK_KEYWORDS.match(raw, pos)
    if m3:
        keywords, pos = m3.group(1).decode("utf-8", "replace"), m3.end()
    length = None
    m4 = _BLOCK_LENGTH.match(raw, pos)
    if m4:
        length, pos = int(m4.group(1)), m4.end()
    flags = headers_to_flags(m1.group(1).decode(), m2.group(1).decode(), keywords)
    return raw[pos:], flags, length


def foreign_flags(raw: bytes) -> frozenset[str]:
    """Flags from Status/X-Status/X-Keywords anywhere in the header of a foreign message."""
    values: dict[bytes, str] = {}
    for line in raw[: _header_end(raw)].splitlines():
        name, sep, value = line.partition(b":")
        key = name.strip().lower()
        if sep and key in (b"status", b"x-status", b"x-keywords"):
            values[key] = value.strip().decode("utf-8", "replace")
    return headers_to_flags(values.get(b"status"), values.get(b"x-status"), values.get(b"x-keywords"))


# -- writing ---------------------------------------------------------------------------------


def encode_message(raw: bytes, flags: Iterable[str], internal_date: float, fmt: str = "mboxrd") -> bytes:
    """One message as it goes into an mbox file, separator line included."""
    if fmt == "mboxcl2":
        body = raw[_header_end(raw):]
        # mutt/qmail count the bytes after the empty line that ends the header.
        if body.startswith(b"\r\n"):
            body = body[2:]
        elif body.startswith(b"\n"):
            body = body[1:]
        block = metadata_block(raw, flags, len(body))
        return from_line(raw, internal_date) + block + raw + b"\n"
    lines = raw.splitlines(keepends=True)
    quoted = b"".join(b">" + line if _QUOTED_FROM.match(line) or line.startswith(b"From ") else line
                      for line in lines)
    complete = raw.endswith(b"\n")
    block = metadata_block(raw, flags, None if complete else len(raw))
    return from_line(raw, internal_date) + block + quoted + (b"" if complete else b"\n") + b"\n"


class MboxWriter:
    def __init__(self, out: BinaryIO, fmt: str = "mboxrd") -> None:
        if fmt not in FORMATS:
            raise ValueError(f"unknown mbox format {fmt!r}")
        self.out = out
        self.fmt = fmt
        self.count = 0

    def write(self, raw: bytes, flags: Iterable[str], internal_date: float) -> None:
        self.out.write(encode_message(raw, flags, internal_date, self.fmt))
        self.count += 1


# -- reading ---------------------------------------------------------------------------------


def _finish(entry: _Entry, index: int, fmt: str, strip_separator: bool = True) -> MboxMessage:
    data = b"".join(entry.lines)
    eol = b"\r\n" if entry.from_line.endswith(b"\r\n") else b"\n"
    # The empty line before the next From_ (or at the end) is the separator, not message.
    if strip_separator and data.endswith(eol) and (data == eol or data[: -len(eol)].endswith(b"\n")):
        data = data[: -len(eol)]
    if fmt == "mboxrd":
        data = b"".join(line[1:] if _QUOTED_FROM.match(line) else line
                        for line in data.splitlines(keepends=True))
    raw, flags, length = strip_block(data)
    if flags is None:
        flags = foreign_flags(raw)
    elif length is not None and fmt == "mboxrd" and len(raw) == length + 1 and raw.endswith(b"\n"):
        raw = raw[:length]                     # our marker of a message without a final line end
    return MboxMessage(raw=raw, flags=flags, internal_date=parse_from_line_date(entry.from_line), index=index)


def read_mbox(stream: BinaryIO, fmt: str = "mboxrd") -> Iterator[MboxMessage | tuple[int, str]]:
    """Messages in file order; an ``(index, problem)`` tuple for text that is not a message.

    mboxrd streams (one message in memory at a time). mboxcl2 frames by Content-Length
    where it is present and consistent, and falls back to From_ lines where it is not.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown mbox format {fmt!r}")
    if fmt == "mboxcl2":
        yield from _read_cl2(stream.read())
        return
    entry: _Entry | None = None
    index = 0
    junk = False
    previous_blank = True
    for line in stream:
        if previous_blank and is_from_line(line):
            if junk:
                junk = False
                index += 1
                yield (index, "text before the first From_ line")
            if entry is not None:
                index += 1
                yield _finish(entry, index, fmt)
            entry = _Entry(from_line=line)
            previous_blank = False
            continue
        previous_blank = line in (b"\n", b"\r\n")
        if entry is None:
            junk = junk or bool(line.strip())
            continue
        entry.lines.append(line)
    if junk:
        index += 1
        yield (index, "text before the first From_ line (not an mbox file?)")
    if entry is not None:
        index += 1
        yield _finish(entry, index, fmt)


def _line_at(data: bytes, pos: int) -> bytes:
    end = data.find(b"\n", pos)
    return data[pos: len(data) if end < 0 else end + 1]


def _read_cl2(data: bytes) -> Iterator[MboxMessage | tuple[int, str]]:
    pos = 0
    index = 0
    if data and not is_from_line(_line_at(data, 0)):
        index += 1
        yield (index, "text before the first From_ line (not an mbox file?)")
        pos = _next_from(data, 0)
    while pos < len(data):
        from_ln = _line_at(data, pos)
        start = pos + len(from_ln)
        framed = _cl2_end(data, start)
        index += 1
        if framed is None:
            nxt = _next_from(data, start)
            chunk = data[start:nxt]
            # Framed by From_ lines: drop the separator; our own writer always wrote one.
            if chunk.endswith(b"\n") and (chunk[:-1].endswith(b"\n") or strip_block(chunk)[1] is not None):
                chunk = chunk[:-1]
            yield _finish(_Entry(from_line=from_ln, lines=[chunk]), index, "mboxcl2", strip_separator=False)
            pos = nxt
        else:
            end, sep = framed
            yield _finish(_Entry(from_line=from_ln, lines=[data[start:end]]), index, "mboxcl2",
                          strip_separator=False)
            pos = end + len(sep)


def _cl2_end(data: bytes, start: int) -> tuple[int, bytes] | None:
    """(end of the message, its separator) by Content-Length; None when that is unusable."""
    header_end = _header_end(data, start)
    m = re.compile(rb"^Content-Length:[ \t]*(\d{1,12})\r?$", re.IGNORECASE | re.MULTILINE).search(
        data, start, header_end)
    if not m:
        return None
    body = header_end
    if data.startswith(b"\r\n", body):
        body += 2
    elif data.startswith(b"\n", body):
        body += 1
    end = body + int(m.group(1))
    for sep in (b"\n", b"\r\n"):
        after = end + len(sep)
        if data.startswith(sep, end) and (after == len(data) or is_from_line(_line_at(data, after))):
            return end, sep
    return None


def _next_from(data: bytes, start: int) -> int:
    """Offset of the next From_ line that follows an empty line, or len(data)."""
    pos = start
    while True:
        i = data.find(b"\nFrom ", pos)
        if i < 0:
            return len(data)
        blank_before = i == start - 1 or data[i - 1:i] == b"\n" or data[i - 2:i] == b"\n\r"
        if blank_before and is_from_line(_line_at(data, i + 1)):
            return i + 1
        pos = i + 1


def looks_like_message(raw: bytes) -> str | None:
    """Why ``raw`` cannot be imported as a message, or None when it can.

    Only nothing-at-all is refused: real mailboxes hold header-less notes, messages that
    begin with their own From_ line, BOMs and worse, and IMAP APPEND accepts them all, so
    an import that is meant to be lossless keeps them too."""
    if not raw.strip():
        return "empty message"
    return None
