"""In-memory tests of the sans-IO SMTP core: every input fed whole, byte by byte and with
trailing data; the state table checked over every (state, verb) pair; Hypothesis fuzz."""

from __future__ import annotations

import base64
import importlib
import re
import sys
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailhaven.smtp import codes
from mailhaven.smtp.content import ChunkNormalizer, DotDecoder, dot_stuff, normalize_line_ends
from mailhaven.smtp.protocol import (
    KNOWN_VERBS,
    NEED_DATA,
    TRANSITIONS,
    AuthAborted,
    AuthResponse,
    AuthStart,
    ConnectionClosed,
    DataChunk,
    DataComplete,
    DataStart,
    LocalProtocolError,
    MailFrom,
    RcptTo,
    ServerConnection,
    Settings,
    StartTLS,
    State,
    TransactionReset,
)

# The protocol cores of the whole package: none may import asyncio or touch sockets.
SANS_IO_MODULES = [
    "mailhaven.smtp.protocol", "mailhaven.smtp.events", "mailhaven.smtp.content", "mailhaven.smtp.grammar",
    "mailhaven.smtp.replies", "mailhaven.smtp.codes", "mailhaven.auth.sasl",
    "mailhaven.imap.parser", "mailhaven.pop3.protocol", "mailhaven.smtp.client",
]
FORBIDDEN = ("asyncio", "socket", "ssl", "selectors", "trio", "anyio")


def _module_exists(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False


@pytest.mark.parametrize("name", [m for m in SANS_IO_MODULES if _module_exists(m)])
def test_protocol_cores_do_no_io(name: str) -> None:
    """Import each core in a fresh interpreter and check what came along with it."""
    import subprocess

    code = (f"import sys, {name}; bad = [m for m in {FORBIDDEN!r} if m in sys.modules]; "
            "print(','.join(bad))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": "src", "PATH": "/usr/bin:/bin"})
    assert out.stdout.strip() == "", f"{name} pulls in {out.stdout.strip()}"


# -- a tiny driver ----------------------------------------------------------------------

Policy = Callable[[Any], codes.Reply | None]


def accept_all(event: Any) -> codes.Reply | None:
    if isinstance(event, MailFrom):
        return codes.SENDER_OK
    if isinstance(event, RcptTo):
        if event.address.startswith("nobody@"):
            return codes.UNKNOWN_USER
        return codes.RECIPIENT_OK
    if isinstance(event, DataComplete):
        return codes.MESSAGE_ACCEPTED
    return None


class Driver:
    def __init__(self, policy: Policy = accept_all, **settings: Any) -> None:
        self.conn = ServerConnection(Settings(hostname="mx.test", **settings))
        self.policy = policy
        self.events: list[Any] = []
        self.content = bytearray()
        self.output = bytearray(self.conn.data_to_send())

    def feed(self, data: bytes) -> None:
        self.conn.receive_data(data)
        while True:
            event = self.conn.next_event()
            if event is NEED_DATA:
                break
            self.events.append(event)
            if isinstance(event, ConnectionClosed):
                break
            if isinstance(event, DataChunk):
                self.content += event.data
            elif isinstance(event, StartTLS):
                self.conn.tls_started()
            elif isinstance(event, AuthStart | AuthResponse):
                self.auth(event)
            else:
                reply = self.policy(event)
                if reply is not None:
                    self.conn.answer(reply)
        self.output += self.conn.data_to_send()

    def auth(self, event: AuthStart | AuthResponse) -> None:
        data = event.initial if isinstance(event, AuthStart) else event.data
        if data is None:
            self.conn.auth_challenge(b"")
        elif data == b"\x00user\x00pass":
            self.conn.answer(codes.AUTH_OK)
        else:
            self.conn.answer(codes.AUTH_FAILED)

    def codes(self) -> list[int]:
        return [int(line[:3]) for line in bytes(self.output).split(b"\r\n") if line and line[3:4] == b" "]


def feed_whole(data: bytes, **kw: Any) -> Driver:
    d = Driver(**kw)
    d.feed(data)
    return d


def feed_bytewise(data: bytes, **kw: Any) -> Driver:
    d = Driver(**kw)
    for i in range(len(data)):
        d.feed(data[i:i + 1])
    return d


