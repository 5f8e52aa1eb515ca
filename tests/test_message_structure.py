"""MIME structure with byte offsets and the IMAP envelope (message/structure.py)."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailhaven.imap.fetch import FetchItem, render_body, render_envelope, section_bytes
from mailhaven.message.addresses import parse_address_list
from mailhaven.message.structure import header_end, structure_summary


def test_groups_in_envelope_addresses() -> None:
    assert parse_address_list("undisclosed-recipients:;") == [[None, None, "undisclosed-recipients", None],
                                                             [None, None, None, None]]
    got = parse_address_list('A <a@b.c>, Team: x@y.z, "Q: R" <q@r.s>;, last@l.l')
    assert got == [["A", None, "a", "b.c"], [None, None, "Team", None], [None, None, "x", "y.z"],
                   ["Q: R", None, "q", "r.s"], [None, None, None, None], [None, None, "last", "l.l"]]
    assert parse_address_list('"Doe, J" <j@d.e>') == [["Doe, J", None, "j", "d.e"]]


def test_malformed_addresses_read_as_dovecot_reads_them() -> None:
    """Each answer is Dovecot 2.3's ENVELOPE for the same field (checked against it)."""
    assert parse_address_list("<@r1.example,@r2.example:u@d.example>") == [
        [None, "@r1.example,@r2.example", "u", "d.example"]]                       # RFC 5322 4.4 obs-route
    assert parse_address_list("Big Bug bb@bug.com") == [["Big Bug bb", None, "MISSING_MAILBOX", "MISSING_DOMAIN"]]
    assert parse_address_list("Undisclosed Recipients") == [
        ["Undisclosed Recipients", None, "MISSING_MAILBOX", "MISSING_DOMAIN"]]
    assert parse_address_list("Bob Dunite <bob@extern> Bobby Dunite <bobby@extern>") == [
        ["Bob Dunite", None, "bob", "extern"]]                                    # no comma: the list ends
    assert parse_address_list('"Joe (x)" <j@x.y> (comment), Ann (c) <a@b.c>, a.b@c.d (Real Name)') == [
        ["Joe (x)", None, "j", "x.y"], ["Ann", None, "a", "b.c"], ["Real Name", None, "a.b", "c.d"]]


def test_folded_boundary_and_empty_parts() -> None:
    raw = (b'From: u@d\r\nMime-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="foo\r\n bar"\r\n\r\n'
           b"--foo bar\r\nContent-Type: text/x-myown; charset=us-ascii\r\n\r\nhello\r\n\r\n--foo bar--\r\n")
    body = structure_summary(raw)["imap"]["body"]
    assert render_body(body, True, False) == (
        b'(("text" "x-myown" ("charset" "us-ascii") NIL NIL "7bit" 7 1 NIL NIL NIL NIL) "mixed" '
        b'("boundary" "foo bar") NIL NIL NIL)')
    raw = b"Content-Type: multipart/mixed; boundary=A\r\n\r\n--A\r\n--A\r\nX: y\r\n\r\nz\r\n--A--\r\n"
    parts = structure_summary(raw)["imap"]["body"]["parts"]
    assert len(parts) == 2 and parts[0]["e"] - parts[0]["h"][1] == 0


def test_lf_only_message_sections() -> None:
    raw = (b"Subject: lf\nContent-Type: multipart/alternative; boundary=b\n\npre\n--b\n"
           b"Content-Type: text/plain\n\none\ntwo\n--b\nContent-Type: text/html\n\n<p>x</p>\n--b--\n")
    imap = structure_summary(raw)
    body = imap["imap"]["body"]
    one = section_bytes(raw, body, FetchItem(name="BODY", section=True, parts=(1,)))
    assert one == b"one\ntwo"
    mime = section_bytes(raw, body, FetchItem(name="BODY", section=True, parts=(2,), text="MIME"))
    assert mime == b"Content-Type: text/html\n\n"
    header = section_bytes(raw, body, FetchItem(name="BODY", section=True, text="HEADER.FIELDS",
                                                fields=("SUBJECT",)))
    assert header == b"Subject: lf\n\r\n"


