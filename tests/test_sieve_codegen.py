"""The generated program of a Sieve script (sieve/codegen.py) against the interpreter
walking the command tree and against the closures it replaces: the same actions, flags,
folders and errors on Hypothesis-generated scripts and on corpus messages; and no text of
the script ever in the generated source."""

from __future__ import annotations

import re
from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import corpus_messages
from mailhaven.sieve import Limits, SieveMessage, codegen, compile_script, program, run

CORPUS = [raw for _name, raw in corpus_messages()][:300]
SAMPLE = CORPUS[::10]

_EXTENSIONS = ('require ["fileinto", "imap4flags", "envelope", "regex", "relational", "subaddress", '
               '"comparator-i;ascii-numeric", "mailbox"{variables}];\n')
_HEADERS = ["subject", "from", "to", "list-id", "x-mailer", "SUBJECT", "message-id", "received", "x-none"]
_ADDRESS = ["from", "to", "cc", "sender", "reply-to", "From", "subject"]
_KEYS = ["", "a", "E", "example", "EXAMPLE.com", "re", "*", "*@*", "?*", "*a*", "${1}", "${x}", "\\*",
         "^re", "(.*)@(.*)", "[0-9]+", "list", "bench.example", "sender@outside.example", "\"", "é", "\\\\"]


def _quote(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _list(items: list[str]) -> str:
    return _quote(items[0]) if len(items) == 1 else "[" + ", ".join(map(_quote, items)) + "]"


_MATCH = st.sampled_from([":is", ":contains", ":matches", ":regex", ":count \"ge\"", ":value \"gt\"", ""])
_COMPARATOR = st.sampled_from(["", ':comparator "i;octet"', ':comparator "i;ascii-casemap"'])
_PART = st.sampled_from(["", ":all", ":localpart", ":domain", ":user", ":detail"])


def _keys_for(match: str) -> st.SearchStrategy[list[str]]:
    keys = [k for k in _KEYS if not (match == ":regex" and k in ("*", "*@*", "?*", "*a*", "\\*"))]
    if match.startswith((":count", ":value")):
        keys = ["0", "1", "2", "a"]
    return st.lists(st.sampled_from(keys), min_size=1, max_size=3)


@st.composite
def _leaf(draw: st.DrawFn) -> str:
    kind = draw(st.sampled_from(["header", "address", "envelope", "exists", "size", "true", "false"]))
    if kind in ("true", "false"):
        return kind
    if kind == "size":
        return f"size {draw(st.sampled_from([':over', ':under']))} {draw(st.sampled_from(['0', '1K', '5000', '1M']))}"
    if kind == "exists":
        return f"exists {_list(draw(st.lists(st.sampled_from(_HEADERS), min_size=1, max_size=3)))}"
    match = draw(_MATCH)
    comparator = draw(_COMPARATOR)
    if match.startswith((":count", ":value")):
        comparator = ':comparator "i;ascii-numeric"'
    keys = _list(draw(_keys_for(match)))
    if kind == "header":
        names = _list(draw(st.lists(st.sampled_from(_HEADERS + ["${x}"]), min_size=1, max_size=3)))
        return f"header {match} {comparator} {names} {keys}"
    part = draw(_PART)
    if kind == "address":
        names = _list(draw(st.lists(st.sampled_from(_ADDRESS), min_size=1, max_size=3)))
        return f"address {part} {match} {comparator} {names} {keys}"
    parts = _list(draw(st.lists(st.sampled_from(["from", "to", "FROM"]), min_size=1, max_size=2)))
    return f"envelope {part} {match} {comparator} {parts} {keys}"


def _test(depth: int) -> st.SearchStrategy[str]:
    if depth == 0:
        return _leaf()
    inner = _test(depth - 1)
    return st.one_of(
        _leaf(), _leaf(),
        inner.map(lambda t: f"not {t}"),
        st.lists(inner, min_size=1, max_size=3).map(lambda ts: "allof (" + ", ".join(ts) + ")"),
        st.lists(inner, min_size=1, max_size=3).map(lambda ts: "anyof (" + ", ".join(ts) + ")"))


_ACTIONS = st.sampled_from([
    'fileinto "Lists";', 'fileinto :create "Box/${1}";', 'fileinto :copy "Copy";', 'keep;', 'discard;',
    'addflag "$A";', 'addflag ["\\\\Flagged", "${x}"];', 'setflag "\\\\Seen";', 'removeflag "$A";',
    'set "x" "${1}";', 'set :lower "x" "List";', 'stop;', 'fileinto :flags "$F" "Flagged";',
    'redirect "a@b.example";', 'reject "no";'])


@st.composite
def _block(draw: st.DrawFn, depth: int) -> str:
    out = []
    for _ in range(draw(st.integers(1, 4))):
        choice = draw(st.integers(0, 3))
        if choice == 0 or depth == 0:
            out.append(draw(_ACTIONS))
            continue
        out.append(f"if {draw(_test(2))} {{ {draw(_block(depth - 1))} }}")
        for _ in range(draw(st.integers(0, 2))):
            out.append(f"elsif {draw(_test(1))} {{ {draw(_block(depth - 1))} }}")
        if draw(st.booleans()):
            out.append(f"else {{ {draw(_block(depth - 1))} }}")
    return "\n".join(out)


@st.composite
def _script(draw: st.DrawFn) -> str:
    variables = draw(st.booleans())
    return _EXTENSIONS.format(variables=', "variables"' if variables else "") + draw(_block(2)) + "\n"


def _outcomes(source: str, messages: list[bytes]) -> None:
    script = compile_script(source)
    generated = script.program
    closures = program.build(script)
    for raw in messages:
        results = []
        for prog in (generated, closures, None):
            message = SieveMessage(raw=raw, mail_from="sender@outside.example", rcpt_to="me+tag@bench.example")
            outcome = run(replace(script, program=prog), message)
            results.append((outcome.actions, outcome.error, outcome.message))
        assert results[0] == results[2], source
        assert results[1] == results[2], source


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_script(), st.lists(st.sampled_from(range(len(SAMPLE))), min_size=1, max_size=4, unique=True))
def test_generated_programs_decide_as_the_interpreter_does(source: str, picked: list[int]) -> None:
    try:
        compile_script(source)
    except Exception:  # noqa: BLE001 - a combination the compiler refuses (e.g. :detail without subaddress)
        return
    _outcomes(source, [SAMPLE[i] for i in picked])


