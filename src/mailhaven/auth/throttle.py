"""The login throttle every login path shares: SMTP AUTH, IMAP LOGIN/AUTHENTICATE, POP3
USER/PASS and AUTH, HTTP Basic, bearer tokens and the webmail form.

Failures are counted in the store (``login_failed``), so every process and every
PostgreSQL node sees one count, and it survives restarts. Two counts per failure:

- the source address (an IPv4 address, or the /64 of an IPv6 one, since one host
  usually holds a whole /64): ``[security] login_failures_per_address``;
- the source address with the login name: ``login_failures_per_account``.

Each failure is answered after a delay that doubles with the address's failures
(``login_delay``, capped at ``login_max_delay``), and the guesses from one address are
answered one at a time in a process (a gate per address), so parallel connections do
not multiply the rate. At a limit the address (or the address+name pair) is refused,
even with the right password, for ``login_block``. Nothing is ever counted against the
account alone: the owner logging in from elsewhere is never locked out. A success
forgets the pair's failures, never the address's (an attacker holding one real
account must not reset the budget for guessing others).

The admin sees and lifts blocks with ``mailhaven security blocked|unblock``.
"""

from __future__ import annotations

import asyncio
import ipaddress
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from ..config import SecurityConfig
from ..logs import Log
from ..store.api import Account, LoginRecord


class LoginBlocked(Exception):
    """Logins from this source are refused for now; the protocol answers and hangs up."""

    def __init__(self, retry_after: float) -> None:
        super().__init__(f"too many failed logins; retry in {retry_after:.0f} s")
        self.retry_after = retry_after


def source_address(peer: str) -> str:
    """The key a peer is counted under: the IPv4 address, or the IPv6 address's /64."""
    host = peer.split("%")[0].strip("[]")
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return peer or "unknown"
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((int(ip) >> 64 << 64, 64)))
    return str(ip)


def account_key(name: str | None) -> str:
    return (name or "").strip().lower()[:320]


@dataclass
class _Gate:
    lock: asyncio.Lock
    users: int = 0


class LoginThrottle:
    def __init__(self, store: Any, policy: SecurityConfig, *, clock: Callable[[], float] = time.time,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self.store = store
        self.policy = policy
        self.clock = clock
        self.sleep = sleep
        self.log = Log("auth")
        self._gates: dict[str, _Gate] = {}

    def delay(self, failures: int) -> float:
        """How long the answer to the ``failures``-th failure waits."""
        if failures <= 0:
            return 0.0
        return float(min(self.policy.login_max_delay, self.policy.login_delay * 2 ** min(failures - 1, 30)))

    async def _through_gate(self, address: str, hold: Callable[[], Awaitable[Any]]) -> Any:
        gate = self._gates.get(address)
        if gate is None:
            gate = self._gates[address] = _Gate(asyncio.Lock())
        gate.users += 1
        try:
            async with gate.lock:
                return await hold()
        finally:
            gate.users -= 1
            if not gate.users:
                self._gates.pop(address, None)

    async def _records(self, address: str, account: str | None) -> list[LoginRecord]:
        """The records of this source; raises LoginBlocked when one of them is blocked."""
        records = list(await self.store.login_records(address, account_key(account)))
        now = self.clock()
        wait = max((r.blocked_until - now for r in records), default=0.0)
        if wait > 0:
            raise LoginBlocked(wait)
        return records

    async def _count(self, address: str, account: str | None) -> bool:
        """Count a failure and wait out its delay (the caller holds the address's gate)."""
        policy = self.policy
        records = list(await self.store.login_failed(
            address, account_key(account), now=self.clock(), window=policy.login_window,
            address_limit=policy.login_failures_per_address,
            account_limit=policy.login_failures_per_account, block=policy.login_block))
        await self.sleep(self.delay(max(r.failures for r in records)))
        for r in records:
            if r.blocked_until > 0 and r.failures in (policy.login_failures_per_address,
                                                      policy.login_failures_per_account):
                self.log.warning("login blocked", address=address, user=r.account or "*", failures=r.failures,
                                 seconds=round(r.blocked_until - self.clock()))
        return any(r.blocked_until > 0 for r in records)

    async def check(self, peer: str, account: str | None = None) -> list[LoginRecord]:
        """Raise :class:`LoginBlocked` when ``peer`` (or ``peer`` with ``account``) is
        blocked; waits for an attempt from the same address in progress to finish."""
        address = source_address(peer)
        return list(await self._through_gate(address, lambda: self._records(address, account)))

    async def failed(self, peer: str, account: str | None = None) -> bool:
        """Count a failure and wait out its delay; True when it reached a limit (the
        protocol should answer the failure and close the connection)."""
        address = source_address(peer)
        return bool(await self._through_gate(address, lambda: self._count(address, account)))

    async def succeeded(self, peer: str, account: str | None, seen: list[LoginRecord] | None = None) -> None:
        """Forget the address+account failures (``seen``: what :meth:`check` returned;
        nothing to write when it held no record of the pair)."""
        if account and (seen is None or any(r.account for r in seen)):
            await self.store.login_succeeded(source_address(peer), account_key(account))

    async def attempt(self, peer: str, user: str, password: str) -> tuple[Account | None, bool]:
        """Check, verify the password, count a failure and wait out its delay, all while
        holding the address's gate, so that parallel guesses from one address are checked
        one at a time and never more than the limit. (account or None, now blocked);
        raises LoginBlocked, before the password is looked at, when already blocked."""
        address = source_address(peer)

        async def run() -> tuple[Account | None, bool]:
            seen = await self._records(address, user)
            account: Account | None = await self.store.authenticate(user, password) if user and password else None
            if account is None:
                return None, await self._count(address, user)
            await self.succeeded(peer, user, seen)
            return account, False

        result: tuple[Account | None, bool] = await self._through_gate(address, run)
        return result

    async def authenticate(self, peer: str, user: str, password: str) -> Account | None:
        """:meth:`attempt` for a protocol with no separate failure answer before a block:
        None (after the delay) for a wrong password, LoginBlocked when blocked."""
        account, blocked = await self.attempt(peer, user, password)
        if blocked:
            raise LoginBlocked(self.policy.login_block)
        return account


def shared_throttle(app: Any) -> LoginThrottle:
    """The process's one throttle (its gates serialise each address's guesses)."""
    throttle: LoginThrottle | None = app.extras.get("login_throttle")
    if throttle is None:
        throttle = app.extras["login_throttle"] = LoginThrottle(app.store, app.config.security)
    return throttle
