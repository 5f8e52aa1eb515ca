"""The asyncio adapter: sockets, TLS, timers and policy around the sans-IO SMTP core.

Three listeners share this file: ``smtp`` (port 25: mail for local domains only, no
AUTH), ``submission`` (587: STARTTLS, AUTH required) and ``submissions`` (465: implicit
TLS, AUTH required).

Invariants:
- One task per connection owns its socket, core and transaction; nothing else writes to it.
- Replies are flushed whenever the core needs more input, so pipelined commands get
  their replies in one write (RFC 2920) and nobody waits on an unflushed reply.
- ``250`` after DATA / BDAT LAST is sent only after ``Transaction.commit`` returned:
  blobs fsynced, store and queue rows committed.
- Never an open relay: a recipient outside our domains is accepted only from an
  authenticated session (submission), and goes to the outbound queue.
- Idle limits (RFC 5321 4.5.3.2): ``limits.smtp_idle`` between commands,
  ``limits.smtp_data_idle`` inside DATA; then 421 4.4.2.
- Shutdown: sessions waiting for input get 421 at once; a session in the middle of a
  commit finishes it (and answers it) first.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..auth.sasl import MECHANISMS, StoreMechanism
from ..auth.throttle import LoginBlocked, LoginThrottle, shared_throttle
from ..filter.ratelimit import shared_limiter
from ..net.connection import NetConnection, ReadTimeout
from ..net.listener import Listener
from ..sieve.forward import reverse_srs
from ..store.api import StorageFull
from . import codes
from .codes import Reply
from .protocol import (
    NEED_DATA,
    AuthAborted,
    AuthResponse,
    AuthStart,
    ConnectionClosed,
    DataChunk,
    DataComplete,
    DataStart,
    Event,
    MailFrom,
    RcptTo,
    ServerConnection,
    Settings,
    StartTLS,
    TransactionReset,
)
from .transaction import Submission, Trace, Transaction

if TYPE_CHECKING:
    from .workers import WorkerPool

SUBMISSION_LISTENERS = ("submission", "submissions")


class RecipientCache:
    """``store.resolve`` plus the accounts' quota state, remembered for ``ttl`` seconds.

    RCPT is the hot path of inbound mail (two store reads per recipient). Entries whose
    accounts all have no quota are cached; any quota'd account is looked up fresh every
    time, so the RCPT-time quota check (452 4.2.2) is never stale. ``deliver()`` checks
    quota authoritatively at commit anyway."""

    def __init__(self, store: Any, ttl: float = 1.0, max_entries: int = 10_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.ttl = ttl
        self.max_entries = max_entries
        self.clock = clock
        self._entries: dict[str, tuple[float, Any, tuple[Any, ...]]] = {}

    async def lookup(self, address: str) -> tuple[Any, tuple[Any, ...]]:
        key = address.lower()
        now = self.clock()
        hit = self._entries.get(key)
        if hit is not None and hit[0] > now:
            return hit[1], hit[2]
        resolution = await self.store.resolve(address)
        accounts = tuple([await self.store.get_account_by_id(a) for a in resolution.account_ids])
        if all(a.quota is None for a in accounts):
            if len(self._entries) >= self.max_entries:
                self._entries.clear()
            self._entries[key] = (now + self.ttl, resolution, accounts)
        return resolution, accounts


class SmtpListener(Listener):
    """What app.py keeps for one listener: ``close()`` stops accepting and ends sessions."""

    protocol = "smtp"
    cid_prefix = "s"
    refusal = codes.TOO_MANY_CONNECTIONS.to_bytes()
    shutdown_refusal = codes.SHUTTING_DOWN.to_bytes()

    def __init__(self, app: Any, name: str) -> None:
        super().__init__(app, name, implicit_tls=name == "submissions")
        self.submission = name in SUBMISSION_LISTENERS
        self.workers: WorkerPool | None = None
        self.sessions: set[Session] = set()
        self.throttle: LoginThrottle = shared_throttle(app)
        self.recipients: RecipientCache = app.extras.setdefault(
            "smtp_recipient_cache", RecipientCache(app.store))
        self.ratelimit = shared_limiter(app)
        self.inbound: Any = None
        if not self.submission and app.config.filter.enabled:
            if "inbound_filter" not in app.extras:
                from ..filter.inbound import InboundFilter
                app.extras["inbound_filter"] = InboundFilter(app.config)
            self.inbound = app.extras["inbound_filter"]

    @property
    def sockets(self) -> Any:
        if self.workers is not None:
            return self.workers.sockets
        return super().sockets

    async def start(self, host: str, port: int) -> None:
        count = self.app.config.smtp.workers
        if self.name == "smtp" and count > 0:
            # Port 25 in worker processes (smtp/workers.py): bind here, accept there.
            from .balance import shared_socket
            from .workers import WorkerPool

            self.workers = WorkerPool(self.app, shared_socket(host, port), count, self.log)
            await self.workers.start()
            return
        await super().start(host, port)

    def close(self) -> None:
        if self.workers is not None:
            self.workers.close()
        super().close()

    def stop_connections(self) -> None:
        for session in list(self.sessions):
            session.stop()

    async def wait_closed(self) -> None:
        if self.workers is not None:
            await self.workers.wait_closed()
        await super().wait_closed()

    async def end_connections(self) -> None:
        """Sessions waiting for input got 421 in ``stop_connections``; one in the middle of
        a commit gets 8 s to finish it."""
        tasks = list(self.connections)
        if tasks:
            await asyncio.wait(tasks, timeout=8)
        for task in tasks:
            task.cancel()

    async def serve(self, net: NetConnection) -> None:
        session = Session(self, net)
        self.sessions.add(session)
        try:
            await session.run()
        finally:
            session.cleanup()
            self.sessions.discard(session)


class Session:
    def __init__(self, listener: SmtpListener, net: NetConnection) -> None:
        app = listener.app
        config = app.config
        ip = net.ip
        writer = net.writer
        self.listener = listener
        self.app = app
        self.store = app.store
        self.net = net
        self.writer = writer
        self.ip = ip
        self.cid = net.cid
        self.log = listener.log.bind(cid=self.cid, peer=ip)
        limits = config.limits
        self.conn = ServerConnection(Settings(
            hostname=config.hostname, max_size=limits.message_size,
            max_recipients=limits.recipients, max_line=limits.line_length,
            max_errors=limits.errors_per_session, starttls=not listener.implicit_tls,
            tls_active=listener.implicit_tls,
            auth_mechanisms=MECHANISMS if listener.submission or config.smtp.auth_on_smtp else (),
            plaintext_ok=config.is_trusted(ip), require_auth=listener.submission,
        ))
        self.transaction: Transaction | None = None
        self.account: Any = None
        self.sasl: StoreMechanism | None = None
        self.tls_info: str | None = None
        self.reading = False
        self.stopping = False
        self.count = 0
        if listener.implicit_tls:
            self.tls_info = _tls_description(writer)

    # -- lifecycle -------------------------------------------------------------------------
    def stop(self) -> None:
        """Server shutdown: interrupt a read at once; a busy session finishes its command."""
        self.stopping = True
        if self.reading:
            self.conn.shutdown()
            with contextlib.suppress(Exception):
                self.writer.write(self.conn.data_to_send())
                self.writer.close()

    def cleanup(self) -> None:
        if self.transaction is not None:
            self.transaction.abort()
            self.transaction = None

    async def _flush(self) -> None:
        data = self.conn.data_to_send()
        if data:
            self.net.write(data)
            await self.net.drain(always=False)   # only when the kernel kept bytes back, as IMAP

    async def run(self) -> None:
        conn = self.conn
        limits = self.app.config.limits
        self.log.debug("connected")
        await self._flush()
        messages = 0
        while True:
            while True:
                event = conn.next_event()
                if event is NEED_DATA or isinstance(event, ConnectionClosed):
                    break
                await self._handle(event)  # type: ignore[arg-type]
            await self._flush()
            if conn.closed:
                break
            if self.stopping:
                conn.shutdown()
                await self._flush()
                break
            if self.account is not None:
                self.net.authenticated(self.account.address)
            if self.count != messages:                # a message done: another login period
                messages = self.count
                self.net.restart_login_clock()
            timeout = limits.smtp_data_idle if conn.in_data else limits.smtp_idle
            self.reading = True
            try:
                # Message content is held to the minimum rate instead of the login limit.
                data = await self.net.read(timeout, transfer=conn.in_data, login_clock=not conn.in_data)
            except ReadTimeout:
                conn.timeout()                                   # RFC 5321 4.5.3.2: 421 4.4.2
                await self._flush()
                break
            finally:
                self.reading = False
            if not data:
                break
            self.net.received(data)
            conn.receive_data(data)

    # -- events ----------------------------------------------------------------------------
    async def _handle(self, event: Event) -> None:
        conn = self.conn
        if isinstance(event, DataChunk):
            if self.transaction is not None:
                self.transaction.write(event.data)
        elif isinstance(event, RcptTo):
            conn.answer(await self._reply_or_error(self._rcpt(event)))
        elif isinstance(event, MailFrom):
            conn.answer(await self._reply_or_error(self._mail(event)))
        elif isinstance(event, DataStart):
            if self.transaction is not None:
                self.transaction.start()
        elif isinstance(event, DataComplete):
            conn.answer(await self._commit())
        elif isinstance(event, TransactionReset):
            self.cleanup()
        elif isinstance(event, StartTLS):
            await self._flush()
            await self.writer.start_tls(self.app.tls)            # RFC 3207 4
            self.tls_info = _tls_description(self.writer)
            conn.tls_started()
            self.cleanup()
        elif isinstance(event, AuthStart | AuthResponse):
            await self._auth(event)
        elif isinstance(event, AuthAborted):
            self.sasl = None

    async def _reply_or_error(self, work: Any) -> Reply:
        try:
            reply: Reply = await work
            return reply
        except Reply as exc:
            return exc.caught()
        except StorageFull:
            return codes.INSUFFICIENT_STORAGE                            # RFC 3463 X.3.1

    async def _mail(self, event: MailFrom) -> Reply:
        owned: frozenset[str] = frozenset()
        if self.listener.submission:
            owned = await self._own_addresses()
            # RFC 6409 6.1: the envelope sender must be the user's (null sender allowed for MDNs).
            if event.address and event.address.lower() not in owned:
                raise codes.SENDER_NOT_OWNED
        if self.account is not None:
            await self.listener.ratelimit.submitted_message(self.account.id, self.account.address)
        elif not self.listener.submission:
            await self.listener.ratelimit.inbound_message(self.ip, event.address)
        self.cleanup()
        trace = Trace(helo=self.conn.helo_name or self.ip, peer_ip=self.ip,
                      hostname=self.app.config.hostname,
                      protocol=self.conn.protocol_name(event.params.smtputf8),
                      transaction_id=f"{self.cid}.{self.count}", tls=self.tls_info)
        self.transaction = Transaction(
            mail=event, trace=trace, store=self.store, outbound=self.app.outbound,
            submission=Submission(addresses=owned, hostname=self.app.config.hostname)
            if self.listener.submission else None,
            authenticated_as=self.account.address if self.account is not None else None,
            inbound=None if self.conn.authenticated else self.listener.inbound,
            sieve=self.app.config.sieve,
        )
        return codes.SENDER_OK

    async def _own_addresses(self) -> frozenset[str]:
        assert self.account is not None
        return frozenset(a.lower() for a in await self.store.addresses_of(self.account.id))

    async def _rcpt(self, event: RcptTo) -> Reply:
        tx = self.transaction
        assert tx is not None
        resolution, accounts = await self.listener.recipients.lookup(event.address)
        if not resolution.local_domain and event.address.lower() == f"postmaster@{self.app.config.hostname}".lower():
            resolution, accounts = await self._postmaster()
        if resolution.local_domain and not resolution.account_ids and self.app.outbound is not None:
            original = await reverse_srs(self.store, event.address)    # a bounce to a redirect of ours
            if original is not None:
                tx.add_remote(dataclasses.replace(event, address=original))
                return codes.RECIPIENT_OK
        if not resolution.local_domain:
            if not self.conn.authenticated:
                raise codes.RELAY_DENIED                         # RFC 5321 7.1: no open relay
            if self.app.outbound is None:
                raise codes.NO_REMOTE_DELIVERY
            if self.account is not None:
                await self.listener.ratelimit.submitted_recipient(self.account.id, self.account.address)
            tx.add_remote(event)
            return codes.RECIPIENT_OK
        forward = resolution.forward if self.app.outbound is not None else ()
        if not resolution.account_ids and not forward:
            raise codes.UNKNOWN_USER                             # RFC 3463 X.1.1
        declared = tx.mail.params.size or 0
        full = sum(1 for a in accounts if a.quota is not None and a.used + declared >= a.quota)
        if accounts and full == len(accounts):
            raise codes.MAILBOX_FULL                             # RFC 3463 X.2.2, temporary
        tx.add_local(event, resolution.account_ids, forward)    # external alias targets: forwarded
        return codes.RECIPIENT_OK

    async def _postmaster(self) -> tuple[Any, tuple[Any, ...]]:
        """RFC 5321 4.5.1: ``<postmaster>`` (and postmaster@our hostname) is always
        accepted: it goes to the first local domain's postmaster that exists."""
        found: tuple[Any, tuple[Any, ...]] | None = None
        for domain in await self.store.list_domains():
            resolution, accounts = await self.listener.recipients.lookup(f"postmaster@{domain.name}")
            if found is None:
                found = (resolution, accounts)
            if accounts:
                return resolution, accounts
        if found is None:
            raise codes.UNKNOWN_USER
        return found

    async def _commit(self) -> Reply:
        tx, self.transaction = self.transaction, None
        if tx is None:
            return codes.TRANSACTION_FAILED
        self.count += 1
        try:
            reply, _ = await tx.commit()
        except Exception:  # noqa: BLE001 - the client must get a 4xx, never a 250
            self.log.error("commit failed", exc=True, id=tx.trace.transaction_id)
            return codes.LOCAL_ERROR
        verdict = tx.verdict
        self.log.info("message", id=tx.trace.transaction_id, sender=tx.mail.address,
                      rcpts=len(tx.recipients), reply=reply.code,
                      **({} if verdict is None else {"action": verdict.action,
                          "dmarc": verdict.dmarc.result if verdict.dmarc else "off"}))
        return reply

    # -- AUTH (RFC 4954) -------------------------------------------------------------------
    async def _auth(self, event: AuthStart | AuthResponse) -> None:
        conn = self.conn
        sasl = self.sasl
        try:
            if isinstance(event, AuthStart):
                await self.listener.throttle.check(self.ip)      # a blocked address gets no challenge
                sasl = self.sasl = StoreMechanism(event.mechanism, self.store, throttle=self.listener.throttle,
                                                  peer=self.ip)
                data = event.initial if event.initial is not None else b""
            else:
                data = event.data
            assert sasl is not None
            kind, payload, account = await sasl.step(data)
        except LoginBlocked:                     # the shared throttle (auth/throttle.py)
            self.sasl = None
            self.log.info("auth refused: throttled", user=sasl.username if sasl is not None else "")
            conn.close_with(codes.TOO_MANY_AUTH_FAILURES)
            return
        except Exception:  # noqa: BLE001 - a store failure is a temporary failure
            self.log.error("auth step failed", exc=True)
            self.sasl = None
            conn.answer(codes.TEMP_AUTH_FAILURE)
            return
        if kind == "challenge":
            conn.auth_challenge(payload or b"")
            return
        self.sasl = None
        if account is not None:
            self.account = account
            self.log.info("authenticated", user=account.address)
            conn.answer(codes.AUTH_OK)
            return
        self.log.info("auth failed", user=sasl.username, reason=sasl.failure_reason)
        conn.answer(codes.AUTH_FAILED)
        if sasl.blocked:
            conn.close_with(codes.TOO_MANY_AUTH_FAILURES)


def _tls_description(writer: asyncio.StreamWriter) -> str | None:
    """``TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)`` for Received:."""
    obj = writer.get_extra_info("ssl_object")
    if obj is None:
        return None
    cipher = obj.cipher()
    if not cipher:
        return obj.version()
    name, version, bits = cipher
    return f"{obj.version() or version} with cipher {name} ({bits}/{bits} bits)"


async def start_listener(ctx: Any, name: str, host: str, port: int) -> SmtpListener:
    listener = SmtpListener(ctx, name)
    await listener.start(host, port)
    return listener

