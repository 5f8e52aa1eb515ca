"""The webmail's HTTP routes: the app shell, the login form, logout, static files, and the
sanitised message documents shown in the reader's sandboxed frame.

Everything else the webmail does goes through the JMAP API (``web/jmap/``): the browser
is a JMAP client authenticated by the session cookie plus the ``X-CSRF-Token`` header. The
one exception is the Filters page's rules and raw Sieve script (``web/filters.py``).

Invariants:
- The session cookie ``mh_session`` is HttpOnly and SameSite=Strict, Secure over TLS
  (RFC 6265 §4.1.2.5-6, RFC 6265bis SameSite); no page script can read it.
- Every state-changing request (POST) is same-origin (Origin / Sec-Fetch-Site checked) and,
  once logged in, carries the session's CSRF token.
- App pages carry a strict Content-Security-Policy (no inline script, no framing); message
  documents carry their own (``default-src 'none'``), are served only to the session that
  asked for them, and are sandboxed in the page's frame and by the CSP ``sandbox`` directive.
"""

from __future__ import annotations

import hashlib
import html
import importlib
import json
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qs

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import Receive, Scope, Send

from ..auth.throttle import LoginBlocked, shared_throttle
from .filters import FiltersPage
from .sanitize import sanitize_html

STATIC_DIR = Path(__file__).resolve().parent / "static"
COOKIE = "mh_session"
MAX_FORM_BYTES = 16 * 1024
MAX_SANITIZE_BYTES = 16 * 1024 * 1024

APP_CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
           "connect-src 'self'; frame-src 'self'; font-src 'self'; object-src 'none'; "
           "base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
# The message document: no script at all, no network except (when allowed) images.
MESSAGE_CSP = ("default-src 'none'; img-src data:{remote}; style-src 'unsafe-inline'; "
               "base-uri 'none'; form-action 'none'; frame-ancestors 'self'; "
               "sandbox allow-popups allow-popups-to-escape-sandbox")
MESSAGE_STYLE = ("body{margin:0;padding:4px 2px;font:15px/1.5 system-ui,-apple-system,'Segoe UI',"
                 "Roboto,Arial,sans-serif;color:#1d232b;word-wrap:break-word;overflow-wrap:anywhere}"
                 "img{max-width:100%;height:auto}pre{white-space:pre-wrap}"
                 "blockquote{margin:0 0 0 .5em;padding-left:.75em;border-left:3px solid #d5dae1;color:#4b5563}")


def _headers(csp: str) -> dict[str, str]:
    return {
        "Content-Security-Policy": csp,
        "X-Content-Type-Options": "nosniff",
        # same-origin, not no-referrer: with no-referrer browsers send "Origin: null" on form posts.
        "Referrer-Policy": "same-origin" if "frame-ancestors 'none'" in csp else "no-referrer",
        "X-Frame-Options": "DENY" if "frame-ancestors 'none'" in csp else "SAMEORIGIN",
        "Cache-Control": "no-store",
        "Cross-Origin-Opener-Policy": "same-origin",
    }


# -- sessions: a thin seam over web/auth.py -------------------------------------------
@dataclass(frozen=True, kw_only=True)
class SessionInfo:
    account: Any
    csrf_token: str


class WebSessions(Protocol):
    """What the webmail needs from the session store (web/auth.py provides it)."""

    async def create(self, account: Any) -> str:
        """Start a session; returns the cookie value."""
        ...

    async def lookup(self, cookie: str) -> SessionInfo | None: ...

    async def destroy(self, cookie: str) -> None: ...


def web_sessions(ctx: Any) -> WebSessions:
    auth = importlib.import_module("mailhaven.web.auth")
    return auth.webmail_sessions(ctx)  # type: ignore[no-any-return]


# -- sanitised documents ---------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class _Document:
    owner: str
    """Hash of the session cookie that asked for it."""
    body: str
    allow_remote: bool
    created: float


@dataclass
class SanitizedDocuments:
    """Short-lived sanitised message documents, each readable only by its session."""

    ttl: float = 900.0
    max_entries: int = 2000
    clock: Callable[[], float] = time.monotonic
    _docs: OrderedDict[str, _Document] = field(default_factory=OrderedDict)

    def put(self, owner: str, body: str, allow_remote: bool) -> str:
        token = secrets.token_urlsafe(24)
        self._docs[token] = _Document(owner=owner, body=body, allow_remote=allow_remote, created=self.clock())
        while len(self._docs) > self.max_entries:
            self._docs.popitem(last=False)
        return token

    def get(self, token: str, owner: str) -> _Document | None:
        doc = self._docs.get(token)
        if doc is None or not secrets.compare_digest(doc.owner, owner):
            return None
        if self.clock() - doc.created > self.ttl:
            del self._docs[token]
            return None
        return doc


