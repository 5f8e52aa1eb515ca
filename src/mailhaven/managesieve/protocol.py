"""The ManageSieve server protocol core, sans-IO (RFC 5804).

Bytes in, events out::

    proto = ManageSieveProtocol(max_line=4096, max_literal=1 << 20)
    proto.receive_data(data)
    while (event := proto.next_event()) is not NEED_DATA:
        ...   # a Command, SaslResponse or Malformed

The session (session.py) answers each event and drives :meth:`ManageSieveProtocol.transition`;
:data:`TRANSITIONS` says which state follows and :data:`ALLOWED` which commands a state
accepts (a missing pair is answered ``NO``). Nothing here imports asyncio or touches a socket.

Grammar (RFC 5804 4)::

    command      = atom *(SP argument) CRLF        ; atom: the command name, case-insensitive
    argument     = string / number
    string       = quoted / literal-c2s
    quoted       = DQUOTE *QUOTED-CHAR DQUOTE      ; "\\" escapes only DQUOTE and "\\"
    literal-c2s  = "{" number "+}" CRLF *OCTET     ; "{n}" is accepted too (no continuation
                                                   ; is ever sent: ManageSieve has none)
    number       = 1*DIGIT                         ; < 4294967296
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass


class _NeedData:
    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA = _NeedData()
"""Returned by :meth:`ManageSieveProtocol.next_event` when no complete command is buffered."""

MAX_NUMBER = 4294967295                                        # RFC 5804 4: number < 4294967296
MAX_ARGUMENTS = 4


class State(enum.Enum):
    NONAUTH = "non-authenticated"     # RFC 5804 1.2: before AUTHENTICATE
    SASL = "sasl"                     # RFC 5804 2.1: inside an AUTHENTICATE exchange
    AUTH = "authenticated"
    CLOSED = "closed"


class Trigger(enum.Enum):
    SASL_STARTED = "sasl-started"
    SASL_ENDED = "sasl-ended"          # failure or cancel: back to NONAUTH
    AUTHENTICATED = "authenticated"
    UNAUTHENTICATED = "unauthenticated"   # RFC 5804 2.14.1
    CLOSE = "close"                    # LOGOUT, timeout, too many errors, lost connection


TRANSITIONS: dict[tuple[State, Trigger], State] = {
    (State.NONAUTH, Trigger.SASL_STARTED): State.SASL,
    (State.NONAUTH, Trigger.AUTHENTICATED): State.AUTH,     # an initial response that succeeds at once
    (State.NONAUTH, Trigger.CLOSE): State.CLOSED,
    (State.SASL, Trigger.SASL_ENDED): State.NONAUTH,
    (State.SASL, Trigger.AUTHENTICATED): State.AUTH,
    (State.SASL, Trigger.CLOSE): State.CLOSED,
    (State.AUTH, Trigger.UNAUTHENTICATED): State.NONAUTH,
    (State.AUTH, Trigger.CLOSE): State.CLOSED,
}


class ProtocolError(Exception):
    """We (the session) asked for a transition the table does not allow: our bug."""


# -- commands (RFC 5804 2) -----------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Command:
    """Base of every client command."""


@dataclass(frozen=True, kw_only=True)
class Capability(Command):
    """RFC 5804 2.4."""


@dataclass(frozen=True, kw_only=True)
class Authenticate(Command):
    mechanism: str
    """Upper-case SASL mechanism name (RFC 5804 2.1)."""
    initial_response: bytes | None = None
    """The decoded initial response; None when the client sent none."""


@dataclass(frozen=True, kw_only=True)
class StartTls(Command):
    """RFC 5804 2.2."""


@dataclass(frozen=True, kw_only=True)
class Logout(Command):
    """RFC 5804 2.3."""


@dataclass(frozen=True, kw_only=True)
class HaveSpace(Command):
    name: str
    """The script that would be stored (RFC 5804 2.5)."""
    size: int
    """Its size in octets."""


@dataclass(frozen=True, kw_only=True)
class PutScript(Command):
    name: str
    """RFC 5804 2.6."""
    content: bytes
    """The script as sent (UTF-8)."""


@dataclass(frozen=True, kw_only=True)
class ListScripts(Command):
    """RFC 5804 2.7."""


@dataclass(frozen=True, kw_only=True)
class SetActive(Command):
    name: str
    """The script to activate; empty: none (RFC 5804 2.8)."""


@dataclass(frozen=True, kw_only=True)
class GetScript(Command):
    name: str
    """RFC 5804 2.9."""


@dataclass(frozen=True, kw_only=True)
class DeleteScript(Command):
    name: str
    """RFC 5804 2.10."""


@dataclass(frozen=True, kw_only=True)
class RenameScript(Command):
    old: str
    """RFC 5804 2.11.1."""
    new: str


@dataclass(frozen=True, kw_only=True)
class CheckScript(Command):
    content: bytes
    """RFC 5804 2.12: compiled, never stored."""


@dataclass(frozen=True, kw_only=True)
class Noop(Command):
    tag: str | None = None
    """Echoed back in a ``(TAG ...)`` response code (RFC 5804 2.13)."""


@dataclass(frozen=True, kw_only=True)
class Unauthenticate(Command):
    """RFC 5804 2.14.1."""


@dataclass(frozen=True, kw_only=True)
class SaslResponse:
    data: bytes = b""
    """The decoded client response inside an AUTHENTICATE exchange."""
    cancelled: bool = False
    """The client sent ``"*"`` (RFC 5804 2.1)."""
    malformed: bool = False
    """Not a string, or not base64."""


@dataclass(frozen=True, kw_only=True)
class Malformed:
    reason: str
    """What was wrong with the line, for the ``NO`` text."""
    too_big: bool = False
    """A literal over the size limit (answered with ``(QUOTA/MAXSIZE)``)."""


Event = Command | SaslResponse | Malformed

ALLOWED: dict[State, frozenset[type[Command]]] = {
    State.NONAUTH: frozenset({Capability, Authenticate, StartTls, Logout, Noop}),
    State.AUTH: frozenset({Capability, Logout, Noop, HaveSpace, PutScript, ListScripts, SetActive,
                           GetScript, DeleteScript, RenameScript, CheckScript, Unauthenticate}),
    State.SASL: frozenset(),
    State.CLOSED: frozenset(),
}

# name -> (command class, argument kinds: "s" string, "n" number; "?" marks optional ones)
_SIGNATURES: dict[str, tuple[type[Command], str]] = {
    "CAPABILITY": (Capability, ""),
    "AUTHENTICATE": (Authenticate, "s?s"),
    "STARTTLS": (StartTls, ""),
    "LOGOUT": (Logout, ""),
    "HAVESPACE": (HaveSpace, "sn"),
    "PUTSCRIPT": (PutScript, "ss"),
    "LISTSCRIPTS": (ListScripts, ""),
    "SETACTIVE": (SetActive, "s"),
    "GETSCRIPT": (GetScript, "s"),
    "DELETESCRIPT": (DeleteScript, "s"),
    "RENAMESCRIPT": (RenameScript, "ss"),
    "CHECKSCRIPT": (CheckScript, "s"),
    "NOOP": (Noop, "?s"),
    "UNAUTHENTICATE": (Unauthenticate, ""),
}

_ATOM = re.compile(rb"[A-Za-z]+")
_NUMBER = re.compile(rb"[0-9]+")
_LITERAL = re.compile(rb"\{([0-9]{1,10})(\+?)\}\r\n")
_QUOTED = re.compile(rb'"((?:[^"\\\r\n]|\\["\\])*)"')


class _Bad(Exception):
    def __init__(self, reason: str, too_big: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.too_big = too_big


class _Incomplete(Exception):
    def __init__(self, need: int = 0) -> None:
        super().__init__()
        self.need = need
        """Bytes the buffer must hold before parsing again is worth it."""


@dataclass(frozen=True)
class _Str:
    value: bytes


class ManageSieveProtocol:
    """Buffers input and cuts it into events; knows the state each command needs."""

    def __init__(self, *, max_line: int = 4096, max_literal: int = 1 << 20) -> None:
        self.max_line = max_line
        self.max_literal = max_literal
        self.state = State.NONAUTH
        self._buffer = bytearray()
        self._need = 0
        self._skip = 0
        """Octets of an over-long literal still to throw away."""
        self._skip_line = False
        """After them, the rest of the line goes too."""

    @property
    def wants_literal(self) -> bool:
        """A literal's octets are still arriving (or being thrown away)."""
        return self._need > len(self._buffer) or self._skip > 0

    # -- input ---------------------------------------------------------------------------
    def receive_data(self, data: bytes) -> None:
        self._buffer += data

    def discard_buffer(self) -> None:
        """RFC 5804 2.2: nothing sent before the TLS handshake is read as a command."""
        self._buffer.clear()
        self._need = 0
        self._skip = 0
        self._skip_line = False

    def transition(self, trigger: Trigger) -> None:
        try:
            self.state = TRANSITIONS[(self.state, trigger)]
        except KeyError:
            raise ProtocolError(f"{trigger.value} in state {self.state.value}") from None

    def next_event(self) -> Event | _NeedData:
        if self._skip or self._skip_line:
            if not self._discard():
                return NEED_DATA
        buf = self._buffer
        if len(buf) < self._need:
            return NEED_DATA
        try:
            tokens, end = self._tokens()
        except _Incomplete as inc:
            self._need = inc.need
            if not inc.need and len(buf) > self.max_line and buf.find(b"\r\n") < 0:
                self._buffer.clear()
                self._skip_line = True
                return Malformed(reason="Line too long")
            return NEED_DATA
        except _Bad as bad:
            return self._bad(bad)
        self._need = 0
        del buf[:end]
        if self.state is State.SASL:
            return _sasl_response(tokens)
        return _command(tokens)

    # -- parsing -------------------------------------------------------------------------
    def _bad(self, bad: _Bad) -> Malformed:
        """Drop the rest of the broken line (and an over-long literal in it)."""
        if not self._skip:
            nl = self._buffer.find(b"\n")
            if nl >= 0:
                del self._buffer[:nl + 1]
            else:
                self._buffer.clear()
                self._skip_line = True
        return Malformed(reason=bad.reason, too_big=bad.too_big)

    def _discard(self) -> bool:
        """Throw away what an over-long literal or line left; True once done."""
        buf = self._buffer
        if self._skip:
            n = min(self._skip, len(buf))
            del buf[:n]
            self._skip -= n
            if self._skip:
                return False
        if self._skip_line:
            nl = buf.find(b"\n")
            if nl < 0:
                buf.clear()
                return False
            del buf[:nl + 1]
            self._skip_line = False
        return True

    def _tokens(self) -> tuple[list[bytes | _Str], int]:
        """One whole command: its tokens (atoms/numbers as bytes, strings as _Str) and the
        offset past its CRLF."""
        buf = self._buffer
        pos = 0
        tokens: list[bytes | _Str] = []
        line_start = 0
        while True:
            if pos - line_start > self.max_line:
                raise _Bad("Line too long")
            if pos >= len(buf):
                raise _Incomplete()
            c = buf[pos]
            if c == 0x0D or c == 0x0A:
                if c == 0x0D:
                    if pos + 1 >= len(buf):
                        raise _Incomplete()
                    if buf[pos + 1] != 0x0A:
                        raise _Bad("Bare CR")
                    pos += 2
                else:
                    pos += 1                     # a bare LF ends a line too (lenient, like Dovecot)
                return tokens, pos
            if tokens:
                if c != 0x20:
                    raise _Bad("Expected a space between arguments")
                pos += 1
                if pos >= len(buf):
                    raise _Incomplete()
                c = buf[pos]
            if c == 0x22:                                          # quoted
                m = _QUOTED.match(buf, pos)
                if m is None:
                    if buf.find(b"\n", pos) < 0:
                        raise _Incomplete()
                    raise _Bad("Malformed quoted string")
                value = re.sub(rb'\\(["\\])', rb"\1", m.group(1))
                tokens.append(_Str(value))
                pos = m.end()
            elif c == 0x7B:                                        # literal
                m = _LITERAL.match(buf, pos)
                if m is None:
                    if buf.find(b"\n", pos) < 0:
                        raise _Incomplete()
                    raise _Bad("Malformed literal")
                size = int(m.group(1))
                if size > self.max_literal:
                    # The client sends it anyway (non-synchronizing): read and discard it.
                    del self._buffer[:m.end()]
                    self._skip = size
                    self._skip_line = True
                    raise _Bad("Script too large", too_big=True)
                if len(buf) < m.end() + size:
                    raise _Incomplete(m.end() + size + 1)
                tokens.append(_Str(bytes(buf[m.end():m.end() + size])))
                pos = m.end() + size
                line_start = pos
            else:
                m = _NUMBER.match(buf, pos) if tokens else None
                m = m or _ATOM.match(buf, pos)
                if m is None:
                    if c == 0x2A and self.state is State.SASL:    # "*": a bare cancel
                        tokens.append(b"*")
                        pos += 1
                        continue
                    raise _Bad("Unexpected character")
                tokens.append(bytes(m.group()))
                pos = m.end()
            if len(tokens) > MAX_ARGUMENTS + 1:
                raise _Bad("Too many arguments")


