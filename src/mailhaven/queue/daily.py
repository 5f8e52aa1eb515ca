"""Jobs run once a UTC day, after midnight, by one node: the aggregate reports we send,
DMARC's (filter/dmarcreports.py, RFC 7489 7.2) and TLS-RPT's (queue/tlsrpt.py, RFC 8460 4).

Nodes sharing a PostgreSQL store take turns through the store's lease named after the job
(``acquire_lease``): the holder runs the job; a node that finds the lease held leaves that
day to its holder. A job that fails is tried again at the next call on the same day.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

DAY = 86400
LEASE_TTL = 600.0
"""Seconds a node holds a job's lease: longer than a run takes, short enough after a crash."""


def utc_day(now: float) -> int:
    """Days since the epoch, UTC."""
    return int(now // DAY)


def seconds_until_after_midnight(now: float, delay: float = 300.0) -> float:
    """How long to sleep from ``now`` to ``delay`` seconds past the next UTC midnight."""
    return (now // DAY + 1) * DAY + delay - now


def lease_holder() -> str:
    """A name for this process among the nodes sharing the store (host, pid, random)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


@dataclass
class DailyJob:
    """Runs ``job(now)`` at most once per UTC day here, under the store lease ``name``."""

    store: Any
    name: str
    holder: str
    job: Callable[[float], Awaitable[object]]
    clock: Callable[[], float] = time.time
    ttl: float = LEASE_TTL
    done_day: int | None = None
    """The UTC day whose run is over: done here, or left to the node that held the lease."""

    async def run_if_due(self) -> bool:
        """Run the job unless today's run is over; True when it ran here."""
        now = self.clock()
        day = utc_day(now)
        if self.done_day == day:
            return False
        if not await self.store.acquire_lease(self.name, self.holder, ttl=self.ttl, now=now):
            self.done_day = day                 # another node runs it
            return False
        try:
            await self.job(now)
            self.done_day = day
        finally:
            await self.store.release_lease(self.name, self.holder)
        return True
