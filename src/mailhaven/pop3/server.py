"""The asyncio adapter around the sans-IO POP3 session: the shared listener base
(net/listener.py) and the line protocols' read-answer loop (net/lineloop.py: pipelined
answers written together, RFC 2449 6.6; STLS, RFC 2595 4; the idle timer).

Invariants:
- The idle timer (``limits.pop3_idle``, 10 minutes by default, the RFC 1939 3 minimum)
  restarts on every read; on expiry the session closes without UPDATE.
- On shutdown sessions are closed (their maildrop locks released, no UPDATE); nothing is
  sent to the client (RFC 1939 has no unsolicited responses).
"""

from __future__ import annotations

import asyncio
from typing import Any

from ..auth.throttle import LoginThrottle, shared_throttle
from ..net.connection import NetConnection, StreamProtocol
from ..net.lineloop import LineLoop
from ..net.listener import Listener
from . import protocol as P
from .lease import MaildropLeases
from .session import Session, SessionContext
from .stream import STREAM_MIN, file_wire_size
from .stream import wire_size as stream_wire_size

SIZE_CACHE_LIMIT = 500_000
"""Blob ids whose wire size is remembered (blobs never change, so entries never go stale)."""


class WireSizes:
    """Exact RETR sizes by blob id, measured once per process in a worker thread."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.cache: dict[str, int] = {}

    async def __call__(self, messages: list[Any]) -> list[int]:
        missing = list({m.blob_id for m in messages if m.blob_id not in self.cache})
        if missing:
            if len(self.cache) + len(missing) > SIZE_CACHE_LIMIT:
                self.cache.clear()
            # Files are measured a chunk at a time (a large message is never read whole);
            # the rest (inline blobs, PostgreSQL) in one batched read.
            paths = {b: self.store.blob_path(b) for b in missing}
            files = [(b, p) for b, p in paths.items() if p is not None]
            others = [b for b, p in paths.items() if p is None]
            measured: dict[str, int] = {}
            if files:
                measured.update(await asyncio.to_thread(lambda: {b: file_wire_size(p) for b, p in files}))
            large = [m.blob_id for m in messages if m.blob_id in others and m.size > STREAM_MIN]
            for b in dict.fromkeys(large):                        # PostgreSQL rows, a piece at a time
                measured[b] = await stream_wire_size(self.store, b)
            others = [b for b in others if b not in measured]
            if others:
                many = getattr(self.store, "read_blobs", None)    # batched (inline blobs, PostgreSQL)
                if many is not None:
                    measured.update(zip(others, [P.wire_size(d) for d in await many(others)], strict=True))
                else:
                    for b in others:
                        measured[b] = P.wire_size(await self.store.read_blob(b))
            sizes = [measured[b] for b in missing]
            self.cache.update(zip(missing, sizes, strict=True))
        return [self.cache[m.blob_id] for m in messages]


class Pop3Listener(Listener):
    """What app.py keeps for one listener: close() stops accepting and ends sessions."""

    protocol = "pop3"
    cid_prefix = "p"
    refusal = b"-ERR [SYS/TEMP] Too many connections\r\n"
    shutdown_refusal = b"-ERR [SYS/TEMP] Server shutting down\r\n"
    stream_protocol = StreamProtocol                  # RETRs answered as they arrive (Connection.answer_now)

    def __init__(self, app: Any, name: str, implicit_tls: bool) -> None:
        super().__init__(app, name, implicit_tls)
        # Shared by pop3 and pop3s (and every process and node, through the store).
        self.locks: MaildropLeases = app.extras.setdefault(
            "pop3_maildrop_leases", MaildropLeases(app.store, ttl=app.config.limits.pop3_lock_lease))
        self.throttle: LoginThrottle = shared_throttle(app)
        self.wire_sizes: WireSizes = app.extras.setdefault("pop3_wire_sizes", WireSizes(app.store))

    async def serve(self, net: NetConnection) -> None:
        connection = Connection(self, net)
        net.set_shortcut(connection.answer_now)
        try:
            await connection.run()
        finally:
            net.set_shortcut(None)
            await connection.session.close()


class Connection(LineLoop):
    session: Session
    need_data = P.NEED_DATA
    sasl_state = P.State.SASL

    def __init__(self, listener: Pop3Listener, net: NetConnection) -> None:
        super().__init__(listener.app, net)
        app = listener.app
        ip = net.ip
        self.idle = app.config.limits.pop3_idle
        self.ctx = SessionContext(
            store=app.store, config=app.config, log=listener.log.bind(cid=net.cid, peer=ip),
            locks=listener.locks, throttle=listener.throttle, sleep=asyncio.sleep, peer=ip,
            tls=listener.implicit_tls, stls_available=not listener.implicit_tls,
            wire_sizes=listener.wire_sizes, flush=self.flush,
        )
        self.session = Session(self.ctx)

    def answer_now(self, data: bytes) -> bool:
        """The shortcut (NetConnection.set_shortcut): a RETR of a message already read
        ahead, answered as it arrives while the loop waits for input (Session.answer_now)."""
        net = self.net
        if not net.waiting() or not self.session.answer_now(data):
            return False
        net.received(data)
        net.write(self.session.take_output())
        net.answered()
        return True


async def start_listener(ctx: Any, name: str, host: str, port: int) -> Pop3Listener:
    listener = Pop3Listener(ctx, name, implicit_tls=name == "pop3s")
    await listener.start(host, port)
    return listener
