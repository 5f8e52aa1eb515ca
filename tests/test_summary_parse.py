"""message/summary.py ``stdlib_parse``: a single-part message has only its header section
run through the stdlib's feed parser and its body set whole. It must give the summary the
full parse gives, for every message of the shared corpus and for the edge cases that take
the full parse (bare CR or LF in the header, a defective header, multipart, message/*)."""

from __future__ import annotations

from email.parser import BytesParser
from email.policy import compat32

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conftest import corpus_messages, require_corpus
from mailhaven.message import summary
from mailhaven.message.summary import stdlib_parse, summarize


def full_parse_summary(raw: bytes, monkeypatch: pytest.MonkeyPatch) -> dict[str, object]:
    with monkeypatch.context() as m:
        m.setattr(summary, "stdlib_parse", BytesParser(policy=compat32).parsebytes)
        return summarize(raw)


EDGES = [
    b"From: a@b.example\r\nSubject: plain\r\n\r\nbody line\r\nsecond\r\n",
    b"From: a@b.example\nSubject: bare LF\n\nbody\n",
    b"From: a@b.example\r\nSubject: mixed\n\r\nbody\r\n\r\nmore\r\n",
    b"From: a@b.example\r\nSubject: lone CR\rX: y\r\n\r\nbody\r\n",
    b"From: a@b.example\r\nnot a header line\r\nSubject: late\r\n\r\nbody\r\n",
    b"Subject: no body\r\n\r\n",
    b"\r\nno header\r\n\r\nsecond paragraph\r\n",
    b"Subject: =?utf-8?q?caf=C3=A9?=\r\nContent-Type: text/plain; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: quoted-printable\r\n\r\ncaf=C3=A9 \xff\r\n",
    b"Content-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\nContent-Type: text/plain\r\n\r\nin\r\n--x--\r\n",
    b"Content-Type: message/rfc822\r\n\r\nSubject: inner\r\n\r\ninner body\r\n",
    b"Content-Type: text/html\r\nFrom: \"Q, R\" <q@r.example>\r\n\r\n<p>Hello</p>\r\n",
]


@pytest.mark.parametrize("raw", EDGES)
def test_edge_cases_summarise_as_the_full_parse(raw: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    assert summarize(raw) == full_parse_summary(raw, monkeypatch)


def test_single_part_body_is_the_full_parse_payload() -> None:
    raw = EDGES[6]
    assert stdlib_parse(raw).get_payload() == BytesParser(policy=compat32).parsebytes(raw).get_payload()
    assert stdlib_parse(raw).items() == BytesParser(policy=compat32).parsebytes(raw).items()


def test_every_corpus_message_summarises_as_the_full_parse(monkeypatch: pytest.MonkeyPatch) -> None:
    """As stored, and with CRLF line ends as SMTP carries it (most corpus files end lines
    in LF, which takes the full parse)."""
    require_corpus()
    differ = []
    for name, stored in corpus_messages():
        for raw in (stored, stored.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")):
            if summarize(raw) != full_parse_summary(raw, monkeypatch):
                differ.append(name)
    assert differ == []


def test_raw_utf8_header_fields_are_read_as_utf8() -> None:
    """RFC 6532 3.2: an internationalised message puts UTF-8 straight into its header
    fields. The subject and display names (what the webmail, JMAP and SEARCH show) are that
    text, beside encoded words too; they were U+FFFD for every 8-bit byte."""
    raw = ("From: Jörg Müller <j@x.example>\r\nTo: Zoë <z@y.example>, =?utf-8?q?Z=C3=B6e?= <q@y.example>\r\n"
           "Subject: héllo =?utf-8?q?w=C3=B6rld?=\r\n\r\nbody\r\n").encode()
    for message in (raw, raw.replace(b"\r\n", b"\n")):
        s = summarize(message)
        assert s["subject"] == "héllo wörld"
        assert s["from"] == [{"name": "Jörg Müller", "email": "j@x.example"}]
        assert [a["name"] for a in s["to"]] == ["Zoë", "Zöe"]


_PIECES = st.sampled_from([
    "From", "To", "Subject", "Content-Type", "X-A", "From ", ":", ": ", " :", " ", "\t", "\r\n", "\r\n ",
    "\r\n\t", "\n", "\r", "a@b.example", "text/plain", "multipart/mixed; boundary=x", "message/rfc822",
    "=?utf-8?q?a?=", "\u00e9", "x", ";", "charset=utf-8",
])


@given(st.lists(_PIECES, max_size=25), st.sampled_from([b"body\r\n", b"", b"--x\r\n", b"a\r\n\r\nb"]))
def test_plain_headers_parse_as_the_full_parse(pieces: list[str], body: bytes) -> None:
    """The header section the fast path reads without the feed parser (headerfields.py)
    gives the message the full parse gives: fields, body, content type, no defects."""
    raw = "".join(pieces).encode("utf-8") + b"\r\n\r\n" + body
    mine, full = stdlib_parse(raw), BytesParser(policy=compat32).parsebytes(raw)
    assert [(k, str(v)) for k, v in mine.items()] == [(k, str(v)) for k, v in full.items()]
    assert mine.get_content_type() == full.get_content_type()
    assert not mine.is_multipart() or full.is_multipart()
    if not full.is_multipart():
        assert mine.get_payload() == full.get_payload()


@given(st.text(alphabet=st.sampled_from("ab \t\r\n\u00a0\u2003x"), max_size=3000))
def test_preview_is_the_collapsed_texts_start(text: str) -> None:
    """``_preview`` reads a prefix of the text (two, then eight times PREVIEW_CHARS), as the
    start of the whole text with its whitespace runs made single spaces."""
    assert summary._preview(text) == " ".join(text.split())[:summary.PREVIEW_CHARS]


def test_preview_of_prose_long_and_sparse_texts() -> None:
    prose = "The quick brown fox jumps over the lazy dog.\r\n" * 100
    sparse = ("word" + " " * 700) * 20                  # the first 512 characters hold one word
    blank = " " * 5000 + "late"
    for text in (prose, sparse, blank, "", "short"):
        assert summary._preview(text) == " ".join(text.split())[:summary.PREVIEW_CHARS]
