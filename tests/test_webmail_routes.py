"""The webmail's own HTTP routes over a real socket: login form, cookie flags, CSRF and
origin checks, throttling, the CSP headers, and the per-session sanitised documents.

The session store here is a small in-memory implementation of ``WebSessions``; the real
one (web/auth.py) is exercised end to end by tests/test_webmail_browser.py."""

from __future__ import annotations

import http.client
import json
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlencode

import pytest
import uvicorn
from starlette.applications import Starlette

from conftest import free_port
from mailhaven.config import Config, SecurityConfig
from mailhaven.store.api import LoginRecord
from mailhaven.web.webmail import SanitizedDocuments, SessionInfo, routes


@dataclass(frozen=True)
class _Account:
    id: int
    address: str


class _Store:
    async def authenticate(self, address: str, password: str) -> _Account | None:
        return _Account(1, address.lower()) if password == "right" and address else None

    # The login throttle's calls (its behaviour: test_auth_throttle.py, test_login_throttle.py).
    async def login_records(self, address: str, account: str) -> list[LoginRecord]:
        return []

    async def login_failed(self, address: str, account: str, **policy: Any) -> list[LoginRecord]:
        return [LoginRecord(address=address, account="", failures=1, last_failure=0.0, blocked_until=0.0)]

    async def login_succeeded(self, address: str, account: str) -> None:
        pass


class _Log:
    def info(self, msg: str, **fields: Any) -> None:
        pass


class _Sessions:
    def __init__(self) -> None:
        self.live: dict[str, SessionInfo] = {}

    async def create(self, account: Any) -> str:
        cookie = secrets.token_urlsafe(16)
        self.live[cookie] = SessionInfo(account=account, csrf_token=secrets.token_urlsafe(16))
        return cookie

    async def lookup(self, cookie: str) -> SessionInfo | None:
        return self.live.get(cookie)

    async def destroy(self, cookie: str) -> None:
        self.live.pop(cookie, None)


@pytest.fixture
def web() -> Iterator[tuple[int, _Sessions]]:
    sessions = _Sessions()
    ctx = SimpleNamespace(store=_Store(), log=_Log(), extras={},
                          config=Config(security=SecurityConfig(login_delay=0.0)))
    app = Starlette(routes=routes(ctx, sessions))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    try:
        yield port, sessions
    finally:
        server.should_exit = True
        thread.join(5)


def request(port: int, method: str, path: str, body: bytes | str | None = None,
            headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], list[str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request(method, path, body=body, headers=headers or {})
    res = conn.getresponse()
    data = res.read()
    cookies = res.headers.get_all("set-cookie") or []
    hdrs = {k.lower(): v for k, v in res.getheaders()}
    conn.close()
    return res.status, hdrs, cookies, data


FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def login(port: int, user: str = "alice@example.org", password: str = "right",
          headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], list[str], bytes]:
    return request(port, "POST", "/login", urlencode({"username": user, "password": password}),
                   {**FORM, **(headers or {})})


