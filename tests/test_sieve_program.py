"""The fast paths of a Sieve run (sieve/program.py, sieve/message.py) against what they
replace: the header index against the stdlib's parse, the plain-address reader against
email.utils.getaddresses, and the compiled closures against the interpreter walking the
command tree, on the corpus and on generated input."""

from __future__ import annotations

import email.utils
import re
from dataclasses import replace
from email import message_from_bytes, policy

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import corpus_messages
from mailhaven.message.structure import header_end, stdlib_readable
from mailhaven.sieve import SieveMessage, compile_script, run
from mailhaven.sieve.message import _simple_addresses, _text, header_fields

CORPUS = [raw for _name, raw in corpus_messages()][:400]


def _stdlib_fields(head: bytes) -> dict[str, list[str]]:
    parsed = message_from_bytes(head, policy=policy.compat32)
    out: dict[str, list[str]] = {}
    for name, value in parsed._headers:          # the stored (name, value) pairs, in order
        out.setdefault(name.lower(), []).append(value)
    return out


def _head(raw: bytes) -> bytes:
    readable = stdlib_readable(raw)
    return readable[:header_end(readable, 0, len(readable))]


def test_header_index_is_the_stdlib_parse_on_the_corpus() -> None:
    assert CORPUS
    for raw in CORPUS:
        assert header_fields(_head(raw)) == _stdlib_fields(_head(raw))


_PIECES = ["From ", "From: a@b", "Subject", ":", ": ", " ", "\t", "x", "X-A", "\r\n", "\n", "\r", "é",
           "\xff", "=?utf-8?q?a?=", ",", "<a@b>", '"q"']


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(_PIECES), max_size=30))
def test_header_index_is_the_stdlib_parse_on_generated_headers(pieces: list[str]) -> None:
    head = "".join(pieces).encode("utf-8", "surrogateescape")
    assert header_fields(head) == _stdlib_fields(head)


def test_message_index_is_the_parse_of_the_readable_header_on_the_corpus() -> None:
    """SieveMessage reads a header of fields alone without stdlib_readable: the same
    fields as through it."""
    for raw in CORPUS:
        assert SieveMessage(raw=raw)._header_index() == header_fields(_head(raw))


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(_PIECES), max_size=30), st.sampled_from(["\r\n\r\nbody", "\n\nTo: x\n", ""]))
def test_message_index_is_the_parse_of_the_readable_header_on_generated_messages(pieces: list[str],
                                                                                 body: str) -> None:
    raw = ("".join(pieces) + body).encode("utf-8", "surrogateescape")
    assert SieveMessage(raw=raw)._header_index() == header_fields(_head(raw))


def test_plain_addresses_are_what_getaddresses_finds_on_the_corpus() -> None:
    fast = 0
    for raw in CORPUS:
        message = SieveMessage(raw=raw)
        for name in ("from", "to", "cc", "sender", "reply-to", "subject", "message-id"):
            values = [_text(v) for v in message._field_values(name)]
            simple = _simple_addresses(values)
            if simple is not None:
                fast += 1
                assert simple == [a for _d, a in email.utils.getaddresses(values) if a], values
    assert fast > 100                            # the fast path is the common one


_ADDRESS_PIECES = ["a", "b.c", "@", "x.example", " ", "\r\n ", ",", "<", ">", '"', "Bob", ".", "(c)",
                   ":", ";", "[1.2.3.4]", "\\", "+", "'", "é"]


@settings(max_examples=1000, deadline=None)
@given(st.lists(st.lists(st.sampled_from(_ADDRESS_PIECES), max_size=12).map("".join), min_size=1, max_size=3))
def test_plain_addresses_are_what_getaddresses_finds_on_generated_fields(values: list[str]) -> None:
    simple = _simple_addresses(values)
    if simple is not None:
        assert simple == [a for _d, a in email.utils.getaddresses(values) if a]


