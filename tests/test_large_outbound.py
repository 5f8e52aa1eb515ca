"""Large messages out through the queue: a DKIM-signed 30 MB message relayed by the real
server to a second real server arrives byte for byte and dkimpy verifies both signatures;
four 40 MB messages leaving at once must not grow the sending server with their size (the
queue used to read each message whole and sign it in memory: several times its size).

Piece-by-piece helpers (DotStuffer, BodyHash) are checked against their one-shot
equivalents (dot_stuff, dkimpy's canonicalisation) on every way of cutting the input."""

from __future__ import annotations

import base64
import hashlib
import imaplib
import os
import random
import smtplib
import ssl
import time
from collections.abc import Callable, Iterator
from typing import Any

import dkim
import pytest
from dkim.canonicalization import Relaxed, Simple
from hypothesis import given
from hypothesis import strategies as st

from conftest import ServerProcess, free_port, wait_for
from mailhaven.queue.dkim import BodyHash
from mailhaven.smtp.content import DotStuffer, dot_stuff
from test_large_messages import peak_growth_mb

PASSWORD = "s3cret"
LIMITS = '[limits]\nmessage_size = "100M"\nimap_literal = "100M"\n'
QUEUE = '[queue]\nretry = ["1s"]\npoll = "1s"\n'


