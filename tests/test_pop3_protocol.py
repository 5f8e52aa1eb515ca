"""The sans-IO POP3 core: command parsing fed whole, byte by byte and with trailing data;
the state table; dot-stuffing; Hypothesis over every (state, input) pair."""

from __future__ import annotations

import base64
import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailhaven.pop3 import protocol as P
from mailhaven.pop3 import replies as R


def events(proto: P.Pop3Protocol) -> list[object]:
    out: list[object] = []
    while (e := proto.next_event()) is not P.NEED_DATA:
        out.append(e)
    return out


def feed(data: bytes, how: str, state: P.State = P.State.AUTHORIZATION, max_line: int = 4096) -> list[object]:
    proto = P.Pop3Protocol(max_line=max_line)
    proto.state = state
    got: list[object] = []
    if how == "whole":
        proto.receive_data(data)
        got += events(proto)
    elif how == "bytes":
        for i in range(len(data)):
            proto.receive_data(data[i:i + 1])
            got += events(proto)
    else:  # trailing: a partial next line must stay buffered
        proto.receive_data(data + b"NOO")
        got += events(proto)
        assert proto.buffered == 3
    return got


SPLITS = ["whole", "bytes", "trailing"]

AUTH_CASES = [
    (b"USER bob@example.org\r\n", P.User(name="bob@example.org")),
    (b"user bob\n", P.User(name="bob")),
    (b"PASS secret with spaces\r\n", P.Pass(password="secret with spaces")),
    (b"CAPA\r\n", P.Capa()),
    (b"STLS\r\n", P.Stls()),
    (b"utf8\r\n", P.Utf8()),
    (b"QUIT\r\n", P.Quit()),
    (b"AUTH\r\n", P.Auth(mechanism=None)),
    (b"AUTH plain\r\n", P.Auth(mechanism="PLAIN")),
    (b"AUTH PLAIN =\r\n", P.Auth(mechanism="PLAIN", initial_response=b"")),
    (b"AUTH PLAIN " + base64.b64encode(b"\0bob\0pw") + b"\r\n",
     P.Auth(mechanism="PLAIN", initial_response=b"\0bob\0pw")),
    ("USER jösé@exämple.org\r\n".encode(), P.User(name="jösé@exämple.org")),
]

TRANSACTION_CASES = [
    (b"STAT\r\n", P.Stat()),
    (b"LIST\r\n", P.List()),
    (b"LIST 3\r\n", P.List(msg=3)),
    (b"UIDL\r\n", P.Uidl()),
    (b"uidl 12\r\n", P.Uidl(msg=12)),
    (b"RETR 1\r\n", P.Retr(msg=1)),
    (b"TOP 2 0\r\n", P.Top(msg=2, lines=0)),
    (b"TOP 2 15\r\n", P.Top(msg=2, lines=15)),
    (b"DELE 7\r\n", P.Dele(msg=7)),
    (b"NOOP\r\n", P.Noop()),
    (b"RSET\r\n", P.Rset()),
    (b"CAPA\r\n", P.Capa()),
    (b"QUIT\r\n", P.Quit()),
]


@pytest.mark.parametrize("how", SPLITS)
@pytest.mark.parametrize("line,expected", AUTH_CASES)
def test_authorization_commands(line: bytes, expected: object, how: str) -> None:
    assert feed(line, how) == [expected]


@pytest.mark.parametrize("how", SPLITS)
@pytest.mark.parametrize("line,expected", TRANSACTION_CASES)
def test_transaction_commands(line: bytes, expected: object, how: str) -> None:
    assert feed(line, how, P.State.TRANSACTION) == [expected]


@pytest.mark.parametrize("how", SPLITS)
def test_pipelined_batch(how: str) -> None:
    data = b"STAT\r\nLIST\r\nUIDL 1\r\nRETR 1\r\nDELE 1\r\nQUIT\r\n"
    assert feed(data, how, P.State.TRANSACTION) == [
        P.Stat(), P.List(), P.Uidl(msg=1), P.Retr(msg=1), P.Dele(msg=1), P.Quit()]