def test_envelope_defaults_and_raw_values() -> None:
    raw = (b"From: =?utf-8?q?J=C3=B6rg?= <j@x.de>\r\nSubject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\n"
           b"Date: Tue, 2 Jan 2024 11:00:00 +0100\r\n\r\nhi\r\n")
    env = structure_summary(raw)["imap"]["envelope"]
    assert env[1] == "=?utf-8?q?Gr=C3=BC=C3=9Fe?="
    assert env[2] == env[3] == env[4] == [["=?utf-8?q?J=C3=B6rg?=", None, "j", "x.de"]]
    assert env[5] is None and env[9] is None
    assert render_envelope(env, False).startswith(b'("Tue, 2 Jan 2024 11:00:00 +0100" "=?utf-8?q?')


def test_garbage_never_raises() -> None:
    for raw in (b"", b"\r\n", b"no header at all", b"Content-Type: multipart/mixed\r\n\r\nno boundary",
                b"Content-Type: message/rfc822\r\n\r\n", b"\xff\xfe\x00" * 50,
                b"Content-Type: multipart/mixed; boundary=x\r\n\r\n" + b"--x\r\n" * 10000):
        imap = structure_summary(raw)["imap"]
        render_body(imap["body"], True, True)
        render_envelope(imap["envelope"], True)


@given(st.lists(st.sampled_from([b"\r", b"\n", b"a", b": "]), max_size=30).map(b"".join),
       st.integers(0, 40), st.integers(0, 40))
def test_header_end_is_the_end_of_the_first_blank_line(raw: bytes, start: int, end: int) -> None:
    """header_end (bytes.find) agrees with the regex definition: the header ends just after
    the first ``\\r?\\n\\r?\\n``, or at once when the block opens with a blank line."""
    start, end = min(start, len(raw)), min(end, len(raw))
    if start >= end:
        expected = end
    elif raw.startswith(b"\r\n", start, end):
        expected = start + 2
    elif raw.startswith(b"\n", start, end):
        expected = start + 1
    else:
        m = re.compile(rb"\r?\n\r?\n").search(raw, start, end)
        expected = end if m is None else m.end()
    assert header_end(raw, start, end) == expected


def test_encoded_message_part_still_has_envelope_body_and_lines() -> None:
    """RFC 9051 7.5.2 body-type-msg: a message/rfc822 part in base64 still carries an
    envelope, a body and a line count, or strict parsers reject the response. What they
    hold is Dovecot 2.3's answer for this message, byte for byte: the encoded text read as
    a header that a delimiter ends, the line break before it counted in the part; a last
    line without a line break ("body") not counted; the default charset shown (RFC 2046 4.1.2)."""
    import base64

    inner = b"From: a@b.c\r\nSubject: hi\r\n\r\nhello\r\n"
    raw = (b"From: x@y.z\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=B\r\n\r\n"
           b"--B\r\nContent-Type: text/plain\r\n\r\nbody\r\n--B\r\nContent-Type: message/rfc822\r\n"
           b"Content-Transfer-Encoding: base64\r\n\r\n" + base64.encodebytes(inner).replace(b"\n", b"\r\n")
           + b"--B--\r\n")
    body = structure_summary(raw)["imap"]["body"]
    assert render_body(body, False, False) == (
        b'(("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 4 0)("message" "rfc822" NIL NIL NIL "base64" 50 '
        b'(NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL) ("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 0 0) 1)'
        b' "mixed")')
    encoded = base64.encodebytes(inner).strip()
    part = FetchItem(name="BODY", section=True, parts=(2,), text="HEADER", label="BODY[2.HEADER]")
    assert section_bytes(raw, body, part) == encoded          # Dovecot: the same 48 bytes
    part = FetchItem(name="BODY", section=True, parts=(2,), text=None, label="BODY[2]")
    assert section_bytes(raw, body, part) == encoded + b"\r\n"


def test_envelope_addresses_without_domain_and_broken_field_names() -> None:
    """A NIL host would read as a group start (RFC 9051 7.5.2): a bare local part gets
    MISSING_DOMAIN. A field name broken by a line break ("From\\r\\n : x") is no field, so
    it cannot put a second, spoofed sender in front of the real one."""
    env = structure_summary(b"From: d\r\nTo: Team: a@b.c;\r\n\r\n")["imap"]["envelope"]
    assert env[2] == [[None, None, "d", "MISSING_DOMAIN"]]
    assert env[5] == [[None, None, "Team", None], [None, None, "a", "b.c"], [None, None, None, None]]
    raw = b"Received: x\r\nFrom\r\n : <any@attack.example>\r\nFrom: <admin@legit.example>\r\n\r\nhi\r\n"
    assert structure_summary(raw)["imap"]["envelope"][2] == [[None, None, "admin", "legit.example"]]


