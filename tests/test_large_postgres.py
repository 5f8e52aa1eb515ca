"""Large messages on the PostgreSQL backend, over real sockets: stored in ``blob_chunks``
rows, they must also be read back a piece at a time. A 12 MB message comes out
byte-identical through IMAP (whole, by part, by range), POP3 (RETR, TOP), JMAP download
and Email/get and the outbound queue; four 40 MB messages submitted, then read at once by
each path, must not grow the server with their size (delivery and every reader used to
assemble the whole blob: 300-900 MB each way)."""

from __future__ import annotations

import base64
import imaplib
import json
import os
import poplib
import smtplib
import ssl
import threading
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

import test_large_messages as large_sqlite
from conftest import ServerProcess, free_port, fresh_pg_schema, wait_for
from smtpsink import SmtpSink
from test_large_messages import (
    big_message,
    check_binary_of_a_large_part,
    imap_fetch,
    imap_search_header,
    peak_growth_mb,
    pop3_retr,
    smtp_send,
)

PASSWORD = "s3cret"
USERS = [f"big{i}@example.com" for i in range(4)]


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    with fresh_pg_schema() as (dsn, schema):
        sink_port = free_port("127.0.0.1")
        s = ServerProcess(tmp_path_factory.mktemp("largepg") / "data", extra_config=(
            '[limits]\nmessage_size = "100M"\nimap_literal = "100M"\n'
            '[queue]\nretry = ["1s"]\npoll = "1s"\n'
            f'[relay]\nroutes = {{"sink.example" = "127.0.0.1:{sink_port}"}}\n'
            f'[store]\nbackend = "postgres"\ndsn = "{dsn}"\nschema = "{schema}"\n')).start()
        try:
            s.add_users(*USERS, password=PASSWORD)
            yield {"srv": s, "sink_port": sink_port}
        finally:
            s.stop()


