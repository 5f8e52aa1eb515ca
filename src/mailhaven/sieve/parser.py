"""Sieve grammar (RFC 5228 section 8.2) over the lexer's tokens, into a plain tree.

    commands   = *command
    command    = identifier arguments (";" / block)
    block      = "{" commands "}"
    arguments  = *argument [ test / test-list ]
    argument   = string-list / number / tag
    string-list = "[" string *("," string) "]" / string
    test       = identifier arguments
    test-list  = "(" test *("," test) ")"
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mailhaven.sieve.errors import SieveError
from mailhaven.sieve.lexer import Kind, Lexer, Token

MAX_NESTING = 32


@dataclass(frozen=True, kw_only=True, slots=True)
class Tag:
    name: str
    """Without the colon, lower case."""
    line: int
    column: int


@dataclass(frozen=True, kw_only=True, slots=True)
class StringList:
    values: tuple[str, ...]
    """One value for a lone string, several for a bracketed list."""
    bracketed: bool
    """Written as ``[...]`` (a lone string is also a string-list of one)."""
    line: int
    column: int


@dataclass(frozen=True, kw_only=True, slots=True)
class Number:
    value: int
    line: int
    column: int


Argument = Tag | StringList | Number


@dataclass(frozen=True, kw_only=True, slots=True)
class TestNode:
    name: str
    arguments: tuple[Argument, ...]
    tests: tuple[TestNode, ...]
    """The test or test-list argument (``allof``, ``anyof``, ``not``)."""
    line: int
    column: int


@dataclass(frozen=True, kw_only=True, slots=True)
class CommandNode:
    name: str
    arguments: tuple[Argument, ...]
    tests: tuple[TestNode, ...]
    block: tuple[CommandNode, ...] | None = field(default=None)
    """The commands in ``{...}``, None when the command ended with ';'."""
    line: int
    column: int


class Parser:
    """Feed bytes in any chunks, then ``finish()`` for the command tree."""

    def __init__(self) -> None:
        self._lexer = Lexer()

    def feed(self, data: bytes) -> None:
        self._lexer.feed(data)

    def finish(self) -> tuple[CommandNode, ...]:
        tokens = self._lexer.finish()
        return _TokenParser(tokens).commands_top()


def parse(script: bytes | str) -> tuple[CommandNode, ...]:
    p = Parser()
    p.feed(script.encode() if isinstance(script, str) else script)
    return p.finish()


class _TokenParser:
    def __init__(self, tokens: list[Token]) -> None:
        self._t = tokens
        self._i = 0

    def _peek(self) -> Token | None:
        return self._t[self._i] if self._i < len(self._t) else None

    def _next(self, what: str) -> Token:
        tok = self._peek()
        if tok is None:
            last = self._t[-1] if self._t else None
            raise SieveError(f"unexpected end of script, expected {what}",
                             last.line if last else 1, last.column if last else 1)
        self._i += 1
        return tok

    def _is_special(self, tok: Token | None, ch: str) -> bool:
        return tok is not None and tok.kind is Kind.SPECIAL and tok.value == ch

    def commands_top(self) -> tuple[CommandNode, ...]:
        out = self._commands(0)
        tok = self._peek()
        if tok is not None:
            raise SieveError(f"unexpected {tok.value!r}", tok.line, tok.column)
        return out

    def _commands(self, depth: int) -> tuple[CommandNode, ...]:
        out: list[CommandNode] = []
        while (tok := self._peek()) is not None and tok.kind is Kind.IDENTIFIER:
            out.append(self._command(depth))
        return tuple(out)

    def _command(self, depth: int) -> CommandNode:
        ident = self._next("a command")
        args, tests = self._arguments(depth)
        end = self._next("';' or '{'")
        if self._is_special(end, ";"):
            block = None
        elif self._is_special(end, "{"):
            if depth >= MAX_NESTING:
                raise SieveError("blocks nested too deep", end.line, end.column)
            block = self._commands(depth + 1)
            close = self._next("'}'")
            if not self._is_special(close, "}"):
                raise SieveError(f"expected '}}', got {close.value!r}", close.line, close.column)
        else:
            raise SieveError(f"expected ';' or '{{', got {end.value!r}", end.line, end.column)
        return CommandNode(name=str(ident.value), arguments=args, tests=tests, block=block,
                           line=ident.line, column=ident.column)

    def _arguments(self, depth: int) -> tuple[tuple[Argument, ...], tuple[TestNode, ...]]:
        args: list[Argument] = []
        while (tok := self._peek()) is not None:
            if tok.kind is Kind.TAG:
                self._i += 1
                args.append(Tag(name=str(tok.value), line=tok.line, column=tok.column))
            elif tok.kind is Kind.NUMBER:
                self._i += 1
                args.append(Number(value=int(tok.value), line=tok.line, column=tok.column))
            elif tok.kind is Kind.STRING:
                self._i += 1
                args.append(StringList(values=(str(tok.value),), bracketed=False,
                                       line=tok.line, column=tok.column))
            elif self._is_special(tok, "["):
                args.append(self._string_list())
            else:
                break
        tests: tuple[TestNode, ...] = ()
        tok = self._peek()
        if tok is not None and tok.kind is Kind.IDENTIFIER:
            tests = (self._test(depth + 1),)
        elif self._is_special(tok, "("):
            tests = self._test_list(depth + 1)
        return tuple(args), tests

    def _string_list(self) -> StringList:
        open_ = self._next("'['")
        values: list[str] = []
        while True:
            tok = self._next("a string")
            if tok.kind is not Kind.STRING:
                raise SieveError(f"expected a string in the list, got {tok.value!r}", tok.line, tok.column)
            values.append(str(tok.value))
            sep = self._next("',' or ']'")
            if self._is_special(sep, "]"):
                break
            if not self._is_special(sep, ","):
                raise SieveError(f"expected ',' or ']', got {sep.value!r}", sep.line, sep.column)
        return StringList(values=tuple(values), bracketed=True, line=open_.line, column=open_.column)

    def _test(self, depth: int) -> TestNode:
        if depth > MAX_NESTING:
            tok = self._peek()
            raise SieveError("tests nested too deep", tok.line if tok else 0, tok.column if tok else 0)
        ident = self._next("a test")
        if ident.kind is not Kind.IDENTIFIER:
            raise SieveError(f"expected a test, got {ident.value!r}", ident.line, ident.column)
        args, tests = self._arguments(depth)
        return TestNode(name=str(ident.value), arguments=args, tests=tests,
                        line=ident.line, column=ident.column)

    def _test_list(self, depth: int) -> tuple[TestNode, ...]:
        self._next("'('")
        tests: list[TestNode] = []
        while True:
            tests.append(self._test(depth))
            sep = self._next("',' or ')'")
            if self._is_special(sep, ")"):
                return tuple(tests)
            if not self._is_special(sep, ","):
                raise SieveError(f"expected ',' or ')', got {sep.value!r}", sep.line, sep.column)