def feed_split(data: bytes, at: int, **kw: Any) -> Driver:
    d = Driver(**kw)
    d.feed(data[:at])
    d.feed(data[at:])
    return d


FEEDERS = [feed_whole, feed_bytewise, lambda data, **kw: feed_split(data, len(data) // 3, **kw)]

SESSION = (b"EHLO client.example\r\nMAIL FROM:<alice@a.example> SIZE=40\r\nRCPT TO:<bob@b.example>\r\n"
           b"DATA\r\nSubject: hi\r\n\r\n..leading dot\r\nline\r\n.\r\nQUIT\r\n")


@pytest.mark.parametrize("feed", FEEDERS)
def test_session_whole_bytewise_split(feed: Any) -> None:
    d = feed(SESSION)
    assert d.codes() == [220, 250, 250, 250, 354, 250, 221]
    assert bytes(d.content) == b"Subject: hi\r\n\r\n.leading dot\r\nline\r\n"
    assert isinstance(d.events[-1], ConnectionClosed)
    kinds = [type(e) for e in d.events if not isinstance(e, DataChunk)]
    assert kinds == [MailFrom, RcptTo, DataStart, DataComplete, ConnectionClosed]


def test_trailing_data_after_quit_is_ignored() -> None:
    d = feed_whole(SESSION + b"NOOP\r\nMAIL FROM:<x@y.z>\r\n")
    assert d.codes() == [220, 250, 250, 250, 354, 250, 221]
    assert d.conn.closed


def test_pipelined_transactions_back_to_back() -> None:
    one = b"MAIL FROM:<a@a.example>\r\nRCPT TO:<b@b.example>\r\nDATA\r\nx\r\n.\r\n"
    d = feed_whole(b"EHLO c\r\n" + one * 3 + b"QUIT\r\n")
    assert d.codes() == [220, 250] + [250, 250, 354, 250] * 3 + [221]
    assert bytes(d.content) == b"x\r\n" * 3


def test_ehlo_lists_extensions() -> None:
    d = feed_whole(b"EHLO c\r\n", starttls=True, max_size=1000)
    text = bytes(d.output).decode()
    for ext in ("PIPELINING", "SIZE 1000", "8BITMIME", "SMTPUTF8", "ENHANCEDSTATUSCODES",
                "CHUNKING", "DSN", "STARTTLS"):
        assert f"250-{ext}\r\n" in text
    assert "AUTH" not in text                       # port 25: no AUTH by default


def test_auth_offered_only_when_secure() -> None:
    plain = feed_whole(b"EHLO c\r\n", starttls=True, auth_mechanisms=("PLAIN",))
    assert "AUTH" not in bytes(plain.output).decode()
    tls = feed_whole(b"EHLO c\r\n", tls_active=True, auth_mechanisms=("PLAIN",))
    assert "250-AUTH PLAIN\r\n" in bytes(tls.output).decode()
    trusted = feed_whole(b"EHLO c\r\n", plaintext_ok=True, auth_mechanisms=("PLAIN",))
    assert "AUTH PLAIN" in bytes(trusted.output).decode()
    refused = feed_whole(b"EHLO c\r\nAUTH PLAIN AHVzZXIAcGFzcw==\r\n", starttls=True, auth_mechanisms=("PLAIN",))
    assert refused.codes()[-1] == 538


@pytest.mark.parametrize("feed", FEEDERS)
def test_auth_plain_initial_response_and_challenge(feed: Any) -> None:
    ir = base64.b64encode(b"\x00user\x00pass")
    d = feed(b"EHLO c\r\nAUTH PLAIN " + ir + b"\r\nAUTH PLAIN\r\n", tls_active=True,
             auth_mechanisms=("PLAIN",))
    assert d.codes() == [220, 250, 235, 503]
    assert d.conn.authenticated
    d2 = feed(b"EHLO c\r\nAUTH PLAIN\r\n" + ir + b"\r\n", tls_active=True, auth_mechanisms=("PLAIN",))
    assert b"334 \r\n" in bytes(d2.output)
    assert d2.codes()[-1] == 235


def test_auth_cancel_and_bad_base64() -> None:
    d = feed_whole(b"EHLO c\r\nAUTH PLAIN\r\n*\r\nAUTH PLAIN\r\n!!!\r\nNOOP\r\n", tls_active=True,
                   auth_mechanisms=("PLAIN",))
    assert d.codes() == [220, 250, 334, 501, 334, 501, 250]
    assert sum(isinstance(e, AuthAborted) for e in d.events) == 2
    d2 = feed_whole(b"EHLO c\r\nAUTH CRAM-MD5\r\n", tls_active=True, auth_mechanisms=("PLAIN",))
    assert d2.codes()[-1] == 504


def test_submission_requires_auth() -> None:
    d = feed_whole(b"EHLO c\r\nMAIL FROM:<a@b.c>\r\n", tls_active=True, auth_mechanisms=("PLAIN",),
                   require_auth=True)
    assert d.codes()[-1] == 530
    d2 = feed_whole(b"EHLO c\r\nMAIL FROM:<a@b.c>\r\n", starttls=True, auth_mechanisms=("PLAIN",),
                    require_auth=True)
    assert b"530 5.7.0 Must issue a STARTTLS" in bytes(d2.output)


def test_starttls_discards_pipelined_commands() -> None:
    """CVE-2011-0411: commands sent with STARTTLS in one packet must not run after TLS."""
    d = feed_whole(b"EHLO c\r\nSTARTTLS\r\nMAIL FROM:<evil@x.y>\r\n", starttls=True)
    assert d.codes() == [220, 250, 220]
    assert not any(isinstance(e, MailFrom) for e in d.events)
    assert d.conn.tls_active and d.conn.state is State.GREETED
    d.feed(b"MAIL FROM:<a@b.c>\r\n")                 # RFC 3207 4.2: EHLO again first
    assert d.codes()[-1] == 503
    d.feed(b"EHLO c\r\n")
    assert "STARTTLS" not in bytes(d.output).decode().rsplit("250-c", 1)[-1].split("Hello c")[-1]


@pytest.mark.parametrize("data, expected", [
    (b"NOOP\r\n", 503 - 253),                       # NOOP is fine before EHLO: 250
    (b"MAIL FROM:<a@b.c>\r\n", 503),
    (b"FOO\r\n", 500),
    (b"EHLO c\r\nRCPT TO:<a@b.c>\r\n", 503),
    (b"EHLO c\r\nDATA\r\n", 503),
    (b"EHLO c\r\nMAIL FROM:<a@b.c>\r\nDATA\r\n", 503),
    (b"EHLO c\r\nMAIL FROM:<a@b.c>\r\nMAIL FROM:<a@b.c>\r\n", 503),
    (b"EHLO c\r\nMAIL FROM:a@b.c>\r\n", 501),
    (b"EHLO c\r\nMAIL FROM:<a@b.c\r\n", 501),
    (b"EHLO c\r\nMAIL FROM:<a@b.c> FOO=bar\r\n", 555),
    (b"EHLO c\r\nMAIL FROM:<a@b.c> BODY=BINARYMIME\r\n", 504),
    (b"EHLO c\r\nMAIL FROM:<a@b.c> SIZE=999999999\r\n", 552),
    (b"EHLO c\r\nMAIL FROM:<\xc3\xa9@b.c>\r\n", 553),
    (b"EHLO c\r\nMAIL FROM:<\xc3\xa9@b.c> SMTPUTF8\r\n", 250),
    (b"EHLO c\r\nVRFY bob\r\n", 252),
    (b"EHLO c\r\nEXPN list\r\n", 502),
    (b"EHLO c\r\nHELP\r\n", 214),
    (b"HELO\r\n", 501),
    (b"EHLO c\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<nobody@b.c>\r\n", 550),
    (b"EHLO c\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<x@b.c> NOTIFY=SOMETIMES\r\n", 501),
    (b"EHLO c\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<x@b.c> NOTIFY=NEVER ORCPT=rfc822;x+40b.c\r\n", 250),
    (b"EHLO c\r\nMAIL FROM:<> RET=HDRS ENVID=abc+2Bd\r\n", 250),
    (b"EHLO c\r\nSTARTTLS\r\n", 502),               # not offered
])
def test_replies(data: bytes, expected: int) -> None:
    for feed in FEEDERS:
        d = feed(data, max_size=1000)
        assert d.codes()[-1] == expected, (data, bytes(d.output))


def test_dsn_parameters_kept() -> None:
    d = feed_whole(b"EHLO c\r\nMAIL FROM:<a@b.c> RET=HDRS ENVID=abc+2Bd BODY=8BITMIME\r\n"
                   b"RCPT TO:<x@b.c> NOTIFY=SUCCESS,DELAY ORCPT=rfc822;x+2By@b.c\r\n")
    mail = next(e for e in d.events if isinstance(e, MailFrom))
    rcpt = next(e for e in d.events if isinstance(e, RcptTo))
    assert (mail.params.ret, mail.params.envid, mail.params.body) == ("HDRS", "abc+d", "8BITMIME")
    assert rcpt.notify == frozenset({"SUCCESS", "DELAY"}) and rcpt.orcpt == "rfc822;x+y@b.c"


def test_too_many_recipients() -> None:
    rcpts = b"".join(b"RCPT TO:<u%d@b.c>\r\n" % i for i in range(4))
    d = feed_whole(b"EHLO c\r\nMAIL FROM:<a@b.c>\r\n" + rcpts, max_recipients=3)
    assert d.codes()[-4:] == [250, 250, 250, 452]
    assert b"452 4.5.3" in bytes(d.output)


def test_rejected_recipient_does_not_count_and_data_needs_one() -> None:
    d = feed_whole(b"EHLO c\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<nobody@b.c>\r\nDATA\r\n")
    assert d.codes()[-2:] == [550, 503]
    assert d.conn.recipients == 0


def test_command_line_too_long() -> None:
    for feed in FEEDERS:
        d = feed(b"EHLO c\r\nNOOP " + b"x" * 600 + b"\r\nNOOP\r\n", max_line=512)
        assert d.codes() == [220, 250, 500, 250]
        assert b"500 5.5.6" in bytes(d.output)


def test_too_many_errors_closes() -> None:
    d = feed_whole(b"FOO\r\n" * 5 + b"NOOP\r\n", max_errors=3)
    assert d.codes() == [220, 500, 500, 500, 421]
    assert d.conn.closed


def test_timeout_and_shutdown_send_421() -> None:
    d = Driver()
    d.conn.timeout()
    assert d.conn.data_to_send() == b"421 4.4.2 Idle for too long, closing connection\r\n"
    d2 = Driver()
    d2.conn.shutdown()
    assert d2.conn.data_to_send().startswith(b"421 4.3.2")


def test_answer_without_pending_event_is_a_local_error() -> None:
    d = Driver()
    with pytest.raises(LocalProtocolError):
        d.conn.answer(codes.OK)


def test_must_answer_before_next_event() -> None:
    conn = ServerConnection(Settings(hostname="h"))
    conn.receive_data(b"EHLO c\r\nMAIL FROM:<a@b.c>\r\nNOOP\r\n")
    assert isinstance(conn.next_event(), MailFrom)
    with pytest.raises(LocalProtocolError):
        conn.next_event()


def test_oversized_data_is_refused_at_the_end() -> None:
    big = b"x" * 70 + b"\r\n"
    d = feed_whole(b"EHLO c\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<x@b.c>\r\nDATA\r\n" + big * 20 + b".\r\nNOOP\r\n",
                   max_size=1000)
    assert d.codes()[-2:] == [552, 250]
    assert any(isinstance(e, TransactionReset) for e in d.events)
    assert not any(isinstance(e, DataComplete) for e in d.events)
    assert len(d.content) <= 1000


# -- SMTP smuggling and line ends --------------------------------------------------------

SMUGGLE_ENDINGS = [b"\n.\n", b"\n.\r\n", b"\r\n.\n", b"\r.\r", b"\r\n.\r", b"\n.\r"]


@pytest.mark.parametrize("ending", SMUGGLE_ENDINGS)
def test_no_smuggling(ending: bytes) -> None:
    """Only <CRLF>.<CRLF> ends DATA; the smuggled command stays content."""
    smuggled = b"MAIL FROM:<evil@x.y>\r\nRCPT TO:<victim@b.c>\r\nDATA\r\nevil\r\n"
    data = (b"EHLO c\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<x@b.c>\r\nDATA\r\nSubject: t\r\n\r\nbody"
            + ending + smuggled + b".\r\nQUIT\r\n")
    for feed in FEEDERS:
        d = feed(data)
        assert sum(isinstance(e, MailFrom) for e in d.events) == 1
        assert sum(isinstance(e, DataComplete) for e in d.events) == 1
        assert b"evil@x.y" in d.content
        assert d.codes() == [220, 250, 250, 250, 354, 250, 221]
        # Stored content has no bare CR or LF left.
        stored = bytes(d.content)
        assert stored.count(b"\r") == stored.count(b"\n") == stored.count(b"\r\n")


def test_bare_lf_dot_never_ends_message_even_alone() -> None:
    d = feed_whole(b"EHLO c\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<x@b.c>\r\nDATA\r\nx\n.\nNOOP\n")
    assert not any(isinstance(e, DataComplete) for e in d.events)
    assert d.conn.in_data


def substituted(data: bytes) -> bytes:
    """Every bare CR and bare LF made CRLF, by the obvious substitution."""
    return re.sub(rb"\r\n|\r|\n", b"\r\n", data)


def reference_decode(stream: bytes) -> tuple[bytes, bool, bytes]:
    """Slow, obviously-correct DATA decoder: split on CRLF only."""
    out = []
    pos = 0
    while True:
        end = stream.find(b"\r\n", pos)
        if end < 0:
            return substituted(b"".join(out)), False, stream[pos:]
        line = stream[pos:end]
        pos = end + 2
        if line == b".":
            return substituted(b"".join(out)), True, stream[pos:]
        if line.startswith(b"."):
            line = line[1:]
        out.append(line + b"\r\n")


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from([b"a", b".", b"\r", b"\n", b"\r\n", b".\r\n", b"\r\n.\r\n", b"xyz"]),
                max_size=40),
       st.lists(st.integers(min_value=1, max_value=7), min_size=1, max_size=20))