def test_quoted_printable_trailing_blanks_are_dropped() -> None:
    """RFC 2045 6.7 rule 3: blanks ending an encoded line are transport padding; "= " then
    the line end is still a soft line break (BINARY[] and BINARY.SIZE)."""
    from mailhaven.imap.fetch import decode_body

    assert decode_body(b"hello  \r\nfoo\t= \r\nbar=3D \t\r\nend", "quoted-printable") == b"hello\r\nfoo\tbar=\r\nend"


_HEADER_PIECES = st.sampled_from([b"Subject", b"subject", b"From", b"To", b"X-Subject", b":", b" ", b"\t",
                                  b"\r\n", b"\n", b"a", b"\xff", b"Subject: hi\r\n", b" folded\r\n",
                                  b"From : x\r\n"])


@given(st.lists(_HEADER_PIECES, max_size=30).map(b"".join),
       st.lists(st.sampled_from(["SUBJECT", "FROM", "TO", "X-SUBJECT", "DATE"]), min_size=1, max_size=3))
def test_header_fields_by_regex_match_split_fields(block: bytes, names: list[str]) -> None:
    """BODY[HEADER.FIELDS (...)] finds its fields with one regex; it must pick exactly what
    split_fields and a filter pick, in order, whenever it is used (no bare CR)."""
    from hypothesis import assume

    from mailhaven.imap.fetch import _fields_regex
    from mailhaven.message.structure import split_fields

    block = block[:header_end(block, 0, len(block))]
    assume(block.count(b"\r") == block.count(b"\r\n"))
    wanted = {n.lower() for n in names}
    expected = [field for name, field in split_fields(block) if name in wanted]
    assert [m.group() for m in _fields_regex(tuple(names)).finditer(block)] == expected


def test_stdlib_reads_the_header_fields_that_imap_reads() -> None:
    """A line the stdlib takes for the start of the body (blanks before a colon, a field name
    broken over lines, an SMTP command) no longer hides the fields after it from the
    summary; the body is kept byte for byte, and a well-formed message is left alone."""
    from mailhaven.message.structure import stdlib_readable
    from mailhaven.message.summary import summarize

    plain = b"From: a@example.org\r\nSubject: hi\r\n\r\nbody\r\n"
    assert stdlib_readable(plain) is plain
    mbox = b"From a@example.org  Fri Aug 31 13:39:16 2001\nSubject: hi\n\nbody\n"
    assert stdlib_readable(mbox) is mbox
    cases = {
        b"Subject : obsolete\r\nFrom: a@example.org\r\n\r\nbody\r\n": ("obsolete", "a@example.org"),
        b"Received: x\nFrom\n : <attacker@example.com>\nFrom: <b@example.org>\nSubject: s\n\nbody\n":
            ("s", "b@example.org"),
        b"HELO example.com\r\nMAIL FROM:<x@example.com>\r\nSubject: foo\r\nFrom: c@example.org\r\n\r\nbody\r\n":
            ("foo", "c@example.org"),
    }
    for raw, (subject, sender) in cases.items():
        fixed = stdlib_readable(raw)
        assert fixed.endswith(b"body" + raw[-2:] if raw.endswith(b"\r\n") else b"body\n")
        summary = summarize(raw)
        assert summary["subject"] == subject, raw
        assert [a["email"] for a in summary["from"]] == [sender], raw
        assert summary["preview"] == "body"
    header_only = b"Subject : no body"
    assert summarize(header_only)["subject"] == "no body"


_ADDRESS_PIECES = st.sampled_from(['"', "(", ")", "<", ">", "@", ",", ":", ";", ".", " ", "\\", "\r\n ", "a",
                                   "b.c", "Big Bug", "\xe9", "[1.2.3.4]", "@r:", "grp:", "x@y"])


