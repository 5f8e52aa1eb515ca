"""Two `mailhaven serve` processes (two nodes) sharing one PostgreSQL store.

Mail accepted over SMTP by node A is readable through node B (admin CLI and IMAP);
a live IMAP IDLE session on node B hears about it through LISTEN/NOTIFY; a flag set
through node B is seen by node A.
"""

from __future__ import annotations

import json
import secrets
import smtplib
import socket
import time
from email.message import EmailMessage

import pytest

from conftest import ServerProcess


@pytest.fixture
def two_nodes(make_server, pg_schema):
    dsn, schema = pg_schema
    config = f'[store]\nbackend = "postgres"\ndsn = "{dsn}"\nschema = "{schema}"\n'
    a: ServerProcess = make_server("node-a", extra_config=config, hostname="a.mail.test.example")
    b: ServerProcess = make_server("node-b", extra_config=config, hostname="b.mail.test.example")
    a.add_user("bob@nyu.example", "s3cret")
    return a, b


def _send(srv: ServerProcess, subject: str, body: str) -> None:
    msg = EmailMessage()
    msg["From"] = "alice@lancs.example"
    msg["To"] = "bob@nyu.example"
    msg["Subject"] = subject
    msg["Message-ID"] = f"<{secrets.token_hex(8)}@lancs.example>"
    msg.set_content(body)
    with smtplib.SMTP("127.0.0.1", srv.port("smtp"), timeout=30) as smtp:
        smtp.send_message(msg)


def _listing(srv: ServerProcess) -> list[dict]:
    out = srv.admin("mailbox", "list", "bob@nyu.example", "--json").stdout
    data = json.loads(out)
    return data if isinstance(data, list) else data.get("messages", [])


class RawImap:
    """Just enough IMAP over a socket to hold an IDLE (imaplib on 3.11 has no idle())."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.buf = b""
        self.line()  # greeting

    def line(self, timeout: float = 10.0) -> bytes:
        self.sock.settimeout(timeout)
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("server closed the connection")
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\r\n")
        return line

    def command(self, tag: str, text: str) -> list[bytes]:
        self.sock.sendall(f"{tag} {text}\r\n".encode())
        lines = []
        while True:
            line = self.line()
            lines.append(line)
            if line.startswith(tag.encode() + b" "):
                assert line.split()[1] == b"OK", line
                return lines

    def close(self) -> None:
        self.sock.close()


def test_mail_received_by_node_a_is_read_through_node_b(two_nodes):
    import imaplib

    a, b = two_nodes
    _send(a, "Shared store", "Delivered to node A, read on node B.")
    listing = _listing(b)
    assert [m["subject"] for m in listing] == ["Shared store"]
    shown = b.admin("mailbox", "show", "bob@nyu.example", str(listing[0]["uid"])).stdout
    assert "Delivered to node A, read on node B." in shown

    imap = imaplib.IMAP4("127.0.0.1", b.port("imap"), timeout=30)
    try:
        imap.login("bob@nyu.example", "s3cret")
        typ, data = imap.select("INBOX")
        assert typ == "OK" and data[0] == b"1"
        typ, fetched = imap.uid("FETCH", "1", "(BODY.PEEK[])")
        assert typ == "OK" and b"Delivered to node A, read on node B." in fetched[0][1]
        typ, _ = imap.uid("STORE", "1", "+FLAGS", "(\\Flagged)")
        assert typ == "OK"
    finally:
        imap.logout()
    # The flag set through node B is in the shared store node A reads.
    assert "\\Flagged" in str(_listing(a)[0].get("flags"))


def test_idle_on_node_b_hears_delivery_on_node_a(two_nodes):
    a, b = two_nodes
    _send(a, "First", "one")
    imap = RawImap(b.port("imap"))
    try:
        imap.command("a1", "LOGIN bob@nyu.example s3cret")
        selected = imap.command("a2", "SELECT INBOX")
        assert b"* 1 EXISTS" in selected
        imap.sock.sendall(b"a3 IDLE\r\n")
        assert imap.line().startswith(b"+")
        started = time.monotonic()
        _send(a, "Second", "two")
        # Node A commits, PostgreSQL NOTIFYs node B, node B's IDLE session reports it.
        while True:
            line = imap.line(timeout=10)
            if line == b"* 2 EXISTS":
                break
        assert time.monotonic() - started < 10
        imap.sock.sendall(b"DONE\r\n")
        while not imap.line().startswith(b"a3 "):
            pass
        imap.command("a4", "LOGOUT")
    finally:
        imap.close()


def test_node_killed_mid_load_loses_no_acknowledged_message(two_nodes):
    """A 250 from node A is a commit in the shared database: SIGKILL A while sessions are
    mid-transaction, then every acknowledged message is readable through node B."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    a, b = two_nodes
    acknowledged: set[str] = set()
    lock = threading.Lock()
    enough = threading.Event()

    def sender(worker: int) -> None:
        for i in range(1000):
            subject = f"acked {worker}.{i}"
            try:
                _send(a, subject, f"message {worker}.{i}")
            except (OSError, smtplib.SMTPException):
                return  # node A is gone: this one was never acknowledged
            with lock:
                acknowledged.add(subject)
                if len(acknowledged) >= 60:
                    enough.set()

    with ThreadPoolExecutor(max_workers=6) as pool:
        futures = [pool.submit(sender, w) for w in range(6)]
        assert enough.wait(60)
        a.kill()
        for f in futures:
            f.result()
    listing = _listing(b)
    stored = {m["subject"] for m in listing}
    assert acknowledged <= stored
    assert len(stored) - len(acknowledged) <= 6  # at most one committed-but-unanswered per session
    assert sorted(m["uid"] for m in listing) == list(range(1, len(listing) + 1))