MALFORMED = [
    (b"FROB\r\n", R.UNKNOWN_COMMAND),
    (b"RETR\r\n", R.BAD_SYNTAX),
    (b"RETR x\r\n", R.NO_SUCH_MESSAGE),
    (b"RETR 0\r\n", R.NO_SUCH_MESSAGE),
    (b"RETR -1\r\n", R.NO_SUCH_MESSAGE),
    (b"RETR 99999999999999999999\r\n", R.NO_SUCH_MESSAGE),
    (b"RETR 1 2\r\n", R.BAD_SYNTAX),
    (b"TOP 1\r\n", R.BAD_SYNTAX),
    (b"TOP 1 x\r\n", R.BAD_SYNTAX),
    (b"LIST  1\r\n", R.BAD_SYNTAX),
    (b"STAT now\r\n", R.BAD_SYNTAX),
    (b"\xff\xfe\r\n", R.NOT_UTF8),
    (b"NOOP\x00\r\n", R.BAD_SYNTAX),
    (b"\r\n", R.UNKNOWN_COMMAND),
]


@pytest.mark.parametrize("how", SPLITS)
@pytest.mark.parametrize("line,reply", MALFORMED)
def test_malformed_lines_answer_and_go_on(line: bytes, reply: R.Reply, how: str) -> None:
    got = feed(line + b"NOOP\r\n", how, P.State.TRANSACTION)
    assert len(got) == 2
    assert isinstance(got[0], P.Malformed) and got[0].reply == reply
    assert got[1] == P.Noop()


def test_commands_in_the_wrong_state() -> None:
    got = feed(b"RETR 1\r\nUSER bob\r\n", "whole", P.State.AUTHORIZATION)
    assert isinstance(got[0], P.Malformed) and got[0].reply == R.WRONG_STATE
    assert got[1] == P.User(name="bob")
    got = feed(b"USER bob\r\nSTLS\r\nSTAT\r\n", "whole", P.State.TRANSACTION)
    assert [type(g) for g in got] == [P.Malformed, P.Malformed, P.Stat]


@pytest.mark.parametrize("how", SPLITS)
def test_overlong_line_is_refused_and_the_next_one_read(how: str) -> None:
    got = feed(b"USER " + b"a" * 200 + b"\r\nQUIT\r\n", how, max_line=64)
    assert isinstance(got[0], P.Malformed) and got[0].reply == R.LINE_TOO_LONG
    assert got[1:] == [P.Quit()]


@pytest.mark.parametrize("how", SPLITS)
def test_sasl_lines(how: str) -> None:
    data = base64.b64encode(b"\0bob\0pw") + b"\r\n*\r\n!!notbase64\r\n"
    got = feed(data, how, P.State.SASL)
    assert got == [P.SaslResponse(data=b"\0bob\0pw"), P.SaslResponse(data=b"", cancelled=True),
                   P.SaslResponse(data=b"", malformed=True)]


def test_no_events_after_quit() -> None:
    proto = P.Pop3Protocol()
    proto.state = P.State.TRANSACTION
    proto.receive_data(b"QUIT\r\nSTAT\r\n")
    assert proto.next_event() == P.Quit()
    proto.transition(P.Trigger.QUIT)
    assert proto.state is P.State.UPDATE
    assert proto.next_event() is P.NEED_DATA


def test_stls_discards_buffered_commands() -> None:
    proto = P.Pop3Protocol()
    proto.receive_data(b"STLS\r\nUSER injected\r\n")
    assert proto.next_event() == P.Stls()
    assert proto.discard_buffer() == b"USER injected\r\n"
    assert proto.next_event() is P.NEED_DATA


# -- the state table --------------------------------------------------------------------

@pytest.mark.parametrize("state", list(P.State))
@pytest.mark.parametrize("trigger", list(P.Trigger))
def test_state_table_is_total(state: P.State, trigger: P.Trigger) -> None:
    proto = P.Pop3Protocol()
    proto.state = state
    if (state, trigger) in P.TRANSITIONS:
        assert proto.transition(trigger) is P.TRANSITIONS[(state, trigger)]
    else:
        with pytest.raises(P.ProtocolError):
            proto.transition(trigger)
        assert proto.state is state


def test_update_only_after_quit_from_transaction() -> None:
    into_update = [k for k, v in P.TRANSITIONS.items() if v is P.State.UPDATE]
    assert into_update == [(P.State.TRANSACTION, P.Trigger.QUIT)]


