"""The POP3 listeners over real sockets: Python's poplib (plain, STLS, pop3s), raw
pipelining, limits and the idle timer, and agreement with IMAP on the same INBOX."""

from __future__ import annotations

import imaplib
import poplib
import smtplib
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import ServerProcess

USER = "bob@example.org"
PASSWORD = "s3cret pass"


def insecure_context() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def send(srv: ServerProcess, subject: str, body: str = "hello\r\n") -> None:
    with smtplib.SMTP("127.0.0.1", srv.port("smtp")) as s:
        s.sendmail("alice@example.net", [USER],
                   f"From: alice@example.net\r\nTo: {USER}\r\nSubject: {subject}\r\n\r\n{body}".encode())


@pytest.fixture
def pop_server(tmp_path: Path) -> Iterator[ServerProcess]:
    srv = ServerProcess(tmp_path / "data", extra_config='[limits]\npop3_idle = "2s"\n').start()
    srv.add_user(USER, PASSWORD)
    for n in range(1, 4):
        send(srv, f"message {n}", f"body {n}\r\n.starts with a dot\r\n")
    yield srv
    srv.stop()


def pop(srv: ServerProcess) -> poplib.POP3:
    return poplib.POP3("127.0.0.1", srv.port("pop3"), timeout=10)


def test_poplib_full_session(pop_server: ServerProcess) -> None:
    p = pop(pop_server)
    assert p.getwelcome().startswith(b"+OK")
    capa = p.capa()
    for cap in ("TOP", "UIDL", "USER", "SASL", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING", "STLS",
                "UTF8", "IMPLEMENTATION"):
        assert cap in capa
    assert "PLAIN" in capa["SASL"]
    p.user(USER)
    p.pass_(PASSWORD)
    count, size = p.stat()
    assert count == 3
    _, listing, _ = p.list()
    assert sum(int(line.split()[1]) for line in listing) == size
    _, lines, _ = p.retr(2)
    assert b"Subject: message 2" in lines and b".starts with a dot" in lines
    _, top, _ = p.top(1, 0)
    assert top[-1] == b"" and b"Subject: message 1" in top
    _, uidls, _ = p.uidl()
    assert len(uidls) == 3
    p.dele(1)
    with pytest.raises(poplib.error_proto, match="already deleted"):
        p.retr(1)
    p.quit()
    p = pop(pop_server)
    p.user(USER)
    p.pass_(PASSWORD)
    assert p.stat()[0] == 2
    _, uidls2, _ = p.uidl()
    assert [u.split()[1] for u in uidls2] == [u.split()[1] for u in uidls[1:]]
    p.quit()


def test_stls_with_poplib(pop_server: ServerProcess) -> None:
    p = pop(pop_server)
    p.stls(insecure_context())
    assert "STLS" not in p.capa()
    p.user(USER)
    p.pass_(PASSWORD)
    assert p.stat()[0] == 3
    for n in (1, 2, 3):                 # in order: 2 and 3 answered from the read-ahead over TLS
        assert f"Subject: message {n}".encode() in p.retr(n)[1]
    p.quit()


def test_pop3s_implicit_tls(pop_server: ServerProcess) -> None:
    p = poplib.POP3_SSL("127.0.0.1", pop_server.port("pop3s"), context=insecure_context(), timeout=10)
    assert "STLS" not in p.capa()
    p.user(USER)
    p.pass_(PASSWORD)
    assert p.stat()[0] == 3
    for n in (1, 2, 3):                 # in order: 2 and 3 answered from the read-ahead over TLS
        assert f"Subject: message {n}".encode() in p.retr(n)[1]
    p.quit()


def test_in_use_across_listeners(pop_server: ServerProcess) -> None:
    a = pop(pop_server)
    a.user(USER)
    a.pass_(PASSWORD)
    b = poplib.POP3_SSL("127.0.0.1", pop_server.port("pop3s"), context=insecure_context(), timeout=10)
    b.user(USER)
    with pytest.raises(poplib.error_proto, match=r"\[IN-USE\]"):
        b.pass_(PASSWORD)
    a.close()                                     # dropped without QUIT: the lock is released
    deadline = time.monotonic() + 5
    while True:
        b.user(USER)
        try:
            b.pass_(PASSWORD)
            break
        except poplib.error_proto:
            assert time.monotonic() < deadline
            time.sleep(0.1)
    assert b.stat()[0] == 3
    b.quit()


def raw_session(srv: ServerProcess, data: bytes, expect_lines: int, timeout: float = 10) -> list[bytes]:
    with socket.create_connection(("127.0.0.1", srv.port("pop3")), timeout=timeout) as s:
        f = s.makefile("rb")
        greeting = f.readline()
        assert greeting.startswith(b"+OK")
        s.sendall(data)
        return [f.readline() for _ in range(expect_lines)]


def test_pipelined_commands_in_one_write(pop_server: ServerProcess) -> None:
    lines = raw_session(pop_server, f"USER {USER}\r\nPASS {PASSWORD}\r\nSTAT\r\nUIDL 1\r\nNOOP\r\nQUIT\r\n".encode(), 6)
    assert lines[0].startswith(b"+OK") and lines[1].startswith(b"+OK Logged in")
    assert lines[2].startswith(b"+OK 3 ")
    assert lines[3].startswith(b"+OK 1 ")
    assert lines[4] == b"+OK\r\n" and lines[5].startswith(b"+OK")


def test_malformed_and_overlong_lines_keep_the_session(pop_server: ServerProcess) -> None:
    junk = b"\x00\xff garbage\r\n" + b"X" * 10000 + b"\r\nRETR 1\r\nCAPA\r\n"
    lines = raw_session(pop_server, junk, 3)
    assert lines[0].startswith(b"-ERR")
    assert lines[1] == b"-ERR Line too long\r\n"
    assert lines[2] == b"-ERR Command not valid in this state\r\n"


