"""The POP3 server protocol core, sans-IO (RFC 1939, RFC 2449, RFC 2595, RFC 5034, RFC 6856).

Bytes in, events out::

    proto = Pop3Protocol(max_line=4096)
    proto.receive_data(data)
    while (event := proto.next_event()) is not NEED_DATA:
        ...   # a Command, SaslResponse, or Malformed

The session (session.py) answers each event and drives :meth:`Pop3Protocol.transition`;
the state table :data:`TRANSITIONS` says which state follows, and :data:`ALLOWED` which
commands a state accepts. A pair missing from either table is a protocol error
(``-ERR``, the session goes on). Nothing here imports asyncio or touches a socket.

Grammar (RFC 1939 3, RFC 2449 3)::

    command  = keyword *(SP argument) CRLF      ; keyword 3-4 chars, case-insensitive
    argument = 1*40 printable characters        ; PASS takes the rest of the line
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from . import replies as R
from .replies import Reply


class _NeedData:
    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA = _NeedData()
"""Returned by :meth:`Pop3Protocol.next_event` when no complete line is buffered."""

MAX_MESSAGE_NUMBER_DIGITS = 9


class State(enum.Enum):
    AUTHORIZATION = "authorization"   # RFC 1939 4
    SASL = "sasl"                     # RFC 5034 4: inside an AUTH exchange
    TRANSACTION = "transaction"       # RFC 1939 5
    UPDATE = "update"                 # RFC 1939 6
    CLOSED = "closed"


class Trigger(enum.Enum):
    """What moves the session between states."""

    SASL_STARTED = "sasl-started"
    SASL_ENDED = "sasl-ended"          # failure or cancel: back to AUTHORIZATION
    AUTHENTICATED = "authenticated"    # and the maildrop is locked
    QUIT = "quit"
    UPDATE_DONE = "update-done"
    CLOSE = "close"                    # connection lost, timeout, too many errors


# (state, trigger) -> next state. RFC 1939 3: QUIT in AUTHORIZATION closes without UPDATE;
# a dropped connection never enters UPDATE (RFC 1939 6: deletions only after QUIT).
TRANSITIONS: dict[tuple[State, Trigger], State] = {
    (State.AUTHORIZATION, Trigger.SASL_STARTED): State.SASL,
    (State.AUTHORIZATION, Trigger.AUTHENTICATED): State.TRANSACTION,
    (State.AUTHORIZATION, Trigger.QUIT): State.CLOSED,
    (State.AUTHORIZATION, Trigger.CLOSE): State.CLOSED,
    (State.SASL, Trigger.SASL_ENDED): State.AUTHORIZATION,
    (State.SASL, Trigger.AUTHENTICATED): State.TRANSACTION,
    (State.SASL, Trigger.CLOSE): State.CLOSED,
    (State.TRANSACTION, Trigger.QUIT): State.UPDATE,
    (State.TRANSACTION, Trigger.CLOSE): State.CLOSED,
    (State.UPDATE, Trigger.UPDATE_DONE): State.CLOSED,
    (State.UPDATE, Trigger.CLOSE): State.CLOSED,
}


class ProtocolError(Exception):
    """We (the session) asked for a transition the table does not allow: our bug."""


# -- commands ----------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Command:
    """Base of every client command."""


@dataclass(frozen=True, kw_only=True)
class User(Command):
    name: str
    """The login name (a full address); RFC 1939 7."""


@dataclass(frozen=True, kw_only=True)
class Pass(Command):
    password: str
    """Everything after ``PASS `` (spaces included, RFC 1939 7)."""


@dataclass(frozen=True, kw_only=True)
class Auth(Command):
    mechanism: str | None
    """Upper-case SASL mechanism; None for a bare ``AUTH`` (list mechanisms)."""
    initial_response: bytes | None = None
    """Decoded RFC 5034 4 initial response (``=`` is the empty one); None when absent."""


@dataclass(frozen=True, kw_only=True)
class Capa(Command):
    """RFC 2449 5."""


@dataclass(frozen=True, kw_only=True)
class Stls(Command):
    """RFC 2595 4."""


@dataclass(frozen=True, kw_only=True)
class Utf8(Command):
    """RFC 6856 2."""


@dataclass(frozen=True, kw_only=True)
class Quit(Command):
    pass


@dataclass(frozen=True, kw_only=True)
class Stat(Command):
    pass


@dataclass(frozen=True, kw_only=True)
class List(Command):
    msg: int | None = None
    """Message number, or None for the whole scan listing."""


@dataclass(frozen=True, kw_only=True)
class Uidl(Command):
    msg: int | None = None


@dataclass(frozen=True, kw_only=True)
class Retr(Command):
    msg: int


@dataclass(frozen=True, kw_only=True)
class Top(Command):
    msg: int
    lines: int
    """Body lines to send after the header (RFC 1939 7)."""


@dataclass(frozen=True, kw_only=True)
class Dele(Command):
    msg: int


@dataclass(frozen=True, kw_only=True)
class Noop(Command):
    pass


@dataclass(frozen=True, kw_only=True)
class Rset(Command):
    pass


# -- other events ------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class SaslResponse:
    """One client line inside an AUTH exchange, base64-decoded (RFC 5034 4)."""

    data: bytes
    cancelled: bool = False
    """The client sent ``*``."""
    malformed: bool = False
    """Not valid base64: the exchange fails."""


@dataclass(frozen=True, kw_only=True)
class Malformed:
    """A line that is not a valid command; answer ``reply`` and go on."""

    reply: Reply
    keyword: str = ""


Event = Command | SaslResponse | Malformed

# Which commands each state accepts (RFC 1939 4-5, RFC 2449 5: CAPA in both).
ALLOWED: dict[State, frozenset[type[Command]]] = {
    State.AUTHORIZATION: frozenset({User, Pass, Auth, Capa, Stls, Utf8, Quit}),
    State.TRANSACTION: frozenset({Stat, List, Uidl, Retr, Top, Dele, Noop, Rset, Capa, Quit}),
    State.SASL: frozenset(),
    State.UPDATE: frozenset(),
    State.CLOSED: frozenset(),
}


def _message_number(arg: str) -> int:
    # RFC 1939 3: msg numbers are decimal, 1-based; we bound the digits so no huge ints.
    if not arg.isdigit() or not arg.isascii() or len(arg) > MAX_MESSAGE_NUMBER_DIGITS or int(arg) == 0:
        raise R.Pop3Error(R.NO_SUCH_MESSAGE)
    return int(arg)


def _args(rest: str, low: int, high: int) -> list[str]:
    args = rest.split(" ") if rest else []
    if not low <= len(args) <= high or "" in args:
        raise R.Pop3Error(R.BAD_SYNTAX)
    return args


def _decode_base64(text: str) -> bytes | None:
    import base64
    import binascii

    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        return None


_CONTROL = re.compile("[\x00-\x08\x0a-\x1f\x7f]")
"""Control characters (TAB aside) and DEL, which no command line holds: one regular
expression search, not a generator over the characters (a fifth of a RETR's CPU)."""


_RETR_LINE = re.compile(rb"[Rr][Ee][Tt][Rr] ([0-9]{1,9})\r?\n")
"""A whole ``RETR msg`` line as :func:`parse_command` accepts it (msg not yet checked for 0)."""


def parse_command(line: bytes) -> Command:
    """One command line without its CRLF -> a Command; raises Pop3Error for bad input."""
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        raise R.Pop3Error(R.NOT_UTF8) from None
    if _CONTROL.search(text):
        raise R.Pop3Error(R.BAD_SYNTAX)
    keyword, _, rest = text.partition(" ")
    keyword = keyword.upper()
    if keyword == "RETR":           # the commonest by far: one per message downloaded
        return Retr(msg=_message_number(_args(rest, 1, 1)[0]))
    if keyword == "PASS":
        if not rest:
            raise R.Pop3Error(R.BAD_SYNTAX)
        return Pass(password=rest)
    if keyword == "USER":
        return User(name=_args(rest, 1, 1)[0])
    if keyword in ("STAT", "NOOP", "RSET", "QUIT", "CAPA", "STLS", "UTF8"):
        _args(rest, 0, 0)
        return _SIMPLE[keyword]()
    if keyword in ("LIST", "UIDL"):
        args = _args(rest, 0, 1)
        msg = _message_number(args[0]) if args else None
        return List(msg=msg) if keyword == "LIST" else Uidl(msg=msg)
    if keyword in ("RETR", "DELE"):
        msg = _message_number(_args(rest, 1, 1)[0])
        return Retr(msg=msg) if keyword == "RETR" else Dele(msg=msg)
    if keyword == "TOP":
        msg_arg, lines_arg = _args(rest, 2, 2)
        msg = _message_number(msg_arg)
        if not lines_arg.isdigit() or not lines_arg.isascii() or len(lines_arg) > 9:
            raise R.Pop3Error(R.BAD_SYNTAX)
        return Top(msg=msg, lines=int(lines_arg))
    if keyword == "AUTH":
        args = _args(rest, 0, 2)
        if not args:
            return Auth(mechanism=None)
        initial: bytes | None = None
        if len(args) == 2:
            # RFC 5034 4: "=" is an empty initial response.
            initial = b"" if args[1] == "=" else _decode_base64(args[1])
            if initial is None:
                raise R.Pop3Error(R.BAD_SYNTAX)
        return Auth(mechanism=args[0].upper(), initial_response=initial)
    raise R.Pop3Error(R.UNKNOWN_COMMAND)


_SIMPLE: dict[str, type[Command]] = {
    "STAT": Stat, "NOOP": Noop, "RSET": Rset, "QUIT": Quit, "CAPA": Capa, "STLS": Stls, "UTF8": Utf8,
}


def parse_sasl_response(line: bytes) -> SaslResponse:
    """RFC 5034 4: a base64 line, or ``*`` to cancel."""
    text = line.strip(b" ")
    if text == b"*":
        return SaslResponse(data=b"", cancelled=True)
    decoded = _decode_base64(text.decode("latin-1"))
    if decoded is None:
        return SaslResponse(data=b"", malformed=True)
    return SaslResponse(data=decoded)


class Pop3Protocol:
    """Line framing, command parsing and the state table for one server connection."""

    def __init__(self, *, max_line: int = 4096) -> None:
        self.max_line = max_line
        self.state = State.AUTHORIZATION
        self._buffer = bytearray()
        self._discarding = False
        """Inside an over-long line: drop bytes until its LF."""

    # -- input ---------------------------------------------------------------------------
    def receive_data(self, data: bytes) -> None:
        self._buffer += data

    def discard_buffer(self) -> bytes:
        """Forget buffered input (after STLS, RFC 2595 4: nothing crosses the TLS start)."""
        data = bytes(self._buffer)
        self._buffer.clear()
        self._discarding = False
        return data

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def _next_line(self) -> bytes | Malformed | _NeedData:
        while True:
            end = self._buffer.find(b"\n")
            if self._discarding:
                if end < 0:
                    self._buffer.clear()
                    return NEED_DATA
                del self._buffer[: end + 1]
                self._discarding = False
                return Malformed(reply=R.LINE_TOO_LONG)
            if end < 0:
                if len(self._buffer) > self.max_line:
                    self._buffer.clear()
                    self._discarding = True
                    continue
                return NEED_DATA
            if end > self.max_line:
                del self._buffer[: end + 1]
                return Malformed(reply=R.LINE_TOO_LONG)
            line = bytes(self._buffer[:end])
            del self._buffer[: end + 1]
            # RFC 1939 3 says CRLF; a bare LF is accepted (robustness).
            return line[:-1] if line.endswith(b"\r") else line

    def next_event(self) -> Event | _NeedData:
        if not self._buffer:
            return NEED_DATA
        state = self.state
        if state is State.TRANSACTION and not self._discarding:
            # RETR, one per message downloaded, matched whole: the line, the command and
            # its number in one step. Anything else it does not match (RETR 0, RETR 01 2,
            # a line over max_line...) takes the general path below, which answers it.
            match = _RETR_LINE.match(self._buffer)
            if match is not None and (msg := int(match[1])) and match.end() <= self.max_line + 1:
                del self._buffer[:match.end()]
                return Retr(msg=msg)
        elif state is State.UPDATE or state is State.CLOSED:
            return NEED_DATA
        line = self._next_line()
        if not isinstance(line, bytes):
            return line
        if state is State.SASL:
            return parse_sasl_response(line)
        try:
            command = parse_command(line)
        except R.Pop3Error as exc:
            return Malformed(reply=exc.reply, keyword=line.split(b" ", 1)[0][:8].decode("latin-1").upper())
        if type(command) not in ALLOWED[state]:
            return Malformed(reply=R.WRONG_STATE, keyword=type(command).__name__.upper())
        return command

    def retr_line(self, data: bytes) -> int | None:
        """The message number when ``data`` is one whole RETR line that, received now,
        :meth:`next_event` would return as :class:`Retr` with nothing left over; else None.
        Nothing is consumed either way."""
        if self._buffer or self.state is not State.TRANSACTION or self._discarding:
            return None
        match = _RETR_LINE.fullmatch(data)
        if match is None or match.end() > self.max_line + 1:
            return None
        return int(match[1]) or None

    # -- state ---------------------------------------------------------------------------
    def transition(self, trigger: Trigger) -> State:
        try:
            self.state = TRANSITIONS[(self.state, trigger)]
        except KeyError:
            raise ProtocolError(f"no transition from {self.state.value} on {trigger.value}") from None
        return self.state


# -- output ------------------------------------------------------------------------------


def multiline(first: Reply, lines: list[bytes]) -> bytes:
    """RFC 1939 3: a status line, dot-stuffed lines, then ``.`` alone."""
    out = [first.to_bytes()]
    for line in lines:
        out.append((b"." + line if line.startswith(b".") else line) + b"\r\n")
    out.append(b".\r\n")
    return b"".join(out)


def encode_message(raw: bytes, body_lines: int | None = None) -> bytes:
    """The message as a multi-line response body: CRLF line ends, dot-stuffed, ``.`` end.

    ``body_lines`` (TOP, RFC 1939 7) keeps the header, the blank line and that many body
    lines. Bare CR or LF line ends in the stored bytes become CRLF; the last line gets a
    CRLF when the stored message lacks one.
    """
    if body_lines is None:
        crlf = raw.count(b"\r\n")
        if raw.count(b"\r") == crlf and raw.count(b"\n") == crlf:
            # The common case, CRLF only: byte-stuffed with C-level passes, not a line loop
            # (the loop was most of a RETR's server CPU).
            if raw and not raw.endswith(b"\n"):
                raw += b"\r\n"
            if raw.startswith(b"."):
                raw = b"." + raw
            return raw.replace(b"\r\n.", b"\r\n..") + b".\r\n"   # RFC 1939 3: byte-stuffing
    lines = raw.splitlines()
    if body_lines is not None:
        try:
            blank = lines.index(b"")
        except ValueError:
            blank = len(lines)
        lines = lines[: blank + 1 + body_lines]
    out = bytearray()
    for line in lines:
        if line.startswith(b"."):
            out += b"."               # RFC 1939 3: byte-stuff the termination octet
        out += line
        out += b"\r\n"
    out += b".\r\n"
    return bytes(out)


def stuff_crlf(raw: bytes) -> bytes:
    """:func:`encode_message` of a message known to have CRLF line ends only, the last line
    ended too, without the terminating ``.`` line: the line-end counts that find this out
    were a tenth of a RETR's server CPU (issue 18)."""
    if raw.startswith(b"."):
        raw = b"." + raw
    return raw.replace(b"\r\n.", b"\r\n..")                # RFC 1939 3: byte-stuffing


END = b".\r\n"
"""The line that ends a multi-line response (RFC 1939 3)."""


class MessageEncoder:
    """:func:`encode_message` (without TOP's line limit) a chunk at a time, for a message
    streamed from its file: the same bytes, whatever the chunk edges. Only the line in
    progress is held (and a CR whose LF may start the next chunk)."""

    def __init__(self) -> None:
        self._tail = b""
        self.wire_size = 0
        """Octets so far as :func:`wire_size` counts them."""

    def feed(self, data: bytes) -> bytes:
        data = self._tail + data
        end = len(data) - 1 if data.endswith(b"\r") else len(data)
        cut = max(data.rfind(b"\n", 0, end), data.rfind(b"\r", 0, end))
        if cut < 0:
            self._tail = data
            return b""
        self._tail = data[cut + 1:]
        return self._lines(data[:cut + 1])

    def finish(self) -> bytes:
        tail, self._tail = self._tail, b""
        return self._lines(tail) + b".\r\n"

    def _lines(self, block: bytes) -> bytes:
        crlf = block.count(b"\r\n")
        if block.count(b"\r") == crlf and block.count(b"\n") == crlf and (not block or block.endswith(b"\n")):
            # The common case, CRLF only: byte-stuff with two C-level passes, not a line loop.
            self.wire_size += len(block)
            if block.startswith(b"."):
                block = b"." + block
            return block.replace(b"\r\n.", b"\r\n..")
        out = bytearray()
        for line in block.splitlines():
            if line.startswith(b"."):
                out += b"."           # RFC 1939 3: byte-stuff the termination octet
            out += line
            out += b"\r\n"
            self.wire_size += len(line) + 2
        return bytes(out)


def wire_size(raw: bytes) -> int:
    """Octets of the message as RETR sends it before dot-stuffing (CRLF line ends)."""
    return sum(len(line) + 2 for line in raw.splitlines())
