"""The asyncio adapter: sockets, TLS and timers around the sans-IO IMAP session.

Invariants:
- One task per connection owns the socket and the session; the change feed's callback
  only marks the session dirty and, in IDLE, wakes that task, so the session is never
  re-entered.
- Output is written and drained after every event, so a slow client slows only itself;
  big FETCH responses stream through ``SessionContext.flush``.
- STARTTLS upgrades with the public ``StreamWriter.start_tls``; anything the client sent
  after the command is refused before the handshake (no plaintext command injection).
- The idle timer (``limits.imap_idle``, 30 min by default, RFC 9051 5.4) restarts on
  every read; IDLE clients are expected to re-issue IDLE within it (RFC 2177). Before
  login the net/ base's login limit (total) applies too, and literals must keep its
  minimum rate.
"""

from __future__ import annotations

import asyncio
import contextlib
import zlib
from collections.abc import Coroutine
from typing import Any

from ..auth.throttle import shared_throttle
from ..net.connection import READ_SIZE, NetConnection, ReadTimeout, StreamProtocol
from ..net.listener import Listener
from .commands import new_session
from .parser import NEED_DATA, CommandReader
from .session import Mode, SessionContext

INFLATE_STEP = 256 * 1024
"""At most this much inflated from a COMPRESS stream before the parser runs again."""
COMPRESS_LEVEL = 6
"""zlib level for COMPRESS=DEFLATE output (Dovecot's default too)."""
PRE_AUTH_TIMEOUT = 120.0
"""Seconds a connection may stay idle before logging in."""
_background: set[asyncio.Task[Any]] = set()
"""Sessions' background tasks, held until done (the loop keeps only weak references)."""


class ImapListener(Listener):
    """What app.py keeps for one listener: close() stops accepting and ends sessions."""

    protocol = "imap"
    cid_prefix = "i"
    refusal = b"* BYE Too many connections\r\n"
    shutdown_refusal = b"* BYE Server shutting down\r\n"

    stream_protocol = StreamProtocol                  # some FETCHes answered as they arrive (Connection.answer_now)

    async def serve(self, net: NetConnection) -> None:
        connection = Connection(self, net)
        net.set_shortcut(connection.answer_now)
        try:
            await connection.run()
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                net.writer.write(connection.encode(b"* BYE Server shutting down\r\n"))
                await asyncio.wait_for(net.writer.drain(), timeout=1)
            raise
        finally:
            net.set_shortcut(None)


