"""The sans-IO IMAP command reader: whole, byte by byte, split at literal boundaries, fuzzed."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailhaven.imap.grammar import (
    decode_mailbox,
    mutf7_decode,
    mutf7_encode,
    parse_datetime,
    parse_sequence_set,
)
from mailhaven.imap.parser import (
    NEED_DATA,
    Atom,
    Command,
    CommandError,
    CommandReader,
    LiteralAnnounced,
    ParenList,
    String,
)
from mailhaven.imap.responses import Bad, No, sequence_set


def drain(reader: CommandReader, sent: list[bytes] | None = None) -> list[object]:
    """All events, accepting every literal (recording the continuations a server would send)."""
    out: list[object] = []
    while True:
        ev = reader.next_event()
        if ev is NEED_DATA:
            return out
        if isinstance(ev, LiteralAnnounced):
            reader.accept_literal()
            if sent is not None and ev.synchronizing:
                sent.append(b"+ OK\r\n")
            continue
        out.append(ev)


def feed_chunks(chunks: list[bytes], **kw: int) -> list[object]:
    reader = CommandReader(**kw)
    events: list[object] = []
    for c in chunks:
        reader.receive_data(c)
        events += drain(reader)
    return events


def whole(data: bytes) -> list[object]:
    return feed_chunks([data])


def bytewise(data: bytes) -> list[object]:
    return feed_chunks([data[i:i + 1] for i in range(len(data))])


def all_ways(data: bytes) -> list[object]:
    a, b = whole(data), bytewise(data)
    assert a == b
    for i in range(len(data) + 1):
        assert feed_chunks([data[:i], data[i:]]) == a, i
    return a


def test_simple_command() -> None:
    [cmd] = all_ways(b"a1 NOOP\r\n")
    assert cmd == Command(tag="a1", name="NOOP", uid=False, args=(), size=9)


def test_arguments_strings_lists_and_sections() -> None:
    data = b'a2 UID fetch 1:* (FLAGS BODY.PEEK[HEADER.FIELDS (Subject "From")]<0.100> UID)\r\n'
    [cmd] = all_ways(data)
    assert isinstance(cmd, Command)
    assert cmd.name == "FETCH" and cmd.uid
    assert cmd.args[0] == Atom(value="1:*")
    lst = cmd.args[1]
    assert isinstance(lst, ParenList)
    assert lst.items == (Atom(value="FLAGS"),
                         Atom(value='BODY.PEEK[HEADER.FIELDS (Subject "From")]<0.100>'),
                         Atom(value="UID"))


def test_quoted_escapes() -> None:
    [cmd] = all_ways(b'a LOGIN "us\\"er" "p\\\\w"\r\n')
    assert isinstance(cmd, Command)
    assert cmd.args == (String(value=b'us"er'), String(value=b"p\\w"))


@pytest.mark.parametrize("marker,sync", [(b"{5}", True), (b"{5+}", False)])
def test_literals_split_everywhere(marker: bytes, sync: bool) -> None:
    data = b"a LOGIN " + marker + b"\r\nal\r\nx {3}\r\npw!\r\nb NOOP\r\n"
    # The second literal is synchronizing in both cases.
    events = all_ways(data)
    assert [type(e) for e in events] == [Command, Command]
    login = events[0]
    assert isinstance(login, Command)
    assert login.args == (String(value=b"al\r\nx", literal=True), String(value=b"pw!", literal=True))


def test_a_run_of_spaces_after_a_literal_counts_as_one() -> None:
    """imapclient's MULTIAPPEND: two spaces between one literal and the next argument
    (Dovecot takes any run); a second space elsewhere stays malformed."""
    [cmd] = all_ways(b"a APPEND INBOX {1+}\r\nx  (\\Seen) {1+}\r\ny\r\n")
    assert isinstance(cmd, Command) and [type(a).__name__ for a in cmd.args] == [
        "Atom", "String", "ParenList", "String"]
    [bad, ok] = all_ways(b"a APPEND INBOX {1+}\r\nx ( \\Seen) {1+}\r\ny\r\nz NOOP\r\n")
    assert isinstance(bad, CommandError) and isinstance(ok, Command)


def test_literal_announcements_and_continuations() -> None:
    reader = CommandReader()
    reader.receive_data(b"a APPEND INBOX (\\Seen) {4}\r\n")
    ev = reader.next_event()
    assert isinstance(ev, LiteralAnnounced)
    assert (ev.tag, ev.name, ev.size, ev.synchronizing, ev.first) == ("a", "APPEND", 4, True, True)
    reader.accept_literal()
    assert reader.next_event() is NEED_DATA
    reader.receive_data(b"abcd {2+}\r\nxy\r\n")
    ev = reader.next_event()
    assert isinstance(ev, LiteralAnnounced) and not ev.synchronizing and not ev.first
    reader.accept_literal()
    cmd = reader.next_event()
    assert isinstance(cmd, Command)
    assert cmd.args[2] == String(value=b"abcd", literal=True)
    assert cmd.args[3] == String(value=b"xy", literal=True)


def test_rejected_sync_literal_resyncs() -> None:
    reader = CommandReader()
    reader.receive_data(b"a APPEND INBOX {999}\r\nb NOOP\r\n")
    ev = reader.next_event()
    assert isinstance(ev, LiteralAnnounced)
    reader.reject_literal()
    cmd = reader.next_event()
    assert isinstance(cmd, Command) and cmd.tag == "b"


def test_rejected_nonsync_literal_is_skipped() -> None:
    reader = CommandReader()
    reader.receive_data(b"a APPEND INBOX {5+}\r\nhello {3+}\r\nabc\r\nb NOOP\r\n")
    ev = reader.next_event()
    assert isinstance(ev, LiteralAnnounced)
    reader.reject_literal()
    cmd = reader.next_event()
    assert isinstance(cmd, Command) and cmd.tag == "b"


def test_literal8_and_nul() -> None:
    [cmd] = all_ways(b"a APPEND INBOX ~{3}\r\n\x00\x01\x02\r\n")
    assert isinstance(cmd, Command)
    assert cmd.args[1] == String(value=b"\x00\x01\x02", literal=True, binary=True)
    [cmd] = whole(b"a APPEND INBOX {3}\r\n\x00\x01\x02\r\n")
    assert isinstance(cmd, Command) and cmd.args[1] == String(value=b"\x00\x01\x02", literal=True)


def test_oversized_literal_sync_and_nonsync() -> None:
    events = feed_chunks([b"a LOGIN {100}\r\nb NOOP\r\n"], max_literal=10)
    assert isinstance(events[0], CommandError) and events[0].code == "TOOBIG" and events[0].tag == "a"
    assert isinstance(events[1], Command) and events[1].tag == "b"
    data = b"a LOGIN {20+}\r\n" + b"x" * 20 + b" y\r\nb NOOP\r\n"
    events = feed_chunks([data], max_literal=10)
    assert isinstance(events[0], CommandError)
    assert [e.tag for e in events[1:] if isinstance(e, Command)] == ["b"]
    events = feed_chunks([data[i:i + 1] for i in range(len(data))], max_literal=10)
    assert [e.tag for e in events if isinstance(e, Command)] == ["b"]


def test_line_too_long_then_recovers() -> None:
    data = b"a NOOP " + b"x" * 200 + b"\r\nb NOOP\r\n"
    for chunks in ([data], [data[i:i + 7] for i in range(0, len(data), 7)]):
        events = feed_chunks(chunks, max_line=100)
        assert isinstance(events[0], CommandError)
        assert isinstance(events[-1], Command) and events[-1].tag == "b"


def test_nesting_limit() -> None:
    deep = b"a SEARCH " + b"(" * 40 + b"ALL" + b")" * 40 + b"\r\n"
    [err] = feed_chunks([deep], max_depth=10)
    assert isinstance(err, CommandError) and err.tag == "a"
    [ok] = feed_chunks([deep], max_depth=64)
    assert isinstance(ok, Command)


@pytest.mark.parametrize("line", [
    b'a LOGIN "unterminated\r\n', b"a FETCH 1 (FLAGS\r\n", b"a FETCH 1 FLAGS)\r\n",
    b"a FETCH 1  FLAGS\r\n", b"a LOGIN {3}x\r\n", b"a\r\n", b'a LOGIN "a\\b" c\r\n',
])
def test_malformed_lines_give_tagged_errors(line: bytes) -> None:
    events = all_ways(line + b"z NOOP\r\n")
    assert isinstance(events[0], CommandError) and events[0].tag == "a"
    assert isinstance(events[1], Command) and events[1].tag == "z"


def test_an_unclosed_bracket_is_an_atom_char() -> None:
    """RFC 9051 9: "[" is an ATOM-CHAR (only "]" is a resp-special), so a mailbox name may hold
    one without its "]" (imaptest's atoms script); a section spec still keeps its spaces."""
    [cmd, fetch] = all_ways(b"a SELECT x[}y\r\nb FETCH 1 BODY[HEADER.FIELDS (A B)]\r\n")
    assert isinstance(cmd, Command) and cmd.args == (Atom(value="x[}y"),)
    assert isinstance(fetch, Command) and fetch.args[1] == Atom(value="BODY[HEADER.FIELDS (A B)]")


def test_untaggable_garbage() -> None:
    events = all_ways(b"\r\n(\r\n+ x\r\nz NOOP\r\n")
    assert all(isinstance(e, CommandError) and e.tag is None for e in events[:3])
    assert isinstance(events[3], Command)


def test_bare_lf_accepted_and_trailing_data_kept() -> None:
    reader = CommandReader()
    reader.receive_data(b"a NOOP\nb NO")
    [cmd] = drain(reader)
    assert isinstance(cmd, Command) and cmd.tag == "a"
    assert reader.buffered == 4
    reader.receive_data(b"OP\r\n")
    [cmd] = drain(reader)
    assert isinstance(cmd, Command) and cmd.tag == "b"


def test_next_line_for_idle_done() -> None:
    reader = CommandReader()
    reader.receive_data(b"DON")
    assert reader.next_line() is NEED_DATA
    reader.receive_data(b"E\r\nc NOOP\r\n")
    assert reader.next_line() == b"DONE"
    [cmd] = drain(reader)
    assert isinstance(cmd, Command)


def test_sequence_sets() -> None:
    s = parse_sequence_set("1:3,7,9:*")
    assert s.select([1, 2, 3, 4, 7, 8, 9, 10]) == [1, 2, 3, 7, 9, 10]
    assert parse_sequence_set("*:4").select([1, 5, 6]) == [5, 6]
    assert parse_sequence_set("$").saved
    for bad in ("0", "1:0", "a", "1,,2", "", "4294967296"):
        with pytest.raises(Bad):
            parse_sequence_set(bad)
    assert sequence_set([5, 1, 2, 3, 9]) == "1:3,5,9"


def test_mailbox_names() -> None:
    assert mutf7_encode("Entwürfe & Co") == "Entw&APw-rfe &- Co"
    assert mutf7_decode("Entw&APw-rfe &- Co") == "Entwürfe & Co"
    assert decode_mailbox(b"inbox", False) == "INBOX"
    assert decode_mailbox("Entwürfe".encode(), True) == "Entwürfe"
    with pytest.raises(No):                     # a valid astring naming no mailbox: NO, not BAD
        decode_mailbox(b"&Jjo", False)


def test_datetime() -> None:
    assert parse_datetime("17-Jul-1996 02:44:25 -0700") == 837596665.0
    assert parse_datetime(" 7-Jul-1996 02:44:25 +0000") == 836707465.0
    with pytest.raises(Bad):
        parse_datetime("31-Feb-2020 00:00:00 +0000")


@given(st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=40))
def test_mutf7_roundtrip(name: str) -> None:
    assert mutf7_decode(mutf7_encode(name)) == name
    assert mutf7_encode(name).isascii()


