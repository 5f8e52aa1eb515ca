"""Every corpus message through POP3 over a real socket: RETR sends it byte-exact as
RFC 1939 3 says (CRLF line ends, a leading "." doubled, "." alone at the end), and the
octet count LIST gives is that of the message with CRLF line ends. RETRs in order (answered
from the read-ahead as they arrive) and out of order (a store trip each) give the same."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import ServerProcess, corpus_messages

USER, PASSWORD = "corpus@example.com", "pw"


def rfc1939(raw: bytes) -> tuple[int, bytes]:
    """(LIST size, RETR body) written from RFC 1939 3 and 11, line by line."""
    lines = raw.splitlines()
    size = sum(len(line) + 2 for line in lines)
    body = b"".join((b"." + line if line.startswith(b".") else line) + b"\r\n" for line in lines)
    return size, body + b".\r\n"


class Client:
    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=60)
        self.file = self.sock.makefile("rb")
        assert self.file.readline().startswith(b"+OK")

    def command(self, line: str) -> bytes:
        self.sock.sendall(line.encode() + b"\r\n")
        return self.file.readline()

    def multiline(self) -> bytes:
        out = []
        while (line := self.file.readline()) != b".\r\n":
            assert line.endswith(b"\r\n") and line, line
            out.append(line)
        return b"".join(out) + b".\r\n"


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = ServerProcess(tmp_path_factory.mktemp("pop3corpus") / "data").start()
    server.add_user(USER, PASSWORD)
    try:
        yield server
    finally:
        server.stop()


def multiappend(port: int, messages: list[bytes]) -> None:
    """IMAP MULTIAPPEND (RFC 3502) with LITERAL+, a hundred messages a command: one commit
    each, where an APPEND a message took most of a minute on a busy machine."""
    with socket.create_connection(("127.0.0.1", port), timeout=120) as s:
        f = s.makefile("rb")
        f.readline()
        s.sendall(f"a LOGIN {USER} {PASSWORD}\r\n".encode())
        assert f.readline().startswith(b"a OK")
        for at in range(0, len(messages), 100):
            command = [b"b APPEND INBOX"]
            for raw in messages[at:at + 100]:
                command += [b" {%d+}\r\n" % len(raw), raw]
            s.sendall(b"".join(command) + b"\r\n")
            while (line := f.readline()).startswith(b"*"):
                pass
            assert line.startswith(b"b OK"), line


def test_every_corpus_message_retrieved_byte_exact(srv: ServerProcess, corpus_files: list[Path]) -> None:
    messages = corpus_messages()
    multiappend(srv.port("imap"), [raw for _, raw in messages])
    expected = [rfc1939(raw) for _, raw in messages]
    pop = Client(srv.port("pop3"))
    assert pop.command(f"USER {USER}").startswith(b"+OK")
    assert pop.command(f"PASS {PASSWORD}").startswith(b"+OK")
    assert pop.command("LIST").startswith(b"+OK")
    listed = [int(line.split()[1]) for line in pop.multiline().splitlines()[:-1]]
    assert listed == [size for size, _ in expected]
    order = list(range(1, len(messages) + 1))
    for msg in order + order[::-7]:                   # in order, then backwards in steps
        size, body = expected[msg - 1]
        assert pop.command(f"RETR {msg}") == f"+OK {size} octets\r\n".encode(), messages[msg - 1][0]
        assert pop.multiline() == body, messages[msg - 1][0]
    assert pop.command("QUIT").startswith(b"+OK")
