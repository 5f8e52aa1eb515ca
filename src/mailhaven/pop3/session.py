"""One POP3 session: answers the protocol's events against the store.

Invariants:
- No asyncio, no socket: the store, the clock's ``sleep`` and the blob reader are injected;
  server.py owns the connection and calls :meth:`Session.handle` for each event in order.
- Handlers raise :class:`~.replies.Pop3Error`; :meth:`Session.handle` catches it once and
  writes the ``-ERR`` line. A malformed line costs one error; the session goes on until
  ``limits.errors_per_session``.
- Plaintext passwords (USER/PASS, AUTH PLAIN/LOGIN) only over TLS or from a trusted peer
  (RFC 2595 2.3 and 4, RFC 5034 4: ``-ERR [AUTH]``).
- The maildrop lock is taken after a successful login and released on every way out
  (QUIT, timeout, dropped connection); deletions reach the store only at QUIT, in one
  ``store.expunge`` call (RFC 1939 6: all or nothing).
"""

from __future__ import annotations

import base64
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, NoReturn, Protocol

from ..auth.sasl import MECHANISMS, PLAINTEXT_MECHANISMS, server_mechanism
from ..auth.throttle import LoginBlocked, LoginThrottle
from ..config import Config
from ..logs import Log
from ..store.api import Account, FlagMode, Message, Store, StoreError
from . import protocol as P
from . import replies as R
from .maildrop import Maildrop
from .readahead import READ_AHEAD_BYTES, ReadAhead
from .stream import STREAM_MIN, blob_chunks, top_prefix

IMPLEMENTATION = "Mailhaven"


class Locks(Protocol):
    """The maildrop locks (``lease.MaildropLeases``: store leases, cluster-wide)."""

    async def acquire(self, account_id: int) -> bool: ...

    async def release(self, account_id: int) -> None: ...


@dataclass(kw_only=True)
class SessionContext:
    store: Store
    config: Config
    log: Log
    locks: Locks
    throttle: LoginThrottle
    """The shared login throttle: failure delays and blocks per address and address+account."""
    sleep: Callable[[float], Awaitable[None]]
    peer: str = ""
    tls: bool = False
    """The connection is encrypted (pop3s, or after STLS)."""
    stls_available: bool = True
    wire_sizes: Callable[[list[Message]], Awaitable[list[int]]] | None = None
    """Exact RETR sizes (CRLF line ends) of messages; None: the stored sizes."""
    flush: Callable[[], Awaitable[None]] | None = None
    """Writes the output so far (and waits for room): a large RETR streams through it."""


