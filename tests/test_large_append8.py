"""IMAP APPEND of a large literal8 (``~{n}``, RFC 3516): spooled to a blob as it arrives,
like an ordinary literal, and its binary parts re-encoded as base64 from the file (it was
held whole, then copied while encoding: several times its size in memory)."""

from __future__ import annotations

import base64
import contextlib
import imaplib
import os
import random
import socket
from collections.abc import Iterator

import pytest

from conftest import ServerProcess, fresh_pg_schema
from mailhaven.message import binary
from test_large_messages import peak_growth_mb

PASSWORD = "s3cret"
SIZE = 40 * 1000 * 1000


def binary_message(size: int, tag: str, seed: int) -> bytes:
    head = (f"From: a@example.net\r\nTo: b@example.com\r\nSubject: binary {tag}\r\nMIME-Version: 1.0\r\n"
            "Content-Type: multipart/mixed; boundary=b0\r\n\r\n--b0\r\nContent-Type: text/plain\r\n\r\n"
            "see the file\r\n--b0\r\nContent-Type: application/octet-stream\r\n"
            "Content-Transfer-Encoding: binary\r\n\r\n").encode()
    tail = b"\r\n--b0--\r\n"
    return head + random.Random(seed).randbytes(size - len(head) - len(tail)) + tail


@pytest.mark.parametrize("copy", [57 * 3, binary.COPY])
def test_file_encoding_matches_the_whole_message_one(tmp_path: pytest.TempPathFactory, copy: int,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from mailhaven.message.fileview import FileView

    monkeypatch.setattr(binary, "COPY", copy)
    single = (b"Subject: one\r\nContent-Transfer-Encoding: binary\r\n\r\n"
              + random.Random(7).randbytes(5000))       # the whole message is the binary leaf
    for raw in (binary_message(20_000, "small", 1), single, b"Subject: plain\r\n\r\ntext\r\n"):
        path = tmp_path / "m.eml"  # type: ignore[operator]
        path.write_bytes(raw)
        out: list[bytes] = []
        with open(path, "rb") as f:
            changed = binary.binary_parts_to_base64_file(FileView(f.fileno(), len(raw)), out.append)
        expected = binary.binary_parts_to_base64(raw)
        assert changed == (expected != raw)
        assert (b"".join(out) if changed else raw) == expected
        assert all(len(piece) <= copy * 4 // 3 + copy // 19 + 4 for piece in out)


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def srv(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """The server on the embedded store, and on PostgreSQL (no files: the binary parts are
    re-encoded from the stored rows, read by range)."""
    with contextlib.ExitStack() as stack:
        store = ""
        if request.param == "postgres":
            dsn, schema = stack.enter_context(fresh_pg_schema())
            store = f'[store]\nbackend = "postgres"\ndsn = "{dsn}"\nschema = "{schema}"\n'
        s = ServerProcess(tmp_path_factory.mktemp("append8") / "data",
                          extra_config='[limits]\nmessage_size = "100M"\nimap_literal = "100M"\n' + store).start()
        try:
            s.add_users(*(f"bin{i}@example.com" for i in range(4)), password=PASSWORD)
            yield s
        finally:
            s.stop()


def append8(srv: ServerProcess, user: str, raw: bytes) -> None:
    with socket.create_connection(("127.0.0.1", srv.port("imap")), timeout=300) as sock:
        f = sock.makefile("rb")

        def reply(tag: bytes) -> bytes:
            while not (line := f.readline()).startswith(tag + b" "):
                assert line, "connection closed"
            return line

        f.readline()
        sock.sendall(f"a LOGIN {user} {PASSWORD}\r\n".encode())
        assert reply(b"a").split()[1] == b"OK"
        sock.sendall(b"b APPEND INBOX ~{%d}\r\n" % len(raw))
        assert f.readline().startswith(b"+")
        sock.sendall(raw)
        sock.sendall(b"\r\n")
        done = reply(b"b")
        assert done.split()[1] == b"OK", done


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads RSS from /proc")
def test_four_large_literal8_appends_with_flat_memory(srv: ServerProcess) -> None:
    users = [f"bin{i}@example.com" for i in range(4)]
    mails = [binary_message(SIZE, str(i), seed=i) for i in range(4)]
    assert srv.proc is not None
    growth = peak_growth_mb(srv.proc.pid, [lambda u=u, m=m: append8(srv, u, m) for u, m in zip(users, mails, strict=True)])

    stored = binary.binary_parts_to_base64(mails[0])          # what RFC 3516 4.4 stores
    part_at = stored.index(b"base64\r\n\r\n") + len(b"base64\r\n\r\n")
    with imaplib.IMAP4("127.0.0.1", srv.port("imap"), timeout=60) as m:
        m.login(users[0], PASSWORD)
        m.select("INBOX", readonly=True)
        _, data = m.fetch("1", f"(RFC822.SIZE BODY.PEEK[2]<0.1000> BODY.PEEK[]<{len(stored) - 2000}.2000>)")
    assert f"RFC822.SIZE {len(stored)}".encode() in data[0][0]  # type: ignore[index]
    assert data[0][1] == stored[part_at:part_at + 1000]  # type: ignore[index]
    original_at = mails[0].index(b"binary\r\n\r\n") + len(b"binary\r\n\r\n")
    first_lines = data[0][1][:988].replace(b"\r\n", b"")  # type: ignore[index]    # 13 lines of 76
    assert base64.b64decode(first_lines) == mails[0][original_at:original_at + len(first_lines) * 3 // 4]
    assert data[1][1] == stored[-2000:]  # type: ignore[index]
    assert growth < 150.0, growth
