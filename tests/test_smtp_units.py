"""Small pieces with injected clocks: the recipient cache, trace headers (login throttling:
test_auth_throttle.py)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mailhaven.smtp import codes
from mailhaven.smtp.protocol import ServerConnection, Settings
from mailhaven.smtp.server import RecipientCache
from mailhaven.smtp.transaction import Trace
from mailhaven.store.api import Resolution


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Acct:
    id: int
    quota: int | None
    used: int = 0


class FakeStore:
    def __init__(self) -> None:
        self.calls = 0
        self.quota: int | None = None

    async def resolve(self, address: str) -> Resolution:
        self.calls += 1
        return Resolution(local_domain=True, account_ids=(1,))

    async def get_account_by_id(self, account_id: int) -> Any:
        return Acct(id=account_id, quota=self.quota)


async def test_recipient_cache_expires_and_never_caches_quota() -> None:
    clock, store = Clock(), FakeStore()
    cache = RecipientCache(store, ttl=1.0, clock=clock)
    await cache.lookup("bob@x")
    await cache.lookup("BOB@x")
    assert store.calls == 1
    clock.now += 2
    await cache.lookup("bob@x")
    assert store.calls == 2
    store.quota = 100
    clock.now += 2
    await cache.lookup("bob@x")
    await cache.lookup("bob@x")
    assert store.calls == 4                       # quota'd accounts are looked up every time


def test_trace_header() -> None:
    trace = Trace(helo="client (evil)\u00e9", peer_ip="192.0.2.1", hostname="mx.example", protocol="ESMTPSA",
                  transaction_id="s1.0", tls="TLSv1.3 with cipher X (256/256 bits)")
    one = trace.received(["bob@x"]).decode()
    assert one.startswith("Received: from client??evil?? ([192.0.2.1])\r\n\t(using TLSv1.3")
    assert "by mx.example (Mailhaven) with ESMTPSA id s1.0\r\n\tfor <bob@x>; " in one
    assert "for <" not in trace.received(["a@x", "b@x"]).decode()


def test_trace_header_keeps_address_literals() -> None:
    """RFC 5321 4.1.3: ``EHLO [192.0.2.1]`` is an address literal, shown as it is."""
    def received(helo: str) -> str:
        return Trace(helo=helo, peer_ip="192.0.2.1", hostname="mx.example", protocol="ESMTP",
                     transaction_id="s1.0").received(["bob@x"]).decode()

    assert received("[192.0.2.1]").startswith("Received: from [192.0.2.1] ([192.0.2.1])\r\n")
    assert received("[IPv6:2001:db8::1]").startswith("Received: from [IPv6:2001:db8::1] ([192.0.2.1])")
    assert received("[1.2.3.4] (x)").startswith("Received: from ?1.2.3.4???x? ([192.0.2.1])")


def test_protocol_names_rfc3848() -> None:
    conn = ServerConnection(Settings(hostname="h", tls_active=True, auth_mechanisms=("PLAIN",)))
    assert conn.protocol_name() == "SMTP"                  # no EHLO yet: plain SMTP
    conn.receive_data(b"EHLO c\r\n")
    conn.next_event()
    assert conn.protocol_name() == "ESMTPS"
    assert conn.protocol_name(smtputf8=True) == "UTF8SMTPS"
    conn.receive_data(b"AUTH PLAIN AGEAYg==\r\n")
    conn.next_event()
    conn.answer(codes.AUTH_OK)
    assert conn.protocol_name() == "ESMTPSA"


def test_the_content_spool_holds_pieces_then_spills() -> None:
    """smtp/spool.py: the held content reads back whole from its start, in memory (one
    shared bytes: reading it whole copies nothing) and past ``max_size`` from a file; a
    bytearray written may change afterwards."""
    from mailhaven.smtp.spool import ContentSpool

    for max_size in (10_000, 100):
        spool = ContentSpool(max_size)
        buf = bytearray(b"b" * 50)
        pieces = [b"a" * 40, buf, b"c" * 30]
        for p in pieces:
            spool.write(p)
        expected = b"a" * 40 + b"b" * 50 + b"c" * 30
        buf[:] = b"z" * 50
        assert spool.size == len(expected)
        reader = spool.reader()
        assert reader.read() == expected
        reader.seek(45)
        assert reader.read(10) == expected[45:55]
        assert spool.reader().read(4) == expected[:4]         # from its start again
        if max_size > len(expected):
            reader.seek(0)
            assert reader.read() is reader.getvalue()          # type: ignore[attr-defined]
        spool.close()


def test_content_written_a_few_bytes_at_a_time_costs_no_more_memory_than_its_bytes(tmp_path: Path) -> None:
    """A client sending DATA a few bytes a segment makes each read a piece: the content
    spool and a blob writer gather small pieces (mailhaven/pieces.py), so holding 256 KB
    written a byte at a time stays near 256 KB, not ~40 bytes an object a piece (~10 MB)."""
    import tracemalloc

    from mailhaven.smtp.spool import ContentSpool
    from mailhaven.store.blobs import FileBlobStore

    total = 256 * 1024
    data = bytes(range(256)) * (total // 256)
    blobs = FileBlobStore(tmp_path / "blobs")
    blobs.inline_max = 2 * total
    for make in (lambda: ContentSpool(2 * total), blobs.writer):
        holder = make()
        tracemalloc.start()
        try:
            for i in range(total):
                holder.write(data[i:i + 1])
            held, _ = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert held < 2 * total, (make, held)
        if isinstance(holder, ContentSpool):
            assert holder.reader().read() == data
            holder.close()
        else:
            holder.abort()