def jmap(srv: ServerProcess, user: str) -> tuple[Any, str]:
    """A caller for ``user`` and the account id."""
    port = srv.port("http")
    auth = "Basic " + base64.b64encode(f"{user}:{PASSWORD}".encode()).decode()

    def call(path: str, body: Any = None) -> bytes:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data,
                                     method="POST" if data else "GET",
                                     headers={"Authorization": auth, "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=300) as res:
            return res.read()  # type: ignore[no-any-return]

    session = json.loads(call("/.well-known/jmap"))
    return call, session["primaryAccounts"]["urn:ietf:params:jmap:mail"]


GET_PROPS = ["subject", "size", "bodyStructure", "textBody", "bodyValues", "attachments"]
USING = ["urn:ietf:params:jmap:core", "urn:ietf:params:jmap:mail"]


def jmap_email(srv: ServerProcess, user: str, props: list[str]) -> dict[str, Any]:
    """Email/get of the first message of ``user`` (``props``, body values included)."""
    call, account = jmap(srv, user)
    out = json.loads(call("/jmap/api", {"using": USING, "methodCalls": [
        ["Email/query", {"accountId": account}, "q"],
        ["Email/get", {"accountId": account, "#ids": {"resultOf": "q", "name": "Email/query", "path": "/ids"},
                       "properties": props, "fetchTextBodyValues": True, "maxBodyValueBytes": 100}, "g"]]}))
    return out["methodResponses"][1][1]["list"][0]  # type: ignore[no-any-return]


def jmap_download(srv: ServerProcess, user: str) -> bytes:
    call, account = jmap(srv, user)
    blob = jmap_email(srv, user, ["blobId"])["blobId"]
    return call(f"/jmap/download/{account}/{blob}/m.eml?type=message/rfc822")  # type: ignore[no-any-return]


def submit(srv: ServerProcess, user: str, to: list[str], raw: bytes) -> bytes:
    """``raw`` from ``user`` to ``to`` through submission; returns the bytes sent."""
    raw = raw.replace(b"From: sender@example.net\r\n", f"From: {user}\r\n".encode(), 1)
    context = ssl._create_unverified_context()  # the server's certificate is self-signed
    with smtplib.SMTP("127.0.0.1", srv.port("submission"), timeout=300) as s:
        s.starttls(context=context)
        s.login(user, PASSWORD)
        assert s.sendmail(user, to, raw) == {}
    return raw


def test_large_message_out_of_postgres_byte_identical(srv: dict[str, Any]) -> None:
    s: ServerProcess = srv["srv"]
    user = USERS[0]
    raw = big_message(12 * 1000 * 1000, user, "pg", seed=21)
    smtp_send(s, user, raw)
    stored = imap_fetch(s, user, 1, "BODY.PEEK[]")
    assert stored.endswith(raw) and stored.startswith(b"Return-Path: <sender@example.net>\r\n")
    assert imap_fetch(s, user, 1, "BODY.PEEK[]<1048570.2097160>") == stored[1048570:1048570 + 2097160]
    attachment = imap_fetch(s, user, 1, "BODY.PEEK[2]")
    assert raw.endswith(attachment + b"\r\n--b0--\r\n") and len(attachment) > 11 * 1000 * 1000
    assert imap_fetch(s, user, 1, "BINARY.PEEK[2]") == base64.b64decode(attachment)
    assert imap_fetch(s, user, 1, "BODY.PEEK[HEADER.FIELDS (SUBJECT)]") == b"Subject: large pg\r\n\r\n"
    assert pop3_retr(s, user, 1) == stored
    p = poplib.POP3("127.0.0.1", s.port("pop3"), timeout=300)
    try:
        p.user(user)
        p.pass_(PASSWORD)
        _, lines, _ = p.top(1, 2)
    finally:
        p.quit()
    head_end = stored.index(b"\r\n\r\n")
    assert b"\r\n".join(lines) == stored[:head_end + 2] + b"\r\n" + b"\r\n".join(
        stored[head_end + 4:].split(b"\r\n")[:2])
    assert jmap_download(s, user) == stored
    email = jmap_email(s, user, GET_PROPS)
    assert email["subject"] == "large pg" and email["size"] == len(stored)
    assert email["attachments"][0]["name"] == "pg.bin"
    assert email["attachments"][0]["size"] == len(base64.b64decode(attachment))
    text = next(iter(email["bodyValues"].values()))
    assert text["value"].startswith(".dot led line 0") and text["isTruncated"]

    with SmtpSink("127.0.0.1", srv["sink_port"]) as sink:
        sent = submit(s, user, ["far@sink.example"], raw)
        got = wait_for(lambda: sink.messages, timeout=120, what="delivery to the sink")
    assert got[0].data.endswith(sent) and got[0].rcpt_to == ["far@sink.example"]


def test_catenate_with_large_parts_from_postgres(srv: dict[str, Any]) -> None:
    """CATENATE of a URL naming a large part: copied from the chunk rows, byte for byte."""
    large_sqlite.test_catenate_with_large_parts(srv["srv"])


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads RSS from /proc")
def test_memory_stays_flat_reading_four_large_messages_from_postgres(srv: dict[str, Any]) -> None:
    """Each user submits a 40 MB message to themselves and to the peer (down for now, so
    it waits in the queue); then the four are read at once by each path in turn."""
    s: ServerProcess = srv["srv"]
    size = 40 * 1000 * 1000
    for u in USERS:                          # each user's only message (the first test's is gone)
        box = imaplib.IMAP4("127.0.0.1", s.port("imap"), timeout=60)
        box.login(u, PASSWORD)
        box.select("INBOX")
        box.store("1:*", "+FLAGS", "\\Deleted")
        box.expunge()
        box.logout()
    assert s.proc is not None
    pid = s.proc.pid
    far = {u: f"far.{u.partition('@')[0]}@sink.example" for u in USERS}
    sent: dict[str, bytes] = {}

    def send(i: int, u: str) -> None:
        sent[far[u]] = submit(s, u, [u, far[u]], big_message(size, u, f"rss{i}", seed=30 + i))

    # The peer answers only once ``gate`` opens: the queue's four sessions wait at its
    # greeting (before reading their message), then all send at once.
    gate = threading.Event()
    sink = SmtpSink("127.0.0.1", srv["sink_port"])
    plain = sink.server.RequestHandlerClass

    class Gated(plain):  # type: ignore[valid-type,misc]
        def handle(self) -> None:
            gate.wait(300)
            super().handle()

    sink.server.RequestHandlerClass = Gated
    with sink:
        growth = {"submission": peak_growth_mb(pid, [lambda i=i, u=u: send(i, u) for i, u in enumerate(USERS)])}
        growth.update({
            "FETCH": peak_growth_mb(pid, [lambda u=u: imap_fetch(s, u, 1, "BODY.PEEK[]") and None for u in USERS]),
            "RETR": peak_growth_mb(pid, [lambda u=u: pop3_retr(s, u, 1) and None for u in USERS]),
            "SEARCH HEADER": peak_growth_mb(pid, [lambda u=u: imap_search_header(s, u, "Message-ID", "large.rss")
                                                  and None for u in USERS]),
            "download": peak_growth_mb(pid, [lambda u=u: jmap_download(s, u) and None for u in USERS]),
            "Email/get": peak_growth_mb(pid, [lambda u=u: jmap_email(s, u, GET_PROPS) and None for u in USERS]),
        })

        def peer_up() -> None:
            gate.set()
            wait_for(lambda: len(sink.messages) == 4, timeout=300, what="four deliveries")

        growth["outbound"] = peak_growth_mb(pid, [peer_up])
        assert all(m.data.endswith(sent[m.rcpt_to[0]]) for m in sink.messages)
    bound = 100.0                            # MB, for 4 x 40 MB (whole reads: several hundred)
    assert all(g < bound for g in growth.values()), growth


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads RSS from /proc")
def test_sieve_on_large_messages_from_postgres(srv: dict[str, Any], tmp_path: Any) -> None:
    """A script with editheader and a redirect on two 30 MB messages in PostgreSQL: it
    reads their first part by range, the edited copy and the redirected one are written a
    piece at a time from the chunk rows (the message used to be read whole), whole."""
    s: ServerProcess = srv["srv"]
    user = USERS[3]
    script = tmp_path / "pg.sieve"
    script.write_text('require ["editheader", "fileinto", "copy"];\n'
                      'addheader "X-Edited" "pg";\nredirect :copy "onward@sink.example";\nfileinto "Big";\n')
    s.admin("sieve", "put", user, str(script))
    box = imaplib.IMAP4("127.0.0.1", s.port("imap"), timeout=60)
    box.login(user, PASSWORD)
    box.create("Big")
    box.logout()
    mails = [big_message(30 * 1000 * 1000, user, f"sieve{i}", seed=50 + i) for i in range(2)]
    assert s.proc is not None
    try:
        with SmtpSink("127.0.0.1", srv["sink_port"]) as sink:
            growth = peak_growth_mb(s.proc.pid, [lambda m=m: smtp_send(s, user, m) for m in mails])
            wait_for(lambda: len(sink.messages) == 2, timeout=300, what="two redirected copies")
            for m in sink.messages:
                assert any(m.data.endswith(raw.partition(b"\r\n")[2]) for raw in mails)
        with imaplib.IMAP4("127.0.0.1", s.port("imap"), timeout=300) as m:
            m.login(user, PASSWORD)
            m.select("Big", readonly=True)
            bodies = []
            for msn in (b"1", b"2"):
                typ, data = m.fetch(msn, "(BODY.PEEK[])")
                assert typ == "OK" and isinstance(data[0], tuple)
                bodies.append(data[0][1])
        for stored in bodies:
            head, _, body = stored.partition(b"\r\n\r\n")
            assert b"X-Edited: pg" in head
            assert any(raw.partition(b"\r\n\r\n")[2] == body for raw in mails)
    finally:
        s.admin("sieve", "deactivate", user)
    assert growth < 60.0, growth                 # MB, for 2 x 30 MB (read whole: over 100)


def test_binary_of_a_large_part_from_postgres(srv: dict[str, Any]) -> None:
    check_binary_of_a_large_part(srv["srv"], USERS[1], "postgres")