def _owner(cookie: str) -> str:
    return hashlib.sha256(cookie.encode()).hexdigest()


# -- the routes ------------------------------------------------------------------------
class Webmail:
    def __init__(self, ctx: Any, sessions: WebSessions) -> None:
        self.ctx = ctx
        self.sessions = sessions
        self.throttle = shared_throttle(ctx)
        self.documents = SanitizedDocuments()
        self.shell = (STATIC_DIR / "index.html").read_text(encoding="utf-8")

    # Same-origin check for POSTs (the CSRF defence that works before there is a session).
    # Fetch Metadata (Sec-Fetch-Site) cannot be set by page script, so browsers that send
    # it are judged by it; otherwise the Origin header must name this host.
    @staticmethod
    def _same_origin(request: Request) -> bool:
        site = request.headers.get("sec-fetch-site")
        if site is not None:
            return site in ("same-origin", "none")
        origin = request.headers.get("origin")
        if origin is None:
            return True  # not a browser request (curl, tests): no ambient credentials at risk
        host = request.headers.get("host", "")
        return origin in (f"http://{host}", f"https://{host}")

    async def _session(self, request: Request) -> tuple[str, SessionInfo] | None:
        cookie = request.cookies.get(COOKIE)
        if not cookie:
            return None
        info = await self.sessions.lookup(cookie)
        return (cookie, info) if info is not None else None

    @staticmethod
    def _csrf_ok(request: Request, info: SessionInfo, form: dict[str, str] | None = None) -> bool:
        sent = request.headers.get("x-csrf-token") or (form or {}).get("csrf_token", "")
        return bool(sent) and secrets.compare_digest(sent, info.csrf_token)

    # GET / : the app shell, with the CSRF token for the page's JMAP requests.
    async def index(self, request: Request) -> Response:
        found = await self._session(request)
        if found is None:
            return RedirectResponse("/login", status_code=303, headers=_headers(APP_CSP))
        page = self.shell.replace("{{csrf_token}}", html.escape(found[1].csrf_token, quote=True))
        # The reader believes only the Authentication-Results this server wrote (RFC 8601 5).
        page = page.replace("{{authserv_id}}", html.escape(self.ctx.config.hostname, quote=True))
        return HTMLResponse(page, headers=_headers(APP_CSP))

    def _login_page(self, error: str = "", username: str = "", status: int = 200,
                    extra: dict[str, str] | None = None) -> HTMLResponse:
        err = f'<p class="login-error" role="alert">{html.escape(error)}</p>' if error else ""
        page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Log in · Mailhaven</title><link rel="stylesheet" href="/static/app.css"></head>
<body class="login"><form class="login-box" method="post" action="/login">
<h1>Mailhaven</h1>{err}
<label>Email address<input name="username" type="email" autocomplete="username" required autofocus
 value="{html.escape(username, quote=True)}"></label>