def test_dot_decoder_matches_reference(parts: list[bytes], cuts: list[int]) -> None:
    stream = b"".join(parts) + b"\r\n.\r\n"        # always terminated somewhere
    expected, done, rest = reference_decode(stream)
    assert done
    dec = DotDecoder()
    buf = bytearray()
    got = bytearray()
    finished = False
    i = k = 0
    while not finished:
        assert i < len(stream)
        step = cuts[k % len(cuts)]
        k += 1
        buf += stream[i:i + step]
        i += step
        content, used, finished = dec.decode(buf)
        got += content
        del buf[:used]
        assert finished or len(buf) <= 2                  # bounded hold-back
    assert bytes(got) == expected
    assert bytes(buf) + stream[i:] == rest


def decode_in_pieces(stream: bytes, cuts: list[int], as_bytes: bool = False) -> tuple[bytes, bytes]:
    """Feed ``stream`` to a DotDecoder as the server does (an input buffer, consumed bytes
    deleted), the pieces' sizes cycling through ``cuts``; (content, what was left)."""
    dec = DotDecoder()
    buf = bytearray()
    got = bytearray()
    i = k = 0
    while True:
        assert i < len(stream) or buf
        step = cuts[k % len(cuts)]
        k += 1
        buf += stream[i:i + step]
        i += step
        content, used, finished = dec.decode(bytes(buf) if as_bytes else buf)
        got += content
        del buf[:used]
        if finished:
            return bytes(got), bytes(buf) + stream[i:]
        assert len(buf) <= 2


