"""The POP3 maildrop lock (RFC 1939 8, RFC 2449 8.1.1 ``[IN-USE]``) as a store lease.

Invariants:
- At most one POP3 session holds an account's maildrop across every process and every
  PostgreSQL node: the lock is the store's lease ``pop3:ACCOUNT_ID`` (``acquire_lease``).
- A held lease is renewed every ``ttl / 3`` seconds by one task per process, so a live
  session keeps it; a process that dies stops renewing and its leases expire after
  ``ttl`` (``[limits] pop3_lock_lease``), so a crash never locks a maildrop for good.
- Release happens on every way out of a session (QUIT, timeout, dropped connection,
  shutdown); a lease another holder took over after an expiry is left alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import secrets
import socket
import time
from collections.abc import Callable
from typing import Any

from ..logs import Log


class MaildropLeases:
    """Maildrop locks of one process, by account id."""

    def __init__(self, store: Any, *, ttl: float = 60.0, clock: Callable[[], float] = time.time,
                 log: Log | None = None) -> None:
        self.store = store
        self.ttl = ttl
        self.clock = clock
        self.log = log or Log("pop3")
        self._prefix = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self._serial = itertools.count(1)
        self._held: dict[int, str] = {}
        self._renewer: asyncio.Task[None] | None = None

    @staticmethod
    def _name(account_id: int) -> str:
        return f"pop3:{account_id}"

    async def acquire(self, account_id: int) -> bool:
        if account_id in self._held:
            return False                              # another session of this process has it
        holder = f"{self._prefix}:{next(self._serial)}"
        self._held[account_id] = holder               # claimed before the await: no twin in here
        try:
            ok = await self.store.acquire_lease(self._name(account_id), holder, ttl=self.ttl, now=self.clock())
        except BaseException:
            del self._held[account_id]
            raise
        if not ok:
            del self._held[account_id]
            return False
        if self._renewer is None or self._renewer.done():
            self._renewer = asyncio.get_running_loop().create_task(self._renew_loop())
        return True

    async def release(self, account_id: int) -> None:
        holder = self._held.pop(account_id, None)
        if holder is not None:
            try:
                await self.store.release_lease(self._name(account_id), holder)
            except Exception:  # noqa: BLE001 - it expires on its own
                self.log.warning("maildrop lease release failed", account=account_id)

    def held(self, account_id: int) -> bool:
        return account_id in self._held

    async def _renew_loop(self) -> None:
        while self._held:
            await asyncio.sleep(self.ttl / 3)
            for account_id, holder in list(self._held.items()):
                try:
                    ok = await self.store.acquire_lease(self._name(account_id), holder, ttl=self.ttl,
                                                        now=self.clock())
                except Exception:  # noqa: BLE001 - try again at the next round
                    self.log.warning("maildrop lease renewal failed", account=account_id)
                    continue
                if not ok and self._held.get(account_id) == holder:
                    self.log.warning("maildrop lease lost", account=account_id)

    async def close(self) -> None:
        if self._renewer is not None:
            self._renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renewer
        for account_id in list(self._held):
            await self.release(account_id)