@settings(max_examples=300, deadline=None)
@given(state=st.sampled_from(list(P.State)), data=st.binary(max_size=300),
       cuts=st.lists(st.integers(min_value=0, max_value=300), max_size=6))
def test_any_input_in_any_state_never_raises(state: P.State, data: bytes, cuts: list[int]) -> None:
    """Whatever arrives, however it is split, the core yields well-formed events only."""
    proto = P.Pop3Protocol(max_line=128)
    proto.state = state
    got = []
    last = 0
    for cut in sorted(set(c for c in cuts if c <= len(data))) + [len(data)]:
        proto.receive_data(data[last:cut])
        last = cut
        got += events(proto)
    whole = P.Pop3Protocol(max_line=128)
    whole.state = state
    whole.receive_data(data)
    assert got == events(whole)
    for e in got:
        if isinstance(e, P.Command):
            assert type(e) in P.ALLOWED[state]
        else:
            assert isinstance(e, P.Malformed | P.SaslResponse)


@settings(max_examples=500, deadline=None)
@given(parts=st.lists(st.sampled_from([b"RETR", b"retr", b"ReTr", b"RETR ", b" ", b"0", b"1", b"01", b"9" * 9,
                                       b"\r", b"\n", b"\r\n", b"x", b"\xff", b"NOOP"]), max_size=20),
       max_line=st.sampled_from([4, 8, 16, 4096]))
def test_retr_shortcut_gives_what_the_general_parser_gives(parts: list[bytes], max_line: int) -> None:
    # next_event matches a whole RETR line in one step in TRANSACTION; switched off (a
    # pattern that never matches) every line takes _next_line + parse_command instead.
    data = b"".join(parts)
    proto = P.Pop3Protocol(max_line=max_line)
    proto.state = P.State.TRANSACTION
    proto.receive_data(data)
    got = events(proto)
    with pytest.MonkeyPatch.context() as m:
        m.setattr(P, "_RETR_LINE", re.compile(rb"(?!)"))
        general = P.Pop3Protocol(max_line=max_line)
        general.state = P.State.TRANSACTION
        general.receive_data(data)
        assert got == events(general), data


@settings(max_examples=200, deadline=None)
@given(msg=st.integers(min_value=1, max_value=10**9 - 1), lines=st.integers(min_value=0, max_value=10**6))
def test_numbers_round_trip(msg: int, lines: int) -> None:
    assert P.parse_command(f"TOP {msg} {lines}".encode()) == P.Top(msg=msg, lines=lines)
    assert P.parse_command(f"dele {msg}".encode()) == P.Dele(msg=msg)


# -- output -----------------------------------------------------------------------------

def unstuff(wire: bytes) -> bytes:
    """What a client does: undo dot-stuffing, stop at the terminator."""
    assert wire.endswith(b"\r\n.\r\n") or wire == b".\r\n"
    lines = wire.split(b"\r\n")[:-2]
    return b"".join((line[1:] if line.startswith(b".") else line) + b"\r\n" for line in lines)


def test_encode_message_dot_stuffs_and_normalises_line_ends() -> None:
    raw = b"Subject: x\n\n.hidden\n..two\r\nlast line without end"
    wire = P.encode_message(raw)
    assert wire == (b"Subject: x\r\n\r\n..hidden\r\n...two\r\nlast line without end\r\n.\r\n")
    assert unstuff(wire) == b"Subject: x\r\n\r\n.hidden\r\n..two\r\nlast line without end\r\n"


def test_top_keeps_header_and_n_body_lines() -> None:
    raw = b"A: 1\r\nB: 2\r\n\r\nl1\r\n.l2\r\nl3\r\n"
    assert P.encode_message(raw, body_lines=0) == b"A: 1\r\nB: 2\r\n\r\n.\r\n"
    assert P.encode_message(raw, body_lines=2) == b"A: 1\r\nB: 2\r\n\r\nl1\r\n..l2\r\n.\r\n"
    assert P.encode_message(raw, body_lines=99) == P.encode_message(raw)
    assert P.encode_message(b"A: 1\r\n", body_lines=3) == b"A: 1\r\n.\r\n"


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=40).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b"")), max_size=30))
def test_encode_then_unstuff_is_identity_on_crlf_messages(lines: list[bytes]) -> None:
    raw = b"".join(line + b"\r\n" for line in lines)
    wire = P.encode_message(raw)
    assert unstuff(wire) == raw
    assert P.wire_size(raw) == len(raw)
    assert b"\r\n.\r\n" not in wire[:-3] or wire == b".\r\n"


