"""Large messages over real sockets: a 32 MB message goes in and comes out byte-identical
over SMTP, IMAP and POP3 (whole, by section and by range); and four at once, in and out,
must not grow the server's memory with their size (it used to take ~5x their size)."""

from __future__ import annotations

import base64
import imaplib
import os
import poplib
import random
import smtplib
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from conftest import ServerProcess

PASSWORD = "s3cret"
SIZE = 32 * 1000 * 1000


def big_message(size: int, to: str, tag: str, seed: int = 1) -> bytes:
    """A text part (with dot-led and bare-looking lines) and a base64 attachment."""
    rnd = random.Random(seed)
    text = b"".join(b".dot led line %d\r\n..two dots\r\nplain %d\r\n" % (i, rnd.randrange(10**9))
                    for i in range(2000))
    head = (f"From: sender@example.net\r\nTo: {to}\r\nSubject: large {tag}\r\n"
            f"Message-ID: <large.{tag}@example.net>\r\nMIME-Version: 1.0\r\n"
            "Content-Type: multipart/mixed; boundary=b0\r\n\r\n--b0\r\n"
            "Content-Type: text/plain; charset=utf-8\r\n\r\n").encode() + text + (
            "--b0\r\nContent-Type: application/octet-stream\r\n"
            f"Content-Disposition: attachment; filename=\"{tag}.bin\"\r\n"
            "Content-Transfer-Encoding: base64\r\n\r\n").encode()
    tail = b"\r\n--b0--\r\n"
    need = size - len(head) - len(tail)
    raw = rnd.randbytes(need // 78 * 57 + 57)
    body = b"\r\n".join(base64.b64encode(raw[i:i + 57]) for i in range(0, len(raw), 57))[:need]
    return head + body + tail


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    s = ServerProcess(tmp_path_factory.mktemp("large") / "data",
                      extra_config='[limits]\nmessage_size = "100M"\nimap_literal = "100M"\n').start()
    try:
        s.add_users(*(f"big{i}@example.com" for i in range(4)), password=PASSWORD)
        yield s
    finally:
        s.stop()


def smtp_send(srv: ServerProcess, to: str, raw: bytes) -> None:
    with smtplib.SMTP("127.0.0.1", srv.port("smtp"), timeout=300) as s:
        s.sendmail("sender@example.net", [to], raw)


def imap_append(srv: ServerProcess, user: str, raw: bytes) -> None:
    with imaplib.IMAP4("127.0.0.1", srv.port("imap"), timeout=300) as m:
        m.login(user, PASSWORD)
        typ, data = m.append("INBOX", None, None, raw)
        assert typ == "OK", data


def imap_fetch(srv: ServerProcess, user: str, msn: int, item: str) -> bytes:
    with imaplib.IMAP4("127.0.0.1", srv.port("imap"), timeout=300) as m:
        m.login(user, PASSWORD)
        m.select("INBOX", readonly=True)
        typ, data = m.fetch(str(msn), f"({item})")
        assert typ == "OK" and isinstance(data[0], tuple), data
        return data[0][1]


def imap_search_header(srv: ServerProcess, user: str, field: str, value: str) -> bytes:
    """SEARCH HEADER of a field that is not in the summary: read from each message's header."""
    with imaplib.IMAP4("127.0.0.1", srv.port("imap"), timeout=300) as m:
        m.login(user, PASSWORD)
        m.select("INBOX", readonly=True)
        typ, data = m.search(None, "HEADER", field, value)
        assert typ == "OK", data
        return data[0]


def pop3_retr(srv: ServerProcess, user: str, msn: int) -> bytes:
    p = poplib.POP3("127.0.0.1", srv.port("pop3"), timeout=300)
    try:
        p.user(user)
        p.pass_(PASSWORD)
        _, lines, _ = p.retr(msn)
        listed = int(p.list(msn).split()[2])
    finally:
        p.quit()
    out = b"".join(line + b"\r\n" for line in lines)
    assert listed == len(out)                       # the LIST size is the exact RETR size
    return out


def test_large_message_in_and_out_byte_identical(srv: ServerProcess) -> None:
    user = "big0@example.com"
    by_smtp = big_message(SIZE, user, "smtp", seed=1)
    by_imap = big_message(SIZE, user, "imap", seed=2)
    smtp_send(srv, user, by_smtp)
    imap_append(srv, user, by_imap)

    stored = imap_fetch(srv, user, 1, "BODY.PEEK[]")
    assert stored.endswith(by_smtp) and stored.startswith(b"Return-Path: <sender@example.net>\r\nReceived: ")
    assert pop3_retr(srv, user, 1) == stored
    assert imap_fetch(srv, user, 2, "BODY.PEEK[]") == by_imap
    assert pop3_retr(srv, user, 2) == by_imap

    header_len = by_imap.index(b"\r\n\r\n") + 4
    assert imap_fetch(srv, user, 2, "BODY.PEEK[TEXT]") == by_imap[header_len:]
    assert imap_fetch(srv, user, 2, "BODY.PEEK[HEADER]") == by_imap[:header_len]
    assert imap_fetch(srv, user, 2, "BODY.PEEK[]<1000000.5000000>") == by_imap[1000000:6000000]
    text_start = by_imap.index(b"charset=utf-8\r\n\r\n") + len(b"charset=utf-8\r\n\r\n")
    text_end = by_imap.index(b"\r\n--b0\r\nContent-Type: application")
    assert imap_fetch(srv, user, 2, "BODY.PEEK[1]") == by_imap[text_start:text_end]
    attachment = imap_fetch(srv, user, 2, "BODY.PEEK[2]")
    assert by_imap.endswith(attachment + b"\r\n--b0--\r\n") and len(attachment) > SIZE * 0.9
    with imaplib.IMAP4("127.0.0.1", srv.port("imap"), timeout=300) as m:
        m.login(user, PASSWORD)
        m.select("INBOX", readonly=True)
        typ, data = m.fetch("2", "(RFC822.SIZE BODYSTRUCTURE)")
        assert typ == "OK" and f"RFC822.SIZE {len(by_imap)}".encode() in data[0]
        assert b'"attachment" ("filename" "imap.bin")' in data[0]
        typ, data = m.search(None, "SUBJECT", '"large imap"')
        assert data[0] == b"2"
    header = by_imap[:header_len]
    subject = b"Subject: large imap\r\n\r\n"
    for n in range(2):          # from the file, then from the header cache it filled
        with imaplib.IMAP4("127.0.0.1", srv.port("imap"), timeout=300) as m:
            m.login(user, PASSWORD)
            m.select("INBOX", readonly=True)
            typ, data = m.fetch("2", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)] BODY.PEEK[HEADER])")
            assert typ == "OK" and data[0][1] == subject and data[1][1] == header, (n, data[:2])
            typ, data = m.fetch("1:2", "(UID BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
            assert [d[1] for d in data[::2]] == [b"Subject: large smtp\r\n\r\n", subject], data


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def peak_growth_mb(pid: int, work: list[Callable[[], None]]) -> float:
    """Peak RSS growth of ``pid`` while the ``work`` runs in parallel threads."""
    start = rss_kb(pid)
    peak = start
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, rss_kb(pid))
            time.sleep(0.01)

    sampler = threading.Thread(target=sample)
    sampler.start()
    errors: list[BaseException] = []

    def run(fn: Callable[[], None]) -> None:
        try:
            fn()
        except BaseException as exc:  # noqa: BLE001 - re-raised below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(fn,)) for fn in work]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stop.set()
    sampler.join()
    if errors:
        raise errors[0]
    return (peak - start) / 1024


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads RSS from /proc")
def test_memory_stays_flat_with_four_large_messages_in_and_out(srv: ServerProcess) -> None:
    users = [f"big{i}@example.com" for i in range(1, 4)] + ["big0@example.com"]
    size = 40 * 1000 * 1000
    msgs = {u: big_message(size, u, f"rss{i}", seed=10 + i) for i, u in enumerate(users)}
    assert srv.proc is not None
    pid = srv.proc.pid
    bound = 150.0                                   # MB, for 4 x 40 MB (it was ~1 GB)
    growth = {
        "SMTP": peak_growth_mb(pid, [lambda u=u: smtp_send(srv, u, msgs[u]) for u in users]),
        "APPEND": peak_growth_mb(pid, [lambda u=u: imap_append(srv, u, msgs[u]) for u in users]),
        "FETCH": peak_growth_mb(pid, [lambda u=u: imap_fetch(srv, u, 1, "BODY.PEEK[]") and None
                                      for u in users]),
        "RETR": peak_growth_mb(pid, [lambda u=u: pop3_retr(srv, u, 1) and None for u in users]),
        "SEARCH HEADER": peak_growth_mb(pid, [lambda u=u: imap_search_header(srv, u, "Message-ID", "large.rss")
                                              and None for u in users]),
    }
    found = {u: imap_search_header(srv, u, "Message-ID", f"large.rss{i}@") for i, u in enumerate(users)}
    assert all(len(hits.split()) == 2 for hits in found.values()), found   # by SMTP and by APPEND
    assert all(g < bound for g in growth.values()), growth


