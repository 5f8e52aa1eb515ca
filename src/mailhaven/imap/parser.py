"""Sans-IO IMAP command reader: bytes in, commands out.

``CommandReader.receive_data(bytes)`` buffers input; ``next_event()`` returns one of
:class:`Command`, :class:`LiteralAnnounced`, :class:`CommandError` or ``NEED_DATA``.
Nothing here does I/O: the session decides what to write (the ``+`` continuation for a
synchronizing literal, the BAD for a malformed command).

A command is framed first (lines and the literals between them), then tokenized into
atoms, strings and parenthesized lists. Per-command grammar lives with the commands
(:mod:`mailhaven.imap.grammar` gives them a cursor over the tokens).

RFC 9051 section 4 (data formats) and 9 (formal syntax)::

    command         = tag SP (command-any / command-auth / command-nonauth /
                      command-select) CRLF
    literal         = "{" number64 ["+"] "}" CRLF *CHAR8      ; RFC 9051 / 7888
    literal8        = "~{" number64 "}" CRLF *OCTET           ; RFC 3516
    quoted          = DQUOTE *QUOTED-CHAR DQUOTE
    atom            = 1*ATOM-CHAR
    list-wildcards  = "%" / "*"

Invariants: a literal's bytes are never scanned for CRLF; a command is only tokenized
once it is complete; after any error the reader is positioned at the start of the
next command (or is ``closed`` when it cannot find one).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Final, Protocol

# -- tokens -------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True, slots=True)
class Atom:
    """An atom as sent: ``NIL``, ``\\Seen``, ``1:*``, ``BODY.PEEK[HEADER]<0.10>``..."""

    value: str


@dataclass(frozen=True, kw_only=True, slots=True)
class String:
    """A quoted string or a literal; ``value`` is the exact bytes."""

    value: bytes
    literal: bool = False
    """Sent as ``{n}``/``{n+}`` (or ``~{n}``) rather than quoted."""
    binary: bool = False
    """Sent as ``~{n}`` (RFC 3516 literal8): may contain NUL."""


@dataclass(frozen=True, kw_only=True, slots=True)
class ParenList:
    """A parenthesized list of tokens."""

    items: tuple[Token, ...]


Token = Atom | String | ParenList

# -- events -------------------------------------------------------------------


class _NeedData:
    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA: Final = _NeedData()


@dataclass(kw_only=True, slots=True)
class Command:
    """A complete, tokenized command. (Not frozen: one is made for every command, and a
    frozen dataclass pays for each field it sets; nothing keeps or hashes commands.)"""

    tag: str
    name: str
    """Upper-case command name (``FETCH``), without the ``UID`` prefix."""
    uid: bool
    """The command was prefixed with ``UID``."""
    args: tuple[Token, ...]
    size: int = 0
    """Bytes the command took on the wire (lines and literals)."""


class LiteralSink(Protocol):
    """Where the session may send a literal's bytes as they arrive (a large APPEND message
    goes straight to a blob writer instead of being held)."""

    def write(self, data: bytes) -> None: ...


class SpooledLiteral(bytes):
    """The empty value standing in a :class:`String` for a literal that went to ``sink``."""

    sink: LiteralSink


@dataclass(frozen=True, kw_only=True, slots=True)
class LiteralAnnounced:
    """A command line ended with a literal header; the session must answer.

    For a synchronizing literal the session calls ``accept_literal()`` and writes a
    ``+`` continuation, or ``reject_literal()`` and writes a tagged NO/BAD (the client
    then sends nothing more for this command). A non-synchronizing literal is already on
    its way: ``accept_literal()`` reads it, ``reject_literal()`` skips it and the rest of
    the command.
    """

    tag: str
    name: str
    """Upper-case command name, ``UID`` prefix removed; ``""`` when not yet known."""
    size: int
    synchronizing: bool
    binary: bool
    first: bool
    """The first literal of this command."""


@dataclass(frozen=True, kw_only=True, slots=True)
class CommandError:
    """A malformed or oversized command; the session answers BAD (or BYE when fatal)."""

    tag: str | None
    """``None`` when no tag could be read (the reply is then untagged ``* BAD``)."""
    text: str
    code: str | None = None
    """Response code such as ``TOOBIG``."""
    fatal: bool = False
    """The stream cannot be resynchronised: say BYE and close."""


Event = Command | LiteralAnnounced | CommandError | _NeedData

# -- limits -------------------------------------------------------------------

MAX_LINE = 64 * 1024
"""Longest command line (without literals); Dovecot's imap_max_line_length default."""
MAX_DEPTH = 32
MAX_LITERALS = 1000
MAX_COMMAND = 16 * 1024 * 1024
"""Total command size, literals included, except APPEND's message literals."""

