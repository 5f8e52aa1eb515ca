"""Odd input over a real socket must get an answer, never a dropped connection or a traceback
(issue 14 item 8): an empty literal as the last argument, a line over 64 KiB inside IDLE or an
AUTHENTICATE exchange. And a failed login is logged with the user name it tried."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from conftest import ServerProcess

USER, PASSWORD = "odd@example.com", "pw"


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = ServerProcess(tmp_path_factory.mktemp("odd") / "data").start()
    server.add_user(USER, PASSWORD)
    try:
        yield server
    finally:
        server.stop()


class Wire:
    def __init__(self, srv: ServerProcess) -> None:
        self.sock = socket.create_connection((srv.host, srv.port("imap")), timeout=10)
        self.buf = b""
        assert self.line().startswith(b"* OK")

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def line(self) -> bytes:
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"the server closed the connection; had: {self.buf!r}")
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\r\n")
        return line

    def until_tagged(self, tag: bytes) -> list[bytes]:
        lines = []
        while True:
            line = self.line()
            lines.append(line)
            if line.startswith(tag + b" "):
                return lines

    def alive(self) -> None:
        self.send(b"z NOOP\r\n")
        assert self.until_tagged(b"z")[-1].startswith(b"z OK")

    def close(self) -> None:
        self.sock.close()


def test_an_empty_literal_as_the_last_argument_is_answered(srv: ServerProcess) -> None:
    w = Wire(srv)
    w.send(b"a LOGIN x {0+}\r\n\r\n")
    reply = w.until_tagged(b"a")[-1]
    assert reply.startswith((b"a NO", b"a BAD")), reply
    w.alive()
    w.send(b"b LOGIN {0+}\r\n {0+}\r\n\r\n")    # both empty, the last one last on its line
    assert w.until_tagged(b"b")[-1].startswith((b"b NO", b"b BAD"))
    w.alive()
    w.close()
    assert "Traceback" not in srv.log_text()


def test_a_line_over_64k_inside_idle_ends_the_idle_with_bad(srv: ServerProcess) -> None:
    w = Wire(srv)
    w.send(f"a LOGIN {USER} {PASSWORD}\r\nb SELECT INBOX\r\n".encode())
    w.until_tagged(b"b")
    w.send(b"c IDLE\r\n")
    assert w.line().startswith(b"+")
    w.send(b"x" * (70 * 1024) + b"\r\n")
    assert w.until_tagged(b"c")[-1].startswith(b"c BAD")
    w.alive()
    w.close()
    assert "Traceback" not in srv.log_text()


def test_a_line_over_64k_inside_authenticate_fails_the_exchange(srv: ServerProcess) -> None:
    w = Wire(srv)
    w.send(b"a AUTHENTICATE PLAIN\r\n")
    assert w.line().startswith(b"+")
    w.send(b"A" * (70 * 1024))                  # in two writes: the limit is hit before the LF
    w.send(b"A" * 1024 + b"\r\n")
    assert w.until_tagged(b"a")[-1].startswith(b"a BAD")
    w.alive()
    w.send(f"b LOGIN {USER} {PASSWORD}\r\n".encode())
    assert w.until_tagged(b"b")[-1].startswith(b"b OK")
    w.close()
    assert "Traceback" not in srv.log_text()


def test_a_failed_login_is_logged_with_the_user_name(srv: ServerProcess) -> None:
    w = Wire(srv)
    w.send(b"a LOGIN nosuch@example.com wrong\r\n")
    assert w.until_tagged(b"a")[-1].startswith(b"a NO")
    w.send(b"b AUTHENTICATE PLAIN AGJvZ3VzQGV4YW1wbGUuY29tAHdyb25n\r\n")   # \0bogus@example.com\0wrong
    assert w.until_tagged(b"b")[-1].startswith(b"b NO")
    w.close()
    failed = [ln for ln in srv.log_text().splitlines() if "auth failed" in ln and "imap" in ln]
    assert any("user=nosuch@example.com" in ln for ln in failed), failed
    assert any("user=bogus@example.com" in ln for ln in failed), failed