def test_large_message_through_jmap_upload_import_download(srv: ServerProcess) -> None:
    """Upload streamed to a blob, imported by reference, downloaded from its file, and
    served by IMAP: the same bytes everywhere."""
    import json
    import urllib.request

    user = "big3@example.com"
    raw = big_message(SIZE, user, "jmap", seed=3)
    port = srv.port("http")
    auth = "Basic " + base64.b64encode(f"{user}:{PASSWORD}".encode()).decode()

    def call(method: str, path: str, body: bytes | None = None, ctype: str = "application/json") -> bytes:
        req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body, method=method,
                                     headers={"Authorization": auth, "Content-Type": ctype})
        with urllib.request.urlopen(req, timeout=300) as res:
            return res.read()  # type: ignore[no-any-return]

    session = json.loads(call("GET", "/.well-known/jmap"))
    account = session["primaryAccounts"]["urn:ietf:params:jmap:mail"]
    uploaded = json.loads(call("POST", f"/jmap/upload/{account}/", raw, "message/rfc822"))
    assert uploaded["size"] == len(raw)
    using = ["urn:ietf:params:jmap:core", "urn:ietf:params:jmap:mail"]
    boxes = json.loads(call("POST", "/jmap/api", json.dumps({"using": using, "methodCalls": [
        ["Mailbox/get", {"accountId": account, "ids": None}, "m"]]}).encode()))
    inbox = next(m["id"] for m in boxes["methodResponses"][0][1]["list"] if m["role"] == "inbox")
    imported = json.loads(call("POST", "/jmap/api", json.dumps({"using": using, "methodCalls": [
        ["Email/import", {"accountId": account, "emails": {"e": {"blobId": uploaded["blobId"],
                                                                 "mailboxIds": {inbox: True}}}}, "i"]]}).encode()))
    created = imported["methodResponses"][0][1]["created"]["e"]
    assert created["size"] == len(raw)
    down = call("GET", f"/jmap/download/{account}/{created['blobId']}/m.eml?type=message/rfc822")
    assert down == raw
    with imaplib.IMAP4("127.0.0.1", srv.port("imap"), timeout=300) as m:
        m.login(user, PASSWORD)
        typ, data = m.select("INBOX", readonly=True)
        n = data[0].decode()
    assert imap_fetch(srv, user, int(n), "BODY.PEEK[]") == raw

    # Email/set with a large uploaded attachment: encoded from its file into the new blob.
    binary = random.Random(4).randbytes(12_000_001)
    attached = json.loads(call("POST", f"/jmap/upload/{account}/", binary, "application/octet-stream"))
    created = json.loads(call("POST", "/jmap/api", json.dumps({"using": using, "methodCalls": [
        ["Email/set", {"accountId": account, "create": {"d": {
            "mailboxIds": {inbox: True}, "subject": "with a large file", "from": [{"email": user}],
            "textBody": [{"partId": "t"}], "bodyValues": {"t": {"value": "see the file"}},
            "attachments": [{"blobId": attached["blobId"], "type": "application/octet-stream",
                             "name": "big.bin"}]}}}, "s"]]}).encode()))
    assert "d" in created["methodResponses"][0][1]["created"], created
    with imaplib.IMAP4("127.0.0.1", srv.port("imap"), timeout=300) as m:
        m.login(user, PASSWORD)
        typ, data = m.select("INBOX", readonly=True)
        last = data[0].decode()
    assert base64.b64decode(imap_fetch(srv, user, int(last), "BODY.PEEK[2]")) == binary
    assert b"see the file" in imap_fetch(srv, user, int(last), "BODY.PEEK[1]")