_LITERAL_RE = re.compile(rb"(~?)\{(\d{1,20})(\+?)\}$")
_ATOM_STOP = re.compile(rb'[\x00-\x20()\x7f"{\[]')
"""What ends an atom (or, ``[``, opens a section spec inside one)."""
_TAG_RE = re.compile(rb"^([^\x00-\x20\x7f(){%*\"\\+]+) ")


class _ParseError(Exception):
    pass


# -- the reader -----------------------------------------------------------------


class CommandReader:
    """Incremental command framing and tokenizing for one connection."""

    def __init__(self, *, max_line: int = MAX_LINE, max_literal: int = 64 * 1024 * 1024,
                 max_depth: int = MAX_DEPTH, max_command: int = MAX_COMMAND) -> None:
        self.max_line = max_line
        self.max_literal = max_literal
        self.max_depth = max_depth
        self.max_command = max_command
        self._buf = bytearray()
        self._scan = 0
        """Where to continue looking for LF in ``_buf``."""
        self._pieces: list[bytes] = []
        """Lines (without CRLF) and literal bodies of the command being framed, alternating."""
        self._literal_left = 0
        """Bytes of the current literal still to arrive."""
        self._in_literal = False
        """An accepted literal is being read (it may be empty: ``{0}``)."""
        self._literal_parts: list[bytes] = []
        self._sink: LiteralSink | None = None
        self._pending: LiteralAnnounced | None = None
        """A literal announced and not yet accepted or rejected."""
        self._discard_line = False
        """Skipping an over-long line up to its LF."""
        self._skip = 0
        """Bytes of a rejected non-synchronizing literal still to skip."""
        self._skip_rest = False
        """After skipping, drop the rest of the command up to a line without literal."""
        self._head: tuple[str, str] | None = None
        self._size = 0
        self._append_literal_bytes = 0
        self.closed = False

    # -- input ------------------------------------------------------------------
    def receive_data(self, data: bytes) -> None:
        self._buf += data

    @property
    def buffered(self) -> int:
        return len(self._buf)

    @property
    def in_literal(self) -> bool:
        """Literal bytes are arriving (the adapter holds them to a minimum rate)."""
        return bool(self._literal_left or self._skip)

    def in_command(self) -> bool:
        """Part of a command has been read (used to tell idle timeouts from slow clients)."""
        return bool(self._pieces or self._buf or self._literal_left)

    def accept_literal(self, sink: LiteralSink | None = None) -> None:
        """Read the literal; with ``sink`` its bytes go there as they arrive, and the
        command sees a :class:`SpooledLiteral` in their place."""
        if self._pending is None:
            raise RuntimeError("no literal is waiting for a decision")
        self._literal_left = self._pending.size
        self._in_literal = True
        self._literal_parts = []
        self._sink = sink
        self._pending = None

    def reject_literal(self) -> None:
        """Drop the command; for a non-synchronizing literal skip the bytes already coming."""
        pending = self._pending
        if pending is None:
            raise RuntimeError("no literal is waiting for a decision")
        self._pending = None
        self._reset_command()
        if not pending.synchronizing:
            self._skip = pending.size
            self._skip_rest = True

    def next_line(self) -> bytes | CommandError | _NeedData:
        """A raw line (without CRLF) outside any command: IDLE's ``DONE``, SASL responses.
        An over-long line is a :class:`CommandError` (its rest is skipped up to the LF)."""
        if self._pieces or self._pending is not None or self._in_literal:
            raise RuntimeError("next_line() in the middle of a command")
        try:
            line = self._take_line()
        except _ParseError as exc:
            return CommandError(tag=None, text=str(exc).capitalize())
        if line is None:
            return NEED_DATA
        return line

    def one_line_command(self, data: bytes) -> Command | None:
        """``data`` as the :class:`Command` :meth:`next_event` would give for it, when it
        is exactly one whole command line without literals and nothing else is buffered or
        half read; else None. Nothing is consumed either way (a command the session can
        answer as it arrives is answered without passing through the buffer)."""
        if (self._buf or self._pieces or self._pending is not None or self._in_literal or self._skip
                or self._skip_rest or self._discard_line or self.closed):
            return None
        end = data.find(b"\n")
        if end != len(data) - 1 or end > self.max_line or data.endswith(b"}\r\n") or data.endswith(b"}\n"):
            return None
        try:
            return _tokenize_command([data[:-2] if data.endswith(b"\r\n") else data[:-1]], self.max_depth,
                                     len(data))
        except _ParseError:
            return None

    # -- framing ----------------------------------------------------------------
    def _reset_command(self) -> None:
        self._pieces = []
        self._literal_parts = []
        self._literal_left = 0
        self._sink = None
        self._in_literal = False
        self._head = None
        self._size = 0
        self._append_literal_bytes = 0

    def _take_line(self) -> bytes | None:
        """One line without its (CR)LF, or None; over-long lines raise _ParseError once."""
        while True:
            idx = self._buf.find(b"\n", self._scan)
            if idx < 0:
                self._scan = len(self._buf)
                # A trailing CR may be the line end's: count the line as the LF will cut it.
                if len(self._buf) - self._buf.endswith(b"\r") > self.max_line:
                    # Discard what we have; keep discarding until the LF arrives.
                    self._buf.clear()
                    self._scan = 0
                    if not self._discard_line:
                        self._discard_line = True
                        raise _ParseError("line too long")
                return None
            line = bytes(self._buf[:idx])
            del self._buf[: idx + 1]
            self._scan = 0
            if self._discard_line:
                self._discard_line = False
                continue
            if line.endswith(b"\r"):
                line = line[:-1]
            if len(line) > self.max_line:
                raise _ParseError("line too long")
            return line

    def next_event(self) -> Event:
        if self.closed:
            return NEED_DATA
        if self._pending is not None:
            raise RuntimeError("answer the LiteralAnnounced event first")
        while True:
            if self._skip:
                n = min(self._skip, len(self._buf))
                del self._buf[:n]
                self._skip -= n
                if self._skip:
                    return NEED_DATA
            if self._in_literal:
                n = min(self._literal_left, len(self._buf))
                if n:
                    if self._sink is not None:
                        self._sink.write(bytes(self._buf[:n]))
                    else:
                        self._literal_parts.append(bytes(self._buf[:n]))
                    del self._buf[:n]
                    self._literal_left -= n
                if self._literal_left:
                    return NEED_DATA
                if self._sink is not None:
                    spooled = SpooledLiteral()
                    spooled.sink, self._sink = self._sink, None
                    self._pieces.append(spooled)
                else:
                    self._pieces.append(b"".join(self._literal_parts))
                self._literal_parts = []
                self._in_literal = False
                self._scan = 0
            try:
                line = self._take_line()
            except _ParseError as exc:
                tag = self._head[0] if self._head else None
                was_skipping = self._skip_rest
                self._reset_command()
                self._skip_rest = False
                if was_skipping:
                    continue
                return CommandError(tag=tag, text=f"Command {exc}")
            if line is None:
                return NEED_DATA
            m = _LITERAL_RE.search(line) if line.endswith(b"}") else None
            if self._skip_rest:
                # Dropping a rejected command: its further literals are skipped too.
                if m is not None:
                    self._skip = int(m.group(2))
                    if not m.group(3):
                        # A synchronizing literal in a rejected command: the client waits
                        # for a continuation that never comes. Resync on the next line.
                        self._skip = 0
                        self._skip_rest = False
                    continue
                self._skip_rest = False
                continue
            self._size += len(line) + 2
            if m is None:
                self._pieces.append(line)
                return self._finish()
            if not self._pieces:
                self._head = _command_head(line)
            size = int(m.group(2))
            self._pieces.append(line)
            announced = LiteralAnnounced(
                tag=self._head[0] if self._head else "",
                name=self._head[1] if self._head else "",
                size=size, synchronizing=not m.group(3), binary=bool(m.group(1)),
                first=len(self._pieces) == 1,
            )
            if len(self._pieces) > 2 * MAX_LITERALS:
                return self._fail_literal(announced, "Too many literals")
            if size > self.max_literal:
                return self._fail_literal(announced, "Literal too big", code="TOOBIG")
            if announced.name != "APPEND":
                if self._size + size > self.max_command:
                    return self._fail_literal(announced, "Command too long", code="TOOBIG")
            self._size += size
            self._pending = announced
            return announced

    def _fail_literal(self, announced: LiteralAnnounced, text: str,
                      code: str | None = None) -> CommandError:
        self._reset_command()
        if not announced.synchronizing:
            # RFC 7888 section 4: the bytes are coming anyway; skip them and the command.
            self._skip = announced.size
            self._skip_rest = True
        return CommandError(tag=announced.tag or None, text=text, code=code)

    def _finish(self) -> Command | CommandError:
        pieces, size = self._pieces, self._size
        head = self._head
        self._reset_command()
        try:
            return _tokenize_command(pieces, self.max_depth, size)
        except _TaggedError as exc:
            return CommandError(tag=exc.tag, text=str(exc))
        except _ParseError as exc:
            if head is None:                    # a one-line command: its head only now
                head = _command_head(pieces[0])
            return CommandError(tag=head[0] if head else None, text=str(exc))