SCRIPTS = [
    # the kinds of rules bench/sieve_rules.py runs, and the match types with captures
    'require ["fileinto", "imap4flags", "envelope", "regex", "variables", "relational", "comparator-i;ascii-numeric"];\n'
    'if header :contains "list-id" ["dev", "announce"] { fileinto "Lists"; stop; }\n'
    'if address :domain :is "from" ["github.com", "EXAMPLE.org"] { addflag "$N"; fileinto "N"; }\n'
    'if address :localpart :contains ["from", "sender", "to"] "a" { addflag "$local"; }\n'
    'if address :all :is "reply-to" "x@y" { addflag "$reply"; }\n'
    'if header :is "content-transfer-encoding" ["7BIT", "Quoted-Printable"] { addflag "$cte"; }\n'
    'if envelope :is "from" "sender@outside.example" { addflag "$env"; }\n'
    'if envelope :domain :contains "to" "BENCH" { addflag "$envto"; }\n'
    'if header :regex :comparator "i;ascii-casemap" "subject" "^(re|fwd?): *(.*)$" { fileinto "re-${2}"; }\n'
    'elsif header :matches "subject" "*[*]*" { fileinto "tag-${2}"; }\n'
    'elsif header :matches :comparator "i;octet" "subject" "?*" { set "first" "${1}"; addflag "${first}"; }\n'
    'if exists ["list-unsubscribe", "x-mailer"] { addflag "$List"; }\n'
    'if not exists "date" { addflag "$nodate"; }\n'
    'if header :is :comparator "i;octet" "precedence" ["bulk", "List"] { addflag "$bulk"; }\n'
    'if allof (size :over 4K, anyof (header :contains "from" "e", false)) { addflag "$big"; }\n'
    'if header :contains "${first}" "x" { addflag "$dyn"; }\n'
    'if header :count "ge" :comparator "i;ascii-numeric" "received" "3" { addflag "$hops"; }\n',
    # no variables: "${" is literal text
    'require ["fileinto"]; if header :contains "subject" "${1}" { fileinto "lit"; }\n'
    'if address :is "to" "undisclosed-recipients:;" { discard; }\n'
    'if header :matches "message-id" "*@*" { fileinto "has-id"; } else { keep; }\n',
]


@pytest.mark.parametrize("source", SCRIPTS)
def test_compiled_closures_decide_as_the_interpreter_does(source: str) -> None:
    script = compile_script(source)
    assert script.program is not None
    walked = replace(script, program=None)       # the interpreter's tree walk
    decided = 0
    for raw in CORPUS:
        def message(raw: bytes = raw) -> SieveMessage:
            return SieveMessage(raw=raw, mail_from="sender@outside.example", rcpt_to="me@bench.example")
        fast, slow = run(script, message()), run(walked, message())
        assert (fast.actions, fast.error) == (slow.actions, slow.error)
        decided += any(not a.implicit for a in fast.actions)
    assert decided > 10                          # the rules matched something


def test_the_step_limit_holds_in_compiled_scripts() -> None:
    from mailhaven.sieve import Limits
    script = compile_script("if true { if true { keep; } }\n" * 20)
    outcome = run(script, SieveMessage(raw=b"Subject: x\r\n\r\n"), limits=Limits(max_steps=30))
    assert outcome.error == "too many steps"


def _long_to(marker: str, recursion: bool) -> bytes:
    if recursion:       # folded encoded words with colons: the stdlib parse recurses a group at a time
        to = '"test" <test@test.com>,' + "".join(f"\r\n\t=?utf-8?Q?{marker}T10:08:28.{i}=3C/pr?=" for i in range(2000))
    else:
        to = ", ".join(f'"Person, {i}" <p{i}.{marker}@x.example>' for i in range(40))
    return (f"From: a@b.example\r\nTo: {to}\r\nSubject: hi\r\nMessage-ID: <{marker}@b.example>\r\n\r\n"
            "body\r\n").encode()