def test_catenate_with_large_parts(srv: ServerProcess) -> None:
    """APPEND CATENATE of a large spooled TEXT literal and a URL naming a large part of a
    stored message: the parts are copied from their files, byte for byte."""
    import re
    import socket

    user = "big2@example.com"
    source = big_message(8 * 1000 * 1000, user, "cat-source", seed=5)
    big_text = b"".join(b"line %d of the new text\r\n" % i for i in range(120_000))
    intro = (f"From: {user}\r\nTo: x@example.org\r\nSubject: forwarded\r\nMIME-Version: 1.0\r\n"
             "Content-Type: multipart/mixed; boundary=f0\r\n\r\n--f0\r\n"
             "Content-Type: text/plain\r\n\r\n").encode() + big_text + (
            b"--f0\r\nContent-Type: application/octet-stream\r\n"
            b"Content-Transfer-Encoding: base64\r\n\r\n")
    outro = b"\r\n--f0--\r\n"
    with socket.create_connection(("127.0.0.1", srv.port("imap")), timeout=300) as sock:
        f = sock.makefile("rb")

        def command(tag: str, *pieces: bytes) -> bytes:
            sock.sendall(b"".join(pieces))
            while True:
                line = f.readline()
                if line.startswith(tag.encode() + b" "):
                    assert line.split()[1] == b"OK", line
                    return line

        f.readline()
        command("a", f"a LOGIN {user} {PASSWORD}\r\n".encode())
        command("b", b"b CREATE Cat\r\n")
        command("c", b"c APPEND Cat {%d+}\r\n" % len(source), source, b"\r\n")
        done = command("d", b"d APPEND INBOX CATENATE (TEXT {%d+}\r\n" % len(intro), intro,
                       b' URL "/Cat/;UID=1/;SECTION=2" TEXT {%d+}\r\n' % len(outro), outro, b")\r\n")
    uid = int(re.search(rb"APPENDUID \d+ (\d+)", done).group(1))  # type: ignore[union-attr]
    part = source[source.index(b"base64\r\n\r\n") + len(b"base64\r\n\r\n"):-len(b"\r\n--b0--\r\n")]
    with imaplib.IMAP4("127.0.0.1", srv.port("imap"), timeout=300) as m:
        m.login(user, PASSWORD)
        m.select("INBOX", readonly=True)
        typ, data = m.uid("FETCH", str(uid), "(BODY.PEEK[])")
        assert typ == "OK" and isinstance(data[0], tuple)
        assert data[0][1] == intro + part + outro


