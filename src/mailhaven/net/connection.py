"""One accepted connection as a protocol adapter sees it: the socket, and the deadlines.

Invariants:
- Every read passes through :meth:`NetConnection.read`, which enforces, whichever ends
  first: the idle limit the protocol gives (restarted by every read); the login limit,
  a total time from connecting to logging in that traffic does not extend (as Dovecot's
  login processes and Postfix's smtpd do); and during a transfer (SMTP DATA/BDAT, an
  IMAP literal) a minimum average rate after a grace period. A timeout raises
  :class:`ReadTimeout`, a ``TimeoutError`` the adapter answers as it answers idleness.
- One timer per connection, re-armed lazily: a read only moves the deadline, and the
  timer armed for an earlier deadline re-arms itself when it fires early (as Dovecot
  re-arms its idle timeout), instead of one timer armed and cancelled per read.
- Eviction (to make room for a newcomer, see ``admission``) ends the connection at its
  next read, or at once when it is waiting in one, so its goodbye is the protocol's own.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .admission import Admission, Slot

READ_SIZE = 64 * 1024


class ConnectionGone(BaseException):  # noqa: N818 - like CancelledError, not an error to handle
    """The client went away while we wrote: unwinds the whole session, past any
    ``except Exception`` in a protocol core (a lost client is not a failed command)."""


class StreamProtocol(asyncio.StreamReaderProtocol):
    """The stdlib stream protocol, with one addition: while nothing it received is unread,
    new bytes go first to :attr:`shortcut`, which may answer them at once, in this callback
    (no wake-up of the session's task, no await); bytes it declines are read as before."""

    unread = 0
    """Bytes received and not yet returned by :meth:`NetConnection.read` (counted from
    the first byte, taken off by that method: a protocol that also reads the stream
    another way leaves it high, and is then never offered a shortcut)."""
    shortcut: Callable[[bytes], bool] | None = None
    """Set by :meth:`NetConnection.set_shortcut`."""

    def data_received(self, data: bytes) -> None:
        if self.shortcut is not None and not self.unread and self.shortcut(data):
            return
        self.unread += len(data)
        super().data_received(data)


class ReadTimeout(TimeoutError):
    """No (or too little) input in time; ``reason`` is idle, login, rate or evicted."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, kw_only=True)
class Deadlines:
    login: float
    """Seconds from connecting to logging in (0: no limit)."""
    min_rate: int
    """Bytes per second a transfer must average after ``grace`` (0: no minimum)."""
    grace: float
    """Seconds a transfer may run before its rate is checked."""


class NetConnection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, ip: str,
                 admission: Admission, deadlines: Deadlines, cid: str = "",
                 tracer: Callable[[str | None], Any] | None = None) -> None:
        self.reader = reader
        self.writer = writer
        self.ip = ip
        self.cid = cid
        """The id that ties the connection's log lines (and trace file) together."""
        self.admission = admission
        self.deadlines = deadlines
        self.tracer = tracer
        self.trace: Any = tracer(None) if tracer is not None else None
        """A :class:`~mailhaven.net.trace.Trace` when this connection's traffic is recorded."""
        self.slot: Slot | None = None
        self.task: asyncio.Task[Any] | None = None
        self.on_evict: Callable[[], None] | None = None
        """Set by an adapter while it waits for input outside :meth:`read` (IMAP IDLE)."""
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._login_deadline: float | None = loop.time() + deadlines.login if deadlines.login else None
        self._transfer_start: float | None = None
        self._transfer_bytes = 0
        self._deadline = 0.0
        self._reason = "idle"
        self._timer: asyncio.TimerHandle | None = None
        self._reading: asyncio.Task[Any] | None = None
        self._expired = False
        self.evicted = False
        self._idle = 0.0
        protocol = writer.transport.get_protocol()
        self._stream = protocol if isinstance(protocol, StreamProtocol) else None

    # -- login state ---------------------------------------------------------------------
    @property
    def is_authenticated(self) -> bool:
        return self.slot is not None and self.slot.authenticated

    def authenticated(self, user: str | None = None) -> None:
        """The client logged in: the login limit is lifted and the unauthenticated cap freed."""
        if self._login_deadline is None and self.is_authenticated:
            return
        self._login_deadline = None
        if self.slot is not None:
            self.admission.authenticated(self.slot)
        if user is not None:
            if self.trace is None and self.tracer is not None:
                self.trace = self.tracer(user)       # [trace] accounts: from the login on
            if self.trace is not None:
                self.trace.user(user)

    def restart_login_clock(self) -> None:
        """SMTP on port 25 never logs in: each accepted message earns another login period."""
        if self._login_deadline is not None:
            self._login_deadline = self._loop.time() + self.deadlines.login

    def login_time_left(self, default: float) -> float:
        if self._login_deadline is None:
            return default
        return max(0.0, min(default, self._login_deadline - self._loop.time()))

    # -- writing -------------------------------------------------------------------------
    def write(self, data: bytes, plain: bytes | None = None) -> None:
        """Queue ``data`` (``plain``: what it says before compression, for the trace);
        :class:`ConnectionGone` when the connection is already closed (uvloop raises
        "the handler is closed" there; the stdlib loop drops the bytes)."""
        if self.writer.transport.is_closing():
            raise ConnectionGone
        if self.trace is not None:
            self.trace.sent(data if plain is None else plain)
        self.writer.write(data)

    def received(self, data: bytes) -> None:
        """The adapter notes what it hands its protocol core (for the trace)."""
        if self.trace is not None:
            self.trace.received(data)

    async def drain(self, *, always: bool = True) -> None:
        """Wait until the kernel took what was written (``always=False``: only when it
        did not take everything at once)."""
        if not always and not self.writer.transport.get_write_buffer_size():
            return
        try:
            await self.writer.drain()
        except ConnectionError:
            raise ConnectionGone from None

    # -- reading -------------------------------------------------------------------------
    def set_shortcut(self, shortcut: Callable[[bytes], bool] | None) -> bool:
        """Have ``shortcut`` offered the bytes that arrive while :meth:`waiting`: it answers
        them (writing with :meth:`write`, after :meth:`received`) and returns True, or
        returns False having consumed nothing, and they are read as before. False when the
        listener's protocol cannot do this (then nothing changes)."""
        if self._stream is None:
            return False
        self._stream.shortcut = shortcut
        return True

    def waiting(self) -> bool:
        """The session waits in :meth:`read` with nothing unread, no deadline passed, and
        the kernel took everything written so far: input may be answered on arrival."""
        transport = self.writer.transport
        return (self._reading is not None and not self._expired and not self.evicted
                and not transport.get_write_buffer_size() and not transport.is_closing())

    def answered(self) -> None:
        """A shortcut answered input: the idle limit restarts as for a read."""
        if self._reason == "idle":
            self._deadline = self._loop.time() + self._idle

    async def read(self, idle: float, *, transfer: bool = False, login_clock: bool = True) -> bytes:
        """The next bytes from the client (b"" at EOF); :class:`ReadTimeout` when a
        deadline passes first. ``transfer``: the bytes are message content (the rate rule
        applies); ``login_clock=False``: the login limit does not apply to this read."""
        if self.evicted:
            raise ReadTimeout("evicted")
        loop = self._loop
        now = loop.time()
        deadline, reason = now + idle, "idle"
        min_rate = self.deadlines.min_rate
        if not transfer:
            self._transfer_start = None
        elif self._transfer_start is None:
            self._transfer_start, self._transfer_bytes = now, 0
        if transfer and min_rate:
            assert self._transfer_start is not None
            behind = self._transfer_start + self.deadlines.grace + self._transfer_bytes / min_rate
            if behind < deadline:
                deadline, reason = behind, "rate"
        if login_clock and self._login_deadline is not None and self._login_deadline < deadline:
            deadline, reason = self._login_deadline, "login"
        if deadline <= now:
            raise ReadTimeout(reason)
        self._deadline, self._reason, self._idle = deadline, reason, idle
        if self._timer is not None and self._timer.when() > deadline:
            self._timer.cancel()                # the deadline moved earlier: a timer too late
            self._timer = None
        if self._timer is None:
            self._timer = loop.call_at(deadline, self._check)
        self._reading = asyncio.current_task()
        try:
            data = await self.reader.read(READ_SIZE)
        except asyncio.CancelledError:
            if self._expired:
                self._expired = False
                if self._reading is not None:
                    self._reading.uncancel()
                raise ReadTimeout("evicted" if self.evicted else self._reason) from None
            raise
        finally:
            self._reading = None
        if self._stream is not None:
            self._stream.unread -= len(data)
        if transfer:
            self._transfer_bytes += len(data)
        return data

    def took(self, data: bytes) -> None:
        """Bytes the adapter read from ``reader`` itself rather than through :meth:`read`
        (IMAP in IDLE): counted as read, so that input may be answered on arrival again."""
        if self._stream is not None:
            self._stream.unread -= len(data)

    def _check(self) -> None:
        self._timer = None
        if self._reading is None:
            return                              # busy on a command: its next read arms a timer
        if self._loop.time() < self._deadline:
            self._timer = self._loop.call_at(self._deadline, self._check)
            return
        self._expire()

    def _expire(self) -> None:
        if self._reading is not None and not self._expired:
            self._expired = True
            self._reading.cancel()

    def evict(self) -> None:
        """Make room for a newcomer: end at the next read, or now if waiting in one."""
        self.evicted = True
        if self._reading is not None:
            self._expire()
        elif self.on_evict is not None:
            self.on_evict()

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.slot is not None:
            self.admission.release(self.slot)
        if self.trace is not None:
            self.trace.close()
