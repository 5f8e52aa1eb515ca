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
import time
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request

from ..auth.throttle import LoginBlocked, LoginThrottle, shared_throttle
from ..store.api import NotFound
from .webmail import COOKIE, SessionInfo

SESSION_IDLE = 12 * 3600.0
SESSION_MAX = 1000 * 1000


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
    """The login throttle every protocol shares (auth/throttle.py)."""
    return shared_throttle(ctx)


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


# -- tokens (kept by the store: Store.add_token and friends) ------------------------------
async def create_token(store: Any, account_id: int, label: str) -> str:
    token = "mh_" + secrets.token_urlsafe(32)
    await store.add_token(account_id, _digest(token), label, created=time.time())
    return token


async def list_tokens(store: Any, account_id: int) -> list[tuple[str, str, float]]:
    """(hash prefix, label, created) of an account's tokens."""
    return [(t.digest[:12], t.label, t.created) for t in await store.list_tokens(account_id)]


async def revoke_token(store: Any, account_id: int, prefix: str) -> int:
    if len(prefix) < 6:
        return 0
    return int(await store.revoke_tokens(account_id, prefix))


async def account_for_token(store: Any, token: str) -> Any | None:
    account_id = await store.token_account(_digest(token))
    if account_id is None:
        return None
    try:
        return await store.get_account_by_id(account_id)
    except NotFound:
        return None


# -- who is this request? -----------------------------------------------------------------
@dataclass(frozen=True)
class Caller:
    account: Any
    csrf_token: str | None
    """Set for cookie sessions: state-changing requests must carry it."""


class AuthError(Exception):
    def __init__(self, status: int, detail: str, challenge: bool = True, retry_after: float = 0.0) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.challenge = challenge
        self.retry_after = retry_after
        """For 429: seconds until the throttle lets this client try again."""


async def authenticate(ctx: Any, request: Request, *, state_changing: bool) -> Caller:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    client = request.client.host if request.client else "?"
    if scheme.lower() in ("basic", "bearer"):
        if not peer_is_trusted(ctx, request):
            raise AuthError(403, "credentials are refused over plaintext HTTP; use HTTPS", challenge=False)
        throttle = login_throttle(ctx)
        try:
            if scheme.lower() == "basic":
                try:
                    user, _, password = base64.b64decode(value.strip(), validate=True).decode("utf-8").partition(":")
                except ValueError:          # binascii.Error, UnicodeDecodeError, non-ASCII text
                    raise AuthError(401, "malformed Basic credentials") from None
                # Basic comes with every request: the store remembers verified passwords.
                account = await throttle.authenticate(client, user, password)
            else:
                await throttle.check(client)          # a token names no account: the address alone
                account = await account_for_token(ctx.store, value.strip())
                if account is None and await throttle.failed(client):
                    raise LoginBlocked(throttle.policy.login_block)
        except LoginBlocked as exc:
            raise AuthError(429, "too many failed logins; try again later", challenge=False,
                            retry_after=exc.retry_after) from None
        if account is None:
            raise AuthError(401, "wrong credentials")
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
        # A webmail page whose session is gone (expired, or the server restarted): no Basic
        # challenge, or the browser would pop up its own password dialog over the page.
        raise AuthError(401, "the webmail session has ended; log in again", challenge=False)
    raise AuthError(401, "authentication required")
