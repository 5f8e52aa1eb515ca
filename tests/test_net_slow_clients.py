"""Slow clients must not take a listener offline (issue 14 item 3), over real sockets.

Many connections from 127.0.0.2.. (each loopback address plays another client) hold
every listener at its caps, trickle bytes to keep the idle timers running, or send
message content at a crawl; meanwhile a client from an address with nothing open must
be served promptly, and the slow ones must be cut off by limits that traffic does not
extend.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import ServerProcess

SLOW_ADDRESSES = [f"127.0.0.{i}" for i in range(2, 32)]     # 30 addresses, one /24
PASSWORD = "s3cret"


async def _open(host: str, port: int, source: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.wait_for(asyncio.open_connection(host, port, local_addr=(source, 0)), timeout=10)


async def _closed_within(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, seconds: float,
                         trickle: bytes = b"", every: float = 0.3) -> tuple[float, bytes]:
    """Trickle ``trickle`` one byte at a time until the server closes; (elapsed, what it said)."""
    start = time.monotonic()
    said = b""
    i = 0
    while time.monotonic() - start < seconds:
        if trickle:
            try:
                writer.write(trickle[i % len(trickle):i % len(trickle) + 1])
                i += 1
            except (ConnectionError, RuntimeError):
                break
        try:
            chunk = await asyncio.wait_for(reader.read(4096), timeout=every)
        except TimeoutError:
            continue
        except ConnectionError:
            break
        if not chunk:
            break
        said += chunk
    else:
        writer.close()
        raise AssertionError(f"still open after {seconds}s; the server said {said!r}")
    writer.close()
    return time.monotonic() - start, said


@pytest.fixture
def tight(tmp_path: Path) -> Iterator[ServerProcess]:
    """Short limits, so a test of them takes seconds."""
    server = ServerProcess(tmp_path / "tight", extra_config=(
        '[limits]\nlogin_timeout = "2s"\nmin_transfer_rate = "2K"\ntransfer_grace = "1s"\n'
        'http_header_timeout = "2s"\n')).start()
    server.add_user("alice@example.org", PASSWORD)
    try:
        yield server
    finally:
        server.stop()


async def test_the_login_limit_is_not_extended_by_trickled_bytes(tight: ServerProcess) -> None:
    # One byte every 0.3 s keeps any idle timer (2-30 minutes) running forever; the login
    # limit (2 s here) ends each connection anyway, with the protocol's own goodbye.
    results = {}
    for name, trickle in (("imap", b"a1 NOOP\r\n"), ("pop3", b"CAPA\r\n"), ("smtp", b"NOOP\r\n"),
                          ("submission", b"NOOP\r\n"), ("pop3s", b""), ("imaps", b""),
                          ("managesieve", b"NOOP\r\n")):
        reader, writer = await _open("127.0.0.1", tight.port(name), "127.0.0.2")
        results[name] = await _closed_within(reader, writer, 12, trickle)
    for name, (elapsed, _said) in results.items():
        assert 1.5 < elapsed < 8, (name, elapsed)
    assert b"BYE Autologout" in results["imap"][1]
    assert b"421 4.4.2" in results["smtp"][1] and b"421 4.4.2" in results["submission"][1]
    assert b"-ERR" in results["pop3"][1]
    assert b'BYE "Disconnected for inactivity"' in results["managesieve"][1]


async def test_logging_in_lifts_the_login_limit(tight: ServerProcess) -> None:
    reader, writer = await _open("127.0.0.1", tight.port("imap"), "127.0.0.3")
    await reader.readline()
    writer.write(f"a1 LOGIN alice@example.org {PASSWORD}\r\n".encode())
    assert b"a1 OK" in await reader.readline()
    for i in range(12):                                       # 3.6 s, past the 2 s login limit
        writer.write(f"n{i} NOOP\r\n".encode())
        assert (await asyncio.wait_for(reader.readline(), 5)).startswith(f"n{i} OK".encode())
        await asyncio.sleep(0.3)
    writer.close()


async def test_message_content_must_keep_a_minimum_rate(tight: ServerProcess) -> None:
    # SMTP DATA on port 25: the login limit is off inside the content, the rate is not.
    reader, writer = await _open("127.0.0.1", tight.port("smtp"), "127.0.0.4")
    await reader.readline()
    for line in (b"EHLO slow.example\r\n", b"MAIL FROM:<x@slow.example>\r\n",
                 b"RCPT TO:<alice@example.org>\r\n", b"DATA\r\n"):
        writer.write(line)
        while True:
            reply = await asyncio.wait_for(reader.readline(), 5)
            if reply[3:4] != b"-":
                break
    assert reply.startswith(b"354")
    elapsed, said = await _closed_within(reader, writer, 12, b"Subject: slow\r\n\r\nxxxxxxxxxxxxxxxxxx\r\n")
    assert elapsed < 8 and b"421 4.4.2" in said

    # BDAT announces 100 KB and sends it at a crawl.
    reader, writer = await _open("127.0.0.1", tight.port("smtp"), "127.0.0.4")
    await reader.readline()
    for line in (b"EHLO slow.example\r\n", b"MAIL FROM:<x@slow.example>\r\n", b"RCPT TO:<alice@example.org>\r\n"):
        writer.write(line)
        while (await asyncio.wait_for(reader.readline(), 5))[3:4] == b"-":
            pass
    writer.write(b"BDAT 100000 LAST\r\n")
    elapsed, said = await _closed_within(reader, writer, 12, b"x" * 50)
    assert elapsed < 8 and b"421 4.4.2" in said

    # An IMAP literal after login (no login limit then), announced and then trickled.
    reader, writer = await _open("127.0.0.1", tight.port("imap"), "127.0.0.5")
    await reader.readline()
    writer.write(f"a1 LOGIN alice@example.org {PASSWORD}\r\n".encode())
    assert b"a1 OK" in await reader.readline()
    writer.write(b"a2 APPEND INBOX {100000}\r\n")
    assert (await asyncio.wait_for(reader.readline(), 5)).startswith(b"+")
    elapsed, said = await _closed_within(reader, writer, 12, b"Subject: x\r\n")
    assert elapsed < 8 and b"BYE" in said

    # An HTTP request body, and HTTP headers, at a crawl.
    reader, writer = await _open("127.0.0.1", tight.port("http"), "127.0.0.6")
    auth = base64.b64encode(f"alice@example.org:{PASSWORD}".encode())
    writer.write(b"POST /jmap/api HTTP/1.1\r\nHost: x\r\nAuthorization: Basic " + auth +
                 b"\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n")
    elapsed, said = await _closed_within(reader, writer, 12, b"{}")
    assert elapsed < 8 and b"408" in said
    reader, writer = await _open("127.0.0.1", tight.port("http"), "127.0.0.6")
    elapsed, said = await _closed_within(reader, writer, 12, b"GET / HTTP/1.1\r\nHost: x\r\nX-A: b\r\n")
    assert 1.5 < elapsed < 8 and b"408" in said


@pytest.fixture
def capped(tmp_path: Path) -> Iterator[ServerProcess]:
    server = ServerProcess(tmp_path / "capped", extra_config=(
        "[limits]\nconnections = 100\nconnections_per_ip = 10\nunauthenticated_per_ip = 5\n"
        'connections_per_network = 400\nlogin_timeout = "60s"\n')).start()
    server.add_user("alice@example.org", PASSWORD)
    try:
        yield server
    finally:
        server.stop()


async def _hold(port: int, source: str, count: int) -> list[asyncio.StreamWriter]:
    held = []
    for _ in range(count):
        try:
            _, writer = await _open("127.0.0.1", port, source)
        except (OSError, TimeoutError):
            continue
        held.append(writer)
    return held


async def _served(name: str, port: int, source: str) -> float:
    """A whole exchange from ``source``; how long it took."""
    start = time.monotonic()
    reader, writer = await _open("127.0.0.1", port, source)
    try:
        if name == "imap":
            assert (await asyncio.wait_for(reader.readline(), 5)).startswith(b"* OK")
            writer.write(f"a1 LOGIN alice@example.org {PASSWORD}\r\n".encode())
            assert (await asyncio.wait_for(reader.readline(), 5)).startswith(b"a1 OK")
        elif name == "pop3":
            assert (await asyncio.wait_for(reader.readline(), 5)).startswith(b"+OK")
            writer.write(b"USER alice@example.org\r\n")
            assert (await asyncio.wait_for(reader.readline(), 5)).startswith(b"+OK")
            writer.write(f"PASS {PASSWORD}\r\n".encode())
            assert (await asyncio.wait_for(reader.readline(), 5)).startswith(b"+OK")
        elif name == "smtp":
            assert (await asyncio.wait_for(reader.readline(), 5)).startswith(b"220 ")
            writer.write(b"EHLO ok.example\r\n")
            while (line := await asyncio.wait_for(reader.readline(), 5))[3:4] == b"-":
                pass
            assert line.startswith(b"250 ")
        else:
            writer.write(b"GET /.well-known/jmap HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            status = await asyncio.wait_for(reader.readline(), 5)
            assert status.split()[1] in (b"200", b"301", b"302", b"307", b"401"), status
    finally:
        writer.close()
    return time.monotonic() - start


async def test_a_newcomer_is_served_while_slow_clients_hold_every_cap(capped: ServerProcess) -> None:
    listeners = ("imap", "pop3", "smtp", "http")
    held: list[asyncio.StreamWriter] = []
    try:
        # 30 addresses x 6 attempts x 4 listeners = 720 connections; each address gets
        # 5 (its unauthenticated cap), so 150 per listener try for 100 places.
        for name in listeners:
            batches = await asyncio.gather(*(_hold(capped.port(name), a, 6) for a in SLOW_ADDRESSES))
            held += [w for batch in batches for w in batch]
        await asyncio.sleep(0.5)
        # An address of the same /24 with nothing open, and one of another /24: served.
        for source in ("127.0.0.200", "127.0.1.1"):
            for name in listeners:
                elapsed = await _served(name, capped.port(name), source)
                assert elapsed < 3, (name, source, elapsed)
        # An address's first connection takes the place of a slow one; its second, with the
        # listener full, is refused at once.
        first_reader, first = await _open("127.0.0.1", capped.port("imap"), "127.0.0.250")
        assert (await asyncio.wait_for(first_reader.readline(), 5)).startswith(b"* OK")
        reader, writer = await _open("127.0.0.1", capped.port("imap"), "127.0.0.250")
        assert b"Too many connections" in await asyncio.wait_for(reader.readline(), 5)
        writer.close()
        first.close()
    finally:
        for w in held:
            w.close()
    assert "Traceback" not in capped.log_text()


def test_admission_rules() -> None:
    from mailhaven.net.admission import Admission, Caps

    evicted: list[str] = []
    adm = Admission(Caps(total=10, per_address=4, unauthenticated_per_address=2, per_network=6))
    a1 = adm.admit("10.0.0.1", lambda: evicted.append("a1"))
    a2 = adm.admit("10.0.0.1", lambda: evicted.append("a2"))
    assert a1 and a2
    assert adm.admit("10.0.0.1", lambda: None) is None               # unauthenticated cap
    adm.authenticated(a1)
    adm.authenticated(a2)
    a3, a4 = adm.admit("10.0.0.1", lambda: None), adm.admit("10.0.0.1", lambda: None)
    assert a3 and a4
    adm.authenticated(a3)
    adm.authenticated(a4)
    assert adm.admit("10.0.0.1", lambda: None) is None               # per-address cap
    for i in (2, 3):
        assert adm.admit(f"10.0.0.{i}", lambda i=i: evicted.append(f"n{i}"))
    # The /24 is at its cap: an address with nothing open takes the oldest unlogged place.
    assert adm.admit("10.0.0.4", lambda: evicted.append("n4"))
    assert evicted == ["n2"]
    assert adm.admit("10.0.0.3", lambda: None) is None               # has one open: refused
    # IPv6 counts by /64; the listener's total: a newcomer evicts from the busiest network.
    for i in range(4):
        assert adm.admit(f"2001:db8::{i + 1}", lambda: None) is not None or i >= 2
    assert len(adm) == 8
    assert adm.admit("192.0.2.1", lambda: None) and adm.admit("198.51.100.1", lambda: None)
    assert adm.admit("203.0.113.9", lambda: evicted.append("x")) is not None
    assert evicted == ["n2", "n3"]