def test_the_bench_script_decides_as_the_interpreter_does_on_the_corpus() -> None:
    import sys
    from pathlib import Path
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
    from sieve_rules import fifty_rules

    _outcomes(fifty_rules(), CORPUS)
    # Each address part of addresses with no domain (RFC 5228 2.7.4: the domain is "").
    tests = [f"address {part} :is {header} {keys}" for part in (":all", ":localpart", ":domain", ":user", ":detail")
             for header in ('"from"', '["to", "sender", "reply-to"]')
             for keys in ('""', '["undisclosed", "a", "example", "b@example"]')]
    parts = "\n".join(f'if {test} {{ addflag "f{i}"; }}' for i, test in enumerate(tests))
    _outcomes('require ["imap4flags", "subaddress"];\n' + parts + "\n",
              [b"From: undisclosed\r\nTo: a, B@example\r\nSender: example@\r\nReply-To: <@>\r\n\r\nbody\r\n"])


def test_common_scripts_get_a_generated_program() -> None:
    """A script of header/address/envelope rules runs as one generated function, not a
    tree of closures (sieve/program.py)."""
    script = compile_script('require ["fileinto", "envelope"];\n'
                            'if header :contains "list-id" "dev" { fileinto "Lists"; stop; }\n'
                            'if anyof (address :domain :is "from" "x.example", envelope :is "from" "a@b") '
                            '{ fileinto "X"; }\n')
    assert script.program is not None and script.program.__name__ == "sieve_program"
    assert script.program.__code__.co_filename == "<sieve program>"


@pytest.mark.parametrize("source", [
    'require ["editheader"]; addheader "X-A" "1"; if header :is "x-a" "1" { discard; }',
    'require ["include"]; include :personal "other"; if true { keep; }',
])
def test_scripts_that_edit_the_message_or_include_run_as_closures(source: str) -> None:
    script = compile_script(source)
    assert script.program is not None and script.program.__name__ == "run_block"