def _count_parses(monkeypatch: pytest.MonkeyPatch, marker: str) -> list[int]:
    """``email.utils.getaddresses`` counting its calls on values holding ``marker``: one
    entry in the list returned a call."""
    real = email.utils.getaddresses
    parsed: list[int] = []

    def counting(values: list[str]) -> list[tuple[str, str]]:
        if any(marker in v for v in values):
            parsed.append(1)
        return real(values)

    monkeypatch.setattr(email.utils, "getaddresses", counting)
    return parsed


@pytest.mark.parametrize("recursion", [False, True])
def test_a_long_address_field_is_parsed_once_for_the_script_and_the_summary(monkeypatch: pytest.MonkeyPatch,
                                                                             recursion: bool) -> None:
    """A delivery through a script reads a long To: for its address tests, then the store
    reads it for the summary: the stdlib's parse (some 0.1 ms a KB) runs once
    (message/summary.py getaddresses), and each reader gets what it got before, a parse
    that fails included (the Sieve's own fallback parser, the summary's empty list)."""
    import uuid

    from mailhaven.message.summary import summarize

    marker = uuid.uuid4().hex                    # never seen before by any memo
    raw = _long_to(marker, recursion)
    expected = SieveMessage(raw=_long_to(marker + "x", recursion)).addresses("to")
    parsed = _count_parses(monkeypatch, marker)
    view = SieveMessage(raw=raw, mail_from="s@x.example", rcpt_to="r@y.example")
    result = run(compile_script('if address :localpart :is "to" "sales" { discard; }'), view)
    assert result.actions[0].kind == "keep"
    summary = summarize(raw)
    assert len(parsed) == 1
    assert [a.replace(marker, "") for a in view.addresses("to")] == [a.replace(marker + "x", "") for a in expected]
    if recursion:
        assert summary["to"] == [] and expected[0] == "test@test.com"      # the fallback parser's
    else:
        assert [a["email"] for a in summary["to"]] == view.addresses("to") and len(expected) == 40


@pytest.mark.parametrize("sender", ["=?utf-8?q?B=C3=B6b?= <bob.{marker}@x.example> (work)",    # no plain list:
                                    "Builders: bob.{marker}@x.example;"])                      # the stdlib's parse
def test_a_short_address_field_is_parsed_once_for_the_script_and_the_summary(monkeypatch: pytest.MonkeyPatch,
                                                                             sender: str) -> None:
    """The same for a From: of a few dozen characters (message/summary.py remembers those
    by the thousand): the script's address test parses it, the summary finds the parse."""
    import uuid

    from mailhaven.message.summary import summarize

    marker = uuid.uuid4().hex
    raw = f"From: {sender.format(marker=marker)}\r\nTo: me@y.example\r\nSubject: hi\r\n\r\nbody\r\n".encode()
    parsed = _count_parses(monkeypatch, marker)
    view = SieveMessage(raw=raw, mail_from="s@x.example", rcpt_to="r@y.example")
    result = run(compile_script('if address :domain :is "from" "x.example" { discard; }'), view)
    summary = summarize(raw)
    assert len(parsed) == 1
    assert [a.kind for a in result.actions] == ["discard"] and view.addresses("from") == [f"bob.{marker}@x.example"]
    assert [a["email"] for a in summary["from"]] == view.addresses("from")


@pytest.mark.parametrize("subject", ["=?iso-2022-jp?B?GyRCJUYlOSVIGyhC?= {marker}", "=?bogus-charset?q?x?= {marker}",
                                     "=?utf-8?q?{marker}?= \xe9 raw"])