@given(st.lists(_ADDRESS_PIECES, max_size=40).map("".join))
def test_address_lists_never_fail_and_groups_balance(text: str) -> None:
    """Any field text gives 4-element addresses; each group start has its end, so the
    ENVELOPE's group structure (RFC 9051 7.5.2) is well-formed."""
    depth = 0
    for addr in parse_address_list(text):
        assert len(addr) == 4 and all(x is None or isinstance(x, str) for x in addr)
        if addr[3] is None and addr[2] is not None:
            depth += 1
        elif addr == [None, None, None, None]:
            depth -= 1
        else:
            assert addr[2] and addr[3]            # a mailbox always has both parts (or a MISSING_ marker)
        assert depth in (0, 1)
    assert depth == 0


@given(st.lists(st.sampled_from(["text", "/", "plain", ";", "=", '"', "(", ")", " ", "name*0*", "name*1",
                                 "charset", "x", "\\", "%41", "''", "\r\n "]), max_size=30).map("".join))
def test_content_type_values_never_fail(value: str) -> None:
    from mailhaven.message import mimeparams

    t, s, params = mimeparams.content_type(value)
    assert (t == "") == (s == "")
    assert all(len(p) == 2 for p in params or [])
    mimeparams.disposition(value)
    mimeparams.languages(value)
    mimeparams.transfer_encoding(value)


class _OnlyFindCountSlices:
    """Bytes seen only through len, slices, find, count and startswith: what the structure
    parser may use, so that a file read a chunk at a time can stand in for the bytes."""

    def __init__(self, data: bytes) -> None:
        self._d = data

    def __len__(self) -> int:
        return len(self._d)

    def __getitem__(self, key: slice) -> bytes:
        assert isinstance(key, slice)
        return self._d[key]

    def find(self, sub: bytes, start: int | None = None, end: int | None = None) -> int:
        return self._d.find(sub, start, end)

    def count(self, sub: bytes, start: int | None = None, end: int | None = None) -> int:
        return self._d.count(sub, start, end)

    def startswith(self, prefix: bytes, start: int = 0, end: int | None = None) -> bool:
        return self._d.startswith(prefix, start, end)


def test_structure_needs_only_find_count_and_slices(corpus_files: list) -> None:  # type: ignore[type-arg]
    from conftest import corpus_messages

    for name, raw in corpus_messages():
        assert structure_summary(_OnlyFindCountSlices(raw)) == structure_summary(raw), name  # type: ignore[arg-type]


def test_envelope_holds_text_and_keeps_non_utf8_bytes_beside_it() -> None:
    """Search, sort and the index read the envelope as text; the bytes that are no UTF-8
    sit beside it by position, for FETCH to send back unchanged."""
    raw = (b"From: Ren\xe9 <rene@example.org>\r\nTo: Gr\xfcppe: a@b.c;\r\nSubject: caf\xe9\r\n"
           b"Date: Mon, 1 Jan 2024 10:00:00 +0000\r\n\r\nx\r\n")
    imap = structure_summary(raw)["imap"]
    env = imap["envelope"]

    def strings(v: object) -> bool:
        return v is None or isinstance(v, str) or (isinstance(v, list) and all(strings(x) for x in v))

    assert strings(env) and env[1] == "caf\ufffd" and env[5][0][2] == "Gr\ufffdppe"
    assert imap["envelope8"] == {"1": "caf\xe9", "2.0.0": "Ren\xe9", "3.0.0": "Ren\xe9", "4.0.0": "Ren\xe9",
                                 "5.0.2": "Gr\xfcppe"}
    assert render_envelope(env, False, imap["envelope8"]) == (
        b'("Mon, 1 Jan 2024 10:00:00 +0000" {4}\r\ncaf\xe9 (({4}\r\nRen\xe9 NIL "rene" "example.org")) '
        b'(({4}\r\nRen\xe9 NIL "rene" "example.org")) (({4}\r\nRen\xe9 NIL "rene" "example.org")) '
        b'((NIL NIL {6}\r\nGr\xfcppe NIL)(NIL NIL "a" "b.c")(NIL NIL NIL NIL)) NIL NIL NIL NIL)')


def test_parts_without_blank_lines_cost_linear_time() -> None:
    """5,000 parts whose header never ends (no blank line): each header's end is looked for
    up to the next delimiter only, not to the end of the message (11 s before, 0.3 s now)."""
    import time

    raw = b"Content-Type: multipart/mixed; boundary=a\r\n\r\n" + b"--a\r\n--ab\r\n" * 50000
    started = time.perf_counter()
    parts = structure_summary(raw)["imap"]["body"]["parts"]
    assert len(parts) == 4999 and time.perf_counter() - started < 4