DOTTY = [
    b"a. b. c. d. e. f. g. h. i. j. k.\r\n.stuffed after ten dots\r\n..\r\n",
    b"x.\r\n" * 9 + b".\r\n",                     # the ninth probe's dot line is the end
    b"." * 30 + b"\r\n." + b"." * 30 + b"\r\n",
    b"From: <a@b.example>\r\nMessage-Id: <1.2.3@c.example>\r\n\r\n" + b"X" * 78 + b"\r\n" * 1,
    b"\r\n".join([b"." * n for n in range(12)]) + b"\r\n",
    b"one.\ntwo.\r\r\n.\n.three\r\n.\r.\r\n",
]


@pytest.mark.parametrize("body", DOTTY)
@pytest.mark.parametrize("cuts", [[1], [2], [3], [5, 1], [64 * 1024], [9, 17, 4]])
def test_dot_decoder_many_dots_matches_reference(body: bytes, cuts: list[int]) -> None:
    """Dots ahead of a dot line (more than the decoder probes one by one before its
    three-byte search takes over), dot lines split across reads, bare CR/LF beside dots."""
    stream = body + b".\r\nQUIT\r\n"
    expected, done, rest = reference_decode(stream)
    assert done
    for as_bytes in (False, True):
        assert decode_in_pieces(stream, cuts, as_bytes) == (expected, rest)


