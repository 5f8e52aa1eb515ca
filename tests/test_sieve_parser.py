"""The Sieve lexer/parser/compiler: every script fed whole and one byte at a time gives the
same tree; errors carry line and column; Hypothesis finds no exception but SieveError."""

from __future__ import annotations

import ast
import pathlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailhaven.sieve import SieveError, compile_script
from mailhaven.sieve.parser import Parser, parse

SCRIPTS = [
    b'require "fileinto";\r\nif header :contains "subject" "x" { fileinto "Junk"; }\r\n',
    b'require ["fileinto", "imap4flags"];\n# a comment\nif address :is :domain "from" '
    b'"example.org" { addflag "\\\\Seen"; fileinto :flags "$x" "Lists"; } else { keep; }\n',
    b'/* bracket\n comment */ if size :over 100K { discard; stop; }\n',
    b'require "variables";\nset "a" text:\nline one\n..dot\n.\n;\n',
    b'require ["relational", "comparator-i;ascii-numeric"];\nif header :value "ge" '
    b':comparator "i;ascii-numeric" "x-spam" "5" { discard; }\n',
    b'if anyof (not exists "to", allof (true, false)) { keep; } elsif false { stop; }',
    b'require "envelope"; if envelope :all "from" "" { discard; }',
]


def _bytewise(data: bytes) -> tuple:
    p = Parser()
    for i in range(len(data)):
        p.feed(data[i:i + 1])
    return p.finish()


@pytest.mark.parametrize("script", SCRIPTS)
def test_whole_and_bytewise_agree(script: bytes) -> None:
    whole = parse(script)
    assert whole
    assert _bytewise(script) == whole
    compile_script(script)


def test_tree_shape() -> None:
    (cmd,) = parse(b'if header :is "subject" ["a", "b"] { fileinto "x"; }')
    assert cmd.name == "if" and cmd.tests[0].name == "header"
    assert cmd.block is not None and cmd.block[0].name == "fileinto"
    (cmd,) = parse(b'set "a" text:\nx\n..y\n.\n;')
    assert cmd.arguments[1].values == ("x\r\n.y\r\n",)      # type: ignore[union-attr]
    (cmd,) = parse(b'set "a\\"\\\\\\q" "2K";')
    assert cmd.arguments[0].values == ('a"\\q',)            # type: ignore[union-attr]


@pytest.mark.parametrize(("script", "line", "column", "text"), [
    (b'keep;\nfileinto "x";', 2, 1, "require"),
    (b'require "fileinto";\nif true {\n  fileinto "x"\n}', 4, 1, "expected ';'"),
    (b'require "nosuch";', 1, 1, "unsupported extension"),
    (b'keep;\nfrobnicate;', 2, 1, "unknown command"),
    (b'if header :is "a" {}', 1, 4, "positional"),
    (b'if size 10 { keep; }', 1, 4, ":over"),
    (b'keep;\n  "unterminated', 2, 3, "unterminated"),
    (b'keep;\nrequire "fileinto";', 2, 1, "before"),
    (b'else { keep; }', 1, 1, "without"),
    (b'if header :is :contains "a" "b" {}', 1, 15, "conflicts"),
    (b'if header :count "ge" "a" "b" {}', 1, 11, "relational"),
    (b'if header :comparator "i;nope" "a" "b" {}', 1, 4, "comparator"),
    (b'keep :flags "x";', 1, 6, "imap4flags"),
    (b'set "a" "b";', 1, 1, "variables"),
    (b'require ["encoded-character", "fileinto"];\nfileinto "${unicode:D800}";', 2, 10, "U+D800"),
    (b'require ["encoded-character", "fileinto"];\nfileinto\n  "${hex:ff}";', 3, 3, "not UTF-8"),
])
def test_errors_have_line_and_column(script: bytes, line: int, column: int, text: str) -> None:
    for feed in (lambda s: compile_script(s), lambda s: _bytewise(s) and compile_script(s)):
        with pytest.raises(SieveError) as e:
            feed(script)
        assert (e.value.line, e.value.column) == (line, column), str(e.value)
        assert text in e.value.message


_ALPHABET = st.sampled_from([
    b"if", b"header", b"require", b'"fileinto"', b"fileinto", b":is", b":contains",
    b":matches", b'"x"', b"[", b"]", b",", b"{", b"}", b"(", b")", b";", b" ", b"\n",
    b"text:\n", b".\n", b"#c\n", b"/*", b"*/", b"10K", b"anyof", b"not", b"true",
    b"keep", b"stop", b"\\", b'"', b"\xff", b"size", b":over", b"set", b"${a}",
])


@settings(max_examples=400, deadline=None)
@given(st.lists(_ALPHABET, max_size=40))
def test_fuzz_tokens_only_sieve_errors(parts: list[bytes]) -> None:
    script = b"".join(parts)
    try:
        compile_script(script)
    except SieveError:
        pass


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_fuzz_bytes_only_sieve_errors(script: bytes) -> None:
    try:
        whole = compile_script(script)
    except SieveError:
        return
    assert whole is not None


def test_engine_is_sans_io() -> None:
    root = pathlib.Path(__file__).parent.parent / "src" / "mailhaven" / "sieve"
    for path in root.glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            for name in names:
                assert name.split(".")[0] not in ("asyncio", "socket", "ssl"), (path, name)


def test_encoded_character() -> None:
    from mailhaven.sieve.compiler import decode_encoded_characters as dec

    assert dec("${hex: 52 65}${HEX:6c}x${unicode:1F600 e9}", 1, 1) == "Relx\U0001F600\u00e9"
    assert dec("${hex:c3}${hex:a9}", 1, 1) == "\u00e9"                   # octets join across sequences
    assert dec("${hex:123}${hex:}${unicode:zz}$${hex:41}", 1, 1) == "${hex:123}${hex:}${unicode:zz}$A"
    (cmd,) = compile_script('require ["encoded-character", "fileinto"]; fileinto "${hex:41 42}";').commands[1:]
    assert cmd.args == ("AB",)
    (cmd,) = compile_script('require "fileinto"; fileinto "${hex:41 42}";').commands[1:]
    assert cmd.args == ("${hex:41 42}",)                                   # not required: left as is
