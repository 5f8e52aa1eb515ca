"""The sans-IO ManageSieve core (RFC 5804 4): commands fed whole, byte by byte and with
trailing data; literals, quoting, over-long literals skipped; the state table; no I/O imports."""

from __future__ import annotations

import ast
import pathlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailhaven.managesieve import protocol as P
from mailhaven.managesieve.session import valid_name

SCRIPT = b'require "fileinto";\r\nfileinto "A \\"b\\"";\r\n'
INPUT = (b'capability\r\nAUTHENTICATE "PLAIN" "AGJvYgBwdw=="\r\n'
         b'PUTSCRIPT "my \\"s\\"" {%d+}\r\n' % len(SCRIPT) + SCRIPT + b'\r\n'
         b'HAVESPACE "x" 1234\r\nNOOP\r\nNOOP "tag"\r\nRENAMESCRIPT "a" {1}\r\nb\r\n')
EXPECTED = [
    P.Capability(),
    P.Authenticate(mechanism="PLAIN", initial_response=b"\0bob\0pw"),
    P.PutScript(name='my "s"', content=SCRIPT),
    P.HaveSpace(name="x", size=1234),
    P.Noop(),
    P.Noop(tag="tag"),
    P.RenameScript(old="a", new="b"),
]


def events(proto: P.ManageSieveProtocol) -> list[object]:
    out = []
    while (event := proto.next_event()) is not P.NEED_DATA:
        out.append(event)
    return out


def feed(chunks: list[bytes], **kw: int) -> list[object]:
    proto = P.ManageSieveProtocol(**kw)
    proto.state = P.State.AUTH
    out: list[object] = []
    for chunk in chunks:
        proto.receive_data(chunk)
        out += events(proto)
    return out


def test_whole_bytewise_and_trailing() -> None:
    assert feed([INPUT]) == EXPECTED
    assert feed([bytes([b]) for b in INPUT]) == EXPECTED
    proto = P.ManageSieveProtocol()
    proto.receive_data(INPUT + b"LISTSC")
    assert events(proto) == EXPECTED
    proto.receive_data(b"RIPTS\r\n")
    assert events(proto) == [P.ListScripts()]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=len(INPUT) - 1), max_size=6, unique=True))
def test_any_split(cuts: list[int]) -> None:
    cuts = sorted(cuts)
    chunks = [INPUT[a:b] for a, b in zip([0, *cuts], [*cuts, len(INPUT)], strict=True)]
    assert feed(chunks) == EXPECTED


def test_malformed_lines_and_big_literals_are_skipped() -> None:
    big = b"x" * 300
    out = feed([b'FROB\r\nGETSCRIPT\r\nGETSCRIPT 12\r\nHAVESPACE "a" "b"\r\nPUTSCRIPT "n" {300+}\r\n',
                big[:100], big[100:] + b"\r\nGETSCRIPT \"ok\"\r\n"], max_literal=100)
    assert [type(e).__name__ for e in out] == ["Malformed"] * 5 + ["GetScript"]
    assert out[4] == P.Malformed(reason="Script too large", too_big=True)
    assert out[5] == P.GetScript(name="ok")
    out = feed([b"NOOP " + b"a" * 5000 + b"\r\nNOOP\r\n"], max_line=1000)
    assert out == [P.Malformed(reason="Line too long"), P.Noop()]


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_fuzz_never_raises(data: bytes) -> None:
    for state in (P.State.NONAUTH, P.State.AUTH, P.State.SASL):
        proto = P.ManageSieveProtocol(max_line=64, max_literal=64)
        proto.state = state
        proto.receive_data(data)
        for event in events(proto):
            assert isinstance(event, P.Command | P.SaslResponse | P.Malformed)


def test_sasl_responses() -> None:
    proto = P.ManageSieveProtocol()
    proto.state = P.State.SASL
    proto.receive_data(b'"AGJvYgBwdw=="\r\n{4+}\r\nYWJj\r\n"*"\r\n*\r\n"not base64!"\r\n')
    assert events(proto) == [P.SaslResponse(data=b"\0bob\0pw"), P.SaslResponse(data=b"abc"),
                             P.SaslResponse(cancelled=True), P.SaslResponse(cancelled=True),
                             P.SaslResponse(malformed=True)]


def test_state_table() -> None:
    proto = P.ManageSieveProtocol()
    proto.transition(P.Trigger.SASL_STARTED)
    proto.transition(P.Trigger.AUTHENTICATED)
    assert proto.state is P.State.AUTH
    proto.transition(P.Trigger.UNAUTHENTICATED)
    assert proto.state is P.State.NONAUTH
    with pytest.raises(P.ProtocolError):
        proto.transition(P.Trigger.UNAUTHENTICATED)
    assert P.PutScript not in P.ALLOWED[P.State.NONAUTH] and P.PutScript in P.ALLOWED[P.State.AUTH]


def test_strings_out() -> None:
    assert P.string('a "b" \\') == b'"a \\"b\\" \\\\"'
    assert P.string("two\r\nlines") == b"{10}\r\ntwo\r\nlines"


def test_script_names() -> None:
    assert valid_name("vacation") and valid_name("Ferien ✈")
    assert not valid_name("") and not valid_name("a\nb") and not valid_name("a\x7f")
    assert not valid_name("a\u2028b") and not valid_name("x" * 257) and valid_name("x" * 256)   # Pigeonhole's 256
    assert not valid_name("a/b") and not valid_name("\u00ff")


def test_core_is_sans_io() -> None:
    root = pathlib.Path(__file__).parent.parent / "src" / "mailhaven" / "managesieve"
    for path in (root / "protocol.py", root / "session.py", root / "replies.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            for name in names:
                assert name.split(".")[0] not in ("asyncio", "socket", "ssl"), (path, name)
