"""Who is calling: webmail cookie sessions, HTTP Basic (RFC 7617) and bearer tokens (RFC 6750).

- Cookie sessions (the webmail) live in memory, keyed by a random 256-bit value, with an
  idle lifetime; each has its own CSRF token. A restart logs webmail users out.
- HTTP Basic takes the account's password. Like the other protocols it is refused over
  plaintext HTTP unless the peer is trusted (``[security] loopback_is_secure``), and
  failures are throttled per client address and per account.
- Bearer tokens are app passwords for JMAP clients: ``mailhaven token create ADDRESS``
  prints one once; the store keeps only its SHA-256. They are refused over plaintext from
  untrusted peers too.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import secrets
import sqlite3
import time
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request

from .webmail import COOKIE, LoginThrottle, SessionInfo

SESSION_IDLE = 12 * 3600.0
SESSION_MAX = 1000 * 1000

TOKEN_SCHEMA_SQLITE = """
CREATE TABLE IF NOT EXISTS web_tokens (
    hash TEXT PRIMARY KEY,
    account_id INTEGER NOT NULL,
    label TEXT NOT NULL,
    created REAL NOT NULL
);
"""
TOKEN_SCHEMA_PG = """
CREATE TABLE IF NOT EXISTS web_tokens (
    hash TEXT PRIMARY KEY,
    account_id BIGINT NOT NULL,
    label TEXT NOT NULL,
    created DOUBLE PRECISION NOT NULL
);
"""


@dataclass
class _Session:
    account_id: int
    csrf_token: str
    last_used: float


@dataclass
class CookieSessions:
    """The webmail's sessions (``webmail.WebSessions``)."""

    store: Any
    clock: Any = time.monotonic
    _sessions: dict[str, _Session] = field(default_factory=dict)

    async def create(self, account: Any) -> str:
        if len(self._sessions) >= SESSION_MAX:
            self._expire()
        cookie = secrets.token_urlsafe(32)
        self._sessions[_digest(cookie)] = _Session(account_id=account.id, csrf_token=secrets.token_urlsafe(32),
                                                   last_used=self.clock())
        return cookie

    async def lookup(self, cookie: str) -> SessionInfo | None:
        session = self._sessions.get(_digest(cookie))
        if session is None:
            return None
        now = self.clock()
        if now - session.last_used > SESSION_IDLE:
            del self._sessions[_digest(cookie)]
            return None
        session.last_used = now
        try:
            account = await self.store.get_account_by_id(session.account_id)
        except Exception:  # noqa: BLE001 - the account was removed
            return None
        return SessionInfo(account=account, csrf_token=session.csrf_token)

    async def destroy(self, cookie: str) -> None:
        self._sessions.pop(_digest(cookie), None)

    def _expire(self) -> None:
        now = self.clock()
        for key in [k for k, s in self._sessions.items() if now - s.last_used > SESSION_IDLE]:
            del self._sessions[key]


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def webmail_sessions(ctx: Any) -> CookieSessions:
    sessions: CookieSessions = ctx.extras.setdefault("web_sessions", CookieSessions(ctx.store))
    return sessions


def login_throttle(ctx: Any) -> LoginThrottle:
    throttle: LoginThrottle = ctx.extras.setdefault("web_login_throttle", LoginThrottle())
    return throttle


def peer_is_trusted(ctx: Any, request: Request) -> bool:
    """TLS, or a peer the configuration trusts with plaintext passwords (loopback)."""
    if request.url.scheme == "https":
        return True
    host = request.client.host if request.client else ""
    is_trusted = getattr(ctx.config, "is_trusted", None)
    if is_trusted is not None:
        return bool(is_trusted(host))
    try:
        return ctx.config.security.loopback_is_secure and ipaddress.ip_address(host).is_loopback  # type: ignore[no-any-return]
    except ValueError:
        return False


# -- tokens ----------------------------------------------------------------------------
def _is_sqlite(store: Any) -> bool:
    from ..store.sqlite import SQLiteStore

    return isinstance(store, SQLiteStore)


async def ensure_token_table(store: Any) -> None:
    if _is_sqlite(store):
        store.db.ensure_schema(TOKEN_SCHEMA_SQLITE)
    else:
        await store.ensure_schema(TOKEN_SCHEMA_PG)


async def create_token(store: Any, account_id: int, label: str) -> str:
    await ensure_token_table(store)
    token = "mh_" + secrets.token_urlsafe(32)
    row = (_digest(token), account_id, label, time.time())
    if _is_sqlite(store):
        await store.db.write(lambda conn: conn.execute("INSERT INTO web_tokens VALUES (?,?,?,?)", row))
    else:
        async def insert(tx: Any) -> None:
            await tx.conn.execute("INSERT INTO web_tokens VALUES ($1,$2,$3,$4)", *row)

        await store.write(insert)
    return token