def _text(value: bytes) -> str:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise _Bad("Argument is not UTF-8") from None


def _command(tokens: list[bytes | _Str]) -> Command | Malformed:
    if not tokens:
        return Malformed(reason="Empty command")
    name = tokens[0]
    if isinstance(name, _Str) or not _ATOM.fullmatch(name):
        return Malformed(reason="Expected a command name")
    found = _SIGNATURES.get(name.decode().upper())
    if found is None:
        return Malformed(reason=f"Unknown command {name.decode()[:20]}")
    cls, signature = found
    args = tokens[1:]
    kinds = signature.replace("?", "")
    required = len(signature.split("?")[0])
    if not required <= len(args) <= len(kinds):
        return Malformed(reason=f"Wrong number of arguments for {name.decode().upper()}")
    values: list[str | int | bytes] = []
    try:
        for kind, arg in zip(kinds, args, strict=False):
            if kind == "n":
                if isinstance(arg, _Str) or not _NUMBER.fullmatch(arg) or int(arg) > MAX_NUMBER:
                    return Malformed(reason="Expected a number")
                values.append(int(arg))
            elif not isinstance(arg, _Str):
                return Malformed(reason="Expected a string")
            elif cls in (PutScript, CheckScript) and len(values) == len(kinds) - 1:
                values.append(arg.value)                     # the script: bytes as sent
            else:
                values.append(_text(arg.value))
    except _Bad as bad:
        return Malformed(reason=bad.reason)
    return _build(cls, values)


