"""The SMTP server protocol core, sans-IO (RFC 5321 with its extensions).

Bytes in, events out, replies out; no sockets, no asyncio, no store::

    conn = ServerConnection(settings)
    send(conn.data_to_send())                 # the 220 greeting
    conn.receive_data(bytes_from_peer)
    while (event := conn.next_event()) is not NEED_DATA:
        ...                                   # decide, then for the events that ask:
        conn.answer(reply)                    # MailFrom, RcptTo, DataComplete, Auth*
    send(conn.data_to_send())                 # replies are batched (PIPELINING, RFC 2920)

Invariants:
- The core answers everything it can decide alone (syntax, sequence, EHLO, NOOP...).
  Events that need the application's judgement (:class:`MailFrom`, :class:`RcptTo`,
  :class:`DataComplete`, :class:`AuthStart`, :class:`AuthResponse`, :class:`StartTLS`)
  pause the core until answered, so pipelined commands are judged in order.
- The session state is one value of :class:`State`; the legal (state, verb) pairs are
  the table :data:`TRANSITIONS`. A known verb missing from the table is a 503.
- DATA content is decoded by :class:`~.content.DotDecoder` (only ``<CRLF>.<CRLF>`` ends
  it, see content.py) and handed out as it arrives: the core holds at most one read of
  content, never a whole message.
- After STARTTLS, bytes the client sent before the handshake are discarded (no command
  injection across the TLS boundary, CVE-2011-0411).
"""

from __future__ import annotations

import base64
import binascii
import enum
import re

from . import codes
from .codes import Reply
from .content import ChunkNormalizer, DotDecoder
from .events import (
    NEED_DATA,
    AuthAborted,
    AuthResponse,
    AuthStart,
    ConnectionClosed,
    DataChunk,
    DataComplete,
    DataStart,
    Event,
    LocalProtocolError,
    MailFrom,
    MailParams,
    RcptTo,
    Settings,
    StartTLS,
    TransactionReset,
    _NeedData,
)
from .grammar import parse_path_args, validate_mailbox, xtext_decode

__all__ = [
    "NEED_DATA", "AuthAborted", "AuthResponse", "AuthStart", "ConnectionClosed", "DataChunk",
    "DataComplete", "DataStart", "Event", "LocalProtocolError", "MailFrom", "MailParams", "RcptTo",
    "Settings", "StartTLS", "TransactionReset", "State", "TRANSITIONS", "KNOWN_VERBS", "ServerConnection",
]

# ----------------------------------------------------------------------------------------
# The state table


class State(enum.Enum):
    GREETED = "greeted"      # greeting sent, no EHLO/HELO yet
    READY = "ready"          # hello done, no transaction
    MAIL = "mail"            # MAIL accepted, no recipient yet
    RCPT = "rcpt"            # one or more recipients accepted
    DATA = "data"            # reading DATA content
    BDAT = "bdat"            # reading a BDAT chunk
    CHUNKING = "chunking"    # between BDAT chunks of one transaction
    AUTH = "auth"            # SASL exchange: lines are responses
    CLOSED = "closed"


_ANY_COMMAND_STATE = (State.GREETED, State.READY, State.MAIL, State.RCPT, State.CHUNKING)

STAY = None
"""Table value: the verb keeps the current state."""

TRANSITIONS: dict[tuple[State, str], State | None] = {
    # Verbs valid in every command state (RFC 5321 4.1.4: EHLO and RSET clear a transaction).
    **{(s, "EHLO"): State.READY for s in _ANY_COMMAND_STATE},
    **{(s, "HELO"): State.READY for s in _ANY_COMMAND_STATE},
    **{(s, "RSET"): (State.GREETED if s is State.GREETED else State.READY) for s in _ANY_COMMAND_STATE},
    **{(s, v): STAY for s in _ANY_COMMAND_STATE for v in ("NOOP", "HELP", "VRFY")},
    **{(s, "QUIT"): State.CLOSED for s in _ANY_COMMAND_STATE},
    # The mail transaction (RFC 5321 3.3).
    (State.READY, "MAIL"): State.MAIL,
    (State.MAIL, "RCPT"): State.RCPT,
    (State.RCPT, "RCPT"): State.RCPT,
    (State.RCPT, "DATA"): State.DATA,
    (State.RCPT, "BDAT"): State.BDAT,            # RFC 3030 2
    (State.CHUNKING, "BDAT"): State.BDAT,
    # Session upgrades: only outside a transaction (RFC 3207 4, RFC 4954 4).
    (State.READY, "STARTTLS"): State.GREETED,
    (State.READY, "AUTH"): State.AUTH,
}

