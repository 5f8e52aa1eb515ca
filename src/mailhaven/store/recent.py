"""What a process knows of \\Recent claims (RFC 3501 2.3.2), shared by the backends."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable


class RecentFloors:
    """Per mailbox, a UID below which every message is known to be claimed as \\Recent.

    A mailbox's first unclaimed UID only moves forward, so a floor once seen stays true
    in every process: a claim up to it needs no query."""

    def __init__(self, limit: int = 100_000) -> None:
        self._floor: dict[int, int] = {}
        self._limit = limit
        self._running: dict[int, asyncio.Future[None]] = {}

    async def claim_once(self, mailbox_id: int, upto: int, claim: Callable[[], Awaitable[int]]) -> int:
        """``claim()`` (which notes the floor it leaves), one at a time per mailbox in this
        process. A new message wakes every IDLE session on its mailbox and each tries to
        claim it: the first asks the store, the others wait for that and then find the
        floor covering them, instead of thousands of queries for one answer."""
        while (known := self.covering(mailbox_id, upto)) is None:
            running = self._running.get(mailbox_id)
            if running is None:
                break
            with contextlib.suppress(Exception):
                await asyncio.shield(running)
        else:
            return known            # taken already (it never moves back): no query
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._running[mailbox_id] = done
        try:
            return await claim()
        finally:
            del self._running[mailbox_id]
            done.set_result(None)

    def covering(self, mailbox_id: int, upto: int) -> int | None:
        """The floor when it reaches ``upto`` (nothing left to claim below it), else None."""
        floor = self._floor.get(mailbox_id, 0)
        return floor if floor >= upto else None

    def note(self, mailbox_id: int, floor: int) -> None:
        if len(self._floor) > self._limit:
            self._floor.clear()
        if floor > self._floor.get(mailbox_id, 0):
            self._floor[mailbox_id] = floor

    def forget(self, mailbox_id: int) -> None:
        self._floor.pop(mailbox_id, None)