def _command_head(line: bytes) -> tuple[str, str] | None:
    """(tag, command name) from a first line, for error replies and literal decisions."""
    m = _TAG_RE.match(line)
    if m is None:
        return None
    tag = m.group(1).decode("ascii", "replace")
    rest = line[m.end():].split(b" ", 2)
    name = rest[0].upper().decode("ascii", "replace") if rest else ""
    if name == "UID" and len(rest) > 1:
        name = rest[1].upper().decode("ascii", "replace")
    return tag, name


# -- tokenizing ---------------------------------------------------------------


class _Tokenizer:
    """Walks the framed pieces: line, literal, line, literal, ..., line."""

    def __init__(self, pieces: list[bytes], max_depth: int) -> None:
        self.pieces = pieces
        self.max_depth = max_depth
        self.index = 0
        self.line = pieces[0]
        self.pos = 0

    def tokens(self) -> list[Token]:
        stack: list[list[Token]] = [[]]
        expect_space = False
        while True:
            if self.pos >= len(self.line):
                if self.index + 1 < len(self.pieces):
                    raise _ParseError("Literal header not at end of line")
                break
            c = self.line[self.pos]
            if c == 0x20:
                if not expect_space:
                    # After a literal a run of spaces counts as one, as Dovecot's parser
                    # takes every run (imapclient's MULTIAPPEND writes two between one
                    # message's literal and the next); elsewhere a second space is an error.
                    if self.index and not self.line[:self.pos].strip(b" "):
                        self.pos += 1
                        continue
                    raise _ParseError("Unexpected space")
                self.pos += 1
                expect_space = False
                continue
            if c == 0x29:  # ")"
                if len(stack) == 1:
                    raise _ParseError("Unbalanced parenthesis")
                items = stack.pop()
                stack[-1].append(ParenList(items=tuple(items)))
                self.pos += 1
                expect_space = True
                continue
            if expect_space:
                raise _ParseError("Missing space between arguments")
            if c == 0x28:  # "("
                if len(stack) > self.max_depth:
                    raise _ParseError("Lists nested too deeply")
                stack.append([])
                self.pos += 1
                continue
            if c == 0x22:  # '"'
                stack[-1].append(self.quoted())
            elif c == 0x7B or (c == 0x7E and self.line[self.pos + 1:self.pos + 2] == b"{"):
                stack[-1].append(self.literal())
            else:
                stack[-1].append(self.atom())
            expect_space = True
        if len(stack) != 1:
            raise _ParseError("Unbalanced parenthesis")
        return stack[0]

    def quoted(self) -> String:
        out = bytearray()
        i = self.pos + 1
        line = self.line
        while i < len(line):
            c = line[i]
            if c == 0x5C:  # backslash: only \\ and \" are allowed (RFC 9051 section 9)
                if i + 1 >= len(line) or line[i + 1] not in (0x5C, 0x22):
                    raise _ParseError("Bad escape in quoted string")
                out.append(line[i + 1])
                i += 2
                continue
            if c == 0x22:
                self.pos = i + 1
                return String(value=bytes(out))
            if c in (0x00, 0x0D, 0x0A):
                raise _ParseError("Bad character in quoted string")
            out.append(c)
            i += 1
        raise _ParseError("Unterminated quoted string")

    def literal(self) -> String:
        m = _LITERAL_RE.search(self.line, self.pos)
        if m is None or m.start() != self.pos:
            raise _ParseError("Bad literal")
        if self.index + 1 >= len(self.pieces):
            raise _ParseError("Missing literal")
        data = self.pieces[self.index + 1]
        binary = bool(m.group(1))
        # RFC 9051 4.3 keeps NUL out of plain literals; real clients APPEND such mail anyway,
        # so it is accepted (as Dovecot does) rather than losing the message.
        self.index += 2
        # An empty literal last on the line (``a LOGIN x {0+}`` then CRLF) leaves no line after it.
        self.line = self.pieces[self.index] if self.index < len(self.pieces) else b""
        self.pos = 0
        return String(value=data, literal=True, binary=binary)

    def atom(self) -> Atom:
        line = self.line
        i = self.pos
        while True:
            m = _ATOM_STOP.search(line, i)
            if m is None:
                i = len(line)
                break
            i = m.start()
            if line[i] != 0x5B:
                break
            # "[": a section spec may hold spaces, lists and quotes. Without its "]" it is a
            # plain ATOM-CHAR (RFC 9051 9: only "]" is a resp-special), as in a mailbox name.
            end = self._skip_brackets(i)
            i = end if end is not None else i + 1
        if i == self.pos:
            raise _ParseError("Bad character")
        value = line[self.pos:i]
        self.pos = i
        try:
            return Atom(value=value.decode("utf-8"))
        except UnicodeDecodeError:
            raise _ParseError("Atom is not UTF-8") from None

    def _skip_brackets(self, i: int) -> int | None:
        line = self.line
        depth = 0
        while i < len(line):
            c = line[i]
            if c == 0x5B:
                depth += 1
            elif c == 0x5D:
                depth -= 1
                if depth == 0:
                    return i + 1
            elif c == 0x22:
                j = i + 1
                while j < len(line) and line[j] != 0x22:
                    j += 2 if line[j] == 0x5C else 1
                i = j
            elif c < 0x20:
                break
            i += 1
        return None


