"""The asyncio adapter around the sans-IO ManageSieve session (RFC 5804): the shared
listener base (net/listener.py: admission caps, the login deadline, slow clients) and the
line protocols' read-answer loop (net/lineloop.py: pipelining, STARTTLS, the idle timer).

Invariants:
- Bytes the client sent after STARTTLS are discarded (RFC 5804 2.2).
- The idle timer (``limits.managesieve_idle``) restarts on every read; on expiry the
  server says ``BYE`` and closes. Script literals are bounded by ``[sieve] max_script_size``
  and read at the transfer rate the other protocols' uploads must keep.
"""

from __future__ import annotations

from typing import Any

from ..auth.throttle import LoginThrottle, shared_throttle
from ..net.connection import NetConnection
from ..net.lineloop import LineLoop
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


class Connection(LineLoop):
    need_data = P.NEED_DATA
    sasl_state = P.State.SASL

    def __init__(self, listener: ManageSieveListener, net: NetConnection) -> None:
        super().__init__(listener.app, net)
        app = listener.app
        self.idle = app.config.limits.managesieve_idle
        self.session = Session(SessionContext(
            store=app.store, config=app.config, log=listener.log.bind(cid=net.cid, peer=net.ip),
            throttle=listener.throttle, peer=net.ip, tls=listener.implicit_tls,
            starttls_available=not listener.implicit_tls))

    def uploading(self) -> bool:
        return bool(self.session.protocol.wants_literal)

    async def end_of_input(self) -> None:
        await self.session.close()


async def start_listener(ctx: Any, name: str, host: str, port: int) -> ManageSieveListener:
    listener = ManageSieveListener(ctx, name, implicit_tls=False)
    await listener.start(host, port)
    return listener