def test_idle_timeout_closes_without_update(pop_server: ServerProcess) -> None:
    with socket.create_connection(("127.0.0.1", pop_server.port("pop3")), timeout=10) as s:
        f = s.makefile("rb")
        f.readline()
        s.sendall(f"USER {USER}\r\nPASS {PASSWORD}\r\nDELE 1\r\n".encode())
        assert [f.readline()[:3] for _ in range(3)] == [b"+OK"] * 3
        started = time.monotonic()
        assert f.readline() == b"-ERR Disconnected for inactivity\r\n"
        assert f.readline() == b""
        assert time.monotonic() - started >= 1.5
    p = pop(pop_server)
    p.user(USER)
    p.pass_(PASSWORD)
    assert p.stat()[0] == 3
    p.quit()


def test_retrs_in_order_keep_the_session_alive(pop_server: ServerProcess) -> None:
    """RETRs of messages read ahead are answered as they arrive (no read by the session's
    loop): each still restarts the 2 s idle timer, so a slow client going in order for
    longer than that is not disconnected."""
    with smtplib.SMTP("127.0.0.1", pop_server.port("smtp")) as smtp:
        for n in range(4, 31):
            smtp.sendmail("alice@example.net", [USER], f"Subject: more {n}\r\n\r\nbody {n}\r\n".encode())
    p = pop(pop_server)
    p.user(USER)
    p.pass_(PASSWORD)
    started = time.monotonic()
    for n in range(1, 31):
        assert p.retr(n)[0].startswith(b"+OK"), n
        time.sleep(0.12)
    assert time.monotonic() - started > 3
    assert p.quit().startswith(b"+OK")


def test_plaintext_refused_from_untrusted_network(tmp_path: Path) -> None:
    srv = ServerProcess(tmp_path / "d", extra_config="[security]\nloopback_is_secure = false\n").start()
    try:
        srv.add_user(USER, PASSWORD)
        p = pop(srv)
        assert "USER" not in p.capa()
        with pytest.raises(poplib.error_proto, match=r"\[AUTH\] Plaintext"):
            p.user(USER)
        p.stls(insecure_context())
        p.user(USER)
        p.pass_(PASSWORD)
        p.quit()
    finally:
        srv.stop()


def test_wrong_password_is_auth_error(pop_server: ServerProcess) -> None:
    p = pop(pop_server)
    p.user(USER)
    started = time.monotonic()
    with pytest.raises(poplib.error_proto, match=r"\[AUTH\] Authentication failed"):
        p.pass_("wrong")
    assert time.monotonic() - started >= 0.2                    # failures are delayed
    p.user(USER)
    p.pass_(PASSWORD)
    p.quit()


def imap_login(srv: ServerProcess) -> imaplib.IMAP4:
    m = imaplib.IMAP4("127.0.0.1", srv.port("imap"))
    m.login(USER, PASSWORD)
    return m


def test_uidl_agrees_with_imap_and_deletes_cross_over(pop_server: ServerProcess) -> None:
    m = imap_login(pop_server)
    typ, data = m.select("INBOX")
    assert typ == "OK"
    raw_validity = m.untagged_responses["UIDVALIDITY"][0]
    assert isinstance(raw_validity, bytes)
    uidvalidity = raw_validity.decode()
    typ, data = m.uid("SEARCH", "ALL")
    assert isinstance(data[0], bytes)
    imap_uids = data[0].decode().split()
    p = pop(pop_server)
    p.user(USER)
    p.pass_(PASSWORD)
    _, uidls, _ = p.uidl()
    assert [u.split()[1].decode() for u in uidls] == [f"{uidvalidity}.{u}" for u in imap_uids]
    # IMAP expunges message 2 while POP3 holds its snapshot: RETR answers -ERR, nothing breaks.
    m.uid("STORE", imap_uids[1], "+FLAGS", r"(\Deleted)")
    m.expunge()
    with pytest.raises(poplib.error_proto, match="expunged"):
        p.retr(2)
    p.dele(1)                                                 # POP3 deletes message 1
    p.quit()
    m.noop()
    typ, data = m.uid("SEARCH", "ALL")
    assert isinstance(data[0], bytes) and data[0].decode().split() == [imap_uids[2]]
    m.logout()


def test_shutdown_releases_sessions(tmp_path: Path) -> None:
    srv = ServerProcess(tmp_path / "d").start()
    srv.add_user(USER, PASSWORD)
    p = pop(srv)
    p.user(USER)
    p.pass_(PASSWORD)
    assert srv.stop() == 0
    with pytest.raises((poplib.error_proto, OSError, EOFError)):
        p.stat()


def test_list_sizes_match_retr_for_imported_lf_mail(pop_server: ServerProcess, tmp_path: Path) -> None:
    mbox = tmp_path / "lf.mbox"
    mbox.write_bytes(b"From a@b Mon Jan  1 00:00:00 2001\nSubject: lf\n\none\n.two\n\n"
                     b"From a@b Mon Jan  1 00:00:01 2001\nSubject: lf 2\n\nthree\n\n")
    pop_server.admin("import", "mbox", str(mbox), "--user", USER)
    p = pop(pop_server)
    p.user(USER)
    p.pass_(PASSWORD)
    _, listing, _ = p.list()
    for line in listing:
        n, size = (int(x) for x in line.split())
        _, lines, _ = p.retr(n)                   # poplib hands back unstuffed lines
        assert size == sum(len(x) + 2 for x in lines), (n, size, lines)
    p.quit()
