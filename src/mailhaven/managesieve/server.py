"""The asyncio adapter: the socket, STARTTLS and the idle timer around the sans-IO
ManageSieve session (RFC 5804), on the shared listener base (net/listener.py: admission
caps, the login deadline, slow clients).

Invariants:
- One task per connection owns the socket and the session; commands are answered strictly
  in order, and the answers to a pipelined batch are written together.
- STARTTLS upgrades with the public ``StreamWriter.start_tls``; bytes the client sent after
  STARTTLS are discarded, never read as commands (RFC 5804 2.2, no plaintext injection).
- The idle timer (``limits.managesieve_idle``) restarts on every read; on expiry the
  server says ``BYE`` and closes. Script literals are bounded by ``[sieve] max_script_size``
  and read at the transfer rate the other protocols' uploads must keep.
"""

from __future__ import annotations

from typing import Any

from ..auth.throttle import LoginThrottle, shared_throttle
from ..net.connection import NetConnection, ReadTimeout
from ..net.listener import Listener
from . import protocol as P
from . import replies as R
from .session import Session, SessionContext


class ManageSieveListener(Listener):
    protocol = "managesieve"
    cid_prefix = "m"
    refusal = R.TOO_MANY_CONNECTIONS.to_bytes()
    shutdown_refusal = R.SHUTTING_DOWN.to_bytes()

    def __init__(self, app: Any, name: str, implicit_tls: bool) -> None:
        super().__init__(app, name, implicit_tls)
        self.throttle: LoginThrottle = shared_throttle(app)

    async def serve(self, net: NetConnection) -> None:
        await Connection(self, net).run()


class Connection:
    def __init__(self, listener: ManageSieveListener, net: NetConnection) -> None:
        app = listener.app
        self.app = app
        self.net = net
        self.idle = app.config.limits.managesieve_idle
        self.session = Session(SessionContext(
            store=app.store, config=app.config, log=listener.log.bind(cid=net.cid, peer=net.ip),
            throttle=listener.throttle, peer=net.ip, tls=listener.implicit_tls,
            starttls_available=not listener.implicit_tls))

    async def flush(self) -> None:
        data = self.session.take_output()
        if data:
            self.net.write(data)
            await self.net.drain()

    async def run(self) -> None:
        session = self.session
        self.net.write(session.greeting())
        await self.net.drain()
        while not session.closing:
            try:
                # A literal still arriving is an upload: the minimum transfer rate applies.
                data = await self.net.read(self.idle, transfer=session.protocol.wants_literal)
            except ReadTimeout:
                await session.idle_timeout()
                await self.flush()
                return
            if not data:
                await session.close()
                return
            self.net.received(data)
            session.protocol.receive_data(data)
            await self._process()

    async def _process(self) -> None:
        """Answer every complete command buffered so far, then write the answers at once."""
        session = self.session
        while not session.closing and not session.starttls_pending:
            event = session.protocol.next_event()
            if event is P.NEED_DATA:
                break
            await session.handle(event)  # type: ignore[arg-type]
            if session.protocol.state is P.State.SASL:
                await self.flush()            # a challenge must reach the client before its answer
        await self.flush()
        if session.account is not None:
            self.net.authenticated(session.account.address)
        if session.starttls_pending and not session.closing:
            session.protocol.discard_buffer()
            await self.net.writer.start_tls(self.app.tls)
            session.tls_started()
            await self.flush()


async def start_listener(ctx: Any, name: str, host: str, port: int) -> ManageSieveListener:
    listener = ManageSieveListener(ctx, name, implicit_tls=False)
    await listener.start(host, port)
    return listener