_ATOMS_THEN_SPACE = re.compile(rb'(?:[^\x00-\x20()\x7f"{\[]+ )*')
"""Plain atoms, each followed by one space: how nearly every command line starts."""
_BAD_TAG = re.compile(r'[+*%"\\(){\]]')
"""Characters a tag may not hold (RFC 9051 9: tag = 1*<any ASTRING-CHAR except "+">)."""
_PLAIN_ATOM = re.compile(rb'[^\x00-\x20()\x7f"{\[]+')


@functools.lru_cache(maxsize=512)
def _list_tokens(rest: bytes, max_depth: int) -> tuple[Token, ...]:
    return tuple(_Tokenizer([rest], max_depth).tokens())


_WORDS = {w: Atom(value=w.decode()) for w in (
    b"UID", b"FETCH", b"STORE", b"SEARCH", b"COPY", b"MOVE", b"EXPUNGE", b"NOOP", b"IDLE", b"SELECT",
    b"EXAMINE", b"STATUS", b"LIST", b"LSUB", b"APPEND", b"CHECK", b"CLOSE", b"UNSELECT", b"LOGOUT",
    b"CAPABILITY", b"ENABLE", b"NAMESPACE", b"LOGIN", b"AUTHENTICATE", b"ID", b"SORT", b"THREAD",
    b"1:*", b"INBOX", b"FLAGS", b"+FLAGS", b"-FLAGS", b"+FLAGS.SILENT", b"-FLAGS.SILENT",
    b"uid", b"fetch", b"store", b"search", b"noop", b"select", b"status", b"list", b"idle")}