def big_message(size: int, to: str, tag: str, seed: int) -> bytes:
    """From a signing domain; dot-led lines, lines with trailing and inner white space,
    a base64 attachment, and empty lines at the end (which relaxed canonicalisation drops)."""
    rnd = random.Random(seed)
    text = b"".join(b".dot led line %d \t\r\n..two  dots\t\r\nplain %d\r\n\r\n" % (i, rnd.randrange(10**9))
                    for i in range(12000))
    head = (f"From: Alice <alice@lancs.example>\r\nTo: {to}\r\nSubject: outbound {tag}\r\n"
            f"Message-ID: <out.{tag}@lancs.example>\r\nMIME-Version: 1.0\r\n"
            "Content-Type: multipart/mixed; boundary=b0\r\n\r\n--b0\r\n"
            "Content-Type: text/plain; charset=utf-8\r\n\r\n").encode() + text + (
            b"--b0\r\nContent-Type: application/octet-stream\r\n"
            b"Content-Transfer-Encoding: base64\r\n\r\n")
    tail = b"\r\n--b0--\r\n\r\n\r\n"
    need = size - len(head) - len(tail)
    raw = rnd.randbytes(need // 78 * 57 + 57)
    body = b"\r\n".join(base64.b64encode(raw[i:i + 57]) for i in range(0, len(raw), 57))[:need]
    return head + body + tail


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("outbound")
    far_port = free_port("127.0.0.1")
    far = ServerProcess(root / "far", ports={"smtp": far_port}, hostname="mx.far.example",
                        extra_config=LIMITS)
    lancs = ServerProcess(root / "lancs", hostname="mx.lancs.example", extra_config=(
        LIMITS + QUEUE + f'[relay]\nroutes = {{"far.example" = "127.0.0.1:{far_port}"}}\n'))
    lancs.write_config()
    records: dict[str, bytes] = {}
    for algorithm, selector in (("rsa", "r1"), ("ed25519", "e1")):
        out = lancs.admin("dkim", "generate", "lancs.example", "--algorithm", algorithm, "--selector", selector)
        name, _, record = out.stdout.strip().splitlines()[-1].partition(" IN TXT ")
        records[name.rstrip(".")] = record.strip('"').encode()
    lancs.start()
    try:
        lancs.add_user("alice@lancs.example", PASSWORD)
        yield {"lancs": lancs, "far": far, "records": records}
    finally:
        lancs.stop()
        far.stop()


def far_started(net: dict[str, Any]) -> ServerProcess:
    far: ServerProcess = net["far"]
    if far.proc is None:
        far.start()
        if not net.get("users"):
            far.add_users(*(f"rcpt{i}@far.example" for i in range(5)), password=PASSWORD)
            net["users"] = True
    return far


def submit(lancs: ServerProcess, to: str, raw: bytes) -> None:
    context = ssl._create_unverified_context()  # the server's certificate is self-signed
    with smtplib.SMTP("127.0.0.1", lancs.port("submission"), timeout=300) as s:
        s.starttls(context=context)
        s.login("alice@lancs.example", PASSWORD)
        assert s.sendmail("alice@lancs.example", [to], raw) == {}


def fetch_all(far: ServerProcess, user: str) -> list[bytes]:
    with imaplib.IMAP4("127.0.0.1", far.port("imap"), timeout=300) as m:
        m.login(user, PASSWORD)
        typ, selected = m.select("INBOX", readonly=True)
        n = int(selected[0] or 0)
        if not n:
            return []
        typ, data = m.fetch(f"1:{n}", "(BODY.PEEK[])")
        return [bytes(d[1]) for d in data if isinstance(d, tuple)]


def count(far: ServerProcess, user: str) -> int:
    with imaplib.IMAP4("127.0.0.1", far.port("imap"), timeout=60) as m:
        m.login(user, PASSWORD)
        typ, data = m.select("INBOX", readonly=True)
        return int(data[0] or 0)


def dns_of(records: dict[str, bytes]) -> Callable[..., bytes]:
    def lookup(name: bytes, timeout: int = 5) -> bytes:
        return records.get(name.decode().rstrip("."), b"")
    return lookup


def test_large_signed_message_relayed_byte_identical(net: dict[str, Any]) -> None:
    far = far_started(net)
    raw = big_message(30 * 1000 * 1000, "rcpt0@far.example", "one", seed=1)
    submit(net["lancs"], "rcpt0@far.example", raw)
    got = wait_for(lambda: fetch_all(far, "rcpt0@far.example"), timeout=120, what="delivery to far")
    arrived = got[0]
    assert arrived.endswith(raw)
    assert arrived.count(b"\r\nDKIM-Signature: ") == 2
    signed = arrived[arrived.index(b"DKIM-Signature: "):]          # from the first signature on
    lookup = dns_of(net["records"])
    for index in range(2):
        assert dkim.DKIM(signed).verify(idx=index, dnsfunc=lookup), f"signature {index}"
    tampered = signed.replace(b"plain ", b"Plain ", 1)
    with pytest.raises(dkim.ValidationError, match="body hash mismatch"):
        dkim.DKIM(tampered).verify(idx=0, dnsfunc=lookup)


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads RSS from /proc")
def test_memory_stays_flat_with_four_large_outbound_messages(net: dict[str, Any]) -> None:
    """The four are queued while the peer is down, then the peer comes up and the queue
    sends them at once: the sender's RSS growth meanwhile is the outbound cost alone."""
    lancs, far = net["lancs"], net["far"]
    far.stop()
    users = [f"rcpt{i}@far.example" for i in range(1, 5)]
    for i, user in enumerate(users):
        submit(lancs, user, big_message(40 * 1000 * 1000, user, f"rss{i}", seed=10 + i))
    time.sleep(2)                                     # every entry has failed to connect once
    assert lancs.proc is not None
    pid = lancs.proc.pid

    def deliveries() -> None:
        far_started(net)
        wait_for(lambda: all(count(far, u) == 1 for u in users), timeout=300, what="four deliveries")

    growth = peak_growth_mb(pid, [deliveries])
    assert growth < 100, f"sender RSS grew {growth:.0f} MB for 4 x 40 MB outbound"


@given(st.binary(max_size=60).map(lambda b: bytes(b"ab.\r\n \t"[x % 7] for x in b)),
       st.lists(st.integers(1, 7), max_size=30))
def test_dot_stuffer_matches_dot_stuff_on_any_split(data: bytes, cuts: list[int]) -> None:
    stuffer, out, at = DotStuffer(), b"", 0
    for cut in cuts:
        out += stuffer.feed(data[at:at + cut])
        at += cut
    out += stuffer.feed(data[at:]) + stuffer.finish()
    assert out == dot_stuff(data)


@given(st.binary(max_size=80).map(lambda b: bytes(b"ab\r\n \t"[x % 6] for x in b)),
       st.lists(st.integers(1, 9), max_size=30), st.booleans(), st.one_of(st.none(), st.integers(0, 90)))
def test_body_hash_matches_dkimpy_on_any_split(data: bytes, cuts: list[int], relaxed: bool,
                                               limit: int | None) -> None:
    """Also with ``l=`` (dkimpy hashes the first ``l`` canonical bytes) and sha1."""
    body = data.replace(b"\r", b"").replace(b"\n", b"\r\n")       # CRLF only, as the queue sends
    if body and not body.endswith(b"\r\n"):
        body += b"\r\n"
    algorithm = hashlib.sha1 if limit is not None and limit % 2 else hashlib.sha256
    hasher, at = BodyHash(b"relaxed" if relaxed else b"simple", algorithm, limit), 0
    for cut in cuts:
        piece = body[at:at + cut]
        if piece.endswith(b"\r"):
            piece += b"\n"
        hasher.feed(piece)
        at += len(piece)
    hasher.feed(body[at:])
    canon = (Relaxed if relaxed else Simple).canonicalize_body(body)[:limit]
    assert hasher.digest() == base64.b64encode(algorithm(canon).digest())