def test_root_redirects_to_login_and_login_page_has_strict_csp(web: tuple[int, _Sessions]) -> None:
    port, _ = web
    status, headers, _, _ = request(port, "GET", "/")
    assert status == 303 and headers["location"] == "/login"
    status, headers, _, body = request(port, "GET", "/login")
    assert status == 200
    csp = headers["content-security-policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp and "unsafe-inline" not in csp
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["referrer-policy"] == "same-origin"
    assert b'name="password"' in body and b"<script" not in body


def test_login_sets_strict_httponly_cookie_and_shell_gets_csrf(web: tuple[int, _Sessions]) -> None:
    port, sessions = web
    status, headers, cookies, _ = login(port, headers={"Origin": f"http://127.0.0.1:{port}"})
    assert status == 303 and headers["location"] == "/"
    (cookie,) = cookies
    assert cookie.startswith("mh_session=")
    flags = [f.strip().lower() for f in cookie.split(";")]
    assert "httponly" in flags and "samesite=strict" in flags and "path=/" in flags
    assert "secure" not in flags  # plain HTTP here; Secure is set over TLS
    value = cookie.split(";")[0]
    status, headers, _, body = request(port, "GET", "/", headers={"Cookie": value})
    assert status == 200
    info = next(iter(sessions.live.values()))
    assert f'<meta name="csrf-token" content="{info.csrf_token}">'.encode() in body
    assert "script-src 'self'" in headers["content-security-policy"]
    assert b'src="/static/app.js"' in body


def test_login_failure(web: tuple[int, _Sessions]) -> None:
    port, _ = web
    for _ in range(5):
        status, _, cookies, body = login(port, user="bob@example.org", password="wrong")
        assert status == 401 and not cookies and b"Wrong email address or password" in body
    # The throttle's 429 for the webmail form: test_login_throttle.py, against the real server.


def test_cross_site_login_refused(web: tuple[int, _Sessions]) -> None:
    port, _ = web
    status, _, cookies, _ = login(port, headers={"Origin": "https://evil.example"})
    assert status == 403 and not cookies
    status, _, cookies, _ = login(port, headers={"Sec-Fetch-Site": "cross-site"})
    assert status == 403 and not cookies


def _session(port: int, sessions: _Sessions) -> tuple[str, str]:
    _, _, cookies, _ = login(port)
    value = cookies[0].split(";")[0]
    return value, sessions.live[value.split("=", 1)[1]].csrf_token


def test_sanitize_needs_session_and_csrf_and_document_is_per_session(web: tuple[int, _Sessions]) -> None:
    port, sessions = web
    body = json.dumps({"html": '<p onclick="x()">hi<img src="https://t.example/p.gif"></p><script>x()</script>'})
    status, _, _, _ = request(port, "POST", "/sanitize", body, {"Content-Type": "application/json"})
    assert status == 401
    cookie, csrf = _session(port, sessions)
    status, _, _, _ = request(port, "POST", "/sanitize", body, {"Cookie": cookie})
    assert status == 403  # no CSRF token
    status, _, _, _ = request(port, "POST", "/sanitize", body, {"Cookie": cookie, "X-CSRF-Token": "nope"})
    assert status == 403
    status, _, _, data = request(port, "POST", "/sanitize", body, {"Cookie": cookie, "X-CSRF-Token": csrf})
    assert status == 200
    answer = json.loads(data)
    assert answer["remoteImages"] == 1
    status, headers, _, page = request(port, "GET", answer["url"], headers={"Cookie": cookie})
    assert status == 200
    assert b"<script" not in page and b"onclick" not in page and b"<p>hi<img" in page
    csp = headers["content-security-policy"]
    assert "default-src 'none'" in csp and "img-src data:;" in csp and "sandbox" in csp
    assert "script-src" not in csp
    # Another session, or no session, cannot read it.
    other, _ = _session(port, sessions)
    assert request(port, "GET", answer["url"], headers={"Cookie": other})[0] == 404
    assert request(port, "GET", answer["url"])[0] == 404
    # Remote images allowed: the document's CSP lets images load, nothing else.
    body = json.dumps({"html": '<img src="https://t.example/p.gif">', "allowRemote": True})
    _, _, _, data = request(port, "POST", "/sanitize", body, {"Cookie": cookie, "X-CSRF-Token": csrf})
    status, headers, _, page = request(port, "GET", json.loads(data)["url"], headers={"Cookie": cookie})
    assert b'src="https://t.example/p.gif"' in page
    assert "img-src data: https: http:;" in headers["content-security-policy"]


def test_logout_needs_csrf_then_ends_session(web: tuple[int, _Sessions]) -> None:
    port, sessions = web
    cookie, csrf = _session(port, sessions)
    status, _, _, _ = request(port, "POST", "/logout", "", {**FORM, "Cookie": cookie})
    assert status == 403 and sessions.live
    status, headers, cookies, _ = request(port, "POST", "/logout", urlencode({"csrf_token": csrf}),
                                          {**FORM, "Cookie": cookie})
    assert status == 303 and headers["location"] == "/login"
    assert cookies and "mh_session=" in cookies[0] and ("max-age=0" in cookies[0].lower() or "expires=" in cookies[0].lower())
    assert not sessions.live
    assert request(port, "GET", "/", headers={"Cookie": cookie})[0] == 303


def test_static_files_served_with_nosniff(web: tuple[int, _Sessions]) -> None:
    port, _ = web
    for name, ctype in (("app.js", "javascript"), ("app.css", "text/css"), ("jmap.js", "javascript")):
        status, headers, _, body = request(port, "GET", f"/static/{name}")
        assert status == 200 and ctype in headers["content-type"] and body
        assert headers["x-content-type-options"] == "nosniff"
    assert request(port, "GET", "/static/../webmail.py")[0] == 404


def test_no_inline_script_or_handlers_in_static_pages() -> None:
    from mailhaven.web.webmail import STATIC_DIR

    page = (STATIC_DIR / "index.html").read_text()
    assert "<script>" not in page and " on" not in page.replace(" one", "")
    for js in STATIC_DIR.glob("*.js"):
        assert "innerHTML =" not in js.read_text() and "eval(" not in js.read_text()


def test_documents_expire_and_are_bounded() -> None:
    now = [0.0]
    docs = SanitizedDocuments(ttl=10, max_entries=2, clock=lambda: now[0])
    a = docs.put("o", "a", False)
    assert docs.get(a, "o") is not None and docs.get(a, "x") is None
    now[0] = 11
    assert docs.get(a, "o") is None
    b, c, d = (docs.put("o", s, False) for s in "bcd")
    assert docs.get(b, "o") is None and docs.get(d, "o") is not None


def test_shell_names_our_authserv_id_for_the_verdict(web: tuple[int, _Sessions]) -> None:
    """The reader shows sender verdicts only from Authentication-Results with this id."""
    port, _ = web
    _, _, cookies, _ = login(port)
    _, _, _, body = request(port, "GET", "/", headers={"Cookie": cookies[0].split(";")[0]})
    assert b'<meta name="authserv-id" content="localhost">' in body