KNOWN_VERBS = frozenset(v for _, v in TRANSITIONS) | {"EXPN", "TURN", "SEND", "SOML", "SAML"}

_TRANSACTION_STATES = (State.MAIL, State.RCPT, State.DATA, State.BDAT, State.CHUNKING)

MAX_AUTH_LINE = 12288
"""RFC 4954 4: AUTH command and response lines may be this long."""

_BDAT_RE = re.compile(r"^(\d{1,18})(?: +(LAST))? *$", re.IGNORECASE)

# ----------------------------------------------------------------------------------------


class ServerConnection:
    """One SMTP server session, from the greeting to QUIT."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.state = State.GREETED
        self.tls_active = settings.tls_active
        self.authenticated = False
        self.helo_name: str | None = None
        self.extended = False
        """The client said EHLO (not HELO)."""
        self.mail: MailFrom | None = None
        self.recipients = 0
        self.errors = 0
        self._in = bytearray()
        self._out: list[bytes] = []
        self._pending: type | None = None          # event class waiting for an answer
        self._events: list[Event] = []
        self._dot = DotDecoder()
        self._chunk_left = 0
        self._chunk_last = False
        self._chunk_discard = False               # consume a BDAT chunk we refused
        self._chunk_norm = ChunkNormalizer()
        self._content_size = 0
        self._oversized = False
        self._skipping_line = False               # discarding the rest of a too-long line
        self._return_state = State.READY          # where a refused BDAT chunk returns to
        self._proposed_mail: MailFrom | None = None
        self._write(codes.Reply(code=220, enhanced=None, text=f"{settings.hostname} ESMTP Mailhaven"))

    # -- output --------------------------------------------------------------------------
    def data_to_send(self) -> bytes:
        out = b"".join(self._out)
        self._out.clear()
        return out

    def _write(self, reply: Reply) -> None:
        self._out.append(reply.to_bytes())
        if reply.code >= 500:
            self.errors += 1
            if self.errors >= self.settings.max_errors and self.state is not State.CLOSED:
                self._close(codes.TOO_MANY_ERRORS)

    def _close(self, reply: Reply) -> None:
        self._out.append(reply.to_bytes())
        self.state = State.CLOSED
        self._in.clear()
        self._events.append(ConnectionClosed())

    # -- input ---------------------------------------------------------------------------
    def receive_data(self, data: bytes) -> None:
        if self.state is not State.CLOSED:
            self._in += data

    @property
    def closed(self) -> bool:
        return self.state is State.CLOSED

    @property
    def in_data(self) -> bool:
        """Reading message content (the adapter uses the DATA idle timeout then)."""
        return self.state in (State.DATA, State.BDAT)

    @property
    def in_transaction(self) -> bool:
        return self.state in _TRANSACTION_STATES

    def next_event(self) -> Event | _NeedData:
        if self._pending is not None:
            raise LocalProtocolError(f"answer {self._pending.__name__} first")
        while not self._events:
            if self.state is State.CLOSED:
                return ConnectionClosed()
            if not self._step():
                return NEED_DATA
        event = self._events.pop(0)
        if isinstance(event, MailFrom | RcptTo | DataComplete | AuthStart | AuthResponse | StartTLS):
            self._pending = type(event)
        return event

    def _step(self) -> bool:
        """Consume some input; False when more bytes are needed."""
        if self.state is State.DATA:
            return self._step_data()
        if self.state is State.BDAT:
            return self._step_bdat()
        limit = MAX_AUTH_LINE if self.state is State.AUTH else self.settings.max_line
        end = self._in.find(b"\n")
        if end < 0:
            if len(self._in) > limit:
                # RFC 5321 4.5.3.1.4 / 4.5.3.1.10: answer 500 and skip to the next line end.
                self._in.clear()
                if not self._skipping_line:
                    self._skipping_line = True
                    self._write(codes.LINE_TOO_LONG)
            return False
        raw = bytes(self._in[:end])
        del self._in[: end + 1]
        if self._skipping_line:
            self._skipping_line = False
            return True
        if end > limit:
            self._write(codes.LINE_TOO_LONG)
            return True
        if raw.endswith(b"\r"):
            raw = raw[:-1]
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            self._write(codes.SYNTAX_ERROR.with_text("Command is not valid UTF-8"))
            return True
        if self.state is State.AUTH:
            self._auth_line(line)
        else:
            self._command(line)
        return True

    # -- commands --------------------------------------------------------------------------
    def _command(self, line: str) -> None:
        verb, _, arg = line.partition(" ")
        verb = verb.upper()
        key = (self.state, verb)
        try:
            if key not in TRANSITIONS:
                if verb == "BDAT":
                    self._refuse_bdat(arg)
                    return
                if verb not in KNOWN_VERBS:
                    raise codes.UNKNOWN_COMMAND                        # RFC 5321 4.2.4
                if verb in ("EXPN", "TURN", "SEND", "SOML", "SAML"):
                    raise codes.NOT_IMPLEMENTED                        # RFC 5321 4.2.4, 7.3
                if self.state is State.GREETED:
                    raise codes.HELLO_FIRST                            # RFC 5321 4.1.4
                if verb == "MAIL" and self.state in _TRANSACTION_STATES:
                    raise codes.NESTED_MAIL
                if verb in ("DATA", "BDAT") and self.state is State.MAIL:
                    raise codes.NEED_RECIPIENTS
                raise codes.BAD_SEQUENCE                               # RFC 5321 4.1.4
            handler = getattr(self, "_cmd_" + verb.lower())
            reply = handler(arg.strip(" ") if verb not in ("MAIL", "RCPT") else arg)
            if reply is not None:
                self._write(reply)
                target = TRANSITIONS[key]
                if target is not STAY:
                    self.state = target
        except Reply as exc:
            self._write(exc.caught())

    def _reset_transaction(self) -> None:
        if self.state in _TRANSACTION_STATES:
            self._events.append(TransactionReset())
        self.mail = None
        self.recipients = 0
        self._content_size = 0
        self._oversized = False

    def _cmd_ehlo(self, arg: str) -> Reply:
        return self._hello(arg, extended=True)

    def _cmd_helo(self, arg: str) -> Reply:
        return self._hello(arg, extended=False)

    def _hello(self, arg: str, *, extended: bool) -> Reply:
        if not arg:
            raise codes.SYNTAX_ERROR.with_text("EHLO/HELO needs a domain or address literal")
        arg = arg.split(" ")[0]
        self._reset_transaction()
        self.helo_name = arg
        self.extended = extended
        greeting = f"{self.settings.hostname} Hello {arg}"
        if not extended:
            return Reply(code=250, enhanced=None, text=greeting)       # RFC 5321 4.1.1.1
        lines = [greeting, "PIPELINING",                                # RFC 2920
                 f"SIZE {self.settings.max_size}",                      # RFC 1870
                 "8BITMIME", "SMTPUTF8", "ENHANCEDSTATUSCODES",         # RFC 6152, 6531, 2034
                 "CHUNKING", "DSN"]                                     # RFC 3030, 3461
        if self.settings.starttls and not self.tls_active:
            lines.append("STARTTLS")                                    # RFC 3207
        if self.tls_active:
            lines.append("REQUIRETLS")                                  # RFC 8689 2: offered over TLS only
        if self._auth_offered():
            lines.append("AUTH " + " ".join(self.settings.auth_mechanisms))  # RFC 4954 3
        lines.append("HELP")
        return Reply(code=250, enhanced=None, text="\n".join(lines))

    def _auth_offered(self) -> bool:
        # RFC 4954 4 / RFC 8314: no passwords over plaintext unless the peer is trusted.
        return bool(self.settings.auth_mechanisms) and not self.authenticated and (
            self.tls_active or self.settings.plaintext_ok)

    def _cmd_rset(self, arg: str) -> Reply:
        if arg:
            raise codes.SYNTAX_ERROR
        self._reset_transaction()
        return codes.RESET_OK

    def _cmd_noop(self, arg: str) -> Reply:
        return codes.OK                                                 # RFC 5321 4.1.1.9

    def _cmd_help(self, arg: str) -> Reply:
        return codes.HELP

    def _cmd_vrfy(self, arg: str) -> Reply:
        if not arg:
            raise codes.SYNTAX_ERROR
        return codes.CANNOT_VRFY                                        # RFC 5321 3.5.3, 7.3

    def _cmd_quit(self, arg: str) -> None:
        self._reset_transaction()
        self._close(codes.CLOSING)                                      # RFC 5321 4.1.1.10
        return None

    def _cmd_starttls(self, arg: str) -> None:
        if arg:
            raise codes.SYNTAX_ERROR                                    # RFC 3207 4
        if not self.settings.starttls:
            raise codes.NOT_IMPLEMENTED
        if self.tls_active:
            raise codes.BAD_SEQUENCE.with_text("TLS already active")
        self._in.clear()                      # CVE-2011-0411: nothing pipelined survives
        self._out.append(codes.READY_TLS.to_bytes())
        self._events.append(StartTLS())
        return None

    def _cmd_mail(self, arg: str) -> None:
        if not arg.upper().startswith("FROM:"):
            raise codes.SYNTAX_ERROR.with_text("Syntax: MAIL FROM:<address>")
        if self.settings.require_auth and not self.authenticated:
            if not self.tls_active and not self.settings.plaintext_ok and self.settings.starttls:
                raise codes.STARTTLS_FIRST
            raise codes.AUTH_REQUIRED                                   # RFC 4954 6
        path = parse_path_args(arg[5:], allow_null=True)
        params = self._mail_params(path.params)
        if path.address:
            validate_mailbox(path.address, utf8=params.smtputf8)
        self._proposed_mail = MailFrom(address=path.address, params=params)
        self._events.append(self._proposed_mail)
        return None

    def _mail_params(self, raw: dict[str, str | None]) -> MailParams:
        size: int | None = None
        body = "7BIT"
        ret = envid = auth = None
        smtputf8 = requiretls = False
        for key, value in raw.items():
            if key == "SIZE":                                           # RFC 1870 6
                if value is None or not value.isdigit() or len(value) > 20:
                    raise codes.SYNTAX_ERROR.with_text("Bad SIZE parameter")
                size = int(value)
                if self.settings.max_size and size > self.settings.max_size:
                    raise codes.MESSAGE_TOO_BIG
            elif key == "BODY":                                         # RFC 6152 2
                if value is None or value.upper() not in ("7BIT", "8BITMIME"):
                    raise codes.PARAM_NOT_IMPLEMENTED.with_text("BODY must be 7BIT or 8BITMIME")
                body = value.upper()
            elif key == "SMTPUTF8":                                     # RFC 6531 3.4
                if value is not None:
                    raise codes.SYNTAX_ERROR.with_text("SMTPUTF8 takes no value")
                smtputf8 = True
            elif key == "RET":                                          # RFC 3461 4.3
                if value is None or value.upper() not in ("FULL", "HDRS"):
                    raise codes.SYNTAX_ERROR.with_text("RET must be FULL or HDRS")
                ret = value.upper()
            elif key == "ENVID":                                        # RFC 3461 4.4
                if not value or len(value) > 100:
                    raise codes.SYNTAX_ERROR.with_text("Bad ENVID")
                envid = xtext_decode(value)
            elif key == "REQUIRETLS":                                   # RFC 8689 3
                if value is not None:
                    raise codes.SYNTAX_ERROR.with_text("REQUIRETLS takes no value")
                if not self.tls_active:
                    raise codes.REQUIRETLS_NEEDS_TLS                    # RFC 8689 4.1
                requiretls = True
            elif key == "AUTH":                                         # RFC 4954 5
                if not value:
                    raise codes.SYNTAX_ERROR.with_text("Bad AUTH parameter")
                auth = xtext_decode(value)
            else:
                raise codes.PARAM_UNKNOWN.with_text(f"Unknown MAIL parameter {key}")  # RFC 5321 4.1.1.11
        return MailParams(size=size, body=body, smtputf8=smtputf8, ret=ret, envid=envid, auth=auth,
                          requiretls=requiretls)

    def _cmd_rcpt(self, arg: str) -> None:
        if not arg.upper().startswith("TO:"):
            raise codes.SYNTAX_ERROR.with_text("Syntax: RCPT TO:<address>")
        if self.recipients >= self.settings.max_recipients:
            raise codes.TOO_MANY_RECIPIENTS                             # RFC 5321 4.5.3.1.8
        path = parse_path_args(arg[3:], allow_null=False)
        assert self.mail is not None
        address = path.address
        if address.lower() == "postmaster":
            address = f"postmaster@{self.settings.hostname}"           # RFC 5321 4.1.1.3
        validate_mailbox(address, utf8=self.mail.params.smtputf8)
        notify: frozenset[str] | None = None
        orcpt: str | None = None
        for key, value in path.params.items():
            if key == "NOTIFY":                                         # RFC 3461 4.1
                items = frozenset((value or "").upper().split(","))
                if not items or not (items == {"NEVER"} or items <= {"SUCCESS", "FAILURE", "DELAY"}):
                    raise codes.SYNTAX_ERROR.with_text("Bad NOTIFY parameter")
                notify = items
            elif key == "ORCPT":                                        # RFC 3461 4.2
                kind, semi, addr = (value or "").partition(";")
                if not semi or not kind or not addr:
                    raise codes.SYNTAX_ERROR.with_text("Bad ORCPT parameter")
                orcpt = f"{kind};{xtext_decode(addr)}"
            else:
                raise codes.PARAM_UNKNOWN.with_text(f"Unknown RCPT parameter {key}")
        self._events.append(RcptTo(address=address, notify=notify, orcpt=orcpt))
        return None

    def _cmd_data(self, arg: str) -> Reply:
        if arg:
            raise codes.SYNTAX_ERROR
        self._dot = DotDecoder()
        self._content_size = 0
        self._events.append(DataStart(chunking=False))
        return codes.START_INPUT                                        # RFC 5321 4.1.1.4

    # -- BDAT (RFC 3030) -------------------------------------------------------------------
    def _parse_bdat(self, arg: str) -> tuple[int, bool]:
        m = _BDAT_RE.match(arg)
        if m is None:
            # The chunk length is unknown, so the byte stream cannot be followed any more.
            self._close(codes.SYNTAX_ERROR.with_text("Bad BDAT syntax, closing connection"))
            raise _Closed
        return int(m.group(1)), m.group(2) is not None

    def _cmd_bdat(self, arg: str) -> None:
        try:
            size, last = self._parse_bdat(arg)
        except _Closed:
            return None
        if self.state is State.RCPT:
            self._chunk_norm = ChunkNormalizer()
            self._content_size = 0
            self._oversized = False
            self._events.append(DataStart(chunking=True))
        self._chunk_left, self._chunk_last, self._chunk_discard = size, last, False
        self.state = State.BDAT
        return None

    def _refuse_bdat(self, arg: str) -> None:
        """A BDAT out of sequence: its chunk must still be read, then answered 503."""
        try:
            size, last = self._parse_bdat(arg)
        except _Closed:
            return
        self._chunk_left, self._chunk_last, self._chunk_discard = size, last, True
        self._return_state = self.state
        self.state = State.BDAT

    def _step_bdat(self) -> bool:
        if self._chunk_left:
            if not self._in:
                return False
            take = bytes(self._in[: self._chunk_left])
            del self._in[: len(take)]
            self._chunk_left -= len(take)
            if not self._chunk_discard:
                self._content(self._chunk_norm.feed(take))
            if self._chunk_left:
                return True
        if self._chunk_discard:
            self.state = self._return_state
            self._write(codes.NEED_RECIPIENTS if self.state is State.MAIL else
                        codes.HELLO_FIRST if self.state is State.GREETED else codes.BAD_SEQUENCE)
            return True
        if self._chunk_last:
            self._content(self._chunk_norm.finish())
            self._finish_content()
            return True
        if self._oversized:
            self._abort_oversized()
            return True
        self.state = State.CHUNKING
        self._write(codes.CHUNK_OK.with_text(f"{self._content_size} octets received"))
        return True

    # -- DATA content ------------------------------------------------------------------------
    def _step_data(self) -> bool:
        if not self._in:
            return False
        content, used, done = self._dot.decode(self._in)
        del self._in[:used]
        self._content(content)
        if done:
            self._finish_content()
            return True
        return False                      # what is left is held back until more arrives

    def _content(self, data: bytes) -> None:
        if not data or self._oversized:
            return
        self._content_size += len(data)
        if self.settings.max_size and self._content_size > self.settings.max_size:
            self._oversized = True                                      # RFC 1870 6.1
            return
        self._events.append(DataChunk(data=data))

    def _finish_content(self) -> None:
        if self._oversized:
            self._abort_oversized()
            return
        self._events.append(DataComplete(size=self._content_size))

    def _abort_oversized(self) -> None:
        self._events.append(TransactionReset())
        self.state = State.READY
        self.mail = None
        self.recipients = 0
        self._oversized = False
        self._write(codes.MESSAGE_TOO_BIG)

    # -- AUTH (RFC 4954) ---------------------------------------------------------------------
    def _cmd_auth(self, arg: str) -> None:
        if self.authenticated:
            raise codes.ALREADY_AUTHENTICATED                           # RFC 4954 4
        if not self.settings.auth_mechanisms:
            raise codes.NOT_IMPLEMENTED
        mech, _, initial_text = arg.partition(" ")
        mech = mech.upper()
        if not mech:
            raise codes.SYNTAX_ERROR
        if mech not in self.settings.auth_mechanisms:
            raise codes.MECHANISM_UNKNOWN
        if not (self.tls_active or self.settings.plaintext_ok):
            raise codes.ENCRYPTION_REQUIRED                             # RFC 4954 6
        initial: bytes | None = None
        initial_text = initial_text.strip(" ")
        if initial_text:
            initial = b"" if initial_text == "=" else _b64decode(initial_text)
        self.state = State.AUTH
        self._events.append(AuthStart(mechanism=mech, initial=initial))
        return None

    def _auth_line(self, line: str) -> None:
        if line.strip() == "*":
            self.state = State.READY
            self._events.append(AuthAborted())
            self._write(codes.AUTH_CANCELLED)                           # RFC 4954 4
            return
        try:
            data = _b64decode(line.strip())
        except Reply as exc:
            self.state = State.READY
            self._events.append(AuthAborted())
            self._write(exc.caught())
            return
        self._events.append(AuthResponse(data=data))

    def auth_challenge(self, challenge: bytes) -> None:
        """Send a ``334`` challenge; the next line is the client's response."""
        if self._pending not in (AuthStart, AuthResponse):
            raise LocalProtocolError("no SASL exchange in progress")
        self._pending = None
        self._out.append(b"334 " + base64.b64encode(challenge) + b"\r\n")

    # -- answers from the application --------------------------------------------------------
    def answer(self, reply: Reply) -> None:
        """Answer the pending :class:`MailFrom`, :class:`RcptTo`, :class:`DataComplete` or
        SASL event. A positive reply moves the state machine on; a negative one leaves
        the transaction as it was (RCPT) or ends it (DATA)."""
        pending, self._pending = self._pending, None
        if pending is None or pending is StartTLS:
            raise LocalProtocolError("no event is waiting for an answer")
        if pending is MailFrom:
            if reply.positive:
                self.state = State.MAIL
                self.mail = self._proposed_mail
        elif pending is RcptTo:
            if reply.positive:
                self.state = State.RCPT
                self.recipients += 1
        elif pending is DataComplete:
            self.state = State.READY                                    # RFC 5321 4.1.1.4
            self.mail = None
            self.recipients = 0
        else:                                                           # AuthStart/AuthResponse
            self.state = State.READY
            if reply.code == 235:
                self.authenticated = True
        self._write(reply)

    def tls_started(self) -> None:
        """The handshake finished: RFC 3207 4.2, forget everything, wait for EHLO."""
        if self._pending is not StartTLS:
            raise LocalProtocolError("no STARTTLS is waiting")
        self._pending = None
        self.tls_active = True
        self.state = State.GREETED
        self.helo_name = None
        self.authenticated = False
        self._in.clear()

    def timeout(self) -> None:
        """The peer was idle too long (RFC 5321 4.5.3.2): 421 and close."""
        if self.state is not State.CLOSED:
            self._close(codes.TIMEOUT)

    def shutdown(self) -> None:
        """The server is stopping: 421 (RFC 5321 3.8) and close."""
        if self.state is not State.CLOSED:
            self._close(codes.SHUTTING_DOWN)

    def close_with(self, reply: Reply) -> None:
        """End the session with a 421 chosen by the application (e.g. login throttling)."""
        self._pending = None
        if self.state is not State.CLOSED:
            self._close(reply)

    def protocol_name(self, smtputf8: bool = False) -> str:
        """RFC 3848 / RFC 6531 3.7.3 ``with`` keyword for the Received: header."""
        if not self.extended:
            return "SMTP"
        name = "UTF8SMTP" if smtputf8 else "ESMTP"
        if self.tls_active:
            name += "S"
        if self.authenticated:
            name += "A"
        return name


class _Closed(Exception):
    """Internal: the core closed the session while parsing a command."""


def _b64decode(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise codes.AUTH_BAD_BASE64 from None
