"""The SMTP client protocol, sans-IO: what the outbound queue speaks to other servers.

The caller feeds bytes from the server to :meth:`ClientConnection.receive_data`, asks for
events with :meth:`next_event` and writes :meth:`data_to_send` to the socket. Commands
are queued with the methods below; replies come back paired with the command they
answer, in order (RFC 5321 4.1, 4.3.2).

State table (one command in flight unless the server offers PIPELINING)::

    CONNECTED --220--> GREETED --EHLO 250--> READY   (HELO when EHLO is refused)
    READY --STARTTLS 220--> TLS (caller wraps the socket, then EHLO again)
    READY --AUTH 235--> READY (authenticated)
    READY --MAIL/RCPT.../DATA 354--> SENDING_BODY --body + "."--> READY (TransactionDone)
    any --421 or QUIT 221--> CLOSED

RFC 2920 (PIPELINING): MAIL, every RCPT and DATA leave in one write when offered; the
replies are matched to them in order. Without it the client waits for each reply.
RFC 2920 3.1: when no RCPT was accepted but DATA got 354 anyway, a lone "." is sent and
the reply ignored, so no message is ever sent to nobody.
"""

from __future__ import annotations

import base64
import enum
from collections import deque
from dataclasses import dataclass, field

from .codes import Reply
from .content import DotStuffer, dot_stuff
from .replies import NEED_DATA, Ehlo, ReplyError, ReplyReader, _NeedData, parse_ehlo

__all__ = ["NEED_DATA", "ClientConnection", "ClientError", "ClientState", "Event", "Greeting",
           "Answered", "EhloDone", "SendBody", "TransactionDone", "Closed"]


class ClientError(Exception):
    """The caller used the connection out of order (our bug, not the peer's)."""


class ClientState(enum.Enum):
    CONNECTED = "connected"
    READY = "ready"
    SENDING_BODY = "sending body"
    CLOSED = "closed"


@dataclass(frozen=True, kw_only=True)
class Greeting:
    reply: Reply


@dataclass(frozen=True, kw_only=True)
class EhloDone:
    """EHLO (or the HELO fallback) answered; ``ehlo`` is empty after HELO."""

    reply: Reply
    ehlo: Ehlo


@dataclass(frozen=True, kw_only=True)
class Answered:
    """A reply to a command outside a mail transaction (STARTTLS, AUTH, RSET, NOOP, QUIT)."""

    command: str
    reply: Reply


@dataclass(frozen=True, kw_only=True)
class SendBody:
    """DATA got 354: call :meth:`ClientConnection.send_body` next."""


@dataclass(frozen=True, kw_only=True)
class TransactionDone:
    mail: Reply
    rcpts: list[tuple[str, Reply]]
    """Every recipient with the reply to its RCPT."""
    data: Reply | None
    """The reply after the message (or to DATA when refused); None when DATA was never
    reached (MAIL refused or no recipient accepted)."""

    def reply_for(self, rcpt: str) -> Reply:
        """The reply that decides what happened to ``rcpt``'s copy."""
        for address, reply in self.rcpts:
            if address == rcpt:
                if self.mail.code >= 400:
                    return self.mail
                if reply.code >= 400 or self.data is None:
                    return reply
                return self.data
        raise KeyError(rcpt)


@dataclass(frozen=True, kw_only=True)
class Closed:
    """The server said goodbye (221 to QUIT, or 421 at any moment)."""

    reply: Reply | None


Event = Greeting | EhloDone | Answered | SendBody | TransactionDone | Closed


@dataclass
class _Transaction:
    mail: Reply | None = None
    rcpts: list[tuple[str, Reply]] = field(default_factory=list)
    data: Reply | None = None
    lone_dot: bool = False