_MIXED = (b"From: a@example.org\r\nSubject: mixed\r\nMIME-Version: 1.0\r\n"
          b"Content-Type: multipart/mixed; boundary=b1\r\n\r\n"
          b"--b1\r\nContent-Type: text/plain\r\n\r\nThe readable heron text.\r\n"
          b"--b1\r\nContent-Type: application/pdf; name=q3.pdf\r\nContent-Transfer-Encoding: base64\r\n"
          b"Content-Disposition: attachment; filename=q3.pdf\r\n\r\n" + b"SGVyb25IZXJvbkhlcm9u" * 40 + b"\r\n"
          b"--b1\r\nContent-Type: BINARY; name=notes\r\n\r\nEgret notes, text to the stdlib.\r\n"
          b"--b1--\r\n")


def test_the_summary_gives_the_stdlib_no_body_of_a_non_text_part() -> None:
    # Issue 18: the stdlib parser reads a body a line at a time in Python; a 100 KB base64
    # attachment was ~2-3 ms of a summary that reads only the part's headers.
    from mailhaven.message.structure import parse_tree, stdlib_bounded
    from mailhaven.message.summary import summarize

    view = stdlib_bounded(_MIXED, parse_tree(_MIXED))
    assert b"SGVyb25" not in view                                  # the attachment's body left out
    assert b"filename=q3.pdf" in view and b"heron text" in view    # its headers and the text kept
    assert b"Egret notes" in view            # no subtype: text/plain to the stdlib, so kept
    assert stdlib_bounded(_MIXED) == _MIXED  # without the tree (JMAP's parts): whole
    summary = summarize(_MIXED)
    assert summary["attachments"] == [{"filename": "q3.pdf", "type": "application/pdf"}]
    assert "heron text" in summary["preview"] and "Egret notes" in summary["preview"]
    pdf = summary["imap"]["body"]["parts"][1]                    # the structure from the whole bytes
    assert pdf["e"] - pdf["h"][1] == len(b"SGVyb25IZXJvbkhlcm9u" * 40)


def test_a_cut_copy_takes_the_header_rebuilt_for_the_whole_message(monkeypatch: pytest.MonkeyPatch) -> None:
    # Issue 16: a Sieve script's header tests rebuild a header the stdlib would end early
    # (stdlib_readable); the summary's stdlib_bounded then cut an attachment's body out
    # and rebuilt the same header again for the cut copy (~0.1 ms of a 2.5 KB header).
    # The copy is the same bytes as before, and the header is rebuilt once.
    from mailhaven.message import structure
    from mailhaven.message.structure import (
        _LAST_READABLE,
        parse_tree,
        stdlib_bounded,
        stdlib_readable,
    )
    from mailhaven.message.summary import summarize
    from mailhaven.sieve import SieveMessage, compile_script, run

    odd = _MIXED.replace(b"Subject: mixed\r\n", b"Subject : mixed\r\nHELO relay.example\r\n")
    messages = [odd, _MIXED, odd.replace(b"\r\n", b"\n"), b"From x\r\n" + odd]
    real = structure._readable
    rebuilt: list[bytes] = []

    def counting(raw: bytes) -> bytes:
        rebuilt.append(raw)
        return real(raw)

    monkeypatch.setattr(structure, "_readable", counting)
    for raw in messages:
        tree = parse_tree(raw)
        pdf = tree["parts"][1]
        expected = real(raw[:pdf["h"][1]] + raw[pdf["e"]:])          # the cut copy, rebuilt as before
        _LAST_READABLE.pair = None
        assert stdlib_bounded(raw, tree) == expected, raw
        assert b"SGVyb25" not in expected and b"Egret notes" in expected
        _LAST_READABLE.pair = None
        stdlib_readable(raw)
        rebuilt.clear()
        assert stdlib_bounded(raw, tree) == expected
        if real(raw) is not raw:                                   # rebuilt: the one for raw taken
            assert rebuilt == [], raw
    _LAST_READABLE.pair = None
    rebuilt.clear()
    run(compile_script('if header :contains "subject" "mixed" { keep; }'), SieveMessage(raw=odd))
    summary = summarize(odd)
    assert len(rebuilt) == 1 and summary["subject"] == "mixed"
    assert summary["attachments"] == [{"filename": "q3.pdf", "type": "application/pdf"}]
