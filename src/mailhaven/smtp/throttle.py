"""Failed-login throttling, per client IP and per account (RFC 4954 15 asks for it).

Each failure within :attr:`window` seconds makes the next answer slower (0.25 s, 0.5 s,
1 s, ... capped at :attr:`max_delay`); at ``limit`` failures the IP or account is
blocked until its failures age out of the window: the session gets 421 and even a
correct password is refused, so guessing gains nothing. A success clears the account's
count, never the IP's (an attacker with one real account must not reset its budget).
The clock is injected.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable


class LoginThrottle:
    def __init__(self, limit: int, *, window: float = 900.0, max_delay: float = 4.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self.window = window
        self.max_delay = max_delay
        self.clock = clock
        self._failures: dict[str, deque[float]] = {}

    def _recent(self, key: str) -> int:
        times = self._failures.get(key)
        if not times:
            return 0
        cutoff = self.clock() - self.window
        while times and times[0] < cutoff:
            times.popleft()
        if not times:
            del self._failures[key]
            return 0
        return len(times)

    @staticmethod
    def _keys(ip: str, account: str | None) -> list[str]:
        keys = [f"ip:{ip}"]
        if account:
            keys.append(f"acct:{account.lower()}")
        return keys

    def blocked(self, ip: str, account: str | None = None) -> bool:
        return self.limit > 0 and any(self._recent(k) >= self.limit for k in self._keys(ip, account))

    def failed(self, ip: str, account: str | None) -> float:
        """Record a failure; returns how long to wait before answering it."""
        now = self.clock()
        worst = 0
        for key in self._keys(ip, account):
            self._failures.setdefault(key, deque()).append(now)
            worst = max(worst, self._recent(key))
        if len(self._failures) > 100_000:                 # bound memory under a wide attack
            self._failures.pop(next(iter(self._failures)))
        return min(self.max_delay, 0.25 * 2 ** (worst - 1))

    def succeeded(self, ip: str, account: str | None) -> None:
        if account:
            self._failures.pop(f"acct:{account.lower()}", None)