def test_dot_decoder_corpus_matches_reference() -> None:
    """Every corpus message, dot-stuffed as a client sends it (stuffing after a bare LF too,
    which the decoder must leave alone), in reads of several sizes."""
    from conftest import corpus_messages, require_corpus

    require_corpus()
    for name, raw in corpus_messages():
        for wire in (dot_stuff(raw), (b"." + raw if raw.startswith(b".") else raw).replace(b"\n.", b"\n..")):
            stream = wire + (b"" if wire.endswith(b"\r\n") else b"\r\n") + b".\r\n"
            expected, done, rest = reference_decode(stream)
            assert done, name
            for cuts in ([64 * 1024], [16 * 1024, 1000, 7], [4096 + 1]):
                assert decode_in_pieces(stream, cuts) == (expected, rest), (name, cuts)


# -- BDAT (RFC 3030) -------------------------------------------------------------------------

BDAT_SESSION = (b"EHLO c\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<x@b.c>\r\n"
                b"BDAT 12\r\nSubject: t\r\n" b"BDAT 9 LAST\r\n\r\n.\r\nbody" b"QUIT\r\n")


@pytest.mark.parametrize("feed", FEEDERS)
def test_bdat(feed: Any) -> None:
    d = feed(BDAT_SESSION)
    assert d.codes() == [220, 250, 250, 250, 250, 250, 221]
    assert bytes(d.content) == b"Subject: t\r\n\r\n.\r\nbody"    # no dot-unstuffing in BDAT
    start = next(e for e in d.events if isinstance(e, DataStart))
    assert start.chunking