class ClientConnection:
    def __init__(self) -> None:
        self.state = ClientState.CONNECTED
        self.ehlo: Ehlo | None = None
        self._reader = ReplyReader()
        self._out = bytearray()
        self._queued: deque[tuple[bytes, str, str]] = deque()
        """Commands not yet written: (line, command name, argument)."""
        self._pending: deque[tuple[str, str]] = deque()
        """Commands written and not yet answered: (command name, argument)."""
        self._events: deque[Event] = deque()
        self._greeted = False
        self._tx: _Transaction | None = None
        self._stuffer: DotStuffer | None = None

    # -- bytes in and out --------------------------------------------------------------------
    def receive_data(self, data: bytes) -> None:
        self._reader.receive_data(data)

    def data_to_send(self) -> bytes:
        self._release()
        out, self._out = bytes(self._out), bytearray()
        return out

    def next_event(self) -> Event | _NeedData:
        while not self._events:
            self._release()                     # what may be sent counts as sent from here on
            try:
                reply = self._reader.next_reply()
            except ReplyError:
                self.state = ClientState.CLOSED
                raise
            if isinstance(reply, _NeedData):
                return NEED_DATA
            self._on_reply(reply)
        return self._events.popleft()

    @property
    def pipelining(self) -> bool:
        return self.ehlo is not None and self.ehlo.has("PIPELINING")

    @property
    def idle(self) -> bool:
        """Nothing written is unanswered and nothing is waiting to be written."""
        return not self._pending and not self._queued

    # -- commands ----------------------------------------------------------------------------
    def send_ehlo(self, name: str) -> None:
        self._command(f"EHLO {name}", "EHLO", name)

    def send_helo(self, name: str) -> None:
        self._command(f"HELO {name}", "HELO", name)

    def send_starttls(self) -> None:
        self._command("STARTTLS", "STARTTLS")

    def tls_started(self) -> None:
        """RFC 3207 4.2: after the handshake the client forgets what it knew; EHLO again."""
        self.ehlo = None
        self.state = ClientState.CONNECTED
        self._greeted = True

    def send_auth_plain(self, username: str, password: str) -> None:
        """RFC 4954 with the initial response (RFC 4616 PLAIN)."""
        token = base64.b64encode(b"\0" + username.encode() + b"\0" + password.encode()).decode()
        self._command(f"AUTH PLAIN {token}", "AUTH")

    def send_rset(self) -> None:
        self._command("RSET", "RSET")

    def send_noop(self) -> None:
        self._command("NOOP", "NOOP")

    def send_quit(self) -> None:
        self._command("QUIT", "QUIT")

    def begin_transaction(self, mail_from: str, mail_params: list[str],
                          rcpts: list[tuple[str, list[str]]]) -> None:
        """MAIL FROM, every RCPT TO and DATA; :class:`SendBody` or :class:`TransactionDone`
        follows."""
        if self.state is not ClientState.READY or self._tx is not None:
            raise ClientError(f"cannot start a transaction in state {self.state.value}")
        if not rcpts:
            raise ClientError("a transaction needs at least one recipient")
        self._tx = _Transaction()
        self._command(" ".join([f"MAIL FROM:<{mail_from}>", *mail_params]), "MAIL")
        for address, params in rcpts:
            self._command(" ".join([f"RCPT TO:<{address}>", *params]), "RCPT", address)
        self._command("DATA", "DATA")

    def send_body(self, message: bytes) -> None:
        """The message after 354: dot-stuffed here, CRLF line ends, then ``.``."""
        if self.state is not ClientState.SENDING_BODY:
            raise ClientError("send_body without a 354")
        self._out += dot_stuff(message) + b".\r\n"
        self._pending.append(("BODY", ""))

    def send_body_part(self, data: bytes) -> None:
        """A piece of the message after 354, for a message sent from its file: dot-stuffed
        across pieces (:class:`DotStuffer`). :meth:`end_body` ends it; write
        :meth:`data_to_send` after each piece so no more than one is held."""
        if self.state is not ClientState.SENDING_BODY:
            raise ClientError("send_body_part without a 354")
        if self._stuffer is None:
            self._stuffer = DotStuffer()
        self._out += self._stuffer.feed(data)

    def end_body(self) -> None:
        """The rest of a message given by :meth:`send_body_part`, CRLF, then ``.``."""
        if self.state is not ClientState.SENDING_BODY:
            raise ClientError("end_body without a 354")
        stuffer, self._stuffer = self._stuffer or DotStuffer(), None
        self._out += stuffer.finish() + b".\r\n"
        self._pending.append(("BODY", ""))

    # -- internals ---------------------------------------------------------------------------
    def _command(self, line: str, name: str, arg: str = "") -> None:
        if self.state is ClientState.CLOSED:
            raise ClientError("the connection is closed")
        if "\r" in line or "\n" in line:
            raise ClientError("line breaks inside an SMTP command")
        self._queued.append(((line + "\r\n").encode("utf-8"), name, arg))

    def _release(self) -> None:
        """Write what may be written: everything when pipelining (RFC 2920 3.1 lets
        EHLO, STARTTLS, AUTH, DATA and QUIT end a group), else one command at a time."""
        while self._queued:
            if self._pending and not (self.pipelining and self._pending[-1][0] in ("MAIL", "RCPT", "RSET")):
                return
            if not self._greeted:
                return
            line, name, arg = self._queued.popleft()
            self._out += line
            self._pending.append((name, arg))

    def _on_reply(self, reply: Reply) -> None:
        if not self._greeted:
            self._greeted = True
            if reply.code == 220:
                self._events.append(Greeting(reply=reply))
            else:                                   # 554 (or 421): RFC 5321 3.1
                self._close(reply)
            return
        if not self._pending:
            if reply.code == 421:                   # unsolicited: the server is going away
                self._close(reply)
                return
            raise ReplyError(f"reply without a command: {reply}")
        name, arg = self._pending.popleft()
        if reply.code == 421 and name != "QUIT":
            self._close(reply)
            return
        if name in ("EHLO", "HELO"):
            if reply.code == 250:
                self.ehlo = parse_ehlo(reply) if name == "EHLO" else Ehlo(domain="", extensions={})
                self.state = ClientState.READY
            self._events.append(EhloDone(reply=reply, ehlo=self.ehlo or Ehlo(domain="", extensions={})))
        elif name == "QUIT":
            self._close(reply)
        elif name in ("MAIL", "RCPT", "DATA", "BODY"):
            self._on_transaction_reply(name, arg, reply)
        else:
            self._events.append(Answered(command=name, reply=reply))

    def _on_transaction_reply(self, name: str, arg: str, reply: Reply) -> None:
        tx = self._tx
        assert tx is not None
        if name == "MAIL":
            tx.mail = reply
        elif name == "RCPT":
            tx.rcpts.append((arg, reply))
        elif name == "DATA":
            accepted = tx.mail is not None and tx.mail.code < 400 and any(r.code < 400 for _, r in tx.rcpts)
            if reply.code == 354 and accepted:
                self.state = ClientState.SENDING_BODY
                self._events.append(SendBody())
                return
            if reply.code == 354:                   # RFC 2920 3.1: nobody to send it to
                tx.lone_dot = True
                self._out += b".\r\n"
                self._pending.append(("BODY", ""))
                return
            tx.data = reply if accepted else None
            self._finish()
        else:                                       # BODY: the reply after the final dot
            if not tx.lone_dot:
                tx.data = reply
            self._finish()

    def _finish(self) -> None:
        tx, self._tx = self._tx, None
        assert tx is not None and tx.mail is not None
        self.state = ClientState.READY
        self._events.append(TransactionDone(mail=tx.mail, rcpts=tx.rcpts, data=tx.data))

    def _close(self, reply: Reply | None) -> None:
        self.state = ClientState.CLOSED
        self._queued.clear()
        self._pending.clear()
        self._events.append(Closed(reply=reply))