class Connection:
    def __init__(self, listener: ImapListener, net: NetConnection) -> None:
        app = listener.app
        ip = net.ip
        self.app = app
        self.net = net
        self.reader = net.reader
        self.writer = net.writer
        self._waiter: asyncio.Future[bool] | None = None
        """What an IDLE connection awaits; a change to announce settles it."""
        self._deflate: Any = None
        self._inflate: Any = None
        """RFC 4978 COMPRESS=DEFLATE, both ways once the client asked and was told OK."""
        self.subscription: Any = None
        config = app.config
        log = listener.log.bind(cid=net.cid, peer=ip)
        self.ctx = SessionContext(
            store=app.store, config=config, log=log, peer=ip, tls=listener.implicit_tls,
            starttls=not listener.implicit_tls, hostname=config.hostname, sleep=asyncio.sleep,
            flush=self.flush, throttle=shared_throttle(app), offload=asyncio.to_thread, spawn=self._spawn,
        )
        self.parser = CommandReader(max_literal=config.limits.imap_literal)
        self.session = new_session(self.ctx, self.parser)

    def _spawn(self, work: Coroutine[Any, Any, Any]) -> None:
        """The session's background work (the header cache's warm-up): a task of its own,
        held until done, that outlives the connection; a failure is logged, not raised."""
        task = asyncio.ensure_future(work)
        _background.add(task)
        task.add_done_callback(self._background_done)

    def _background_done(self, task: asyncio.Task[Any]) -> None:
        _background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self.ctx.log.warning("background work failed", error=repr(task.exception()))

    async def flush(self) -> None:
        data = self.session.take_output()
        if data:
            self.net.write(self.encode(data), data)
            await self.net.drain(always=False)  # the kernel took less than all: wait for room

    def answer_now(self, data: bytes) -> bool:
        """The shortcut (NetConnection.set_shortcut): a command the session can answer
        without an await (Session.answer_now), answered as it arrives while the connection
        waits for input, without waking its task. Not once COMPRESS is on (the bytes are
        deflated) nor in IDLE (the task reads by itself then)."""
        net = self.net
        if self._inflate is not None or not net.waiting() or not self.session.answer_now(data):
            return False
        net.received(data)
        net.write(self.session.take_output())
        net.answered()
        return True

    def encode(self, data: bytes) -> bytes:
        """Bytes for the wire: deflated (and flushed, so the client can read them at once)
        once COMPRESS is active."""
        if self._deflate is None:
            return data
        return bytes(self._deflate.compress(data) + self._deflate.flush(zlib.Z_SYNC_FLUSH))

    def _received(self, data: bytes) -> None:
        if self._inflate is not None:
            # Inflated a bounded piece at a time: a small deflate stream can stand for gigabytes,
            # and the parser's line and literal limits must see them arrive, not a buffer of all.
            data = self._inflate.decompress(data, INFLATE_STEP)
        self.net.received(data)
        self.parser.receive_data(data)

    async def run(self) -> None:
        session = self.session
        self.net.write(session.greeting())
        await self.net.drain()
        read_task: asyncio.Task[bytes] | None = None
        try:
            while True:
                await self._process()
                if session.closing:
                    break
                if self._inflate is not None and self._inflate.unconsumed_tail:
                    self._received(self._inflate.unconsumed_tail)   # the rest of the last read first
                    continue
                if session.mode is Mode.COMMAND and read_task is None:
                    # The common case, one command after another: read directly, with a
                    # timer for the idle limit instead of a task and asyncio.wait per command.
                    data = await self._read_with_timeout()
                    if data is None:
                        session.untagged("BYE Autologout; idle for too long")
                        await self.flush()
                        break
                    if not data:
                        break
                    self._received(data)
                    continue
                # IDLE (or a SASL exchange): wait for the client's bytes or, in IDLE, a
                # change to announce, on one future that either (or the idle limit) settles.
                if read_task is None:
                    read_task = asyncio.ensure_future(self.reader.read(READ_SIZE))
                if session.mode is Mode.IDLE and session.dirty:
                    await session.idle_update()
                    await self.flush()
                    continue
                if not await self._wait(read_task, idle=session.mode is Mode.IDLE):
                    session.untagged("BYE Autologout; idle for too long")
                    await self.flush()
                    break
                if read_task.done():
                    data = read_task.result()
                    read_task = None
                    self.net.took(data)
                    if not data:
                        break
                    self._received(data)
        finally:
            self.session.drop_spools()
            if read_task is not None:
                read_task.cancel()
            if self.subscription is not None:
                self.subscription.close()

    async def _wait(self, read_task: asyncio.Task[bytes], *, idle: bool) -> bool:
        """Until ``read_task`` is done or (with ``idle``) a change is noted; False when the
        idle limit passed first."""
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[bool] = loop.create_future()

        def settle(value: bool) -> None:
            if not waiter.done():
                waiter.set_result(value)

        def on_read(_: object) -> None:
            settle(True)

        read_task.add_done_callback(on_read)
        timer = loop.call_later(self.net.login_time_left(self._idle_limit()), settle, False)
        self._waiter = waiter if idle else None
        self.net.on_evict = lambda: settle(False)
        try:
            return await waiter
        finally:
            self._waiter = None
            self.net.on_evict = None
            timer.cancel()
            read_task.remove_done_callback(on_read)

    def _idle_limit(self) -> float:
        timeout = self.app.config.limits.imap_idle
        if self.session.account_id is None:
            # RFC 9051 5.4 sets the 30-minute floor for authenticated sessions only.
            timeout = min(timeout, PRE_AUTH_TIMEOUT)
        return timeout

    async def _read_with_timeout(self) -> bytes | None:
        """The next bytes from the client; None when the idle limit (or, before login,
        the login limit; inside a literal, the minimum rate) passed first."""
        try:
            return await self.net.read(self._idle_limit(), transfer=self.parser.in_literal)
        except ReadTimeout:
            return None

    async def _process(self) -> None:
        """Run every complete command (or IDLE/SASL line) buffered so far."""
        session = self.session
        while not session.closing:
            if session.mode is Mode.COMMAND:
                event = self.parser.next_event()
                if event is NEED_DATA:
                    break
                await session.handle_event(event)  # type: ignore[arg-type]
            else:
                line = self.parser.next_line()
                if line is NEED_DATA:
                    break
                await session.handle_line(line)  # type: ignore[arg-type]
            await self.flush()
            if session.starttls_pending:
                await self.writer.start_tls(self.app.tls)
                session.tls_started()
            if session.compress_pending:        # the OK went out plain; all after it is deflated
                session.compress_pending = False
                self._deflate = zlib.compressobj(COMPRESS_LEVEL, zlib.DEFLATED, -15)
                self._inflate = zlib.decompressobj(-15)
            if session.account_id is not None and self.subscription is None:
                self._subscribe(session.account_id)
                self.net.authenticated(getattr(session, "username", None))
        await self.flush()

    def _subscribe(self, account_id: int) -> None:
        self.subscription = self.app.store.subscribe(account_id)
        self.subscription.on_change(self._noted)

    def _noted(self, change: Any) -> None:
        self.session.note_change(change)
        waiter = self._waiter
        if waiter is not None and self.session.dirty and not waiter.done():
            waiter.set_result(True)


async def start_listener(ctx: Any, name: str, host: str, port: int) -> ImapListener:
    listener = ImapListener(ctx, name, implicit_tls=name == "imaps")
    await listener.start(host, port)
    return listener
