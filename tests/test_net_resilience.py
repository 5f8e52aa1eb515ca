"""The connection layer and the log under abuse (issue 14 item 8), over real sockets."""

from __future__ import annotations

import base64
import imaplib
import re
import smtplib
import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import ServerProcess

PASSWORD = "s3cret"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    srv = ServerProcess(tmp_path / "data").start()        # uvloop: the default event loop
    srv.add_user("alice@example.org", PASSWORD)
    try:
        yield srv
    finally:
        srv.stop()


def _reset(sock: socket.socket) -> None:
    """Close with a TCP reset: the server's next write finds the transport gone."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def test_a_client_resetting_mid_reply_logs_no_traceback(server: ServerProcess) -> None:
    imap = imaplib.IMAP4("127.0.0.1", server.port("imap"))
    imap.login("alice@example.org", PASSWORD)
    imap.append("INBOX", None, None, b"Subject: big\r\n\r\n" + (b"y" * 998 + b"\r\n") * 2000)
    imap.logout()
    for _ in range(15):
        s = socket.create_connection(("127.0.0.1", server.port("imap")))
        s.recv(1000)
        s.sendall(f"a LOGIN alice@example.org {PASSWORD}\r\nb SELECT INBOX\r\n".encode())
        time.sleep(0.05)
        s.sendall(b"c FETCH 1:* BODY[]\r\n" * 5)
        s.recv(10)
        _reset(s)
    for name, flood in (("imap", b"a CAPABILITY\r\n"), ("pop3", b"CAPA\r\n"), ("smtp", b"EHLO x\r\n")):
        for _ in range(15):
            s = socket.create_connection(("127.0.0.1", server.port(name)))
            s.sendall(flood * 3000)
            _reset(s)
    time.sleep(1)
    with imaplib.IMAP4("127.0.0.1", server.port("imap")) as imap:   # still serving
        imap.login("alice@example.org", PASSWORD)
    log = server.log_text()
    assert "handler is closed" not in log
    assert "Traceback" not in log


def test_control_characters_in_a_login_name_cannot_forge_log_lines(server: ServerProcess) -> None:
    # No space: the old quoting (only values with spaces) let this through as two lines.
    forged = "x\n2026-01-01T00:00:00\tinfo\tmailhaven.smtp\tauthenticated\r\x1b[2K"
    smtp = smtplib.SMTP("127.0.0.1", server.port("submission"))
    smtp.ehlo("c")
    code, _ = smtp.docmd("AUTH", "PLAIN " + base64.b64encode(f"\0{forged}\0wrong".encode()).decode())
    assert code == 535
    smtp.close()
    imap = socket.create_connection(("127.0.0.1", server.port("imap")))
    imap.recv(1000)
    name = forged.encode()
    imap.sendall(b"a LOGIN {%d+}\r\n%s wrong\r\n" % (len(name), name))
    assert b"a NO" in imap.recv(1000)
    imap.close()
    time.sleep(0.5)
    log = server.log_text()
    lines = log.splitlines()
    # Every line the server wrote starts with its own timestamp; the forged one is inside
    # an escaped value of the auth failure's line.
    assert all(re.match(r"\d{4}-\d\d-\d\dT", line) for line in lines), lines
    assert not any(line.startswith("2026-01-01T00:00:00") for line in lines)
    assert "\x1b" not in log and "\r" not in log
    assert '\\n2026-01-01T00:00:00\\tinfo' in log
