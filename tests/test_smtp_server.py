"""The SMTP server over real sockets, with smtplib, swaks and raw sockets, against
``mailhaven serve`` started by the conftest helpers."""

from __future__ import annotations

import base64
import json
import os
import shutil
import smtplib
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import ServerProcess, mailhaven_env
from mailhaven.auth.sasl import ScramClient

HOST = "127.0.0.1"
MSG = (b"From: alice@lancs.example\r\nTo: bob@nyu.example\r\nSubject: hello\r\n"
       b"Message-ID: <m1@lancs.example>\r\n\r\nHi Bob.\r\n.leading dot\r\n")


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    data = tmp_path_factory.mktemp("smtp") / "data"
    server = ServerProcess(data, extra_config='[limits]\nrecipients = 3\nmessage_size = "64K"\n').start()
    server.add_user("bob@nyu.example")
    server.add_user("carol@nyu.example")
    server.add_user("full@nyu.example", quota="2K")
    server.add_user("alice@lancs.example", password="alice-pw")
    server.admin("alias", "add", "team@nyu.example", "bob@nyu.example", "carol@nyu.example")
    server.admin("alias", "add", "al@lancs.example", "alice@lancs.example")
    try:
        yield server
    finally:
        server.stop()


def messages(server: ServerProcess, address: str) -> list[dict[str, Any]]:
    return json.loads(server.admin("mailbox", "list", address, "--json").stdout)  # type: ignore[no-any-return]


def raw(server: ServerProcess, address: str, uid: int) -> bytes:
    """The stored message, byte for byte, through ``mailhaven mailbox show``."""
    out = subprocess.run([sys.executable, "-m", "mailhaven", "--data", str(server.data), "mailbox", "show",
                          address, str(uid)], capture_output=True, check=True, env=mailhaven_env())
    return out.stdout


def run_raw(server: ServerProcess, port_name: str, data: bytes, wait: float = 0.5) -> bytes:
    with socket.create_connection((HOST, server.port(port_name)), timeout=10) as s:
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        out = b""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            chunk = s.recv(65536)
            if not chunk:
                break
            out += chunk
        return out


def need_swaks() -> None:
    """swaks is installed by scripts/test; elsewhere skip, but never under CI."""
    if shutil.which("swaks") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("swaks is required under CI=true")
        pytest.skip("swaks not installed")


def codes_of(output: bytes) -> list[int]:
    return [int(line[:3]) for line in output.split(b"\r\n") if len(line) >= 4 and line[3:4] == b" "]


# -- port 25 ----------------------------------------------------------------------------------