@settings(max_examples=500, deadline=None)
@given(st.lists(st.sampled_from([b"a", b".", b"..", b"\r", b"\n", b"\r\n", b"\r\n.", b" "]), max_size=40))
def test_stuff_crlf_is_encode_message_when_the_wire_size_is_the_length(parts: list[bytes]) -> None:
    # RETR's shortcut: a message whose RETR size (what LIST says) equals its stored length
    # has CRLF line ends only, and then stuff_crlf + END is encode_message's output.
    raw = b"".join(parts)
    if P.wire_size(raw) == len(raw):
        assert P.stuff_crlf(raw) + P.END == P.encode_message(raw), raw
    else:
        crlf = raw.count(b"\r\n")
        assert raw.count(b"\r") != crlf or raw.count(b"\n") != crlf or not raw.endswith(b"\n"), raw


def test_reply_rendering() -> None:
    assert R.MAILDROP_LOCKED.to_bytes() == b"-ERR [IN-USE] Mailbox is locked by another session\r\n"
    assert R.OK.with_text("1 2").to_bytes() == b"+OK 1 2\r\n"
    assert R.Reply(ok=False, text="a\r\nb").to_bytes() == b"-ERR a  b\r\n"
    assert P.multiline(R.CAPA_FOLLOWS, [b"TOP", b".x"]) == b"+OK Capability list follows\r\nTOP\r\n..x\r\n.\r\n"


def test_message_encoder_matches_encode_message_at_any_chunk_edges() -> None:
    """RETR of a large message streams through MessageEncoder: byte-identical output and
    wire size, wherever the chunks split (inside CRLF, before a '.', mid-line)."""
    import random

    rnd = random.Random(7)
    samples = [b"", b"a", b"a\r", b"\r\n", b".\r\n..\r\n", b"x\ry\nz\r\n.\r.\n", b"no end"]
    pieces = [b"\r", b"\n", b"\r\n", b".", b"a", b"bc", b"\r\n.", b".\r\n"]
    samples += [b"".join(rnd.choice(pieces) for _ in range(rnd.randint(1, 60))) for _ in range(300)]
    crlf_only = [b"\r\n", b".", b"a", b"bc", b"\r\n.", b".\r\n"]
    samples += [b"".join(rnd.choice(crlf_only) for _ in range(rnd.randint(1, 60))) for _ in range(300)]
    for raw in samples:
        for _ in range(5):
            enc = P.MessageEncoder()
            out, pos = b"", 0
            while pos < len(raw):
                n = rnd.randint(1, 7)
                out += enc.feed(raw[pos:pos + n])
                pos += n
            out += enc.finish()
            assert out == P.encode_message(raw), raw
            assert enc.wire_size == P.wire_size(raw), raw


def test_top_prefix_gives_top_of_the_whole_message(tmp_path: Any, monkeypatch: Any) -> None:
    """TOP of a large message reads only its start (pop3/stream.py), in chunks split
    anywhere: the same response as TOP of the whole message."""
    import asyncio
    import random
    from collections.abc import AsyncIterator

    from mailhaven.pop3 import stream

    class Store:
        """Streams the message in pieces of 3 bytes (``blob_chunks`` of the store contract)."""

        def __init__(self, raw: bytes) -> None:
            self.raw = raw

        async def blob_chunks(self, blob_id: str) -> AsyncIterator[bytes]:
            for at in range(0, len(self.raw), 3):
                yield self.raw[at:at + 3]

    rnd = random.Random(3)
    pieces = [b"\r", b"\n", b"\r\n", b".", b"a", b"Subject: x\r\n", b"\r\n\r\n"]
    for _ in range(300):
        raw = b"".join(rnd.choice(pieces) for _ in range(rnd.randint(0, 40)))
        for n in (0, 1, 3, 50):
            prefix = asyncio.run(stream.top_prefix(Store(raw), "b", n))
            assert raw.startswith(prefix)
            assert P.encode_message(prefix, body_lines=n) == P.encode_message(raw, body_lines=n), (raw, n)
