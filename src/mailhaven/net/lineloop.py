"""The read-answer loop shared by the line protocols' asyncio adapters (POP3, ManageSieve)
around their sans-IO sessions.

Invariants:
- One task per connection owns the socket and the session; commands are answered strictly
  in order, and the answers to a pipelined batch are written together.
- A SASL challenge is written before the client's answer is waited for.
- STARTTLS/STLS upgrades with the public ``StreamWriter.start_tls``; bytes the client sent
  after the command are discarded, never read as commands (RFC 2595 4: no plaintext
  injection).
- The idle timer restarts on every read; on expiry the session says why and closes.
"""

from __future__ import annotations

from typing import Any, Protocol

from .connection import NetConnection, ReadTimeout


class LineSession(Protocol):
    """What :class:`LineLoop` needs of a session (``pop3.session``, ``managesieve.session``)."""

    protocol: Any
    closing: bool
    starttls_pending: bool
    account: Any

    def greeting(self) -> bytes: ...
    def take_output(self) -> bytes: ...
    async def handle(self, event: Any) -> None: ...
    async def idle_timeout(self) -> None: ...
    async def close(self) -> None: ...
    def tls_started(self) -> None: ...


class LineLoop:
    """One connection: read, feed the session's parser, answer every complete command,
    write the answers at once. Subclasses set :attr:`session`, :attr:`idle`,
    :attr:`need_data` (the parser's nothing-complete-yet event) and :attr:`sasl_state`."""

    session: LineSession
    idle: float
    need_data: Any
    sasl_state: Any

    def __init__(self, app: Any, net: NetConnection) -> None:
        self.app = app
        self.net = net

    def uploading(self) -> bool:
        """A literal is still arriving: the minimum transfer rate applies to the read."""
        return False

    async def end_of_input(self) -> None:
        """The client closed its side."""

    async def flush(self) -> None:
        data = self.session.take_output()
        if data:
            self.net.write(data)
            await self.net.drain(always=False)   # only when the kernel kept bytes back, as IMAP

    async def run(self) -> None:
        session = self.session
        self.net.write(session.greeting())
        await self.net.drain()
        while not session.closing:
            try:
                data = await self.net.read(self.idle, transfer=self.uploading())
            except ReadTimeout:
                await session.idle_timeout()
                await self.flush()
                return
            if not data:
                await self.end_of_input()
                return
            self.net.received(data)
            session.protocol.receive_data(data)
            await self._process()

    async def _process(self) -> None:
        """Answer every complete command buffered so far, then write the answers at once."""
        session = self.session
        while not session.closing and not session.starttls_pending:
            event = session.protocol.next_event()
            if event is self.need_data:
                break
            await session.handle(event)
            if session.protocol.state is self.sasl_state:
                await self.flush()            # a challenge must reach the client before its answer
        await self.flush()
        if session.account is not None:
            self.net.authenticated(session.account.address)
        if session.starttls_pending and not session.closing:
            session.protocol.discard_buffer()
            await self.net.writer.start_tls(self.app.tls)
            session.tls_started()
            await self.flush()