_pieces = st.sampled_from([
    b"a", b" ", b"(", b")", b'"', b"\\", b"{3}\r\n", b"{2+}\r\n", b"~{1}\r\n", b"\r\n", b"\n", b"[", b"]",
    b"NOOP", b"FETCH", b"UID", b"1:*", b"BODY[", b"<0.5>", b"\x00", b"\xff", b"x" * 50,
])


@settings(max_examples=300, deadline=None)
@given(st.lists(_pieces, max_size=40), st.integers(min_value=1, max_value=9))
def test_fuzz_never_crashes_and_split_invariant(parts: list[bytes], step: int) -> None:
    data = b"".join(parts) + b"\r\nz NOOP\r\n"
    kw = {"max_line": 120, "max_literal": 40}
    a = feed_chunks([data], **kw)
    b = feed_chunks([data[i:i + step] for i in range(0, len(data), step)], **kw)
    assert a == b
    for e in a:
        assert isinstance(e, Command | CommandError)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_fuzz_random_bytes(data: bytes) -> None:
    events = feed_chunks([data, b"\r\n"], max_line=100, max_literal=50)
    for e in events:
        assert isinstance(e, Command | CommandError)


def test_protocol_core_is_sans_io() -> None:
    """Only imap/server.py may touch asyncio or sockets (STYLE.md habit 1)."""
    import ast
    from pathlib import Path

    import mailhaven.imap as pkg

    root = Path(pkg.__file__).parent
    for path in sorted(root.glob("*.py")):
        if path.name == "server.py":
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                assert name.split(".")[0] not in ("asyncio", "socket", "ssl", "selectors"), (path.name, name)