def base64_attachment_message(payload: bytes, tag: str) -> bytes:
    """A text part and ``payload`` as a base64 attachment in 76-character lines."""
    encoded = base64.encodebytes(payload).replace(b"\n", b"\r\n")
    return (f"From: sender@example.net\r\nTo: x@example.com\r\nSubject: payload {tag}\r\n"
            "MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b1\r\n\r\n--b1\r\n"
            "Content-Type: text/plain\r\n\r\nsee the file\r\n--b1\r\n"
            "Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n"
            ).encode() + encoded + b"--b1--\r\n"


def check_binary_of_a_large_part(srv: ServerProcess, user: str, tag: str) -> None:
    """BINARY of a large base64 part (RFC 3516) is decoded a piece at a time: the payload
    exactly, its size, a partial, the 7bit part as is, and four at once without the
    server's memory growing with the part's size (it was decoded whole)."""
    payload = random.Random(tag).randbytes(24 * 1000 * 1000) + b"\x00end"
    raw = base64_attachment_message(payload, tag)
    imap_append(srv, user, raw)
    with imaplib.IMAP4("127.0.0.1", srv.port("imap"), timeout=300) as m:
        m.login(user, PASSWORD)
        m.select("INBOX", readonly=True)
        typ, hits = m.search(None, "SUBJECT", f'"payload {tag}"')
        msn = int(hits[0].split()[-1])
        typ, data = m.fetch(str(msn), "(BINARY.SIZE[2] BINARY.SIZE[1])")
        assert typ == "OK" and f"BINARY.SIZE[2] {len(payload)}".encode() in data[0], data
        assert b"BINARY.SIZE[1] 12" in data[0], data    # the CRLF before a boundary is its own
    assert imap_fetch(srv, user, msn, "BINARY.PEEK[2]") == payload
    assert imap_fetch(srv, user, msn, "BINARY.PEEK[2]<1000000.5000>") == payload[1000000:1005000]
    assert imap_fetch(srv, user, msn, f"BINARY.PEEK[2]<{len(payload) - 10}.100>") == payload[-10:]
    assert imap_fetch(srv, user, msn, "BINARY.PEEK[1]") == b"see the file"
    assert imap_fetch(srv, user, msn, "BINARY.PEEK[]") == raw
    assert srv.proc is not None
    growth = peak_growth_mb(srv.proc.pid, [lambda: imap_fetch(srv, user, msn, "BINARY.PEEK[2]") and None
                                           for _ in range(4)])
    assert growth < 60.0, growth                   # MB, four 24 MB parts (decoded whole: ~200)


def test_binary_of_a_large_part_is_decoded_a_piece_at_a_time(srv: ServerProcess) -> None:
    check_binary_of_a_large_part(srv, "big1@example.com", "sqlite")
