"""REQUIRETLS (RFC 8689) between two real Mailhaven servers and a plain sink.

The sender trusts the receiver's certificate (SSL_CERT_FILE) and nothing else. A message
submitted with ``MAIL FROM ... REQUIRETLS`` reaches the receiver over verified TLS with
REQUIRETLS passed on; to a host without STARTTLS, or whose certificate does not verify, it
is never sent and comes back with 5.7.30. ``TLS-Required: No`` lets a message through the
sender's own ``require_tls`` for a domain whose host has no TLS."""

from __future__ import annotations

import email
import email.policy
import imaplib
import json
import smtplib
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import ServerProcess, free_port, wait_for
from smtpsink import SmtpSink

PASSWORD = "s3cret"


def _unverified() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    return ctx


@pytest.fixture
def peers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[ServerProcess, ServerProcess, SmtpSink]]:
    receiver = ServerProcess(tmp_path / "rx", hostname="mx.dest.example",
                             extra_config='[trace]\nlisteners = ["smtp"]\n').start()
    sink_port = free_port()
    sink = SmtpSink("127.0.0.1", sink_port).__enter__()
    sender = ServerProcess(tmp_path / "tx", hostname="mail.src.example")
    rx = f"127.0.0.1:{receiver.port('smtp')}"
    sender.extra_config = (
        "[relay]\n"
        f'require_tls = ["strict.example"]\n'
        f'routes = {{ "dest.example" = "{rx}", "plain.example" = "127.0.0.1:{sink_port}", '
        f'"strict.example" = "127.0.0.1:{sink_port}", "self.example" = "127.0.0.1:{sender.port("smtp")}" }}\n'
        '[queue]\nretry = ["1h"]\n')
    # The sender verifies certificates against the receiver's (self-signed) one only.
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "rx" / "tls" / "cert.pem"))
    sender.start()
    try:
        receiver.add_user("bob@dest.example", PASSWORD)
        sender.add_user("alice@src.example", PASSWORD)
        yield sender, receiver, sink
    finally:
        sender.stop()
        receiver.stop()
        sink.__exit__()


def submit(sender: ServerProcess, rcpt: str, subject: str, *, requiretls: bool, extra: str = "") -> None:
    body = (f"From: alice@src.example\r\nTo: {rcpt}\r\nSubject: {subject}\r\n{extra}\r\nhello\r\n")
    with smtplib.SMTP("127.0.0.1", sender.port("submission"), timeout=10) as smtp:
        smtp.starttls(context=_unverified())
        smtp.login("alice@src.example", PASSWORD)
        smtp.sendmail("alice@src.example", [rcpt], body, mail_options=["REQUIRETLS"] if requiretls else [])


def inbox(server: ServerProcess, user: str) -> list[email.message.EmailMessage]:
    imap = imaplib.IMAP4("127.0.0.1", server.port("imap"), timeout=10)
    imap.login(user, PASSWORD)
    imap.select("INBOX")
    out = []
    for num in imap.search(None, "ALL")[1][0].split():
        data = imap.fetch(num, "(RFC822)")[1][0]
        assert isinstance(data, tuple)
        out.append(email.message_from_bytes(data[1], policy=email.policy.default))
    imap.logout()
    return out  # type: ignore[return-value]


def test_queue_honours_requiretls_and_tls_required_no(peers: tuple[ServerProcess, ServerProcess, SmtpSink]) -> None:
    sender, receiver, sink = peers
    # The server: REQUIRETLS offered after STARTTLS only, and refused before it (5.7.10).
    with smtplib.SMTP("127.0.0.1", receiver.port("smtp"), local_hostname="client.example", timeout=10) as smtp:
        smtp.ehlo()
        assert not smtp.has_extn("requiretls")
        assert smtp.mail("someone@src.example", ["REQUIRETLS"])[:1] == (530,)
        smtp.rset()
        smtp.starttls(context=_unverified())
        smtp.ehlo()
        assert smtp.has_extn("requiretls")
        assert smtp.mail("someone@src.example", ["REQUIRETLS"])[0] == 250

    # The queue.
    submit(sender, "bob@dest.example", "verified", requiretls=True)
    submit(sender, "carol@plain.example", "no starttls", requiretls=True)
    submit(sender, "dave@self.example", "unverified", requiretls=True)
    submit(sender, "erin@strict.example", "tls optional", requiretls=False, extra="TLS-Required: No\r\n")
    submit(sender, "frank@strict.example", "tls required", requiretls=False)

    got = wait_for(lambda: inbox(receiver, "bob@dest.example"), 30, "delivery over verified TLS")
    assert got[0]["Subject"] == "verified"
    traces = "".join(p.read_text() for p in (receiver.data / "trace").glob("*.log"))
    assert "MAIL FROM:<alice@src.example>" in traces
    assert all("REQUIRETLS" in line for line in traces.splitlines() if "MAIL FROM:<alice@src.example>" in line)

    bounces = wait_for(lambda: len(b := inbox(sender, "alice@src.example")) >= 2 and b, 30, "two 5.7.30 bounces")
    reports = [m.as_string() for m in bounces]
    assert len(reports) == 2 and all("5.7.30" in r for r in reports)
    assert any("carol@plain.example" in r for r in reports) and any("dave@self.example" in r for r in reports)

    # TLS-Required: No went through our require_tls in clear; the same without it waits.
    wait_for(lambda: sink.messages, 30, "the TLS-Required: No message at the sink")
    entries = wait_for(lambda: [e for e in json.loads(sender.admin("queue", "list", "--json").stdout)
                                if e["attempts"]], 30, "the attempt at frank's")
    assert [e["to"] for e in entries] == ["frank@strict.example"]
    assert [m.rcpt_to for m in sink.messages] == [["erin@strict.example"]]
    assert b"TLS-Required: No" in sink.messages[0].data
