"""Password checks shared by the store backends: argon2id, and a cache of recent successes.

Every protocol logs in through ``Store.authenticate``. Mail clients log in often (several
connections each, a JMAP client on every request) while argon2id costs tens of
milliseconds of CPU by design, so a successful check is remembered, as Dovecot's auth
cache does. An entry is an HMAC (with a per-process random key) of the stored hash and
the password: a changed password changes the stored hash, so the old one stops working at
once, and a removed account has no row to check against. Failures are never cached, so
guessing stays as slow as argon2 makes it.
"""

from __future__ import annotations

import asyncio
import hmac
import os
import time
from collections import OrderedDict

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

hasher = PasswordHasher(time_cost=2, memory_cost=19456, parallelism=1)

CACHE_TTL = 3600.0
CACHE_SIZE = 10_000

_DUMMY_HASH = hasher.hash("timing-equaliser")


def verify_password(stored: str, password: str) -> bool:
    """argon2id check (slow: call off the event loop)."""
    try:
        return bool(hasher.verify(stored, password))
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def dummy_verify(password: str) -> None:
    """Spend the time of a real check, so that timing does not reveal which accounts exist."""
    verify_password(_DUMMY_HASH, password)


class PasswordChecker:
    """``await check(stored_hash, password)``, with recent successes remembered."""

    def __init__(self, ttl: float = CACHE_TTL, size: int = CACHE_SIZE) -> None:
        self.ttl = ttl
        self.size = size
        self._key = os.urandom(32)
        self._ok: OrderedDict[bytes, float] = OrderedDict()

    def _tag(self, stored: str, password: str) -> bytes:
        data = stored.encode() + b"\0" + password.encode("utf-8", "surrogatepass")
        return hmac.new(self._key, data, "sha256").digest()

    async def check(self, stored: str, password: str) -> bool:
        tag = self._tag(stored, password)
        now = time.monotonic()
        seen = self._ok.get(tag)
        if seen is not None and now - seen < self.ttl:
            return True
        if not await asyncio.to_thread(verify_password, stored, password):
            self._ok.pop(tag, None)
            return False
        self._ok[tag] = now
        self._ok.move_to_end(tag)
        while len(self._ok) > self.size:
            self._ok.popitem(last=False)
        return True

    async def missing(self, password: str) -> None:
        """No such account: as slow as a real check."""
        await asyncio.to_thread(dummy_verify, password)