class Session:
    def __init__(self, ctx: SessionContext, protocol: P.Pop3Protocol | None = None) -> None:
        self.ctx = ctx
        self.protocol = protocol or P.Pop3Protocol(max_line=ctx.config.limits.line_length)
        self.closing = False
        self.starttls_pending = False
        self.utf8 = False
        self.account: Account | None = None
        self.maildrop: Maildrop | None = None
        self._ahead: ReadAhead | None = None
        self._out: list[bytes] = []
        self._pending_user: str | None = None
        self._sasl: Any = None
        self._errors = 0
        self._auth_failures = 0

    # -- output --------------------------------------------------------------------------
    def greeting(self) -> bytes:
        return R.GREETING.to_bytes()

    def take_output(self) -> bytes:
        data = b"".join(self._out)
        self._out.clear()
        return data

    def _reply(self, reply: R.Reply) -> None:
        self._out.append(reply.to_bytes())

    @property
    def state(self) -> P.State:
        return self.protocol.state

    # -- the loop's entry points -----------------------------------------------------------
    async def handle(self, event: P.Event) -> None:
        """Answer one event; every Pop3Error ends here."""
        try:
            if isinstance(event, P.Malformed):
                raise R.Pop3Error(event.reply)
            if isinstance(event, P.SaslResponse):
                await self._sasl_response(event)
                return
            await self._dispatch(event)
        except R.Pop3Error as exc:
            self._reply(exc.reply)
            self._errors += 1
            if self._errors >= self.ctx.config.limits.errors_per_session and not self.closing:
                self._reply(R.TOO_MANY_ERRORS)
                await self.close()

    async def close(self) -> None:
        """Connection over without QUIT: no UPDATE (RFC 1939 6), release the lock."""
        if self.state is not P.State.CLOSED:
            self.protocol.transition(P.Trigger.CLOSE)
        await self._release()
        self.closing = True

    async def idle_timeout(self) -> None:
        self._reply(R.IDLE_TIMEOUT)               # RFC 1939 3: autologout, no UPDATE
        await self.close()

    def tls_started(self) -> None:
        self.starttls_pending = False
        self.ctx.tls = True
        self.protocol.discard_buffer()           # RFC 2595 4: nothing from before the handshake

    async def _release(self) -> None:
        if self._ahead is not None:
            self._ahead.close()
            self._ahead = None
        if self.account is not None and self.maildrop is not None:
            self.maildrop = None
            await self.ctx.locks.release(self.account.id)
        self.maildrop = None

    async def _dispatch(self, cmd: P.Command) -> None:
        handler = _HANDLERS[type(cmd)]
        await handler(self, cmd)

    # -- AUTHORIZATION ---------------------------------------------------------------------
    def _plaintext_allowed(self) -> bool:
        return self.ctx.tls or self.ctx.config.is_trusted(self.ctx.peer)

    def _mechanisms(self) -> list[str]:
        return [m for m in MECHANISMS if m not in PLAINTEXT_MECHANISMS or self._plaintext_allowed()]

    async def _capa(self, cmd: P.Capa) -> None:
        lines = ["TOP", "UIDL"]                                   # RFC 2449 6.4, 6.5
        if self.state is P.State.AUTHORIZATION:
            if self._plaintext_allowed():
                lines.append("USER")                              # RFC 2449 6.3
            lines.append("SASL " + " ".join(self._mechanisms()))  # RFC 2449 6.3, RFC 5034 3
        lines += ["RESP-CODES", "AUTH-RESP-CODE", "PIPELINING"]   # RFC 2449 6.4/6.6, RFC 3206 6
        if self.state is P.State.AUTHORIZATION:
            if not self.ctx.tls and self.ctx.stls_available:
                lines.append("STLS")                              # RFC 2595 4
            lines.append("UTF8 USER")                             # RFC 6856 2
        lines.append(f"IMPLEMENTATION {IMPLEMENTATION}")          # RFC 2449 6.9
        self._out.append(P.multiline(R.CAPA_FOLLOWS, [line.encode() for line in lines]))

    async def _stls(self, cmd: P.Stls) -> None:
        if self.ctx.tls:
            raise R.Pop3Error(R.TLS_ACTIVE)
        if not self.ctx.stls_available:
            raise R.Pop3Error(R.TLS_UNAVAILABLE)
        self._pending_user = None
        self._reply(R.STLS_GO)
        self.starttls_pending = True

    async def _utf8(self, cmd: P.Utf8) -> None:
        self.utf8 = True                                          # RFC 6856 2
        self._reply(R.UTF8_ENABLED)

    async def _user(self, cmd: P.User) -> None:
        if not self._plaintext_allowed():
            raise R.Pop3Error(R.PLAINTEXT_REFUSED)                # RFC 2595 2.3
        self._pending_user = cmd.name                             # never say whether it exists
        self._reply(R.USER_OK)

    async def _pass(self, cmd: P.Pass) -> None:
        user, self._pending_user = self._pending_user, None
        if user is None:
            raise R.Pop3Error(R.NEED_USER)                        # RFC 1939 7: right after USER
        if not self._plaintext_allowed():
            raise R.Pop3Error(R.PLAINTEXT_REFUSED)
        try:
            account = await self.ctx.throttle.authenticate(self.ctx.peer, user, cmd.password)
        except LoginBlocked:
            await self._blocked()
        if account is None:
            await self._auth_failed(user, "bad password")
        assert account is not None
        await self._logged_in(account, "USER/PASS")

    async def _auth(self, cmd: P.Auth) -> None:
        if cmd.mechanism is None:                                 # list mechanisms (pre-RFC 5034 clients)
            self._out.append(P.multiline(R.AUTH_MECHS, [m.encode() for m in self._mechanisms()]))
            return
        if cmd.mechanism not in MECHANISMS:
            raise R.Pop3Error(R.UNKNOWN_MECHANISM)
        if cmd.mechanism in PLAINTEXT_MECHANISMS and not self._plaintext_allowed():
            raise R.Pop3Error(R.PLAINTEXT_REFUSED)                # RFC 5034 4 / RFC 2595
        try:
            await self.ctx.throttle.check(self.ctx.peer)
        except LoginBlocked:
            await self._blocked()
        self._pending_user = None
        self._sasl = server_mechanism(cmd.mechanism, self.ctx.store, throttle=self.ctx.throttle,
                                      peer=self.ctx.peer)
        self.protocol.transition(P.Trigger.SASL_STARTED)
        await self._sasl_step(cmd.initial_response or b"")

    async def _sasl_response(self, event: P.SaslResponse) -> None:
        if event.cancelled:
            self._end_sasl()
            raise R.Pop3Error(R.AUTH_CANCELLED)                   # RFC 5034 4: "*" cancels
        if event.malformed:
            await self._sasl_failed("response is not base64")
        await self._sasl_step(event.data)

    async def _sasl_step(self, data: bytes) -> None:
        try:
            kind, challenge, account = await self._sasl.step(data)
        except LoginBlocked:
            self._end_sasl()
            await self._blocked()
        if kind == "challenge":
            self._out.append(b"+ " + base64.b64encode(challenge or b"") + b"\r\n")   # RFC 5034 4
            return
        if kind == "failure" or account is None:
            await self._sasl_failed(self._sasl.failure_reason or "failed")
        assert account is not None
        await self._logged_in(account, f"AUTH {self._sasl.mechanism.name}")

    def _end_sasl(self) -> None:
        if self.state is P.State.SASL:
            self.protocol.transition(P.Trigger.SASL_ENDED)

    async def _sasl_failed(self, reason: str) -> None:
        sasl = self._sasl
        user = sasl.username if sasl is not None else None
        self._end_sasl()
        await self._auth_failed(user, reason, blocked=sasl is not None and sasl.blocked)

    async def _blocked(self) -> NoReturn:
        """The shared throttle refuses this peer: the reply below is the last."""
        await self.close()
        raise R.Pop3Error(R.AUTH_BLOCKED)

    async def _auth_failed(self, user: str | None, reason: str, *, blocked: bool = False) -> None:
        """Raise ``-ERR [AUTH]`` (the throttle counted and delayed the failure already)."""
        self.ctx.log.info("login failed", user=user or "", reason=reason)
        self._auth_failures += 1
        if blocked or self._auth_failures >= max(1, self.ctx.config.limits.auth_failures):
            await self.close()                                    # the reply below is the last
        raise R.Pop3Error(R.AUTH_FAILED)

    async def _logged_in(self, account: Account, how: str) -> None:
        self._sasl = None
        if not await self.ctx.locks.acquire(account.id):
            self._end_sasl()
            raise R.Pop3Error(R.MAILDROP_LOCKED)                 # RFC 2449 8.1.1
        try:
            inbox = await self.ctx.store.get_mailbox(account.id, "INBOX")
            messages = await self.ctx.store.list_messages(inbox.id)
            # RFC 1939 5: sizes as sent, which differ from the stored ones for LF-only mail.
            sizes = await self.ctx.wire_sizes(messages) if self.ctx.wire_sizes else []
        except (StoreError, OSError):
            await self.ctx.locks.release(account.id)
            self._end_sasl()
            raise R.Pop3Error(R.MAILDROP_UNAVAILABLE) from None
        self.account = account
        self._ahead = ReadAhead(self.ctx.store, account.id, inbox.id,
                                STREAM_MIN if self.ctx.flush is not None else READ_AHEAD_BYTES)
        self.maildrop = Maildrop(mailbox_id=inbox.id, uidvalidity=inbox.uidvalidity, messages=messages,
                                 sizes=sizes)
        self.protocol.transition(P.Trigger.AUTHENTICATED)
        count, size = self.maildrop.stat()
        self.ctx.log.info("login", user=account.address, how=how, messages=count)
        self._reply(R.LOGGED_IN.with_text(f"Logged in; {_messages(count)} ({size} octets)"))

    async def _quit(self, cmd: P.Quit) -> None:
        if self.state is P.State.AUTHORIZATION:
            self.protocol.transition(P.Trigger.QUIT)
            self._reply(R.BYE)
            self.closing = True
            return
        self.protocol.transition(P.Trigger.QUIT)                 # RFC 1939 6: UPDATE
        drop = self._drop()
        reply = R.BYE
        try:
            seen = drop.seen_uids()
            if seen:
                await self.ctx.store.set_flags(drop.mailbox_id, seen, ["\\Seen"], FlagMode.ADD)
            deleted = drop.deleted_uids()
            if deleted:
                await self.ctx.store.expunge(drop.mailbox_id, deleted)   # one call: all or nothing
            left = len(drop.messages) - len(drop.deleted)
            reply = R.BYE.with_text(f"{R.BYE.text} ({_messages(left)} left)")
            self.ctx.log.info("logout", user=self._address(), deleted=len(deleted), retrieved=len(drop.retrieved))
        except StoreError:
            self.ctx.log.error("update failed", exc=True, user=self._address())
            reply = R.UPDATE_FAILED
        self.protocol.transition(P.Trigger.UPDATE_DONE)
        await self._release()
        self._reply(reply)
        self.closing = True

    def _address(self) -> str:
        return self.account.address if self.account else ""

    # -- TRANSACTION -----------------------------------------------------------------------
    def _drop(self) -> Maildrop:
        assert self.maildrop is not None, "TRANSACTION without a maildrop"
        return self.maildrop

    async def _stat(self, cmd: P.Stat) -> None:
        count, size = self._drop().stat()
        self._reply(R.OK.with_text(f"{count} {size}"))             # RFC 1939 5 STAT: drop listing

    async def _list(self, cmd: P.List) -> None:
        drop = self._drop()
        if cmd.msg is not None:
            self._reply(R.OK.with_text(f"{cmd.msg} {drop.size(cmd.msg)}"))
            return
        count, size = drop.stat()
        first = R.LIST_FOLLOWS.with_text(f"{_messages(count)} ({size} octets)")
        self._out.append(P.multiline(first, [f"{n} {drop.sizes[n - 1]}".encode() for n, _ in drop.live()]))

    async def _uidl(self, cmd: P.Uidl) -> None:
        drop = self._drop()
        if cmd.msg is not None:
            self._reply(R.OK.with_text(f"{cmd.msg} {drop.unique_id(drop.get(cmd.msg))}"))
            return
        lines = [f"{n} {drop.unique_id(m)}".encode() for n, m in drop.live()]
        self._out.append(P.multiline(R.UIDL_FOLLOWS, lines))

    async def _check_present(self, msg: int) -> Message:
        drop = self._drop()
        message = drop.get(msg)
        try:
            still = await self.ctx.store.get_messages(drop.mailbox_id, [message.uid], with_summary=False)
        except (StoreError, OSError):
            raise R.Pop3Error(R.MESSAGE_GONE) from None
        if not still:
            raise R.Pop3Error(R.MESSAGE_GONE)
        return message

    async def _read(self, msg: int) -> bytes:
        """The message's bytes if it is still in the mailbox (one store trip checks and reads,
        and reads the next few ahead when the client goes in order)."""
        drop = self._drop()
        drop.get(msg)
        assert self._ahead is not None, "TRANSACTION without a read-ahead"
        try:
            raw = await self._ahead.read(drop, msg)
        except (StoreError, OSError):
            raise R.Pop3Error(R.MESSAGE_GONE) from None
        if raw is None:
            raise R.Pop3Error(R.MESSAGE_GONE)
        return raw

    async def _retr(self, cmd: P.Retr) -> None:
        drop = self._drop()
        msg = cmd.msg
        size = drop.size(msg)
        assert self._ahead is not None, "TRANSACTION without a read-ahead"
        raw = self._ahead.take(drop, msg)       # a client going in order: already read
        if raw is None:
            if self.ctx.flush is not None and size > STREAM_MIN:
                await self._retr_streamed(cmd)
                return
            raw = await self._read(msg)
        self._send_message(drop, msg, size, raw)

    def _send_message(self, drop: Maildrop, msg: int, size: int, raw: bytes) -> None:
        """RETR's answer (RFC 1939 7): the status line, the message dot-stuffed, the end."""
        drop.retrieved.add(msg)
        out = self._out
        out.append(R.MESSAGE_FOLLOWS.line(f"{size} octets"))
        if drop.exact and size == len(raw):     # CRLF line ends only (see Maildrop.exact)
            out += (P.stuff_crlf(raw), P.END)
        else:
            out.append(P.encode_message(raw))

    def answer_now(self, data: bytes) -> bool:
        """Answer ``data`` at once, without an await, when it is one whole RETR (and nothing
        else is buffered) of a live message the read-ahead holds: what :meth:`handle` of
        that RETR would answer, the same bytes, to :meth:`take_output`. False: nothing
        consumed or answered; the bytes go through ``protocol.receive_data`` as usual.
        The server asks this as bytes arrive (net.connection.StreamProtocol)."""
        msg = self.protocol.retr_line(data)
        drop = self.maildrop
        if msg is None or drop is None or self._ahead is None or self.closing or self.starttls_pending:
            return False
        if msg > len(drop.messages) or msg in drop.deleted:
            return False                        # handle answers the -ERR
        raw = self._ahead.take(drop, msg)
        if raw is None:
            return False
        self._send_message(drop, msg, drop.sizes[msg - 1], raw)
        return True

    async def _retr_streamed(self, cmd: P.Retr) -> None:
        """RETR of a large message from its file: the same bytes, a chunk at a time."""
        message = await self._check_present(cmd.msg)
        assert self.ctx.flush is not None
        self._drop().retrieved.add(cmd.msg)
        self._out.append(R.MESSAGE_FOLLOWS.line(f"{self._drop().size(cmd.msg)} octets"))
        encoder = P.MessageEncoder()
        async for data in blob_chunks(self.ctx.store, message.blob_id):
            self._out.append(encoder.feed(data))
            await self.ctx.flush()
        self._out.append(encoder.finish())

    async def _top(self, cmd: P.Top) -> None:
        if self._drop().size(cmd.msg) > STREAM_MIN:
            message = await self._check_present(cmd.msg)
            raw = await top_prefix(self.ctx.store, message.blob_id, cmd.lines)
        else:
            raw = await self._read(cmd.msg)
        self._out.append(R.MESSAGE_FOLLOWS.to_bytes())
        self._out.append(P.encode_message(raw, body_lines=cmd.lines))

    async def _dele(self, cmd: P.Dele) -> None:
        self._drop().delete(cmd.msg)
        self._reply(R.DELETED)

    async def _noop(self, cmd: P.Noop) -> None:
        self._reply(R.OK)

    async def _rset(self, cmd: P.Rset) -> None:
        drop = self._drop()
        drop.reset()
        count, size = drop.stat()
        self._reply(R.OK.with_text(f"maildrop has {_messages(count)} ({size} octets)"))


_HANDLERS: dict[type[P.Command], Callable[[Session, Any], Awaitable[None]]] = {
    P.Capa: Session._capa, P.Stls: Session._stls, P.Utf8: Session._utf8, P.User: Session._user,
    P.Pass: Session._pass, P.Auth: Session._auth, P.Quit: Session._quit, P.Stat: Session._stat,
    P.List: Session._list, P.Uidl: Session._uidl, P.Retr: Session._retr, P.Top: Session._top,
    P.Dele: Session._dele, P.Noop: Session._noop, P.Rset: Session._rset,
}


def _messages(n: int) -> str:
    """``1 message``, ``3 messages`` (reply texts are for people; clients read the numbers)."""
    return f"{n} message" if n == 1 else f"{n} messages"
