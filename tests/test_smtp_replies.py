"""The client-side reply reader and the grammar helpers (whole, byte by byte, trailing data)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailhaven.smtp import codes
from mailhaven.smtp.codes import Reply
from mailhaven.smtp.grammar import parse_path_args, xtext_decode, xtext_encode
from mailhaven.smtp.replies import NEED_DATA, ReplyError, ReplyReader, parse_ehlo, parse_reply

EHLO = (b"250-mx.example Hello\r\n250-PIPELINING\r\n250-SIZE 1000\r\n250-AUTH PLAIN LOGIN\r\n"
        b"250-AUTH=LOGIN\r\n250 8BITMIME\r\n")
STREAM = b"220 mx.example ESMTP\r\n" + EHLO + b"550-5.1.1 No such\r\n550 5.1.1 user\r\n354 go ahead\r\n"


def read_all(chunks: list[bytes]) -> tuple[list[Reply], ReplyReader]:
    reader = ReplyReader()
    out: list[Reply] = []
    for chunk in chunks:
        reader.receive_data(chunk)
        while (r := reader.next_reply()) is not NEED_DATA:
            assert isinstance(r, Reply)
            out.append(r)
    return out, reader


@pytest.mark.parametrize("split", ["whole", "bytes", "trailing"])
def test_reader(split: str) -> None:
    data = STREAM + (b"250 2.0.0 parti" if split == "trailing" else b"")
    chunks = [data] if split != "bytes" else [data[i:i + 1] for i in range(len(data))]
    replies, reader = read_all(chunks)
    assert [r.code for r in replies] == [220, 250, 550, 354]
    assert replies[2].enhanced == "5.1.1" and replies[2].text == "No such\nuser"
    assert replies[3].enhanced is None
    assert reader.pending == (split == "trailing")
    ehlo = parse_ehlo(replies[1])
    assert ehlo.domain == "mx.example"
    assert ehlo.has("pipelining") and ehlo.size_limit() == 1000
    assert ehlo.auth_mechanisms() == ("PLAIN", "LOGIN")


def test_round_trip_of_every_constant() -> None:
    for name in dir(codes):
        value = getattr(codes, name)
        if isinstance(value, Reply):
            assert parse_reply(value.to_bytes()) == value, name


@pytest.mark.parametrize("bad", [b"25 short\r\n", b"abc def\r\n", b"250-a\r\n251 b\r\n", b"650 x\r\n"])
def test_malformed(bad: bytes) -> None:
    with pytest.raises(ReplyError):
        read_all([bad])


def test_line_too_long() -> None:
    with pytest.raises(ReplyError):
        read_all([b"250-" + b"x" * 20000])


def test_enhanced_class_must_match() -> None:
    r = parse_reply(b"250 5.1.1 odd\r\n")
    assert r.enhanced is None and r.text == "5.1.1 odd"


@settings(max_examples=300, deadline=None)
@given(st.integers(200, 599), st.one_of(st.none(), st.tuples(st.integers(0, 999), st.integers(0, 999))),
       st.lists(st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=30),
                min_size=1, max_size=5))
def test_reply_round_trip(code: int, enh: tuple[int, int] | None, lines: list[str]) -> None:
    if code % 100 >= 60 or (code // 10) % 10 > 5:
        return
    enhanced = f"{str(code)[0]}.{enh[0]}.{enh[1]}" if enh and str(code)[0] in "245" else None
    lines = [line.strip(" ") for line in lines]
    if enhanced is None and any(line[:1].isdigit() for line in lines):
        return
    reply = Reply(code=code, enhanced=enhanced, text="\n".join(lines))
    assert parse_reply(reply.to_bytes()) == reply


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_fuzz_reader(data: bytes) -> None:
    try:
        read_all([data])
    except ReplyError:
        pass


@given(st.text(max_size=40))
def test_xtext_round_trip(value: str) -> None:
    assert xtext_decode(xtext_encode(value).encode("utf-8").decode("latin-1")) == value or not value.isascii()


def test_xtext_examples() -> None:
    assert xtext_encode("a+b=c d") == "a+2Bb+3Dc+20d"
    assert xtext_decode("a+2Bb") == "a+b"


def test_path_args() -> None:
    p = parse_path_args('<"john doe"@ex.org> SIZE=10 BODY=8BITMIME', allow_null=False)
    assert p.address == '"john doe"@ex.org' and p.params == {"SIZE": "10", "BODY": "8BITMIME"}
    assert parse_path_args("<@relay.org:user@ex.org>", allow_null=False).address == "user@ex.org"
    assert parse_path_args("<>", allow_null=True).address == ""
    assert parse_path_args(" <a@b.c>", allow_null=True).address == "a@b.c"    # lenient space
