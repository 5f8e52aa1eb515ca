"""Helpers for the webmail browser tests: a tiny JMAP client (HTTP Basic, as a third-party
client would use), mail delivery into the running server, a canary HTTP server, and the
Chromium the tests drive (:func:`chromium`)."""

from __future__ import annotations

import base64
import http.server
import importlib.util
import json
import smtplib
import threading
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from email.message import EmailMessage
from typing import Any

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
MAIL = "urn:ietf:params:jmap:mail"


@contextmanager
def chromium() -> Iterator[Any]:
    """Headless Chromium (Debian's, driven by Playwright) until the block ends."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


class JMAP:
    """RFC 8620 over HTTP Basic from loopback."""

    def __init__(self, base: str, user: str, password: str) -> None:
        self.base = base
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        self.auth = {"Authorization": f"Basic {token}"}
        self.session = self._json("GET", "/.well-known/jmap")
        self.account = self.session["primaryAccounts"][MAIL]

    def _json(self, method: str, url: str, body: bytes | None = None,
              ctype: str = "application/json") -> Any:
        if url.startswith("/"):
            url = self.base + url
        req = urllib.request.Request(url, data=body, method=method,
                                     headers={**self.auth, "Content-Type": ctype})
        with urllib.request.urlopen(req, timeout=30) as res:
            return json.loads(res.read())

    def call(self, name: str, args: dict[str, Any]) -> dict[str, Any]:
        body = {"using": ["urn:ietf:params:jmap:core", MAIL, "urn:ietf:params:jmap:submission"],
                "methodCalls": [[name, {"accountId": self.account, **args}, "0"]]}
        out = self._json("POST", self.session["apiUrl"], json.dumps(body).encode())
        rname, rargs, _ = out["methodResponses"][0]
        assert rname == name, (rname, rargs)
        return rargs

    def mailbox(self, role: str) -> str:
        boxes = self.call("Mailbox/get", {"ids": None})["list"]
        return next(m["id"] for m in boxes if m.get("role") == role)

    def emails(self, role: str, props: list[str] | None = None) -> list[dict[str, Any]]:
        ids = self.call("Email/query", {"filter": {"inMailbox": self.mailbox(role)},
                                        "sort": [{"property": "receivedAt", "isAscending": False}]})["ids"]
        if not ids:
            return []
        return self.call("Email/get", {"ids": ids, "properties": props or [
            "id", "subject", "from", "to", "keywords", "mailboxIds", "attachments", "inReplyTo",
            "messageId", "preview"]})["list"]

    def upload(self, data: bytes, ctype: str) -> str:
        url = self.session["uploadUrl"].replace("{accountId}", self.account)
        return str(self._json("POST", url, data, ctype)["blobId"])

    def download(self, blob_id: str) -> bytes:
        url = (self.session["downloadUrl"].replace("{accountId}", self.account)
               .replace("{blobId}", blob_id).replace("{name}", "x").replace("{type}", "application/octet-stream"))
        if url.startswith("/"):
            url = self.base + url
        with urllib.request.urlopen(urllib.request.Request(url, headers=self.auth), timeout=30) as res:
            return bytes(res.read())

    def import_message(self, raw: bytes, role: str = "inbox") -> str:
        blob = self.upload(raw, "message/rfc822")
        res = self.call("Email/import", {"emails": {"m": {"blobId": blob, "mailboxIds": {self.mailbox(role): True},
                                                          "keywords": {}}}})
        assert "m" in res.get("created", {}), res
        return str(res["created"]["m"]["id"])


def smtp_available() -> bool:
    return importlib.util.find_spec("mailhaven.smtp.server") is not None


def deliver(server: Any, to: str, raw: bytes, password: str = "s3cret") -> None:
    """Into ``to``'s INBOX: over SMTP when that server exists, else by JMAP Email/import."""
    if smtp_available() and server.ports.get("smtp"):
        with smtplib.SMTP("127.0.0.1", server.port("smtp"), timeout=30) as s:
            s.sendmail("sender@outside.example", [to], raw)
        return
    JMAP(f"http://127.0.0.1:{server.port('http')}", to, password).import_message(raw)


def message(subject: str, body: str, *, sender: str = "Carol <carol@outside.example>",
            to: str = "alice@example.org", html: str | None = None,
            attachment: tuple[str, bytes] | None = None,
            inline_png: tuple[str, bytes] | None = None) -> bytes:
    """A message with a text part, optionally an HTML alternative (with an inline PNG
    under Content-ID ``inline_png[0]``, in multipart/related) and an attachment."""
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = subject
    msg["Message-ID"] = f"<{abs(hash((subject, body)))}@outside.example>"
    msg["Date"] = "Tue, 24 Nov 2026 07:00:00 +0000"
    msg.set_content(body)
    if html is not None:
        msg.add_alternative(html, subtype="html")
        if inline_png is not None:
            html_part = msg.get_payload()[1]
            html_part.add_related(inline_png[1], maintype="image", subtype="png", cid=f"<{inline_png[0]}>")
    if attachment is not None:
        msg.add_attachment(attachment[1], maintype="application", subtype="octet-stream",
                           filename=attachment[0])
    return msg.as_bytes()


class Canary:
    """An HTTP server that records every request; hostile mail points at it."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.hits: list[str] = []
        hits = self.hits

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                hits.append(self.command + " " + self.path)
                self.send_response(204)
                self.end_headers()

            do_POST = do_GET

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