def test_bdat_chunk_is_consumed_even_when_refused() -> None:
    d = feed_whole(b"EHLO c\r\nBDAT 12\r\nNOOP\r\nXXXX\r\nNOOP\r\n")
    assert d.codes() == [220, 250, 503, 250]


def test_bdat_then_data_is_bad_sequence_and_bad_syntax_closes() -> None:
    d = feed_whole(b"EHLO c\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<x@b.c>\r\nBDAT 3\r\nabcDATA\r\n")
    assert d.codes()[-1] == 503
    d2 = feed_whole(b"EHLO c\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<x@b.c>\r\nBDAT x\r\nNOOP\r\n")
    assert d2.codes()[-1] == 501 and d2.conn.closed


def test_bdat_bare_cr_across_chunks_normalised() -> None:
    n = ChunkNormalizer()
    assert n.feed(b"a\r") + n.feed(b"\nb\r") + n.feed(b"c\n") + n.finish() == b"a\r\nb\r\nc\r\n"
    n = ChunkNormalizer()                   # BDAT content is stored as sent: no CRLF added
    assert n.feed(b"a\nb") + n.finish() == b"a\r\nb"
    n = ChunkNormalizer()
    assert n.feed(b"a\r") + n.finish() == b"a\r\n"    # the final lone CR, held back, at LAST


def test_bdat_oversize_refused() -> None:
    d = feed_whole(b"EHLO c\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<x@b.c>\r\nBDAT 20\r\n" + b"y" * 20
                   + b"BDAT 1 LAST\r\nzNOOP\r\n", max_size=10)
    assert d.codes()[-3:] == [552, 503, 250]


