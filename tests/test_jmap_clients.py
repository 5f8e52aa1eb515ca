"""JMAP as client libraries nobody here wrote read it (issue 15 section 3), behind a real
HTTPS reverse proxy (Debian's nginx, started by the test) whose X-Forwarded-For, -Proto and
-Host the server trusts (``[http] trusted_proxies``):

- jmapc (PyPI) and jmap-jam (npm) drive the webmail's flows through the proxy: session,
  mailboxes, query/get with back-references, upload, Email/set, EmailSubmission/set with
  onSuccessUpdateEmail, push (EventSource);
- the session resource advertises the proxy's https:// URLs, or ``[http] public_url``;
- forwarded headers from a peer that is no trusted proxy are ignored.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import subprocess
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import ROOT, ServerProcess, free_port, wait_for
from peers import NGINX, nginx, require
from testcerts import self_signed

USER, BOB, PASSWORD = "alice@example.org", "bob@example.org", "s3cret"
PROXY_FROM = "127.0.0.2"
"""nginx connects to Mailhaven from this address, the only trusted proxy."""
JS_DIR = ROOT / "tests" / "jmap_js"


def need(what: str, ok: bool) -> None:
    require([] if ok else [f"{what} is not installed"])


class Proxy:
    """nginx on an ephemeral port of 127.0.0.1, HTTPS in front of ``backend``, connecting from
    PROXY_FROM and forwarding the client's address, scheme and host; up from construction
    until :meth:`stop`."""

    def __init__(self, directory: Path, backend: int) -> None:
        self.dir = directory
        self.port = free_port()
        self.cert, key = self_signed(directory, "proxy")
        self._nginx = contextlib.ExitStack()
        self._nginx.enter_context(nginx(directory, f"""
  client_max_body_size 60m;
  server {{
    listen 127.0.0.1:{self.port} ssl;
    server_name localhost;
    ssl_certificate {self.cert}; ssl_certificate_key {key};
    location / {{
      proxy_pass http://127.0.0.1:{backend};
      proxy_bind {PROXY_FROM};
      proxy_http_version 1.1;
      proxy_buffering off;
      proxy_read_timeout 120s;
      proxy_set_header Host 127.0.0.1;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto $scheme;
      proxy_set_header X-Forwarded-Host $http_host;
    }}
  }}""", ("127.0.0.1", self.port)))

    def stop(self) -> None:
        self._nginx.close()


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, Proxy]]:
    need("nginx", Path(NGINX).exists())
    base = tmp_path_factory.mktemp("jmapclients")
    srv = ServerProcess(base / "data", extra_config=f'[http]\ntrusted_proxies = ["{PROXY_FROM}/32"]\n').start()
    proxy = None
    try:
        srv.add_users(USER, BOB, password=PASSWORD)
        proxy = Proxy(base, srv.port("http"))
        yield srv, proxy
    finally:
        if proxy is not None:
            proxy.stop()
        srv.stop()


def basic(user: str = USER) -> str:
    return "Basic " + base64.b64encode(f"{user}:{PASSWORD}".encode()).decode()


def test_session_through_the_proxy_advertises_https(site: tuple[ServerProcess, Proxy]) -> None:
    import ssl

    srv, proxy = site
    ctx = ssl.create_default_context(cafile=str(proxy.cert))
    req = urllib.request.Request(f"https://localhost:{proxy.port}/.well-known/jmap",
                                 headers={"Authorization": basic()})
    with urllib.request.urlopen(req, context=ctx, timeout=30) as res:
        session = json.loads(res.read())
    base = f"https://localhost:{proxy.port}/jmap/"
    for key in ("apiUrl", "downloadUrl", "uploadUrl", "eventSourceUrl"):
        assert session[key].startswith(base), (key, session[key])
    # Straight to the server (a peer that is no trusted proxy): the forwarded headers are ignored.
    req = urllib.request.Request(f"http://127.0.0.1:{srv.port('http')}/.well-known/jmap", headers={
        "Authorization": basic(), "X-Forwarded-Proto": "https", "X-Forwarded-Host": "evil.example"})
    with urllib.request.urlopen(req, timeout=30) as res:
        direct = json.loads(res.read())
    assert direct["apiUrl"] == f"http://127.0.0.1:{srv.port('http')}/jmap/api"


def test_public_url_is_advertised(tmp_path: Path) -> None:
    srv = ServerProcess(tmp_path / "data", extra_config='[http]\npublic_url = "https://mail.example.org/"\n').start()
    try:
        srv.add_user(USER, PASSWORD)
        req = urllib.request.Request(f"http://127.0.0.1:{srv.port('http')}/.well-known/jmap",
                                     headers={"Authorization": basic()})
        with urllib.request.urlopen(req, timeout=30) as res:
            session = json.loads(res.read())
        assert session["apiUrl"] == "https://mail.example.org/jmap/api"
        assert session["uploadUrl"] == "https://mail.example.org/jmap/upload/{accountId}/"
    finally:
        srv.stop()


def test_forwarded_client_address_only_from_trusted_proxies() -> None:
    import asyncio

    from mailhaven.web.proxy import ProxyHeaders

    seen: list[dict[str, Any]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope)

    mw = ProxyHeaders(app, ["10.0.0.0/8"])
    headers = [(b"x-forwarded-for", b"203.0.113.9, 10.1.1.1"), (b"x-forwarded-proto", b"https"),
               (b"x-forwarded-host", b"mail.example.org"), (b"host", b"backend")]
    for peer in ("10.2.2.2", "192.0.2.1"):
        asyncio.run(mw({"type": "http", "client": (peer, 5555), "scheme": "http", "headers": headers},
                       None, None))
    trusted, untrusted = seen
    assert trusted["client"][0] == "203.0.113.9" and trusted["scheme"] == "https"
    assert (b"host", b"mail.example.org") in trusted["headers"]
    assert untrusted["client"] == ("192.0.2.1", 5555) and untrusted["scheme"] == "http"


def deliver(srv: ServerProcess, subject: str) -> None:
    import smtplib

    with smtplib.SMTP("127.0.0.1", srv.port("smtp"), timeout=30) as s:
        s.sendmail("carol@outside.example", [USER],
                   f"From: carol@outside.example\r\nTo: {USER}\r\nSubject: {subject}\r\n\r\nhello\r\n".encode())


def test_jmapc(site: tuple[ServerProcess, Proxy], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    try:
        import jmapc
        from jmapc import Ref
        from jmapc.methods import (
            EmailGet,
            EmailQuery,
            EmailSet,
            EmailSubmissionSet,
            IdentityGet,
            MailboxGet,
        )
    except ImportError:
        need("jmapc", False)
    srv, proxy = site
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(proxy.cert))
    client = jmapc.Client.create_with_password(f"localhost:{proxy.port}", USER, PASSWORD)
    assert client.jmap_session.api_url == f"https://localhost:{proxy.port}/jmap/api"
    boxes = client.request(MailboxGet(ids=None))
    roles = {b.role: b.id for b in boxes.data if b.role}
    assert {"inbox", "drafts", "sent"} <= set(roles)
    deliver(srv, "for jmapc")
    # Query and get in one request, the get's ids a back-reference to the query's.
    results = client.request([
        EmailQuery(filter=jmapc.EmailQueryFilterCondition(in_mailbox=roles["inbox"], text="for jmapc")),
        EmailGet(ids=Ref("/ids"), properties=["subject", "from"]),
    ], raise_errors=True)
    emails = results[1].response.data  # type: ignore[union-attr]
    assert [e.subject for e in emails] == ["for jmapc"]
    assert emails[0].mail_from[0].email == "carol@outside.example"
    attachment = tmp_path / "note.txt"
    attachment.write_text("an attachment\n")
    blob = client.upload_blob(attachment)
    assert blob.size == len("an attachment\n")
    identity = client.request(IdentityGet(ids=None)).data[0]  # type: ignore[union-attr]
    events: list[Any] = []

    def listen() -> None:
        for event in client.events:
            events.append(event)
            if len(events) >= 2:
                return

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    wait_for(lambda: events, 20, "the first push event")
    out = client.request([
        EmailSet(create={"draft": jmapc.Email(
            mailbox_ids={roles["drafts"]: True}, keywords={"$draft": True, "$seen": True},
            mail_from=[jmapc.EmailAddress(email=USER)], to=[jmapc.EmailAddress(email=BOB)], subject="from jmapc",
            body_values={"body": jmapc.EmailBodyValue(value="Hello Bob")},
            text_body=[jmapc.EmailBodyPart(part_id="body", type="text/plain")],
            attachments=[jmapc.EmailBodyPart(blob_id=blob.id, type="text/plain", name="note.txt")])}),
        EmailSubmissionSet(
            create={"send": jmapc.EmailSubmission(email_id="#draft", identity_id=identity.id)},
            on_success_update_email={"#send": {f"mailboxIds/{roles['drafts']}": None,
                                               f"mailboxIds/{roles['sent']}": True, "keywords/$draft": None}}),
    ], raise_errors=True)
    names = [type(r.response).__name__ for r in out]
    assert names == ["EmailSetResponse", "EmailSubmissionSetResponse", "EmailSetResponse"], names
    implicit = out[2].response
    assert implicit.updated and not implicit.not_updated, implicit  # type: ignore[union-attr]
    wait_for(lambda: len(events) >= 2, 20, "a push event after the send")
    sent = client.request([EmailQuery(filter=jmapc.EmailQueryFilterCondition(in_mailbox=roles["sent"])),
                           EmailGet(ids=Ref("/ids"), properties=["subject", "keywords", "attachments"])],
                          raise_errors=True)[1].response.data  # type: ignore[union-attr]
    mine = [e for e in sent if e.subject == "from jmapc"]
    assert len(mine) == 1 and "$draft" not in (mine[0].keywords or {})
    assert mine[0].attachments and mine[0].attachments[0].name == "note.txt"


def test_jmap_jam(site: tuple[ServerProcess, Proxy]) -> None:
    node = shutil.which("node")
    need("node", node is not None)
    need("jmap-jam (npm ci in tests/jmap_js)", (JS_DIR / "node_modules" / "jmap-jam").exists())
    srv, proxy = site
    deliver(srv, "for jam")
    token = srv.admin("token", "create", USER, "--label", "jmap-jam").stdout.strip()
    env = {**os.environ, "NODE_EXTRA_CA_CERTS": str(proxy.cert), "JMAP_TOKEN": token, "JMAP_TO": BOB,
           "JMAP_SESSION": f"https://localhost:{proxy.port}/.well-known/jmap"}
    result = subprocess.run([node, str(JS_DIR / "jam_flows.mjs")], env=env, capture_output=True, text=True,
                            timeout=120, cwd=JS_DIR)
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["ok"] is True, report


def test_http_section_is_checked(tmp_path: Path) -> None:
    from mailhaven.config import ConfigError, config_from_dict

    assert config_from_dict({"http": {"trusted_proxies": ["10.0.0.0/8", "::1"]}}, tmp_path).http.trusted_proxies
    with pytest.raises(ConfigError, match="trusted_proxies"):
        config_from_dict({"http": {"trusted_proxies": ["10.0.0.300"]}}, tmp_path)
    with pytest.raises(ConfigError, match="public_url"):
        config_from_dict({"http": {"public_url": "mail.example.org/jmap"}}, tmp_path)