_NASTY = ['"); import os; os.system("x") #', "\\\"\n'''", "\x00\x7f", "${1}", "é\u2028", "__import__",
          "c0", "st.message", "\r\n  pass"]


def test_no_script_text_reaches_the_generated_source(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keys, header names and mailboxes are closure cells; the source holds only the
    generator's own names, numbers and punctuation."""
    written: list[str] = []
    real = compile

    def spy(source: str, *args: object, **kwargs: object) -> object:
        written.append(source)
        return real(source, *args, **kwargs)  # type: ignore[call-overload]

    monkeypatch.setattr(codegen, "compile", spy, raising=False)
    lines = ['require ["fileinto", "envelope", "regex"];']
    for text in _NASTY:
        q = _quote(text)
        lines.append(f"if anyof (header :contains {q} {q}, address :is {_quote('from')} {q}, "
                     f"header :regex \"subject\" {_quote(re.escape(text))}, envelope :is \"to\" {q}) "
                     f"{{ fileinto {q}; }}")
    script = compile_script("\n".join(lines) + "\n")
    assert script.program.__name__ == "sieve_program"
    assert len(written) == 1
    assert re.fullmatch(r"[A-Za-z0-9_ \n():=.,+<>]*", written[0])
    for word in ("import", "os", "system", "__import__", "message"):
        assert not re.search(rf"\b{word}\b", written[0].replace("st.message", ""))
    outcome = run(script, SieveMessage(raw=b"Subject: __import__\r\nFrom: x@y\r\n\r\nbody\r\n"))
    assert [a.mailbox for a in outcome.actions] == ["__import__"]


def test_an_empty_script_keeps() -> None:
    script = compile_script("")
    assert script.program.__name__ == "sieve_program"
    assert [a.kind for a in run(script, SieveMessage(raw=b"Subject: x\r\n\r\n")).actions] == ["keep"]


def test_the_step_limit_holds_in_generated_scripts() -> None:
    """A script with more commands and tests than the limit runs counting them (closures):
    the limit is reached as before; within the limit the generated function needs no count."""
    source = "if true { if true { keep; } }\n" * 20
    script = compile_script(source)
    assert script.program.__name__ == "sieve_program"
    message = SieveMessage(raw=b"Subject: x\r\n\r\n")
    assert run(script, message, limits=Limits(max_steps=30)).error == "too many steps"
    assert run(script, message, limits=Limits(max_steps=100)).error is None
    assert run(replace(script, program=None), message, limits=Limits(max_steps=100)).error is None
    assert run(replace(script, program=None), message, limits=Limits(max_steps=99)).error == "too many steps"
    assert run(script, message, limits=Limits(max_steps=99)).error == "too many steps"


def test_a_deeply_nested_script_runs_as_closures() -> None:
    source = "if false { } elsif true { " * 25 + "keep;" + " }" * 25    # 52 levels of Python
    script = compile_script(source)
    assert script.program.__name__ == "run_block"
    assert run(script, SieveMessage(raw=b"Subject: x\r\n\r\n")).actions[0].kind == "keep"


def test_the_active_script_is_compiled_again_only_when_its_text_changes(monkeypatch: pytest.MonkeyPatch) -> None:
    """localdelivery keeps each account's compiled script beside its text and compares the
    text the store gives at each delivery: a script changed anywhere (ManageSieve, JMAP,
    the CLI, another process) is the one that runs."""
    from mailhaven import localdelivery

    compiled: list[str] = []
    real = localdelivery.compile_script

    def counting(text: str) -> object:
        compiled.append(text)
        return real(text)

    monkeypatch.setattr(localdelivery, "compile_script", counting)
    localdelivery._compiled.cache_clear()
    active = localdelivery.ActiveScripts()
    first = 'require "fileinto"; if header :is "subject" "a" { fileinto "A"; }'
    same = "".join(list(first))                  # equal text, another object (as each read gives)
    assert active.get(7, first).script is active.get(7, same).script
    changed = active.get(7, first.replace('"A"', '"B"'))
    assert changed.script is not None and changed.script.commands[1].block[0].args == ("B",)   # type: ignore[index]
    assert active.get(8, same).script is active.get(7, first).script      # the compile cache by text
    assert active.get(7, 'require "mailbox"; if mailboxexists "X" { keep; }').script is not None
    assert active.get(7, 'require "mailbox"; if mailboxexists "X" { keep; }').asks_mailboxes
    assert active.get(9, "if bogus { }").script is None
    assert len(compiled) == 4


def test_absent_fields_are_not_read_for_their_values(monkeypatch: pytest.MonkeyPatch) -> None:
    """Most fields a script's rules ask for are not in a given message: their tests look
    the name up in the header index and read no values (no decoding, no address parse)."""
    from mailhaven.sieve.message import SieveMessage as View

    read: list[str] = []
    real_headers, real_addresses = View.headers, View.addresses
    def headers(self: View, name: str) -> list[str]:
        read.append(name)
        return real_headers(self, name)

    def addresses(self: View, name: str) -> list[str]:
        read.append(name)
        return real_addresses(self, name)

    monkeypatch.setattr(View, "headers", headers)
    monkeypatch.setattr(View, "addresses", addresses)
    script = compile_script('require "fileinto";\n'
                            'if header :contains ["list-id", "x-campaign"] "dev" { fileinto "L"; }\n'
                            'if address :is ["sender", "from"] "a@b.example" { fileinto "A"; }\n')
    outcome = run(script, SieveMessage(raw=b"From: a@b.example\r\nSubject: x\r\n\r\nbody\r\n"))
    assert [a.mailbox for a in outcome.actions] == ["A"]
    assert read == ["from"]


@given(st.text())
def test_ascii_fold_is_the_casemap_translation(text: str) -> None:
    """match.ascii_fold (str.lower for ASCII text) folds exactly as the RFC 4790 9.2 table."""
    from mailhaven.sieve.match import _ASCII_LOWER, ascii_fold

    for s in (text, text + "\u212a", "İ" + text, text.upper()):
        assert ascii_fold(s) == s.translate(_ASCII_LOWER)


@pytest.mark.parametrize(("value", "key", "matched"), [
    ("Build FAILED", "build failed", True),
    ("\u212aelvin", "kelvin", False),            # KELVIN SIGN: str.lower() gives "k", casemap keeps it
    ("\u0130x", "i\u0307x", False),              # CAPITAL I WITH DOT ABOVE: lower() gives "i\u0307"
    ("STRASSE \u212a", "strasse \u212a", True),  # non-ASCII kept on both sides, ASCII letters folded
])
def test_casemap_folds_ascii_letters_only(value: str, key: str, matched: bool) -> None:
    """i;ascii-casemap (RFC 4790 9.2) in every path: the generated program, the closures
    and the interpreter, for header, address and envelope values folded once a run."""
    raw = (f"Subject: {value}\r\nFrom: \"{value}\" <{value.replace(' ', '.')}@x.example>\r\n\r\nbody\r\n").encode()
    addr = key.replace(" ", ".")
    source = ('require ["fileinto", "envelope"];\n'
              f'if header :contains "subject" "{key}" {{ fileinto "H"; }}\n'
              f'if header :is "subject" "{key}" {{ fileinto "I"; }}\n'
              f'if address :localpart :is "from" "{addr}" {{ fileinto "A"; }}\n'
              f'if envelope :localpart :contains "from" "{addr}" {{ fileinto "E"; }}\n')
    envelope = f"{value.replace(' ', '.')}@x.example"
    script = compile_script(source)
    assert script.program is not None and script.program.__name__ == "sieve_program"
    for prog in (script.program, program.build(script), None):
        message = SieveMessage(raw=raw, mail_from=envelope, rcpt_to="me@bench.example")
        outcome = run(replace(script, program=prog), message)
        filed = [a.mailbox for a in outcome.actions if a.kind == "fileinto"]
        assert filed == (["H", "I", "A", "E"] if matched else []), (prog, filed)
