"""The HTTP listener's share of the connection rules: uvicorn's h11 protocol with the
admission caps, a header timeout and a minimum body rate, and a cap on requests in work.

uvicorn alone bounds neither how long a request's headers may take nor how slowly its
body may arrive, and its ``limit_concurrency`` counts idle connections, so slow clients
got every other client a 503. Here:

- a connection is admitted by the same :class:`~mailhaven.net.admission.Admission` rules
  as the mail protocols (refused with a 503 and closed); it counts as logged in once a
  whole request has arrived (a push stream is never evicted for a newcomer);
- a request's line and headers must arrive within ``limits.http_header_timeout`` of the
  connection, or of the first byte of a keep-alive request (408 and close), traffic
  notwithstanding;
- a request body must average ``limits.min_transfer_rate`` after ``limits.transfer_grace``
  (408 and close);
- at most ``limits.http_concurrency`` requests are being worked on (until their response
  starts) at once; past that a request gets 503 at once.
"""

from __future__ import annotations

import asyncio
from typing import Any

import h11
from starlette.requests import ClientDisconnect
from uvicorn.protocols.http.h11_impl import H11Protocol

from .admission import Admission, Slot

REFUSED = (b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Length: 0\r\n"
           b"Retry-After: 10\r\n\r\n")
TIMED_OUT = b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
BUSY = b"Server busy, try again\n"


class GuardedH11Protocol(H11Protocol):
    """Subclassed per listener by :func:`guarded_protocol`, which sets the class fields."""

    admission: Admission
    header_timeout: float
    min_rate: int
    grace: float
    _deadline: float | None = None
    """When the request's headers (or body, at its rate) are due; None: nothing due."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        peer = transport.get_extra_info("peername")
        ip = str(peer[0]) if isinstance(peer, tuple) else "unix"
        self._slot: Slot | None = self.admission.admit(ip, self._evict)
        if self._slot is None:
            transport.write(REFUSED)
            transport.close()
            self.transport = transport
            return
        super().connection_made(transport)
        self._timer: asyncio.TimerHandle | None = None
        self._body_start: float | None = None
        self._body_bytes = 0
        self._arm_headers()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._slot is None:
            return
        self.admission.release(self._slot)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._slot is None:
            return
        super().data_received(data)
        state = self.conn.their_state
        if state is h11.IDLE:
            if self._deadline is None and self.conn.our_state is h11.IDLE:
                self._arm_headers()               # the first bytes of a keep-alive request
        elif state is h11.SEND_BODY and self.min_rate:
            if self._body_start is None:
                self._body_start, self._body_bytes = self.loop.time(), 0
            else:
                self._body_bytes += len(data)
            self._deadline = self._body_start + self.grace + self._body_bytes / self.min_rate
            self._rearm()
        else:
            self._body_start = None
            self._deadline = None                 # a whole request is in: the app's turn
            # A client that completes requests counts as "logged in" for the caps: it is
            # no longer evicted for a newcomer, nor counted against the unauthenticated cap.
            self.admission.authenticated(self._slot)

    def on_response_complete(self) -> None:
        self._deadline = None                     # keep-alive: uvicorn's timer until the next bytes
        super().on_response_complete()

    def _arm_headers(self) -> None:
        self._body_start = None
        self._deadline = self.loop.time() + self.header_timeout
        self._rearm()

    def _rearm(self) -> None:
        if self._timer is None and self._deadline is not None:
            self._timer = self.loop.call_at(self._deadline, self._check)

    def _check(self) -> None:
        self._timer = None
        if self._deadline is None or self.transport.is_closing():
            return
        if self.loop.time() < self._deadline:
            self._rearm()
            return
        self._time_out()

    def _time_out(self) -> None:
        if self.conn.their_state in (h11.IDLE, h11.SEND_BODY) and not (self.cycle and self.cycle.response_started):
            self.transport.write(TIMED_OUT)
        self.transport.close()

    def _evict(self) -> None:
        if not self.transport.is_closing():
            self._time_out()


def guarded_protocol(admission: Admission, limits: Any) -> type[GuardedH11Protocol]:
    """The protocol class for one HTTP listener, bound to its admission and limits."""
    return type("ListenerH11Protocol", (GuardedH11Protocol,), {
        "admission": admission, "header_timeout": limits.http_header_timeout,
        "min_rate": limits.min_transfer_rate, "grace": limits.transfer_grace,
    })


class ConcurrencyLimit:
    """ASGI middleware: at most ``limit`` requests in work (until their response starts);
    past that 503 at once. Long responses (push streams, downloads) count only until
    their headers go out. A client gone while its body was read ends its request quietly."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app = app
        self.limit = limit
        self.working = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.working >= self.limit:
            await send({"type": "http.response.start", "status": 503,
                        "headers": [(b"content-type", b"text/plain"), (b"retry-after", b"5")]})
            await send({"type": "http.response.body", "body": BUSY})
            return
        self.working += 1
        started = False

        async def counted_send(message: Any) -> None:
            nonlocal started
            if not started and message["type"] == "http.response.start":
                started = True
                self.working -= 1
            await send(message)

        try:
            await self.app(scope, receive, counted_send)
        except ClientDisconnect:
            pass                                  # gone while its body was read: nobody to answer
        finally:
            if not started:
                self.working -= 1
