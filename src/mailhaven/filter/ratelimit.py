"""Sending rate limits: per client address and per sender domain on port 25, per account
(messages and recipients) on submission, so that a stolen password cannot spam the world.

Counts live in the store (``Store.rate_take``: one fixed window of ``[ratelimit] window``
per key), so every process and PostgreSQL node shares them and a restart forgets nothing.
A take past a limit counts nothing, logs one line and raises ``451 4.7.1``: the sender's
queue retries later (RFC 5321 4.2.5: the command may succeed when repeated).
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable
from typing import Any

from ..auth.throttle import source_address
from ..config import RateLimitConfig
from ..logs import Log
from ..smtp import codes
from ..store.api import StorageFull

EXEMPT_MEMO = 4096
"""Peer addresses whose exemption is remembered (emptied when full)."""


class RateLimiter:
    """One per process (``app.extras["rate_limiter"]``); stateless apart from the store."""

    def __init__(self, store: Any, policy: RateLimitConfig, *, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.policy = policy
        self.clock = clock
        self.log = Log("ratelimit")
        self.exempt = [ipaddress.ip_network(n, strict=False) for n in policy.exempt]
        self._exempt_memo: dict[str, bool] = {}

    def is_exempt(self, peer_ip: str) -> bool:
        """Whether ``peer_ip`` is in ``exempt`` (remembered per address: a client sends
        many messages, and parsing its address was 1% of each one's CPU)."""
        known = self._exempt_memo.get(peer_ip)
        if known is None:
            if len(self._exempt_memo) >= EXEMPT_MEMO:
                self._exempt_memo.clear()
            known = self._exempt_memo[peer_ip] = self._is_exempt(peer_ip)
        return known

    def _is_exempt(self, peer_ip: str) -> bool:
        try:
            ip = ipaddress.ip_address(peer_ip.split("%")[0].strip("[]"))
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip in n for n in self.exempt)

    async def _take(self, key: str, limit: int, amount: int = 1, **fields: Any) -> None:
        if not limit:
            return
        try:
            count = await self.store.rate_take(key, amount, now=self.clock(), window=self.policy.window, limit=limit)
        except StorageFull:
            # A counter that cannot be written is no reason to refuse: with a full disk the
            # message itself is refused with 452 4.3.1 when its data arrives.
            self.log.warning("rate limit not counted: storage full", key=key)
            return
        if count is None:
            self.log.warning("rate limit reached", key=key, limit=limit, window=self.policy.window, **fields)
            raise codes.RATE_LIMITED                                 # RFC 3463 X.7.1

    async def inbound_message(self, peer_ip: str, sender: str) -> None:
        """A MAIL FROM on port 25 from an unauthenticated peer outside ``exempt``."""
        p = self.policy
        if self.is_exempt(peer_ip):
            return
        await self._take(f"ip:{source_address(peer_ip)}", p.messages_per_address, sender=sender or "<>")
        domain = sender.rpartition("@")[2].lower() if "@" in sender else ""
        if domain:
            await self._take(f"from:{domain}", p.messages_per_sender_domain, ip=peer_ip)

    async def submitted_message(self, account_id: int, user: str) -> None:
        """A MAIL FROM of an authenticated session."""
        await self._take(f"acct-msg:{account_id}", self.policy.account_messages, user=user)

    async def submitted_recipient(self, account_id: int, user: str) -> None:
        """A RCPT TO of an authenticated session."""
        await self._take(f"acct-rcpt:{account_id}", self.policy.account_recipients, user=user)


    async def submitted(self, account_id: int, user: str, recipients: int) -> None:
        """A message handed over whole (JMAP EmailSubmission) with its remote recipients."""
        await self.submitted_message(account_id, user)
        if recipients:
            await self._take(f"acct-rcpt:{account_id}", self.policy.account_recipients, recipients, user=user)


def shared_limiter(app: Any) -> RateLimiter:
    limiter: RateLimiter | None = app.extras.get("rate_limiter")
    if limiter is None:
        limiter = app.extras["rate_limiter"] = RateLimiter(app.store, app.config.ratelimit)
    return limiter