def test_a_line_of_exactly_the_limit_is_accepted_wherever_the_crlf_is_split() -> None:
    line = b"a1 NOOP " + b"x" * (120 - 8)                   # 120 bytes before the CRLF
    for cut in range(len(line) - 2, len(line) + 2):
        data = line + b"\r\n"
        events = feed_chunks([data[:cut], data[cut:]], max_line=120)
        assert [type(e) for e in events] == [Command], (cut, events)
    too_long = feed_chunks([line + b"y\r", b"\n"], max_line=120)
    assert [e.text for e in too_long if isinstance(e, CommandError)] == ["Command line too long"]


_LINE_PIECES = st.sampled_from([b"a", b"x1", b"UID", b"FETCH", b"1:*", b" ", b"  ", b"(", b")", b"[", b"]",
                                b"BODY.PEEK[HEADER.FIELDS (SUBJECT FROM)]", b"\\Seen", b'"q s"', b"\xc3\xa9",
                                b"{3}", b"<0.10>", b"\x01", b"NIL", b"BODY[1]<0.5>"])


@given(st.lists(_LINE_PIECES, max_size=14).map(b"".join))
def test_line_tokens_agree_with_the_tokenizer(line: bytes) -> None:
    """The kept-per-argument-list reading of a line gives the tokenizer's tokens, or the
    same error, for any line."""
    from mailhaven.imap.parser import _line_tokens, _ParseError, _Tokenizer

    def run(fn):  # type: ignore[no-untyped-def]
        try:
            return list(fn())
        except _ParseError as exc:
            return ("error", str(exc))

    assert run(lambda: _line_tokens(line, 8)) == run(lambda: _Tokenizer([line], 8).tokens())
