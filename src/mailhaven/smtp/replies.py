"""Client side: read SMTP replies off the wire, sans-IO (for the outbound queue's client).

Usage::

    reader = ReplyReader()
    reader.receive_data(sock_bytes)
    while (reply := reader.next_reply()) is not NEED_DATA:
        handle(reply)            # a codes.Reply; multi-line replies come out whole

The grammar (RFC 5321 4.2)::

    Reply-line     = *( Reply-code "-" [ textstring ] CRLF )
                     Reply-code [ SP textstring ] CRLF
    Reply-code     = %x32-35 %x30-35 %x30-39

Every line of one reply must carry the same code (4.2.1); a reply whose text starts with
an RFC 3463 enhanced code whose class matches the basic code's first digit (RFC 2034 3)
has it split off into :attr:`Reply.enhanced` (taken from the last line, the prefix is
removed from every line). A bare LF is accepted as a line end (robustness: some servers
send it); a line longer than :data:`MAX_LINE` raises :class:`ReplyError`.

:func:`parse_ehlo` turns a 250 reply to EHLO into the greeting name and a keyword ->
parameters map (RFC 5321 4.1.1.1).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .codes import Reply


class _NeedData:
    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA = _NeedData()
"""Returned by :meth:`ReplyReader.next_reply` when no complete reply is buffered."""

MAX_LINE = 16 * 1024
"""Longest reply line we accept (RFC 5321 4.5.3.1.5 says 512; servers exceed it)."""
MAX_LINES = 1000
"""Most lines in one multi-line reply (EHLO answers have ~15)."""

_LINE_RE = re.compile(rb"^([2-5][0-9][0-9])([ -]|$)(.*)$", re.DOTALL)
_ENHANCED_RE = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})(?: |$)")


class ReplyError(Exception):
    """The server broke the reply grammar (the peer's fault, not ours)."""


@dataclass(frozen=True, kw_only=True)
class Ehlo:
    """A parsed EHLO reply."""

    domain: str
    """The name the server gave on the first line."""
    extensions: dict[str, tuple[str, ...]]
    """Upper-case keyword (``SIZE``, ``AUTH``...) -> its parameters as sent."""

    def has(self, keyword: str) -> bool:
        return keyword.upper() in self.extensions

    def size_limit(self) -> int | None:
        """RFC 1870 SIZE parameter; 0 or absent means no fixed limit."""
        params = self.extensions.get("SIZE")
        if params and params[0].isdigit() and int(params[0]) > 0:
            return int(params[0])
        return None

    def auth_mechanisms(self) -> tuple[str, ...]:
        return tuple(p.upper() for p in self.extensions.get("AUTH", ()))


class ReplyReader:
    """Buffers bytes from the server and hands out complete replies."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._lines: list[tuple[int, str]] = []

    def receive_data(self, data: bytes) -> None:
        self._buffer += data

    @property
    def pending(self) -> bool:
        """Bytes or lines of an incomplete reply are buffered."""
        return bool(self._buffer or self._lines)

    def next_reply(self) -> Reply | _NeedData:
        while True:
            end = self._buffer.find(b"\n")
            if end < 0:
                if len(self._buffer) > MAX_LINE:
                    raise ReplyError("reply line too long")
                return NEED_DATA
            if end > MAX_LINE:
                raise ReplyError("reply line too long")
            raw = bytes(self._buffer[:end])
            del self._buffer[: end + 1]
            if raw.endswith(b"\r"):
                raw = raw[:-1]
            m = _LINE_RE.match(raw)
            if m is None:
                raise ReplyError(f"malformed reply line {raw[:80]!r}")
            code = int(m.group(1))
            if self._lines and self._lines[0][0] != code:
                # RFC 5321 4.2.1: all lines of a multi-line reply carry the same code.
                raise ReplyError(f"reply code changed within a reply: {self._lines[0][0]} then {code}")
            self._lines.append((code, m.group(3).decode("utf-8", "replace")))
            if len(self._lines) > MAX_LINES:
                raise ReplyError("too many lines in one reply")
            if m.group(2) != b"-":
                lines, self._lines = self._lines, []
                return _build(code, [text for _, text in lines])


def _build(code: int, texts: list[str]) -> Reply:
    enhanced = None
    m = _ENHANCED_RE.match(texts[-1])
    if m and m.group(1) == str(code)[0]:   # RFC 2034 3: class must match the reply
        enhanced = f"{m.group(1)}.{m.group(2)}.{m.group(3)}"
        prefix = enhanced
        texts = [t[len(prefix):].lstrip(" ") if t.startswith(prefix) else t for t in texts]
    return Reply(code=code, enhanced=enhanced, text="\n".join(texts))


def parse_reply(data: bytes) -> Reply:
    """Parse exactly one complete reply (tests and one-shot uses)."""
    reader = ReplyReader()
    reader.receive_data(data)
    reply = reader.next_reply()
    if not isinstance(reply, Reply) or reader.pending:
        raise ReplyError("expected exactly one complete reply")
    return reply


def parse_ehlo(reply: Reply) -> Ehlo:
    """RFC 5321 4.1.1.1: ``250-domain [greet]`` then one ``250-KEYWORD params`` per line."""
    if reply.code != 250:
        raise ReplyError(f"EHLO was refused: {reply}")
    lines = reply.text.split("\n")
    domain = lines[0].split(" ", 1)[0]
    extensions: dict[str, tuple[str, ...]] = {}
    for line in lines[1:]:
        parts = line.split()
        if not parts:
            continue
        keyword = parts[0].upper()
        if keyword == "AUTH" and keyword in extensions:
            parts = [keyword, *extensions[keyword], *parts[1:]]
        # "AUTH=LOGIN PLAIN" is an old (pre-RFC 4954) spelling some servers add.
        if keyword.startswith("AUTH="):
            keyword, first = "AUTH", parts[0][5:]
            parts = ["AUTH", *extensions.get("AUTH", ()), first, *parts[1:]]
        extensions[keyword] = tuple(dict.fromkeys(parts[1:]))
    return Ehlo(domain=domain, extensions=extensions)
