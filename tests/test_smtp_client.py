"""The sans-IO SMTP client: scripted server replies, fed whole, byte by byte and split
everywhere; commands checked on the wire."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailhaven.smtp.client import (
    NEED_DATA,
    Answered,
    ClientConnection,
    ClientError,
    ClientState,
    Closed,
    EhloDone,
    Greeting,
    SendBody,
    TransactionDone,
)
from mailhaven.smtp.replies import ReplyError

EHLO = b"250-mx.example greets you\r\n250-PIPELINING\r\n250-SIZE 1000000\r\n250-DSN\r\n250 8BITMIME\r\n"


def drain(conn: ClientConnection) -> list[object]:
    events = []
    while (event := conn.next_event()) is not NEED_DATA:
        events.append(event)
    return events


def feed(conn: ClientConnection, data: bytes, split: str) -> list[object]:
    events: list[object] = []
    if split == "whole":
        conn.receive_data(data)
        return drain(conn)
    for i in range(len(data)):
        conn.receive_data(data[i:i + 1])
        events += drain(conn)
    return events


def ready(split: str = "whole") -> ClientConnection:
    conn = ClientConnection()
    conn.send_ehlo("client.example")
    assert conn.data_to_send() == b""                      # nothing before the greeting
    events = feed(conn, b"220 mx.example ESMTP\r\n", split)
    assert isinstance(events[0], Greeting)
    assert conn.data_to_send() == b"EHLO client.example\r\n"
    events = feed(conn, EHLO, split)
    assert isinstance(events[0], EhloDone) and conn.state is ClientState.READY
    assert conn.pipelining and conn.ehlo is not None and conn.ehlo.size_limit() == 1000000
    return conn


@pytest.mark.parametrize("split", ["whole", "bytes"])
def test_pipelined_transaction(split: str) -> None:
    conn = ready(split)
    conn.begin_transaction("alice@lancs.example", ["SIZE=20"], [("bob@nyu.example", ["NOTIFY=FAILURE"]),
                                                                ("nobody@nyu.example", [])])
    assert conn.data_to_send() == (b"MAIL FROM:<alice@lancs.example> SIZE=20\r\nRCPT TO:<bob@nyu.example> "
                                   b"NOTIFY=FAILURE\r\nRCPT TO:<nobody@nyu.example>\r\nDATA\r\n")
    events = feed(conn, b"250 2.1.0 ok\r\n250 2.1.5 ok\r\n550 5.1.1 no such user\r\n354 go ahead\r\n", split)
    assert events == [SendBody()]
    conn.send_body(b"Subject: hi\n\n.leading dot\nend")
    assert conn.data_to_send() == b"Subject: hi\r\n\r\n..leading dot\r\nend\r\n.\r\n"
    (done,) = feed(conn, b"250 2.0.0 queued as 42\r\n", split)
    assert isinstance(done, TransactionDone)
    assert done.reply_for("bob@nyu.example").code == 250
    assert done.reply_for("nobody@nyu.example").enhanced == "5.1.1"
    assert conn.state is ClientState.READY and conn.idle


def test_without_pipelining_one_command_at_a_time() -> None:
    conn = ClientConnection()
    conn.receive_data(b"220 old.example\r\n")
    drain(conn)
    conn.send_ehlo("c")
    conn.data_to_send()
    conn.receive_data(b"250 old.example\r\n")
    drain(conn)
    assert not conn.pipelining
    conn.begin_transaction("a@x", [], [("b@y", []), ("c@y", [])])
    assert conn.data_to_send() == b"MAIL FROM:<a@x>\r\n"
    conn.receive_data(b"250 ok\r\n")
    assert drain(conn) == []
    assert conn.data_to_send() == b"RCPT TO:<b@y>\r\n"
    conn.receive_data(b"250 ok\r\n")
    drain(conn)
    assert conn.data_to_send() == b"RCPT TO:<c@y>\r\n"
    conn.receive_data(b"250 ok\r\n")
    drain(conn)
    assert conn.data_to_send() == b"DATA\r\n"


def test_no_recipient_accepted_sends_a_lone_dot() -> None:
    """RFC 2920 3.1: a server that still answers 354 gets an empty message and no 'reply'."""
    conn = ready()
    conn.begin_transaction("a@x", [], [("b@y", [])])
    conn.data_to_send()
    assert drain_after(conn, b"250 ok\r\n550 no\r\n354 go\r\n") == []
    assert conn.data_to_send() == b".\r\n"
    (done,) = drain_after(conn, b"554 no valid recipients\r\n")
    assert isinstance(done, TransactionDone) and done.data is None
    assert done.reply_for("b@y").code == 550


def drain_after(conn: ClientConnection, data: bytes) -> list[object]:
    conn.receive_data(data)
    return drain(conn)


def test_refused_data_and_mail() -> None:
    conn = ready()
    conn.begin_transaction("a@x", [], [("b@y", [])])
    conn.data_to_send()
    (done,) = drain_after(conn, b"452 4.3.1 out of space\r\n503 5.5.1 no MAIL\r\n503 5.5.1 no RCPT\r\n")
    assert isinstance(done, TransactionDone)
    assert done.reply_for("b@y").code == 452                # MAIL's answer decides
    conn.send_rset()
    assert conn.data_to_send() == b"RSET\r\n"
    (answer,) = drain_after(conn, b"250 ok\r\n")
    assert isinstance(answer, Answered) and answer.command == "RSET"


def test_ehlo_refused_then_helo() -> None:
    conn = ClientConnection()
    conn.send_ehlo("c")
    drain_after(conn, b"220 ancient\r\n")
    conn.data_to_send()
    (done,) = drain_after(conn, b"502 5.5.2 what?\r\n")
    assert isinstance(done, EhloDone) and done.reply.code == 502 and conn.state is ClientState.CONNECTED
    conn.send_helo("c")
    assert conn.data_to_send() == b"HELO c\r\n"
    (done,) = drain_after(conn, b"250 ancient\r\n")
    assert isinstance(done, EhloDone) and conn.state is ClientState.READY and not conn.pipelining


def test_starttls_resets_what_the_client_knows() -> None:
    conn = ready()
    conn.send_starttls()
    assert conn.data_to_send() == b"STARTTLS\r\n"
    (answer,) = drain_after(conn, b"220 2.0.0 ready\r\n")
    assert isinstance(answer, Answered) and answer.command == "STARTTLS"
    conn.tls_started()
    assert conn.ehlo is None
    conn.send_ehlo("c")
    assert conn.data_to_send() == b"EHLO c\r\n"


def test_auth_plain_initial_response() -> None:
    conn = ready()
    conn.send_auth_plain("alice@lancs.example", "s3cret")
    assert conn.data_to_send() == b"AUTH PLAIN AGFsaWNlQGxhbmNzLmV4YW1wbGUAczNjcmV0\r\n"
    (answer,) = drain_after(conn, b"235 2.7.0 ok\r\n")
    assert isinstance(answer, Answered) and answer.reply.code == 235


def test_greeting_554_and_421_close() -> None:
    conn = ClientConnection()
    (closed,) = drain_after(conn, b"554 5.7.1 go away\r\n")
    assert isinstance(closed, Closed) and conn.state is ClientState.CLOSED
    conn = ready()
    conn.begin_transaction("a@x", [], [("b@y", [])])
    conn.data_to_send()
    (closed,) = drain_after(conn, b"421 4.3.2 shutting down\r\n")
    assert isinstance(closed, Closed) and closed.reply is not None and closed.reply.code == 421
    with pytest.raises(ClientError):
        conn.send_noop()


def test_misuse_and_malformed_replies() -> None:
    conn = ClientConnection()
    with pytest.raises(ClientError):
        conn.begin_transaction("a@x", [], [("b@y", [])])   # not ready
    conn = ready()
    with pytest.raises(ClientError):
        conn.begin_transaction("a@x", [], [])
    with pytest.raises(ClientError):
        conn.send_body(b"x")
    with pytest.raises(ClientError):
        conn.send_ehlo("evil\r\nRCPT TO:<x@y>")             # no command injection
    with pytest.raises(ReplyError):
        drain_after(conn, b"250 reply to nothing\r\n")
    conn = ClientConnection()
    with pytest.raises(ReplyError):
        drain_after(conn, b"hello there\r\n")


@given(st.lists(st.integers(min_value=1, max_value=40), min_size=1, max_size=30))
def test_any_split_gives_the_same_events(cuts: list[int]) -> None:
    script = (b"220 mx\r\n" + EHLO + b"250 ok\r\n250 ok\r\n354 go\r\n250 done\r\n221 bye\r\n")

    def run(chunks: list[bytes]) -> list[object]:
        conn = ClientConnection()
        conn.send_ehlo("c")
        events: list[object] = []
        started = False
        for chunk in chunks:
            conn.receive_data(chunk)
            while (event := conn.next_event()) is not NEED_DATA:   # react before the next reply
                events.append(event)
                if isinstance(event, EhloDone) and not started:
                    started = True
                    conn.begin_transaction("a@x", [], [("b@y", [])])
                if isinstance(event, SendBody):
                    conn.send_body(b"hi\r\n")
                if isinstance(event, TransactionDone):
                    conn.send_quit()
            conn.data_to_send()
        return events

    pieces, pos = [], 0
    for cut in cuts:
        pieces.append(script[pos:pos + cut])
        pos += cut
    pieces.append(script[pos:])
    assert run(pieces) == run([script])
    assert isinstance(run([script])[-1], Closed)