def test_swaks_delivers_to_inbox(srv: ServerProcess) -> None:
    need_swaks()
    before = len(messages(srv, "bob@nyu.example"))
    out = subprocess.run(["swaks", "--server", f"{HOST}:{srv.port('smtp')}", "--from", "alice@lancs.example",
                          "--to", "bob@nyu.example", "--header", "Subject: via swaks", "--pipeline"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "250 2.0.0 Message accepted" in out.stdout
    msgs = messages(srv, "bob@nyu.example")
    assert len(msgs) == before + 1 and msgs[-1]["subject"] == "via swaks"
    stored = raw(srv, "bob@nyu.example", msgs[-1]["uid"])
    assert stored.startswith(b"Return-Path: <alice@lancs.example>\r\nReceived: from ")
    assert b"by mail.test.example (Mailhaven) with ESMTP id " in stored
    assert b"for <bob@nyu.example>;" in stored


def test_smtplib_policy(srv: ServerProcess) -> None:
    with smtplib.SMTP(HOST, srv.port("smtp"), timeout=10) as s:
        code, text = s.ehlo("client.example")
        assert code == 250
        for ext in ("pipelining", "size", "8bitmime", "smtputf8", "enhancedstatuscodes", "starttls",
                    "chunking", "dsn"):
            assert s.has_extn(ext), ext
        assert not s.has_extn("auth")                  # never AUTH on port 25 by default
        assert s.mail("alice@lancs.example")[0] == 250
        assert s.rcpt("nobody@nyu.example") == (550, b"5.1.1 No such user here")
        assert s.rcpt("someone@gmail.example") == (550, b"5.7.1 Relay access denied")
        assert s.rcpt("bob@nyu.example")[0] == 250
        assert s.rcpt("team@nyu.example")[0] == 250                  # alias to bob and carol
        assert s.data(MSG)[0] == 250
        assert s.vrfy("bob")[0] == 252
        assert s.docmd("EXPN", "team")[0] == 502
        assert s.docmd("FOO")[0] == 500
        assert s.docmd("DATA")[0] == 503
    bob = messages(srv, "bob@nyu.example")
    carol = messages(srv, "carol@nyu.example")
    assert bob[-1]["message_id"] == "<m1@lancs.example>" and carol[-1]["message_id"] == "<m1@lancs.example>"
    stored = raw(srv, "carol@nyu.example", carol[-1]["uid"])
    assert stored.endswith(b"\r\nHi Bob.\r\n.leading dot\r\n")
    assert b"for <" not in stored                                      # two recipients: no "for"


def test_postmaster_is_always_accepted(srv: ServerProcess) -> None:
    srv.admin("alias", "add", "postmaster@nyu.example", "carol@nyu.example")
    before = len(messages(srv, "carol@nyu.example"))
    with smtplib.SMTP(HOST, srv.port("smtp"), timeout=10) as s:
        s.ehlo()
        s.mail("a@lancs.example")
        assert s.docmd("RCPT TO:<Postmaster>")[0] == 250                 # RFC 5321 4.1.1.3
        assert s.data(b"Subject: to postmaster\r\n\r\nhi\r\n")[0] == 250
    assert len(messages(srv, "carol@nyu.example")) == before + 1


def test_size_and_recipient_limits(srv: ServerProcess) -> None:
    with smtplib.SMTP(HOST, srv.port("smtp"), timeout=10) as s:
        s.ehlo()
        assert s.esmtp_features["size"] == str(64 * 1024)
        code, text = s.mail("alice@lancs.example", ["SIZE=100000"])
        assert (code, text[:5]) == (552, b"5.3.4")
        s.mail("alice@lancs.example")
        for _ in range(3):
            assert s.rcpt("bob@nyu.example")[0] == 250
        assert s.rcpt("bob@nyu.example") == (452, b"4.5.3 Too many recipients")
        code, text = s.data(MSG + b"x" * 70000)
        assert (code, text[:5]) == (552, b"5.3.4")
        assert s.noop()[0] == 250                               # the session carries on


def test_quota(srv: ServerProcess) -> None:
    addr = "full@nyu.example"
    body = b"From: a@lancs.example\r\nSubject: q\r\n\r\n" + b"x" * 1200 + b"\r\n"
    with smtplib.SMTP(HOST, srv.port("smtp"), timeout=10) as s:
        assert s.sendmail("a@lancs.example", [addr], body) == {}        # 1.4K of 2K used
        s.mail("a@lancs.example")
        assert s.rcpt(addr)[0] == 250                                     # not full yet
        code, text = s.data(body)                                         # would exceed: 452
        assert (code, text[:5]) == (452, b"4.2.2")
        s.mail("a@lancs.example", ["SIZE=1000"])
        assert s.rcpt(addr)[0] == 452                                     # declared size won't fit
        s.rset()
    assert len(messages(srv, addr)) == 1
    srv.admin("user", "set", addr, "--quota", "1M")
    with smtplib.SMTP(HOST, srv.port("smtp"), timeout=10) as s:
        assert s.sendmail("a@lancs.example", [addr], body) == {}
    assert len(messages(srv, addr)) == 2
    srv.admin("user", "set", addr, "--quota", "2K")


def test_mixed_quota_recipients_accepts_for_the_others(srv: ServerProcess) -> None:
    before = len(messages(srv, "carol@nyu.example"))
    before_full = len(messages(srv, "full@nyu.example"))
    with smtplib.SMTP(HOST, srv.port("smtp"), timeout=10) as s:
        s.ehlo()
        s.mail("a@lancs.example")
        code = s.rcpt("full@nyu.example")[0]
        assert code in (250, 452)
        assert s.rcpt("carol@nyu.example")[0] == 250
        assert s.data(b"Subject: big\r\n\r\n" + b"y" * 3000 + b"\r\n")[0] == 250
    assert len(messages(srv, "carol@nyu.example")) == before + 1
    # Accepted at RCPT means stored: the 250 covers every accepted recipient, so the one
    # whose quota the message overflows gets it too (quota grace) instead of losing it.
    assert len(messages(srv, "full@nyu.example")) == before_full + (1 if code == 250 else 0)


def test_bdat_and_pipelining_raw(srv: ServerProcess) -> None:
    before = len(messages(srv, "bob@nyu.example"))
    chunk1 = b"Subject: chunked\r\n\r\n"
    chunk2 = b".not stuffed\r\n"
    out = run_raw(srv, "smtp", b"EHLO c\r\nMAIL FROM:<a@lancs.example> BODY=8BITMIME\r\nRCPT TO:<bob@nyu.example>\r\n"
                  + b"BDAT %d\r\n" % len(chunk1) + chunk1 + b"BDAT %d LAST\r\n" % len(chunk2) + chunk2
                  + b"QUIT\r\n")
    assert codes_of(out) == [220, 250, 250, 250, 250, 250, 221]
    msgs = messages(srv, "bob@nyu.example")
    assert len(msgs) == before + 1
    assert raw(srv, "bob@nyu.example", msgs[-1]["uid"]).endswith(b"\r\n\r\n.not stuffed\r\n")


def test_no_smtp_smuggling_over_the_wire(srv: ServerProcess) -> None:
    before = len(messages(srv, "bob@nyu.example"))
    before_carol = len(messages(srv, "carol@nyu.example"))
    smuggled = (b"Subject: outer\r\n\r\nhello\n.\nMAIL FROM:<admin@nyu.example>\r\nRCPT TO:<carol@nyu.example>\r\n"
                b"DATA\r\nSubject: smuggled\r\n\r\nevil\r\n\r.\r\n")
    out = run_raw(srv, "smtp", b"EHLO c\r\nMAIL FROM:<a@lancs.example>\r\nRCPT TO:<bob@nyu.example>\r\nDATA\r\n"
                  + smuggled + b".\r\nQUIT\r\n")
    assert codes_of(out) == [220, 250, 250, 250, 354, 250, 221]
    assert len(messages(srv, "bob@nyu.example")) == before + 1
    assert len(messages(srv, "carol@nyu.example")) == before_carol
    stored = raw(srv, "bob@nyu.example", messages(srv, "bob@nyu.example")[-1]["uid"])
    assert b"MAIL FROM:<admin@nyu.example>" in stored
    assert stored.count(b"\n") == stored.count(b"\r\n")          # bare LFs normalised


def test_starttls_on_port_25(srv: ServerProcess) -> None:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with smtplib.SMTP(HOST, srv.port("smtp"), timeout=10) as s:
        s.ehlo()
        assert s.starttls(context=ctx)[0] == 220
        s.ehlo()
        assert not s.has_extn("starttls")
        assert s.sendmail("a@lancs.example", ["bob@nyu.example"], MSG) == {}
    msgs = messages(srv, "bob@nyu.example")
    stored = raw(srv, "bob@nyu.example", msgs[-1]["uid"])
    assert b"with ESMTPS id" in stored and b"(using TLSv1." in stored


def test_line_too_long(srv: ServerProcess) -> None:
    out = run_raw(srv, "smtp", b"EHLO c\r\nNOOP " + b"x" * 5000 + b"\r\nNOOP\r\nQUIT\r\n")
    assert codes_of(out) == [220, 250, 500, 250, 221]
    assert b"500 5.5.6" in out


def test_smtputf8(srv: ServerProcess) -> None:
    with smtplib.SMTP(HOST, srv.port("smtp"), timeout=10) as s:
        s.ehlo()
        assert s.mail("jos\u00e9@lancs.example", ["SMTPUTF8"])[0] == 250
        assert s.rcpt("bob@nyu.example")[0] == 250
        assert s.data("Subject: caf\u00e9\r\n\r\nol\u00e9\r\n".encode())[0] == 250
    stored = raw(srv, "bob@nyu.example", messages(srv, "bob@nyu.example")[-1]["uid"])
    assert b"with UTF8SMTP id" in stored and "jos\u00e9".encode() in stored


# -- submission ----------------------------------------------------------------------------------


def tls_ctx() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def test_submission_starttls_auth_login(srv: ServerProcess) -> None:
    before = len(messages(srv, "bob@nyu.example"))
    with smtplib.SMTP(HOST, srv.port("submission"), timeout=10) as s:
        s.ehlo()
        assert s.has_extn("starttls")
        s.starttls(context=tls_ctx())
        s.ehlo()
        assert s.esmtp_features["auth"].split() == ["PLAIN", "LOGIN", "SCRAM-SHA-256"]
        with pytest.raises(smtplib.SMTPAuthenticationError) as exc:
            s.login("alice@lancs.example", "wrong")
        assert exc.value.smtp_code == 535
        s.login("alice@lancs.example", "alice-pw")
        msg = b"From: Alice <alice@lancs.example>\r\nTo: bob@nyu.example\r\nSubject: submitted\r\n\r\nhi\r\n"
        assert s.sendmail("alice@lancs.example", ["bob@nyu.example"], msg) == {}
        # Envelope sender and From: must be hers (aliases count).
        with pytest.raises(smtplib.SMTPSenderRefused) as sender_exc:
            s.sendmail("bob@nyu.example", ["bob@nyu.example"], msg)
        assert sender_exc.value.smtp_code == 553
        forged = msg.replace(b"From: Alice <alice@lancs.example>", b"From: bob@nyu.example")
        with pytest.raises(smtplib.SMTPDataError) as data_exc:
            s.sendmail("alice@lancs.example", ["bob@nyu.example"], forged)
        assert data_exc.value.smtp_code == 553
        alias = msg.replace(b"From: Alice <alice@lancs.example>", b"From: al@lancs.example")
        assert s.sendmail("al@lancs.example", ["bob@nyu.example"], alias) == {}
    msgs = messages(srv, "bob@nyu.example")
    assert len(msgs) == before + 2
    stored = raw(srv, "bob@nyu.example", msgs[before]["uid"])
    assert b"with ESMTPSA id" in stored
    assert b"\r\nMessage-ID: <" in stored and b"\r\nDate: " in stored     # added when missing


def test_submission_requires_auth_and_tls(srv: ServerProcess) -> None:
    with smtplib.SMTP(HOST, srv.port("submission"), timeout=10) as s:
        s.ehlo()
        # Loopback counts as secure by default (like Dovecot): AUTH is offered even before TLS.
        assert s.has_extn("auth")
        code, _ = s.mail("alice@lancs.example")
        assert code == 530


def test_submissions_implicit_tls_scram(srv: ServerProcess) -> None:
    with smtplib.SMTP_SSL(HOST, srv.port("submissions"), timeout=10, context=tls_ctx()) as s:
        s.ehlo()
        assert "SCRAM-SHA-256" in s.esmtp_features["auth"]
        client = ScramClient("alice@lancs.example", "alice-pw")
        state: dict[str, bytes] = {}

        def scram(challenge: bytes | None = None) -> str:
            if challenge is None:
                return client.first().decode()
            if "final" not in state:
                state["final"] = client.final(challenge)
                return state["final"].decode()
            assert client.verify(challenge)
            return ""

        code, _ = s.auth("SCRAM-SHA-256", scram, initial_response_ok=True)
        assert code == 235
        msg = b"From: alice@lancs.example\r\nSubject: scram\r\n\r\nhi\r\n"
        assert s.sendmail("alice@lancs.example", ["bob@nyu.example"], msg) == {}
    stored = raw(srv, "bob@nyu.example", messages(srv, "bob@nyu.example")[-1]["uid"])
    assert b"with ESMTPSA id" in stored and b"(using TLSv1." in stored


def test_submission_remote_recipient_goes_to_the_queue(srv: ServerProcess) -> None:
    with smtplib.SMTP_SSL(HOST, srv.port("submissions"), timeout=10, context=tls_ctx()) as s:
        s.login("alice@lancs.example", "alice-pw")
        s.mail("alice@lancs.example")
        code, text = s.rcpt("someone@far.example")
    queue_running = "queue" in srv.log_text() or Path(srv.data / "queue").exists()
    # Without a queue service the server must refuse temporarily, never accept and drop.
    assert code == 250 or (code, text[:5]) == (451, b"4.4.0"), (code, text, queue_running)


def test_swaks_auth_plain_over_starttls(srv: ServerProcess) -> None:
    need_swaks()
    out = subprocess.run(["swaks", "--server", f"{HOST}:{srv.port('submission')}", "-tls",
                          "--auth", "PLAIN", "--auth-user", "alice@lancs.example",
                          "--auth-password", "alice-pw", "--from", "alice@lancs.example",
                          "--to", "bob@nyu.example"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout
    assert "235 2.7.0" in out.stdout and "250 2.0.0 Message accepted" in out.stdout


# -- servers with special limits ----------------------------------------------------------------


def test_auth_not_offered_in_plaintext_from_untrusted(make_server: Any) -> None:
    server = make_server("untrusted", extra_config="[security]\nloopback_is_secure = false\n")
    server.add_user("alice@lancs.example", password="alice-pw")
    with smtplib.SMTP(HOST, server.port("submission"), timeout=10) as s:
        s.ehlo()
        assert not s.has_extn("auth")
        assert s.docmd("AUTH", "PLAIN " + base64.b64encode(b"\0alice@lancs.example\0alice-pw").decode())[0] == 538
        assert s.mail("alice@lancs.example")[0] == 530
        s.starttls(context=tls_ctx())
        s.ehlo()
        assert s.has_extn("auth")
        s.login("alice@lancs.example", "alice-pw")


def test_auth_on_port_25_when_configured(make_server: Any) -> None:
    server = make_server("auth25", extra_config="[smtp]\nauth_on_smtp = true\n")
    server.add_user("alice@lancs.example", password="alice-pw")
    with smtplib.SMTP(HOST, server.port("smtp"), timeout=10) as s:
        s.ehlo()
        assert s.has_extn("auth")
        s.mail("alice@lancs.example")
        assert s.rcpt("x@far.example")[0] == 550                   # no AUTH: still no relay
        s.rset()
        s.login("alice@lancs.example", "alice-pw")
        s.mail("alice@lancs.example")
        assert s.rcpt("x@far.example")[0] in (250, 451)            # queued, or no queue service


def test_failed_logins_are_throttled(make_server: Any) -> None:
    server = make_server("throttle", extra_config='[security]\nlogin_failures_per_account = 3\nlogin_delay = "0.25s"\n')
    server.add_user("alice@lancs.example", password="alice-pw")
    started = time.monotonic()
    with smtplib.SMTP(HOST, server.port("submission"), timeout=20) as s:
        s.ehlo()
        bad = "PLAIN " + base64.b64encode(b"\0alice@lancs.example\0wrong").decode()
        for _ in range(3):
            code, msg = s.docmd("AUTH", bad)
            assert code == 535
        assert s.getreply()[0] == 421                    # third failure: closed
    assert time.monotonic() - started >= 0.25 + 0.5 + 1.0 - 0.1   # answers were slowed down
    with smtplib.SMTP(HOST, server.port("submission"), timeout=20) as s:
        s.ehlo()
        code, _ = s.docmd("AUTH", "PLAIN " + base64.b64encode(b"\0alice@lancs.example\0alice-pw").decode())
        assert code == 421                               # even the right password is refused now


def test_connection_limit_and_idle_timeout(make_server: Any) -> None:
    server = make_server("limits", extra_config='[limits]\nconnections = 2\nsmtp_idle = "1s"\n')
    a = socket.create_connection((HOST, server.port("smtp")))
    b = socket.create_connection((HOST, server.port("smtp")))
    assert a.recv(100).startswith(b"220 ") and b.recv(100).startswith(b"220 ")
    c = socket.create_connection((HOST, server.port("smtp")))
    assert c.recv(100).startswith(b"421 4.7.0")
    c.close()
    a.settimeout(10)
    assert a.recv(100).startswith(b"421 4.4.2")          # RFC 5321 4.5.3.2 idle timeout
    a.close()
    b.close()


def test_graceful_shutdown_sends_421(make_server: Any) -> None:
    server = make_server("shutdown")
    s = socket.create_connection((HOST, server.port("smtp")), timeout=10)
    assert s.recv(100).startswith(b"220 ")
    s.sendall(b"EHLO c\r\n")
    time.sleep(0.3)
    s.recv(1000)
    server.stop()
    assert s.recv(100).startswith(b"421 4.3.2")
    s.close()