def test_dot_stuff_round_trip() -> None:
    msg = b".start\r\nmid\r\n.\r\n..two\nbare\r\nend"
    wire = dot_stuff(msg) + b".\r\n"
    dec = DotDecoder()
    content, used, done = dec.decode(wire)
    assert done and used == len(wire)
    assert content == normalize_line_ends(msg) + b"\r\n"


# -- the state table ---------------------------------------------------------------------------

COMMAND_LINES = {
    "EHLO": b"EHLO c\r\n", "HELO": b"HELO c\r\n", "MAIL": b"MAIL FROM:<a@b.c>\r\n",
    "RCPT": b"RCPT TO:<x@b.c>\r\n", "DATA": b"DATA\r\n", "BDAT": b"BDAT 1\r\nz",
    "RSET": b"RSET\r\n", "NOOP": b"NOOP\r\n", "QUIT": b"QUIT\r\n", "VRFY": b"VRFY x\r\n",
    "HELP": b"HELP\r\n", "STARTTLS": b"STARTTLS\r\n", "AUTH": b"AUTH PLAIN\r\n",
}
REACH = {
    State.GREETED: b"",
    State.READY: b"EHLO c\r\n",
    State.MAIL: b"EHLO c\r\nMAIL FROM:<a@b.c>\r\n",
    State.RCPT: b"EHLO c\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<x@b.c>\r\n",
    State.CHUNKING: b"EHLO c\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<x@b.c>\r\nBDAT 1\r\nz",
}


@pytest.mark.parametrize("state", list(REACH))
@pytest.mark.parametrize("verb", sorted(COMMAND_LINES))
def test_every_state_verb_pair(state: State, verb: str) -> None:
    """A pair in the table is accepted (2xx/3xx); a pair outside it is a 5xx, never a crash."""
    d = Driver(starttls=True, auth_mechanisms=("PLAIN",), plaintext_ok=True)
    d.feed(REACH[state])
    assert d.conn.state is state
    before = len(d.codes())
    d.feed(COMMAND_LINES[verb])
    reply = d.codes()[before]
    if (state, verb) in TRANSITIONS:
        assert reply < 400 or verb == "AUTH", (state, verb, bytes(d.output))
    else:
        assert reply in (502, 503), (state, verb, bytes(d.output))
    assert verb in KNOWN_VERBS


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(sorted(COMMAND_LINES)) | st.binary(max_size=30).map(lambda b: b.decode("latin-1")),
                max_size=15))
def test_random_command_sequences_never_crash(verbs: list[str]) -> None:
    d = Driver(starttls=True, auth_mechanisms=("PLAIN",), plaintext_ok=True, max_errors=1000)
    for v in verbs:
        line = COMMAND_LINES.get(v, v.encode("latin-1") + b"\r\n")
        d.feed(line)
        if d.conn.closed:
            break
    assert all(200 <= c < 600 for c in d.codes())


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=300))
def test_fuzz_arbitrary_bytes(data: bytes) -> None:
    for feed in (feed_whole, feed_bytewise):
        d = feed(b"EHLO c\r\n" + data, max_errors=1000, tls_active=True, auth_mechanisms=("PLAIN", "LOGIN"))
        assert all(200 <= c < 600 for c in d.codes())


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=80))
def test_fuzz_mail_rcpt_arguments(arg: str) -> None:
    line = ("MAIL FROM:" + arg).encode("utf-8", "surrogatepass") + b"\r\n"
    if b"\n" in line[:-2] or b"\r" in line[:-2]:
        return
    d = feed_whole(b"EHLO c\r\n" + line)
    assert d.codes()[-1] in (250, 501, 504, 552, 553, 555)


@given(st.lists(st.sampled_from([b"\r", b"\n", b"\r\n", b"a", b".", b"\n\r", b"\r\r\n"]), max_size=40))
def test_line_end_check_is_the_substitution(pieces: list[bytes]) -> None:
    """message/lineends.py's fast "nothing bare" check (issue 18) never lets a bare CR or
    LF through: the result is always the substitution's."""
    import re

    from mailhaven.message.lineends import normalize_line_ends

    data = b"".join(pieces)
    assert normalize_line_ends(data) == re.sub(rb"\r\n|\r|\n", b"\r\n", data)
