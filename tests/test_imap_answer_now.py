"""FETCHes answered as they arrive (Session.answer_now, the adapter's shortcut): the same
bytes as the ordinary path, and never when something is owed to the client first."""

from __future__ import annotations

import socket
from typing import Any

from conftest import ServerProcess
from imap_harness import Client, deliver, make_account
from mailhaven.store.api import FlagMode


def _message(n: int) -> bytes:
    return (f"From: Sender {n} <s{n}@example.org>\r\nTo: alice@example.com\r\nSubject: note {n}\r\n"
            f"Date: Mon, 1 Jan 2024 10:00:00 +0000\r\n\r\nbody {n}\r\n").encode()


async def _two_sessions(store: Any) -> tuple[Any, Client, Client]:
    acct = await make_account(store)
    for n in range(1, 6):
        await deliver(store, acct.id, _message(n), flags=("$Later",) if n == 4 else ())
    await deliver(store, acct.id, _message(6).replace(b"note 6", b"no\x00te 6"))
    a, b = Client(store), Client(store)
    for c in (a, b):
        await c.login()
        await c.cmd("SELECT INBOX")
    return acct, a, b


ANSWERED = [
    b"a1 UID FETCH 2 (BODY.PEEK[HEADER.FIELDS (SUBJECT FROM)] FLAGS)\r\n",   # the header block read from the store
    b"a2 UID FETCH 2 (BODY.PEEK[HEADER.FIELDS (SUBJECT FROM)] FLAGS)\r\n",   # then from the cache
    b"a3 FETCH 3 (BODY.PEEK[HEADER] UID)\r\n",
    b"a4 FETCH 2:3 (FLAGS UID RFC822.SIZE INTERNALDATE)\r\n",
    b"a5 UID FETCH 4 (FLAGS)\r\n",
    b"a6 UID FETCH 99 (FLAGS)\r\n",                             # no such message: just OK
    b"a7 uid fetch 5:1,3 FAST\n",
    b"a8 UID FETCH 3 (INTERNALDATE RFC822.SIZE BODY.PEEK[HEADER.FIELDS (SUBJECT)]<4.9> FLAGS)\r\n",
    b"a9 FETCH 4 FAST\r\n",                                     # one message: its keyword announced first
    b"ab UID FETCH 6 (BODY.PEEK[HEADER.FIELDS (Subject)] UID)\r\n",   # a NUL in the field
]


async def test_answered_at_once_with_the_bytes_of_the_ordinary_path(store) -> None:  # type: ignore[no-untyped-def]
    _, a, b = await _two_sessions(store)
    # IMAP4rev1: \Recent is this session's alone, so the ordinary path's answer is the same
    # session's, to the same line again (a FETCH with PEEK changes nothing).
    outputs = {}
    for line in ANSWERED:
        assert a.session.answer_now(line), line
        outputs[line[:2]] = now = a.session.take_output()
        assert a.reader.buffered == 0
        again = await a.send(line)
        assert now == again, line
        assert now.endswith(line.split(b" ")[0] + b" OK FETCH completed\r\n")
    assert outputs[b"a5"] == b"* 4 FETCH (UID 4 FLAGS (\\Recent $Later))\r\na5 OK FETCH completed\r\n"
    assert b"FLAGS (\\Recent)" in outputs[b"a4"]
    assert outputs[b"a6"] == b"a6 OK FETCH completed\r\n"
    assert b"{52}\r\nFrom: Sender 2 <s2@example.org>\r\nSubject: note 2\r\n\r\n FLAGS" in outputs[b"a1"]
    assert outputs[b"a1"] == outputs[b"a2"].replace(b"a2 OK", b"a1 OK")
    # IMAP4rev2 (no \Recent): another session's ordinary path, the FLAGS announcement and all.
    a, b = Client(store), Client(store)
    for c in (a, b):
        await c.login()
        await c.cmd("ENABLE IMAP4rev2")
        await c.cmd("SELECT INBOX")
    for line in ANSWERED:
        assert a.session.answer_now(line), line
        assert a.session.take_output() == await b.send(line), line