async def list_tokens(store: Any, account_id: int) -> list[tuple[str, str, float]]:
    """(hash prefix, label, created) of an account's tokens."""
    await ensure_token_table(store)
    if _is_sqlite(store):
        rows = await store.db.read(lambda conn: conn.execute(
            "SELECT hash, label, created FROM web_tokens WHERE account_id=? ORDER BY created", (account_id,)).fetchall())
    else:
        async def fetch(conn: Any) -> list[Any]:
            return list(await conn.fetch("SELECT hash, label, created FROM web_tokens WHERE account_id=$1 "
                                         "ORDER BY created", account_id))

        rows = await store.read(fetch)
    return [(r[0][:12], r[1], float(r[2])) for r in rows]


async def revoke_token(store: Any, account_id: int, prefix: str) -> int:
    await ensure_token_table(store)
    if len(prefix) < 6:
        return 0
    if _is_sqlite(store):
        return int(await store.db.write(lambda conn: conn.execute(
            "DELETE FROM web_tokens WHERE account_id=? AND hash LIKE ?", (account_id, prefix + "%")).rowcount))

    async def delete(tx: Any) -> int:
        status = await tx.conn.execute("DELETE FROM web_tokens WHERE account_id=$1 AND hash LIKE $2",
                                       account_id, prefix + "%")
        return int(status.split()[-1])

    return int(await store.write(delete))


async def account_for_token(store: Any, token: str) -> Any | None:
    digest = _digest(token)
    try:
        if _is_sqlite(store):
            row = await store.db.read(lambda conn: conn.execute(
                "SELECT account_id FROM web_tokens WHERE hash=?", (digest,)).fetchone())
        else:
            async def fetch(conn: Any) -> Any:
                return await conn.fetchrow("SELECT account_id FROM web_tokens WHERE hash=$1", digest)

            row = await store.read(fetch)
    except (sqlite3.OperationalError, Exception):  # noqa: BLE001 - no table yet: no tokens
        return None
    if row is None:
        return None
    try:
        return await store.get_account_by_id(int(row[0]))
    except Exception:  # noqa: BLE001
        return None


# -- who is this request? -----------------------------------------------------------------
@dataclass(frozen=True)
class Caller:
    account: Any
    csrf_token: str | None
    """Set for cookie sessions: state-changing requests must carry it."""


class AuthError(Exception):
    def __init__(self, status: int, detail: str, challenge: bool = True) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.challenge = challenge


async def authenticate(ctx: Any, request: Request, *, state_changing: bool) -> Caller:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    client = request.client.host if request.client else "?"
    if scheme.lower() in ("basic", "bearer"):
        if not peer_is_trusted(ctx, request):
            raise AuthError(403, "credentials are refused over plaintext HTTP; use HTTPS", challenge=False)
        throttle = login_throttle(ctx)
        if scheme.lower() == "basic":
            try:
                user, _, password = base64.b64decode(value.strip(), validate=True).decode("utf-8").partition(":")
            except ValueError:          # binascii.Error, UnicodeDecodeError, non-ASCII text
                raise AuthError(401, "malformed Basic credentials") from None
            keys: tuple[str, ...] = (f"ip:{client}", f"user:{user.lower()}")
            if throttle.retry_after(*keys) > 0:
                raise AuthError(429, "too many failed logins; try again later", challenge=False)
            # Basic comes with every request: the store remembers verified passwords.
            account = await ctx.store.authenticate(user, password) if user and password else None
        else:
            keys = (f"ip:{client}",)
            if throttle.retry_after(*keys) > 0:
                raise AuthError(429, "too many failed logins; try again later", challenge=False)
            account = await account_for_token(ctx.store, value.strip())
        if account is None:
            throttle.failed(*keys)
            raise AuthError(401, "wrong credentials")
        throttle.succeeded(*keys)
        return Caller(account=account, csrf_token=None)
    cookie = request.cookies.get(COOKIE)
    if cookie:
        info = await webmail_sessions(ctx).lookup(cookie)
        if info is not None:
            if state_changing:
                sent = request.headers.get("x-csrf-token", "")
                if not sent or not secrets.compare_digest(sent, info.csrf_token):
                    raise AuthError(403, "missing or wrong X-CSRF-Token", challenge=False)
            return Caller(account=info.account, csrf_token=info.csrf_token)
    raise AuthError(401, "authentication required")
