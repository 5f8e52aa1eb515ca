"""The webmail shows the inbound checks' verdict and trains the spam filter (filter/spam/):
Debian's Chromium driven by Playwright against ``mailhaven serve`` with DNS from
tests/dnsserver.py, mail sent over port 25 by smtplib from loopback addresses."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import ServerProcess, wait_for
from dnsserver import DNSServer
from mx_client import send_mx
from test_webmail_browser import Session, _require, jmap
from webmail_helpers import chromium

pytestmark = pytest.mark.slow

RECORDS = {
    "good.example": {"TXT": ['"v=spf1 ip4:127.0.0.1 -all"']},
    "_dmarc.good.example": {"TXT": ['"v=DMARC1; p=none"']},
    "bank.example": {"TXT": ['"v=spf1 ip4:127.0.0.1 -all"']},
    "_dmarc.bank.example": {"TXT": ['"v=DMARC1; p=none"']},
    "3.0.0.127.bl.test.example": {"A": ["127.0.0.2"]},
}


def send(srv: ServerProcess, mail_from: str, subject: str, source: str, helo: str = "client.good.example") -> None:
    msg = (f"From: {mail_from}\r\nTo: alice@example.org\r\nSubject: {subject}\r\n"
           f"Message-ID: <{abs(hash(subject))}@x>\r\n\r\nPlease read this.\r\n").encode()
    send_mx(srv, mail_from, ["alice@example.org"], msg, source=source, helo=helo)


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    _require()
    with DNSServer(RECORDS) as dns:
        server = ServerProcess(tmp_path_factory.mktemp("webspam") / "data", extra_config=(
            f'[dns]\nnameservers = ["127.0.0.1:{dns.port}"]\ntimeout = "2s"\n[spam]\ndnsbl = ["bl.test.example"]\ndnswl = []\n'))
        server.start()
        try:
            server.add_user("alice@example.org", "s3cret")
            send(server, "news@good.example", "Verified newsletter", "127.0.0.1")
            send(server, "security@bank.example", "Your account is locked", "127.0.0.2")   # SPF and DMARC fail
            send(server, "x@junky.example", "Cheap watches", "127.0.0.3", helo="127.0.0.3")  # to Junk
            yield server
        finally:
            server.stop()


@pytest.fixture(scope="module")
def browser(srv: ServerProcess) -> Iterator[Any]:
    with chromium() as b:
        yield b


def test_verdict_junk_count_and_buttons_that_train(srv: ServerProcess, browser: Any, tmp_path: Path) -> None:
    s = Session(browser, srv, "alice@example.org")
    api = jmap(srv, "alice@example.org")
    try:
        page = s.page
        s.open("Verified newsletter")
        verdict = page.locator(".message-card.expanded .verdict")
        assert "Sender verified: good.example" in verdict.inner_text()
        assert "danger" not in (verdict.get_attribute("class") or "")
        s.open("Your account is locked")
        warning = page.locator(".message-card.expanded .verdict.danger")
        assert "failed DMARC" in warning.inner_text() and "bank.example" in warning.inner_text()
        # The Junk folder shows its unread count; Not junk moves to the Inbox and learns ham.
        assert page.inner_text("#mailboxes li[data-role=junk] .unread-count") == "1"
        s.folder("junk")
        s.open("Cheap watches")
        assert "Looks like spam" in page.inner_text(".message-card.expanded .verdict")
        page.click(".toolbar button[data-action=not-junk]")
        wait_for(lambda: [e for e in api.emails("inbox") if e["subject"] == "Cheap watches"])
        wait_for(lambda: "learnt 1 message(s) as ham" in srv.log_text())
        # Junk from the Inbox learns spam.
        s.folder("inbox")
        s.open("Your account is locked")
        page.click(".toolbar button[data-action=junk]")
        wait_for(lambda: [e for e in api.emails("junk") if e["subject"] == "Your account is locked"])
        wait_for(lambda: "learnt 1 message(s) as spam" in srv.log_text())
        assert not s.errors
    finally:
        s.close()