<label>Password<input name="password" type="password" autocomplete="current-password" required></label>
<button type="submit" class="primary">Log in</button>
</form></body></html>"""
        headers = _headers(APP_CSP)
        headers.update(extra or {})
        return HTMLResponse(page, status_code=status, headers=headers)

    async def login_form(self, request: Request) -> Response:
        if await self._session(request) is not None:
            return RedirectResponse("/", status_code=303, headers=_headers(APP_CSP))
        return self._login_page()

    async def login(self, request: Request) -> Response:
        if not self._same_origin(request):
            return self._login_page("This form must be sent from this site.", status=403)
        form = await _read_form(request)
        if form is None:
            return self._login_page("The form was too large.", status=413)
        username = form.get("username", "").strip()
        password = form.get("password", "")
        client = request.client.host if request.client else "?"
        try:
            account = await self.throttle.authenticate(client, username, password)   # auth/throttle.py
        except LoginBlocked as exc:
            minutes = max(1, round(exc.retry_after / 60))
            return self._login_page(f"Too many failed attempts. Try again in {minutes} minute(s).",
                                    username, status=429, extra={"Retry-After": str(int(exc.retry_after) + 1)})
        if account is None:
            self.ctx.log.info("webmail login failed", user=username, client=client)
            return self._login_page("Wrong email address or password.", username, status=401)
        cookie = await self.sessions.create(account)
        response = RedirectResponse("/", status_code=303, headers=_headers(APP_CSP))
        response.set_cookie(COOKIE, cookie, path="/", httponly=True, samesite="strict",
                            secure=request.url.scheme == "https")
        self.ctx.log.info("webmail login", user=account.address, client=client)
        return response

    async def logout(self, request: Request) -> Response:
        found = await self._session(request)
        form = await _read_form(request) or {}
        if found is not None:
            cookie, info = found
            if not self._same_origin(request) or not self._csrf_ok(request, info, form):
                return Response("CSRF check failed", status_code=403, headers=_headers(APP_CSP))
            await self.sessions.destroy(cookie)
        response = RedirectResponse("/login", status_code=303, headers=_headers(APP_CSP))
        response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict",
                               secure=request.url.scheme == "https")
        return response

    # POST /sanitize {html, cids, allowRemote} -> {url, remoteImages}
    async def sanitize(self, request: Request) -> Response:
        found = await self._session(request)
        if found is None:
            return JSONResponse({"error": "not logged in"}, status_code=401)
        cookie, info = found
        if not self._same_origin(request) or not self._csrf_ok(request, info):
            return JSONResponse({"error": "CSRF check failed"}, status_code=403)
        body = await _read_body(request, MAX_SANITIZE_BYTES)
        try:
            args = json.loads(body) if body is not None else None
        except ValueError:
            args = None
        if not isinstance(args, dict) or not isinstance(args.get("html"), str):
            return JSONResponse({"error": "expected {html: string}"}, status_code=400)
        raw_cids = args.get("cids")
        cids: dict[str, Any] = raw_cids if isinstance(raw_cids, dict) else {}
        allow_remote = args.get("allowRemote") is True
        result = sanitize_html(args["html"], allow_remote=allow_remote,
                               cid_urls={str(k): str(v) for k, v in cids.items()})
        token = self.documents.put(_owner(cookie), result.html, allow_remote)
        return JSONResponse({"url": f"/sanitized/{token}", "remoteImages": result.remote_images},
                            headers={"Cache-Control": "no-store"})

    # GET /sanitized/{token}: the document for the sandboxed frame, under its own CSP.
    async def sanitized(self, request: Request) -> Response:
        cookie = request.cookies.get(COOKIE, "")
        doc = self.documents.get(request.path_params["token"], _owner(cookie)) if cookie else None
        if doc is None:
            return Response("Not found", status_code=404, media_type="text/plain",
                            headers=_headers(MESSAGE_CSP.format(remote="")))
        page = ('<!doctype html><html><head><meta charset="utf-8">'
                f"<style>{MESSAGE_STYLE}</style></head><body>{doc.body}</body></html>")
        csp = MESSAGE_CSP.format(remote=" https: http:" if doc.allow_remote else "")
        return HTMLResponse(page, headers=_headers(csp))


async def _read_body(request: Request, limit: int) -> bytes | None:
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


async def _read_form(request: Request) -> dict[str, str] | None:
    """An application/x-www-form-urlencoded body (the only kind our forms send)."""
    body = await _read_body(request, MAX_FORM_BYTES)
    if body is None:
        return None
    try:
        parsed = parse_qs(body.decode("utf-8"), keep_blank_values=True, max_num_fields=20)
    except (UnicodeDecodeError, ValueError):
        return {}
    return {k: v[0] for k, v in parsed.items()}


class _StaticWithHeaders:
    """Static files with nosniff and a CSP (they are never HTML pages we render)."""

    def __init__(self) -> None:
        self.files = StaticFiles(directory=STATIC_DIR)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with_headers(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += [(b"x-content-type-options", b"nosniff"),
                            (b"content-security-policy", APP_CSP.encode()),
                            (b"cache-control", b"no-cache")]
                message = {**message, "headers": headers}
            await send(message)

        await self.files(scope, receive, send_with_headers)


def routes(ctx: Any, sessions: WebSessions | None = None) -> list[BaseRoute]:
    """The webmail's routes; ``web/app.py`` mounts them beside the JMAP API."""
    mail = Webmail(ctx, sessions if sessions is not None else web_sessions(ctx))
    filters = FiltersPage(mail, STATIC_DIR / "filters.html", _headers(APP_CSP))   # web/filters.py
    return [
        Route("/", mail.index, methods=["GET"]),
        Route("/login", mail.login_form, methods=["GET"]),
        Route("/login", mail.login, methods=["POST"]),
        Route("/logout", mail.logout, methods=["POST"]),
        Route("/sanitize", mail.sanitize, methods=["POST"]),
        Route("/sanitized/{token}", mail.sanitized, methods=["GET"]),
        Route("/filters", filters.show, methods=["GET"]),
        Route("/filters/state", filters.get_state, methods=["GET"]),
        Route("/filters/state", filters.put_state, methods=["POST"]),
        Route("/favicon.ico", favicon, methods=["GET", "HEAD"]),
        Mount("/static", app=_StaticWithHeaders(), name="static"),
    ]


async def favicon(request: Request) -> Response:
    """Browsers ask for /favicon.ico on every site; the tab gets an envelope, the log no 404."""
    return Response((STATIC_DIR / "favicon.ico").read_bytes(), media_type="image/vnd.microsoft.icon",
                    headers={"Cache-Control": "public, max-age=86400", "X-Content-Type-Options": "nosniff"})
