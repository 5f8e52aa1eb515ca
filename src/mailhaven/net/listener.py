"""The listener base: accept, admit, upgrade implicit TLS, run one task per connection.

A protocol subclasses :class:`Listener` with its name, its refusal line and
:meth:`Listener.serve`, the coroutine that runs one session over a
:class:`~mailhaven.net.connection.NetConnection`.

Invariants:
- Admission (caps per address, network and listener, ``admission.py``) is decided before
  a byte is read or a TLS handshake begins; the slot is released in ``finally`` whatever
  happened, so no path leaks a slot.
- Implicit TLS is negotiated by the event loop before a connection is admitted, within
  ``HANDSHAKE_TIMEOUT`` or the login limit if shorter (after accepting plain, bytes of the ClientHello could already sit
  in the stream's buffer, out of the TLS layer's reach).
- Connection errors end one connection quietly; any other exception is logged with its
  traceback and ends only that connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import zlib
from typing import Any

from ..logs import Log, connection_id
from .admission import Admission, Caps
from .connection import READ_SIZE, ConnectionGone, Deadlines, NetConnection
from .trace import open_trace

QUIET_ERRORS = (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError, TimeoutError, zlib.error)
"""How a connection ends when the client goes away or misbehaves: nothing to log."""
HANDSHAKE_TIMEOUT = 30.0


def caps_from(limits: Any) -> Caps:
    return Caps(total=limits.connections, per_address=limits.connections_per_ip,
                unauthenticated_per_address=limits.unauthenticated_per_ip,
                per_network=limits.connections_per_network)


def deadlines_from(limits: Any) -> Deadlines:
    return Deadlines(login=limits.login_timeout, min_rate=limits.min_transfer_rate,
                     grace=limits.transfer_grace)


class Listener:
    """What app.py keeps for one listener: ``close()`` stops accepting and ends sessions."""

    protocol = "net"
    """The logger's name."""
    cid_prefix = "n"
    """Connection ids of this protocol start with it (``i000001``)."""
    refusal = b""
    """The line sent to a connection refused by the caps."""
    shutdown_refusal = b""
    """The line sent to a connection arriving while the listener closes."""
    stream_protocol: type[asyncio.StreamReaderProtocol] = asyncio.StreamReaderProtocol
    """:class:`~mailhaven.net.connection.StreamProtocol` for a protocol that answers some
    input as it arrives (``NetConnection.set_shortcut``)."""

    def __init__(self, app: Any, name: str, implicit_tls: bool) -> None:
        self.app = app
        self.name = name
        self.implicit_tls = implicit_tls
        self.server: asyncio.AbstractServer | None = None
        self.extra_servers: list[asyncio.AbstractServer] = []
        self.connections: dict[asyncio.Task[None], NetConnection] = {}
        limits = app.config.limits
        self.admission = Admission(caps_from(limits))
        self.deadlines = deadlines_from(limits)
        self.log = Log(self.protocol).bind(listener=name)
        self.closing = False

    @property
    def sockets(self) -> Any:
        server: Any = self.server
        return server.sockets if server is not None else ()

    async def start(self, host: str, port: int) -> None:
        loop = asyncio.get_running_loop()
        protocol = self.stream_protocol
        # asyncio.start_server, with the listener's stream protocol.
        self.server = await loop.create_server(
            lambda: protocol(asyncio.StreamReader(limit=READ_SIZE, loop=loop), self._accept, loop=loop),
            host, port, ssl=self.app.tls if self.implicit_tls else None,
            backlog=1024, ssl_handshake_timeout=self._handshake_timeout() if self.implicit_tls else None)

    def _handshake_timeout(self) -> float:
        """The login limit bounds an implicit TLS handshake too (before admission)."""
        login = self.deadlines.login
        return min(HANDSHAKE_TIMEOUT, login) if login else HANDSHAKE_TIMEOUT

    async def serve_accepted(self, sock: socket.socket) -> None:
        """Serve one connection accepted elsewhere (an SMTP worker's balanced accept
        loop, smtp/balance.py) as if this listener had accepted it, until it ends; plain
        TCP only. The stream protocol gets a connected callback, as under ``start_server``:
        that is what makes ``StreamWriter.start_tls`` take the server's side (STARTTLS)."""
        loop = asyncio.get_running_loop()
        ended = loop.create_future()

        async def session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                await self._accept(reader, writer)
            finally:
                if not ended.done():
                    ended.set_result(None)

        reader = asyncio.StreamReader(limit=READ_SIZE, loop=loop)
        try:
            await loop.connect_accepted_socket(
                lambda: self.stream_protocol(reader, session, loop=loop), sock=sock)
        except OSError:
            sock.close()
            return
        await ended

    def close(self) -> None:
        self.closing = True
        for server in (self.server, *self.extra_servers):
            if server is not None:
                server.close()
        self.stop_connections()

    def stop_connections(self) -> None:
        """Shutdown, first step: by default nothing (``wait_closed`` cancels sessions)."""

    async def wait_closed(self) -> None:
        await self.end_connections()
        if self.server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.server.wait_closed(), timeout=2)

    async def end_connections(self) -> None:
        """Shutdown, second step: cancel every session and give them 5 s to say goodbye."""
        tasks = list(self.connections)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=5)

    async def serve(self, conn: NetConnection) -> None:
        """Run one session; the protocol's own."""
        raise NotImplementedError

    async def _refuse(self, writer: asyncio.StreamWriter, line: bytes) -> None:
        with contextlib.suppress(Exception):
            writer.write(line)
            await asyncio.wait_for(writer.drain(), timeout=5)
        with contextlib.suppress(Exception):
            writer.close()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        peer = writer.get_extra_info("peername")
        ip = str(peer[0]) if isinstance(peer, tuple) else "unix"
        cid = connection_id(self.cid_prefix)
        config = self.app.config

        def tracer(user: str | None) -> Any:
            return open_trace(config, self.protocol, self.name, cid, user)

        conn = NetConnection(reader, writer, ip, self.admission, self.deadlines, cid, None)
        slot = None if self.closing else self.admission.admit(ip, conn.evict)
        if slot is None:
            await self._refuse(writer, self.shutdown_refusal if self.closing else self.refusal)
            return
        conn.slot, conn.task = slot, task
        self.connections[task] = conn
        try:
            if config.trace.listeners or config.trace.accounts:
                conn.tracer = tracer
                conn.trace = tracer(None)
            await self.serve(conn)
        except QUIET_ERRORS:
            pass
        except (asyncio.CancelledError, ConnectionGone):
            pass
        except RuntimeError:
            # uvloop raises "the handler is closed" on a write after the peer reset the
            # connection (the stdlib loop ignores such writes): the client went away.
            if not writer.transport.is_closing():
                self.log.error("connection failed", exc=True, peer=ip)
        except Exception:  # noqa: BLE001 - one connection must never take the listener down
            self.log.error("connection failed", exc=True, peer=ip)
        finally:
            conn.close()
            self.connections.pop(task, None)
            with contextlib.suppress(Exception):
                writer.close()