"""Atoms that start most command lines, made once (a tag or a number is new each time)."""


def _line_tokens(line: bytes, max_depth: int) -> list[Token]:
    """The tokens of a command line without literals. Clients send the same few argument
    lists over and over with a new tag and sequence set, so a line is read as its leading
    plain atoms (split at spaces) and the rest from ``(``, tokenized once and kept (tokens
    are immutable). Anything else goes to the tokenizer whole; either way the same tokens."""
    if line.isascii():
        end = _ATOMS_THEN_SPACE.match(line).end()  # type: ignore[union-attr]
        rest = line[end:]
        head: list[Token] = [_WORDS.get(a) or Atom(value=a.decode("ascii")) for a in line[:end].split(b" ")[:-1]]
        if rest[:1] == b"(":
            return head + list(_list_tokens(rest, max_depth))
        if _PLAIN_ATOM.fullmatch(rest):
            head.append(Atom(value=rest.decode("ascii")))
            return head
    return _Tokenizer([line], max_depth).tokens()


def _tokenize_command(pieces: list[bytes], max_depth: int, size: int) -> Command:
    if len(pieces) == 1:
        tokens = _line_tokens(pieces[0], max_depth)
    else:
        tokens = _Tokenizer(pieces, max_depth).tokens()
    if not tokens or not isinstance(tokens[0], Atom):
        raise _ParseError("Missing tag")
    tag = tokens[0].value
    if _BAD_TAG.search(tag):
        raise _ParseError("Invalid tag")
    if len(tokens) < 2 or not isinstance(tokens[1], Atom):
        raise _TaggedError(tag, "Missing command")
    name = tokens[1].value.upper()
    args = tokens[2:]
    uid = False
    if name == "UID":
        if not args or not isinstance(args[0], Atom):
            raise _TaggedError(tag, "Missing command after UID")
        uid = True
        name = args[0].value.upper()
        args = args[1:]
    return Command(tag=tag, name=name, uid=uid, args=tuple(args), size=size)


class _TaggedError(_ParseError):
    def __init__(self, tag: str, text: str) -> None:
        super().__init__(text)
        self.tag = tag
