"""Large messages through the inbound checks and local delivery, over real sockets: four
parallel ~40 MB messages on the port-25 listener are DKIM-verified (they used to be
skipped over 25 MB as ``dkim=policy``, since dkimpy read a message whole), and run
through an account's Sieve script (it used to read each whole), without growing the
server's memory with their size."""

from __future__ import annotations

import imaplib
import os
import re
from collections.abc import Iterator
from pathlib import Path

import dkim
import pytest

from conftest import ServerProcess
from dnsserver import DNSServer
from mx_client import send_mx
from test_filter_inbound import AUTHSERV, ED_PRIV, INSIDE, RECORDS, RSA_PEM
from test_large_messages import big_message, peak_growth_mb

SIZE = 40 * 1000 * 1000
USER = "bob@nyu.example"
SIEVE_USER = "carol@nyu.example"
BOUND_MB = 150.0                                   # growth for 4 x 40 MB (~1 GB read whole)


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with DNSServer(RECORDS) as dns:
        data = tmp_path_factory.mktemp("large-inbound") / "data"
        server = ServerProcess(data, hostname=AUTHSERV, extra_config=(
            f'[dns]\nnameservers = ["127.0.0.1:{dns.port}"]\ntimeout = "2s"\n'
            '[limits]\nmessage_size = "100M"\n')).start()
        try:
            server.add_users(USER, SIEVE_USER)
            yield server
        finally:
            server.stop()


def send(srv: ServerProcess, mail_from: str, msg: bytes, to: str = USER) -> None:
    send_mx(srv, mail_from, [to], msg, source=INSIDE, timeout=300)


def auth_results(srv: ServerProcess, subject: str) -> str:
    """Our Authentication-Results of the message with this subject, unfolded (the header
    only is fetched)."""
    with imaplib.IMAP4("127.0.0.1", srv.port("imap"), timeout=60) as m:
        m.login(USER, "s3cret")
        m.select("INBOX", readonly=True)
        _, found = m.search(None, "SUBJECT", f'"{subject}"')
        (msn,) = found[0].split()
        _, data = m.fetch(msn, "(BODY.PEEK[HEADER.FIELDS (Authentication-Results)])")
    assert isinstance(data[0], tuple)
    return re.sub(r"\r\n[ \t]+", " ", data[0][1].decode()).strip()