def _build(cls: type[Command], v: list[str | int | bytes]) -> Command | Malformed:
    if cls is Authenticate:
        import base64
        import binascii
        initial: bytes | None = None
        if len(v) > 1:
            try:
                initial = base64.b64decode(str(v[1]), validate=True)
            except (binascii.Error, ValueError):
                return Malformed(reason="Initial response is not base64")
        return Authenticate(mechanism=str(v[0]).upper(), initial_response=initial)
    if cls is HaveSpace:
        return HaveSpace(name=str(v[0]), size=int(v[1]))
    if cls is PutScript:
        return PutScript(name=str(v[0]), content=bytes(v[1]))  # type: ignore[arg-type]
    if cls is CheckScript:
        return CheckScript(content=bytes(v[0]))  # type: ignore[arg-type]
    if cls in (SetActive, GetScript, DeleteScript):
        return cls(name=str(v[0]))  # type: ignore[call-arg]
    if cls is RenameScript:
        return RenameScript(old=str(v[0]), new=str(v[1]))
    if cls is Noop:
        return Noop(tag=str(v[0]) if v else None)
    return cls()


def _sasl_response(tokens: list[bytes | _Str]) -> SaslResponse:
    """RFC 5804 2.1: each client response is a string; ``"*"`` cancels."""
    import base64
    import binascii
    if len(tokens) != 1:
        return SaslResponse(malformed=True)
    token = tokens[0]
    value = token.value if isinstance(token, _Str) else token
    if value == b"*":
        return SaslResponse(cancelled=True)
    if not isinstance(token, _Str):
        return SaslResponse(malformed=True)
    try:
        return SaslResponse(data=base64.b64decode(value, validate=True))
    except (binascii.Error, ValueError):
        return SaslResponse(malformed=True)


# -- output (RFC 5804 4) ---------------------------------------------------------------------


def string(value: str | bytes) -> bytes:
    """A quoted string when it can be one, a literal otherwise (CR, LF, long, NUL)."""
    data = value.encode("utf-8") if isinstance(value, str) else value
    if len(data) <= 1024 and not any(c in data for c in (b"\r", b"\n", b"\0")):
        return b'"' + data.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'
    return b"{%d}\r\n" % len(data) + data                           # literal-s2c
