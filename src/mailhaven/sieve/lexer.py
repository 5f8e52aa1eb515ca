"""Sieve tokens (RFC 5228 section 8.1), lexed incrementally: ``feed`` bytes in any chunks,
``tokens`` out; a token that may continue past the end of what was fed waits for more.

    identifier         = (ALPHA / "_") *(ALPHA / DIGIT / "_")
    tag                = ":" identifier
    number             = 1*DIGIT [ QUANTIFIER ]          ; QUANTIFIER = "K" / "M" / "G"
    quoted-string      = DQUOTE quoted-text DQUOTE
    multi-line         = "text:" *(SP / HTAB) (hash-comment / CRLF)
                         *(multiline-literal / multiline-dotstart) "." CRLF
    comment            = bracket-comment / hash-comment
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from mailhaven.sieve.errors import SieveError


class Kind(Enum):
    IDENTIFIER = "identifier"
    TAG = "tag"
    NUMBER = "number"
    STRING = "string"
    SPECIAL = "special"


@dataclass(frozen=True, kw_only=True, slots=True)
class Token:
    kind: Kind
    """What sort of token."""
    value: str | int
    """The identifier/tag name (lower-cased, without ':'), the number, the decoded string
    or the special character."""
    line: int
    """1-based line where the token starts."""
    column: int
    """1-based column (in bytes) where the token starts."""
    multiline: bool = False
    """A ``text:`` string rather than a quoted one."""


_QUANTIFIERS = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
_SPECIALS = b"[]{}(),;"
_WORD = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_0123456789")
_WORD_START = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_")
_DIGITS = frozenset(b"0123456789")
MAX_NUMBER = (1 << 63) - 1


class _More(Exception):
    """The token runs to the end of the buffer: wait for more bytes."""


class Lexer:
    def __init__(self) -> None:
        self._buf = b""
        self._pos = 0
        self._line = 1
        self._col = 1
        self._out: list[Token] = []
        self._done = False

    def feed(self, data: bytes) -> None:
        self._buf = self._buf[self._pos:] + data
        self._pos = 0
        self._scan(eof=False)

    def finish(self) -> list[Token]:
        """All the tokens, raising SieveError for what is left incomplete."""
        self._scan(eof=True)
        self._done = True
        return self._out

    # -- scanning ----------------------------------------------------------------------------
    def _scan(self, *, eof: bool) -> None:
        while self._pos < len(self._buf):
            try:
                self._one(eof)
            except _More:
                if eof:    # cannot happen: _one raises SieveError at eof
                    raise SieveError("unexpected end of script", self._line, self._col) from None
                return

    def _advance(self, end: int) -> None:
        chunk = self._buf[self._pos:end]
        nl = chunk.count(b"\n")
        if nl:
            self._line += nl
            self._col = len(chunk) - chunk.rfind(b"\n")
        else:
            self._col += len(chunk)
        self._pos = end

    def _err(self, message: str) -> SieveError:
        return SieveError(message, self._line, self._col)

    def _one(self, eof: bool) -> None:
        buf, pos = self._buf, self._pos
        c = buf[pos]
        if c in b" \t\r\n":
            end = pos
            while end < len(buf) and buf[end] in b" \t\r\n":
                end += 1
            self._advance(end)
        elif c == ord("#"):                                  # hash-comment, to end of line
            end = buf.find(b"\n", pos)
            if end < 0:
                if not eof:
                    raise _More
                end = len(buf) - 1
            self._advance(end + 1)
        elif c == ord("/"):
            if pos + 1 >= len(buf):
                if not eof:
                    raise _More
                raise self._err("unexpected '/'")
            if buf[pos + 1] != ord("*"):
                raise self._err("unexpected '/'")
            end = buf.find(b"*/", pos + 2)                   # bracket-comment
            if end < 0:
                if not eof:
                    raise _More
                raise self._err("unterminated comment")
            self._advance(end + 2)
        elif c in _SPECIALS:
            self._emit(Kind.SPECIAL, chr(c), pos + 1)
        elif c == ord('"'):
            self._quoted(eof)
        elif c in _DIGITS:
            self._number(eof)
        elif c == ord(":"):
            end = self._word_end(pos + 1, eof)
            if end == pos + 1 or buf[pos + 1] not in _WORD_START:
                raise self._err("a tag needs a name after ':'")
            self._emit(Kind.TAG, buf[pos + 1:end].decode().lower(), end)
        elif c in _WORD_START:
            end = self._word_end(pos, eof)
            word = buf[pos:end].decode().lower()
            if word == "text" and end < len(buf) and buf[end] == ord(":"):
                self._multiline(end + 1, eof)
            elif word == "text" and end == len(buf) and not eof:
                raise _More
            else:
                self._emit(Kind.IDENTIFIER, word, end)
        else:
            raise self._err(f"unexpected character {chr(c)!r}")

    def _word_end(self, start: int, eof: bool) -> int:
        buf = self._buf
        end = start
        while end < len(buf) and buf[end] in _WORD:
            end += 1
        if end == len(buf) and not eof:
            raise _More
        return end

    def _emit(self, kind: Kind, value: str | int, end: int, multiline: bool = False) -> None:
        self._out.append(Token(kind=kind, value=value, line=self._line, column=self._col,
                               multiline=multiline))
        self._advance(end)

    def _number(self, eof: bool) -> None:
        buf, pos = self._buf, self._pos
        end = pos
        while end < len(buf) and buf[end] in _DIGITS:
            end += 1
        if end == len(buf) and not eof:
            raise _More
        value = int(buf[pos:end])
        if end < len(buf) and chr(buf[end]).lower() in _QUANTIFIERS:
            value *= _QUANTIFIERS[chr(buf[end]).lower()]
            end += 1
        if end < len(buf) and buf[end] in _WORD:
            raise self._err("a number is followed by letters")
        if value > MAX_NUMBER:
            raise self._err("number too large")
        self._emit(Kind.NUMBER, value, end)

    def _quoted(self, eof: bool) -> None:
        buf = self._buf
        i = self._pos + 1
        out = bytearray()
        while True:
            if i >= len(buf):
                if not eof:
                    raise _More
                raise self._err("unterminated string")
            c = buf[i]
            if c == ord('"'):
                break
            if c == ord("\\"):                               # RFC 5228 2.4.2: \x is x
                if i + 1 >= len(buf):
                    if not eof:
                        raise _More
                    raise self._err("unterminated string")
                out.append(buf[i + 1])
                i += 2
                continue
            out.append(c)
            i += 1
        self._emit(Kind.STRING, self._decode(bytes(out)).replace("\r\n", "\n").replace("\n", "\r\n"),
                   i + 1)

    def _multiline(self, start: int, eof: bool) -> None:
        buf = self._buf
        i = start
        while i < len(buf) and buf[i] in b" \t":
            i += 1
        if i >= len(buf):
            if not eof:
                raise _More
            raise self._err("unterminated text: string")
        if buf[i] == ord("#"):
            nl = buf.find(b"\n", i)
        elif buf[i] == ord("\r") or buf[i] == ord("\n"):
            nl = buf.find(b"\n", i)
            if nl > i + 1 or (nl < 0 and i + 1 < len(buf)):
                raise self._err("text: must be followed by the end of the line")
        else:
            raise self._err("text: must be followed by the end of the line")
        if nl < 0:
            if not eof:
                raise _More
            raise self._err("unterminated text: string")
        lines: list[bytes] = []
        i = nl + 1
        while True:
            nl = buf.find(b"\n", i)
            if nl < 0:
                if not eof:
                    raise _More
                raise self._err("unterminated text: string (no '.' line)")
            line = buf[i:nl].removesuffix(b"\r")
            i = nl + 1
            if line == b".":
                break
            if line.startswith(b".."):                       # multiline-dotstart
                line = line[1:]
            lines.append(line)
        text = "".join(self._decode(ln) + "\r\n" for ln in lines)
        self._emit(Kind.STRING, text, i, multiline=True)

    def _decode(self, raw: bytes) -> str:
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise self._err("string is not UTF-8") from None


def tokenize(script: bytes | str) -> list[Token]:
    lexer = Lexer()
    lexer.feed(script.encode() if isinstance(script, str) else script)
    return lexer.finish()