DECLINED = [
    b"d1 FETCH 1 (BODY[HEADER])\r\n",                           # sets \Seen
    b"d2 FETCH 1 (ENVELOPE)\r\n",
    b"d3 FETCH 1 (FLAGS) (CHANGEDSINCE 1)\r\n",
    b"d4 FETCH 1 (FLAGS MODSEQ)\r\n",
    b"d5 FETCH 0 (FLAGS)\r\n",                                  # BAD, from the ordinary path
    b"d6 FETCH 1:2 (BODY.PEEK[HEADER])\r\n",                    # headers of more than one message
    b"d12 FETCH 1:* (FLAGS)\r\n",                              # the whole mailbox (any size): the ordinary path
    b"d13 UID FETCH 1:100 (FLAGS)\r\n",                        # spans more than NOW_MAX numbers
    b"d7 FETCH 1 (FLAGS)",                                      # not a whole line yet
    b"d8 FETCH 1 (FLAGS)\r\nd9 NOOP\r\n",                       # more than one command
    b"d10 STORE 1 +FLAGS (\\Seen)\r\n",
    b"d11 FETCH 1 BODY.PEEK[HEADER.FIELDS {7}\r\n",
]


async def test_anything_else_is_left_to_the_ordinary_path(store) -> None:  # type: ignore[no-untyped-def]
    acct, a, _ = await _two_sessions(store)
    for line in DECLINED:
        assert not a.session.answer_now(line), line
        assert a.session.take_output() == b"" and a.reader.buffered == 0
    a.reader.receive_data(b"p1 FETCH 1 (FLAGS)")                 # half a command buffered
    assert not a.session.answer_now(b"\r\n")
    assert (await a.send(b"\r\n")).endswith(b"p1 OK FETCH completed\r\n")
    # Another session's change: the FETCH must come with its untagged FETCH, so it waits.
    mailbox = await store.get_mailbox(acct.id, "INBOX")
    await store.set_flags(mailbox.id, [1], ["\\Flagged"], FlagMode.ADD)
    line = b"c1 UID FETCH 2 (FLAGS)\r\n"
    a._drain_changes()
    assert not a.session.answer_now(line) and a.session.take_output() == b""
    out = await a.send(line)
    assert b"* 1 FETCH (FLAGS (\\Flagged \\Recent))\r\n" in out and out.endswith(b"c1 OK FETCH completed\r\n")
    assert a.session.answer_now(line)                          # caught up: at once again
    await a.cmd("ENABLE CONDSTORE")
    assert not a.session.answer_now(line)                      # MODSEQ goes with FLAGS now


def _converse(sock: socket.socket, line: bytes) -> bytes:
    sock.sendall(line)
    tag = line.split(b" ", 1)[0]
    data = b""
    while not any(row.startswith(tag + b" ") for row in data.split(b"\r\n")):
        chunk = sock.recv(65536)
        assert chunk, data
        data += chunk
    return data


def test_over_a_socket_changes_of_others_are_still_told(server: ServerProcess) -> None:
    server.add_user("carol@example.com", "pw")
    one, two = (socket.create_connection(("127.0.0.1", server.port("imap")), timeout=10) for _ in range(2))
    with one, two:
        for sock in (one, two):
            sock.recv(4096)
            assert b"OK" in _converse(sock, b"l LOGIN carol@example.com pw\r\n")
            assert b"OK" in _converse(sock, b"e ENABLE IMAP4rev2\r\n")     # no \\Recent
        msg = _message(1)
        assert b"OK" in _converse(one, b"p APPEND INBOX {%d+}\r\n%s\r\n" % (len(msg), msg))
        for sock in (one, two):
            assert b"* 1 EXISTS" in _converse(sock, b"s SELECT INBOX\r\n")
        fetch = b"f%d UID FETCH 1 (BODY.PEEK[HEADER.FIELDS (SUBJECT)] FLAGS)\r\n"
        for i in range(3):
            out = _converse(one, fetch % i)
            assert out == (b"* 1 FETCH (UID 1 BODY[HEADER.FIELDS (SUBJECT)] {19}\r\nSubject: note 1\r\n\r\n"
                           b" FLAGS ())\r\nf%d OK FETCH completed\r\n" % i)
        assert b"OK" in _converse(two, b"t STORE 1 +FLAGS (\\Flagged)\r\n")
        out = b""
        for i in range(3, 50):          # the change reaches the first session within a few commands
            out = _converse(one, fetch % i)
            if b"* 1 FETCH (UID 1 FLAGS (\\Flagged))" in out:
                break
        assert out.endswith(b" FLAGS ())\r\n* 1 FETCH (UID 1 FLAGS (\\Flagged))\r\nf%d OK FETCH completed\r\n" % i)
        out = _converse(one, fetch % 99)
        assert out.count(b"FETCH") == 2 and b" FLAGS (\\Flagged))\r\nf99 OK" in out