def test_an_encoded_subject_is_decoded_once_for_the_script_and_the_summary(monkeypatch: pytest.MonkeyPatch,
                                                                           subject: str) -> None:
    """The script's header test and then the summary decode the same Subject: the stdlib's
    make_header (0.05-0.3 ms for some charsets) runs once (message/encodedwords.py), and
    each reader gets what it got before, an unknown charset included."""
    import email.header
    import uuid

    from mailhaven.message import encodedwords, summary

    marker = uuid.uuid4().hex
    raw = f"From: a@b.example\r\nSubject: {subject.format(marker=marker)}\r\n\r\nbody\r\n".encode()
    before = (SieveMessage(raw=raw).headers("subject"), summary.summarize(raw)["subject"])
    encodedwords._remembered.cache_clear()
    made: list[int] = []
    real = email.header.make_header

    def counting(*args: object, **kwargs: object) -> object:
        made.append(1)
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(email.header, "make_header", counting)
    monkeypatch.setattr(encodedwords, "make_header", counting, raising=False)
    monkeypatch.setattr(summary, "make_header", counting, raising=False)
    view = SieveMessage(raw=raw, mail_from="s@x.example", rcpt_to="r@y.example")
    run(compile_script('if header :contains "subject" "zzz" { discard; }'), view)
    assert (view.headers("subject"), summary.summarize(raw)["subject"]) == before
    assert len(made) == 1


class _Counting:
    """A compiled pattern whose findall calls are counted."""

    def __init__(self, pattern: re.Pattern[str]) -> None:
        self.pattern, self.calls = pattern, 0

    def findall(self, *args: object) -> list[tuple[str, str]]:
        self.calls += 1
        return self.pattern.findall(*args)  # type: ignore[arg-type]


def test_a_header_split_for_the_script_is_not_split_again_for_the_summary(monkeypatch: pytest.MonkeyPatch) -> None:
    """A plain CRLF header (what SMTP stores) split for the script's header tests is the
    section the summary splits next: one split (message/headerfields.py), the same fields."""
    import uuid

    from mailhaven.message import headerfields
    from mailhaven.message.summary import summarize

    raw = (f"From: a@b.example\r\nSubject: hi {uuid.uuid4().hex}\r\nTo: c@d.example\r\n\r\nbody\r\n").encode()
    expected = summarize(raw.replace(b"hi ", b"ho "))
    counting = _Counting(headerfields._FIELDS)
    monkeypatch.setattr(headerfields, "_FIELDS", counting)
    view = SieveMessage(raw=raw, mail_from="s@x.example", rcpt_to="r@y.example")
    run(compile_script('if header :contains "subject" "zzz" { discard; }'), view)
    got = summarize(raw)
    assert counting.calls == 1
    assert got["subject"].replace("hi ", "ho ") == expected["subject"] and got["to"] == expected["to"]


def test_a_header_rebuilt_for_the_script_is_not_rebuilt_again_for_the_summary(monkeypatch: pytest.MonkeyPatch) -> None:
    """A header the stdlib would end early (``Subject :`` with the obsolete blank) is
    rebuilt once (message/structure.py stdlib_readable) for the script and the summary."""
    import uuid

    from mailhaven.message import structure
    from mailhaven.message.summary import summarize

    raw = (f"From: a@b.example\r\nSubject : hi {uuid.uuid4().hex}\r\nTo: c@d.example\r\n\r\nbody\r\n").encode()
    expected = summarize(raw.replace(b"hi ", b"ho "))
    real, calls = structure.split_fields, []

    def counting(block: bytes) -> list[tuple[str, bytes]]:
        calls.append(1)
        return real(block)

    monkeypatch.setattr(structure, "split_fields", counting)
    summarize(raw.replace(b"hi ", b"he "))         # the summary alone (its structure reads fields too)
    alone = len(calls)
    view = SieveMessage(raw=raw, mail_from="s@x.example", rcpt_to="r@y.example")
    result = run(compile_script('if header :contains "subject" "hi" { discard; }'), view)
    assert result.actions[0].kind == "discard"
    got = summarize(raw)
    assert len(calls) == 2 * alone
    assert got["subject"].replace("hi ", "ho ") == expected["subject"] and got["to"] == expected["to"]
