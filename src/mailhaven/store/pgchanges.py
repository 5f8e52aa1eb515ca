"""The change feed across nodes: PostgreSQL LISTEN/NOTIFY into the local ChangeHub.

A write transaction calls ``pg_notify`` before it commits; PostgreSQL delivers the
notification only if and when the transaction commits, so a node never hears of a change
it cannot yet read. The writing node publishes its own changes straight into its hub
after COMMIT (no round trip), and its listener drops notifications carrying its own
origin id, so every subscriber sees each change once.

One dedicated connection per node listens. When it is lost, the listener reconnects
with backoff and then sends every subscribed account a ``resync`` change: whatever was
committed while it was away must be re-read, exactly as after a hub overflow.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg

from .api import Change
from .changes import ChangeHub, decode_change

log = logging.getLogger("mailhaven.store.postgres")

RECONNECT_DELAYS = (0.1, 0.5, 1.0, 2.0, 5.0)


class ChangeListener:
    """LISTENs on ``channel`` and publishes other nodes' changes into ``hub``."""

    def __init__(self, connect: Callable[[], Awaitable[asyncpg.Connection]], channel: str,
                 origin: str, hub: ChangeHub) -> None:
        self._connect = connect
        self.channel = channel
        self.origin = origin
        self.hub = hub
        self._conn: asyncpg.Connection | None = None
        self._lost = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    async def start(self) -> None:
        await self._listen()
        self._task = asyncio.create_task(self._watch(), name="pg-change-listener")

    async def _listen(self) -> None:
        conn = await self._connect()
        self._lost.clear()
        conn.add_termination_listener(self._on_terminated)
        await conn.add_listener(self.channel, self._on_notify)
        self._conn = conn

    def _on_terminated(self, conn: Any) -> None:
        self._lost.set()

    def _on_notify(self, conn: Any, pid: int, channel: str, payload: str) -> None:
        decoded = decode_change(payload)
        if decoded is None:
            log.warning("ignoring malformed change notification %r", payload[:200])
            return
        origin, change = decoded
        if origin != self.origin:
            self.hub.publish(change)

    async def _watch(self) -> None:
        while not self._closing:
            await self._lost.wait()
            if self._closing:
                return
            self._conn = None
            for attempt in range(1_000_000):
                delay = RECONNECT_DELAYS[min(attempt, len(RECONNECT_DELAYS) - 1)]
                await asyncio.sleep(delay)
                if self._closing:
                    return
                try:
                    await self._listen()
                    break
                except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                    log.warning("change listener reconnect failed: %s", exc)
            # Anything committed while we were deaf must be re-read by every session.
            for account_id in self.hub.subscribed_accounts() or [0]:  # 0: all-account feeds only
                self.hub.publish(Change(account_id=account_id, mailbox_id=None, kind="resync", modseq=0))

    async def close(self) -> None:
        self._closing = True
        self._lost.set()
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        conn, self._conn = self._conn, None
        if conn is not None and not conn.is_closed():
            try:
                await conn.remove_listener(self.channel, self._on_notify)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                pass
            await conn.close(timeout=5)

    def kill_connection(self) -> None:
        """Drop the listening connection abruptly (tests of the reconnect path)."""
        if self._conn is not None:
            self._conn.terminate()