def signed(sender: str, tag: str, seed: int, **how: object) -> bytes:
    msg = big_message(SIZE, USER, tag, seed=seed).replace(b"From: sender@example.net", f"From: {sender}".encode(), 1)
    domain = sender.rpartition("@")[2].encode()
    key = ED_PRIV if how.get("signature_algorithm") == b"ed25519-sha256" else RSA_PEM
    selector = b"ed" if key is ED_PRIV else b"sel"
    return dkim.sign(msg, selector, domain, key, include_headers=[b"from", b"subject"], **how) + msg  # type: ignore[arg-type]


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads RSS from /proc")
def test_four_large_signed_messages_verified_with_flat_memory(srv: ServerProcess) -> None:
    relaxed = signed("alice@good.example", "relaxed", 1, canonicalize=(b"relaxed", b"relaxed"))
    # simple/simple with l=: text added after the signed length leaves it valid (RFC 6376 3.5)
    limited = signed("alice@good.example", "limited", 2, canonicalize=(b"simple", b"simple"), length=True)
    limited += b"added by a mailing list\r\n"
    ed = signed("news@ed.example", "ed", 3, signature_algorithm=b"ed25519-sha256")
    tampered = bytearray(signed("alice@good.example", "tampered", 4))
    tampered[SIZE // 2] ^= 1                                 # one bit of the attachment
    mails = [("alice@good.example", relaxed), ("alice@good.example", limited),
             ("news@ed.example", ed), ("alice@good.example", bytes(tampered))]
    assert srv.proc is not None
    growth = peak_growth_mb(srv.proc.pid, [lambda m=m: send(srv, *m) for m in mails])

    assert "dkim=pass header.d=good.example" in auth_results(srv, "large relaxed")
    assert "dkim=pass header.d=good.example" in auth_results(srv, "large limited")
    ar = auth_results(srv, "large ed")
    assert "dkim=pass header.d=ed.example" in ar and "dmarc=pass" in ar
    # the body hash did not verify: neutral, as test_filter_inbound and mailauth name it
    assert "dkim=neutral header.d=good.example" in auth_results(srv, "large tampered")
    assert growth < BOUND_MB, growth


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads RSS from /proc")
def test_sieve_script_on_four_large_messages_with_flat_memory(srv: ServerProcess, tmp_path: Path) -> None:
    """A ``body`` test sees the start of the body, ``size`` the whole message's size."""
    script = tmp_path / "big.sieve"
    script.write_text('require ["body", "fileinto"];\n'
                      'if allof (body :text :contains "dot led line 1999", size :over 30M) {\n'
                      '  fileinto "Big";\n} elsif body :text :contains "dot led line" {\n'
                      '  fileinto "Small";\n}\n')
    srv.admin("sieve", "put", SIEVE_USER, str(script))
    with imaplib.IMAP4("127.0.0.1", srv.port("imap"), timeout=60) as m:
        m.login(SIEVE_USER, "s3cret")
        m.create("Big")
        m.create("Small")
    mails = [big_message(SIZE, SIEVE_USER, f"sieve{i}", seed=20 + i) for i in range(4)]
    assert srv.proc is not None
    growth = peak_growth_mb(srv.proc.pid, [lambda m=m: send(srv, "x@none.example", m, SIEVE_USER)
                                           for m in mails])
    with imaplib.IMAP4("127.0.0.1", srv.port("imap"), timeout=60) as m:
        m.login(SIEVE_USER, "s3cret")
        counts = {box: m.select(box, readonly=True)[1][0] for box in ("INBOX", "Big", "Small")}
    assert counts == {"INBOX": b"0", "Big": b"4", "Small": b"0"}, counts
    assert growth < BOUND_MB, growth


async def test_redirect_copy_of_a_large_message_is_made_a_piece_at_a_time(store) -> None:  # type: ignore[no-untyped-def]
    """The redirected copy (``localdelivery.copier``, from the stored message's file, or on
    PostgreSQL by range): the trace line, then the message without its Return-Path, whole."""
    from mailhaven.localdelivery import _source, copier
    from mailhaven.sieve.forward import COPY_CHUNK

    body = b"x" * (COPY_CHUNK + 10) + b"\r\n\xc3\xa9\r\n"
    ref = await store.put_blob(b"Return-Path: <a@b.example>\r\nSubject: s\r\n\r\n" + body)
    copy = copier(store, _source(store, ref.id))
    assert copy is not None
    blob, eight_bit = await copy(b"Delivered-To: c@d.example\r\n")
    assert eight_bit is True
    assert await store.read_blob(blob.id) == b"Delivered-To: c@d.example\r\nSubject: s\r\n\r\n" + body


def test_editheader_on_a_large_message_keeps_its_whole_body(srv: ServerProcess, tmp_path: Path) -> None:
    """The script reads only the start of a 3 MB message; its editheader change is written
    before the rest of the stored file, so the delivered copy is the whole message."""
    script = tmp_path / "edit.sieve"
    script.write_text('require ["editheader", "fileinto"];\n'
                      'addheader "X-Edited" "by sieve";\ndeleteheader "X-Drop";\nfileinto "Edited";\n')
    srv.admin("sieve", "put", SIEVE_USER, str(script))
    with imaplib.IMAP4("127.0.0.1", srv.port("imap"), timeout=60) as m:
        m.login(SIEVE_USER, "s3cret")
        m.create("Edited")
    msg = big_message(3_000_000, SIEVE_USER, "edited", seed=40).replace(b"\r\n", b"\r\nX-Drop: yes\r\n", 1)
    send(srv, "x@none.example", msg, SIEVE_USER)
    with imaplib.IMAP4("127.0.0.1", srv.port("imap"), timeout=60) as m:
        m.login(SIEVE_USER, "s3cret")
        m.select("Edited", readonly=True)
        _, data = m.fetch(b"1", "(BODY.PEEK[])")
    assert isinstance(data[0], tuple)
    stored = data[0][1]
    head, _, body = stored.partition(b"\r\n\r\n")
    assert b"X-Edited: by sieve" in head and b"X-Drop" not in head
    assert body == msg.partition(b"\r\n\r\n")[2]
