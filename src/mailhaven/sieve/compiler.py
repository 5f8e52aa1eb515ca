"""Check a parsed script against the command table and ``require`` (RFC 5228 section 3.2:
using an extension not required is an error, so is requiring one we lack), and produce
the compiled form the interpreter runs."""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Any

from mailhaven.sieve import spec
from mailhaven.sieve.dates import DATE_PARTS
from mailhaven.sieve.errors import SieveError
from mailhaven.sieve.match import regex_pattern
from mailhaven.sieve.notify import valid_method
from mailhaven.sieve.parser import Argument, CommandNode, Number, StringList, Tag, TestNode, parse
from mailhaven.sieve.scriptname import valid_script_name

_SPECIAL_USE = re.compile(r"\\[A-Za-z]+\Z|\$\{")                               # RFC 6154 2 (or a variable)
_FIELD_NAME = re.compile(r"[!-9;-~]+\Z")                                   # RFC 5322 3.6.8 ftext
_VARIABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")                  # RFC 5229 3
# RFC 5228 2.4.2.4: "${hex:" hex-pair-seq "}" / "${unicode:" unicode-hex-seq "}", blank = WSP / CRLF
_ENCODED = re.compile(r"\$\{(hex|unicode):([ \t\r\n]*[0-9A-Fa-f]+(?:[ \t\r\n]+[0-9A-Fa-f]+)*[ \t\r\n]*)\}",
                      re.IGNORECASE)


def decode_encoded_characters(value: str, line: int, column: int) -> str:
    """RFC 5228 2.4.2.4; a sequence that does not match the grammar stays as written."""
    if "${" not in value:
        return value
    out = bytearray()
    pos = 0
    for m in _ENCODED.finditer(value):
        out += value[pos:m.start()].encode("utf-8", "surrogatepass")
        items = m.group(2).split()
        if m.group(1).lower() == "hex":
            if any(len(h) > 2 for h in items):
                out += m.group().encode()
            else:
                out += bytes(int(h, 16) for h in items)
        else:
            for h in items:
                cp = int(h, 16)
                if cp > 0x10FFFF or 0xD800 <= cp <= 0xDFFF:
                    raise SieveError(f"invalid Unicode character U+{h.upper()} in ${{unicode:}}", line, column)
                out += chr(cp).encode()
        pos = m.end()
    out += value[pos:].encode("utf-8", "surrogatepass")
    try:
        return out.decode("utf-8")
    except UnicodeDecodeError:
        raise SieveError("${hex:} encodes a string that is not UTF-8", line, column) from None


@dataclass(frozen=True, kw_only=True)
class Test:
    name: str
    tags: dict[str, Any]
    """Tag name -> its argument (True for a tag without one)."""
    args: tuple[Any, ...]
    """Positional arguments: str, tuple[str, ...] or int."""
    tests: tuple[Test, ...]
    line: int


@dataclass(frozen=True, kw_only=True)
class Command:
    name: str
    tags: dict[str, Any]
    args: tuple[Any, ...]
    test: Test | None
    block: tuple[Command, ...] | None
    line: int


@dataclass(frozen=True, kw_only=True)
class Script:
    commands: tuple[Command, ...]
    extensions: frozenset[str] = field(default_factory=frozenset)
    """What the script required."""
    includes: tuple[str, ...] = ()
    """Personal scripts it includes (RFC 6609), for the caller to load before running it."""
    program: Any = field(default=None, compare=False, repr=False)
    """The commands as one generated function (sieve/codegen.py) or closures
    (sieve/program.py), built once here; None: the interpreter walks ``commands``."""


def compile_script(source: bytes | str) -> Script:
    """Raises SieveError (with line and column) for anything wrong."""
    from mailhaven.sieve.codegen import build  # it runs the interpreter's code: imported late

    script = _Compiler().script(parse(source))
    return replace(script, program=build(script))


class _Compiler:
    def __init__(self) -> None:
        self.required: set[str] = set()
        self.includes: dict[str, None] = {}

    def script(self, tree: tuple[CommandNode, ...]) -> Script:
        commands = self.block(tree, top=True)
        return Script(commands=commands, extensions=frozenset(self.required), includes=tuple(self.includes))

    def block(self, nodes: tuple[CommandNode, ...], *, top: bool = False) -> tuple[Command, ...]:
        out: list[Command] = []
        requires_allowed = top
        previous: str | None = None
        for node in nodes:
            if node.name == "require":
                if not requires_allowed:                     # RFC 5228 3.2
                    raise SieveError("require must come before any other command",
                                     node.line, node.column)
            else:
                requires_allowed = False
            if node.name in ("elsif", "else") and previous not in ("if", "elsif"):
                raise SieveError(f"{node.name} without a preceding if", node.line, node.column)
            out.append(self.command(node))
            previous = node.name
        return tuple(out)

    def command(self, node: CommandNode) -> Command:
        sp = spec.COMMANDS.get(node.name)
        if sp is None:
            raise SieveError(f"unknown command {node.name!r}", node.line, node.column)
        self._need(sp.extension, node.name, node.line, node.column)
        tags, args = self.arguments(node.name, sp, node.arguments, node.line, node.column)
        tests = self.tests(node.name, sp, node.tests, node.line, node.column)
        if sp.block and node.block is None:
            raise SieveError(f"{node.name} needs a block", node.line, node.column)
        if not sp.block and node.block is not None:
            raise SieveError(f"{node.name} takes no block", node.line, node.column)
        if node.name == "require":
            for ext in args[0]:
                if ext not in spec.EXTENSIONS:
                    raise SieveError(f"unsupported extension {ext!r}", node.line, node.column)
                self.required.add(ext)
                if ext in spec.IMPLIED:
                    self.required.add(spec.IMPLIED[ext])
        if node.name == "set":
            self._variable_name(args[0], node.line, node.column)
        if node.name == "vacation" and "fcc" not in tags and tags.keys() & {"flags", "create", "specialuse"}:
            raise SieveError("vacation: :flags, :create and :specialuse need :fcc", node.line, node.column)   # RFC 8580 4
        if "specialuse" in tags and not _SPECIAL_USE.match(tags["specialuse"]):
            raise SieveError(f"invalid special-use flag {tags['specialuse']!r}", node.line, node.column)
        if node.name == "notify" and tags.get("importance", "2") not in ("1", "2", "3"):   # RFC 5435 3.5
            raise SieveError(":importance is \"1\", \"2\" or \"3\"", node.line, node.column)
        if node.name == "notify" and "${" not in args[0] and not valid_method(args[0]):  # RFC 5435 3.8
            raise SieveError(f"notify: invalid method {args[0]!r}", node.line, node.column)
        if node.name == "include":                                      # RFC 6609 3.2: a constant name
            if not valid_script_name(args[0]) or ("variables" in self.required and "${" in args[0]):
                raise SieveError(f"include: invalid script name {args[0]!r}", node.line, node.column)
            if "global" not in tags:
                self.includes[args[0]] = None
        if node.name == "global":
            if "variables" not in self.required:                        # RFC 6609 3.4
                raise SieveError('global needs require "variables"', node.line, node.column)
            for name in args[0]:
                self._variable_name(name, node.line, node.column)
        if node.name in ("addheader", "deleteheader"):
            self._editheader(node.name, tags, args, node.line, node.column)
        block = self.block(node.block) if node.block is not None else None
        return Command(name=node.name, tags=tags, args=args, test=tests[0] if tests else None,
                       block=block, line=node.line)

    def test(self, node: TestNode) -> Test:
        sp = spec.TESTS.get(node.name)
        if sp is None:
            raise SieveError(f"unknown test {node.name!r}", node.line, node.column)
        self._need(sp.extension, node.name, node.line, node.column)
        tags, args = self.arguments(node.name, sp, node.arguments, node.line, node.column)
        if node.name == "size" and not tags:
            raise SieveError("size needs :over or :under", node.line, node.column)
        if "last" in tags and "index" not in tags and "index" in sp.tags:   # RFC 5260 6
            raise SieveError(":last needs :index", node.line, node.column)
        if "index" in tags and tags["index"] < 1:
            raise SieveError(":index counts from 1", node.line, node.column)
        if node.name in ("date", "currentdate"):
            part = args[-2].lower()
            if part not in DATE_PARTS:                                 # RFC 5260 4.2
                raise SieveError(f"unknown date-part {args[-2]!r}", node.line, node.column)
        if "regex" in tags:
            self._regex_keys(tags, args[-1], node.line, node.column)
        tests = self.tests(node.name, sp, node.tests, node.line, node.column)
        return Test(name=node.name, tags=tags, args=args, tests=tests, line=node.line)

    def tests(self, name: str, sp: spec.Spec, nodes: tuple[TestNode, ...], line: int,
              column: int) -> tuple[Test, ...]:
        if sp.tests == "none" and nodes:
            raise SieveError(f"{name} takes no test", line, column)
        if sp.tests == "one" and len(nodes) != 1:
            raise SieveError(f"{name} needs exactly one test", line, column)
        if sp.tests == "list" and not nodes:
            raise SieveError(f"{name} needs a list of tests", line, column)
        return tuple(self.test(t) for t in nodes)

    def arguments(self, name: str, sp: spec.Spec, arguments: tuple[Argument, ...], line: int,
                  column: int) -> tuple[dict[str, Any], tuple[Any, ...]]:
        tags: dict[str, Any] = {}
        groups: set[str] = set()
        positional: list[Argument] = []
        items = list(arguments)
        i = 0
        while i < len(items):
            arg = items[i]
            i += 1
            if isinstance(arg, Tag):
                if positional:
                    raise SieveError(f"tag :{arg.name} after positional arguments", arg.line, arg.column)
                ts = sp.tags.get(arg.name)
                if ts is None:
                    raise SieveError(f"{name} has no tag :{arg.name}", arg.line, arg.column)
                self._need(ts.extension, f":{arg.name}", arg.line, arg.column)
                if ts.group in groups:
                    raise SieveError(f"{name}: :{arg.name} conflicts with another tag", arg.line, arg.column)
                groups.add(ts.group)
                value: Any = True
                if ts.argument is not None:
                    if i >= len(items) or isinstance(items[i], Tag):
                        raise SieveError(f":{arg.name} needs an argument", arg.line, arg.column)
                    i += 1
                    value = self._kind(ts.argument, items[i - 1], f":{arg.name}")
                tags[arg.name] = value
            else:
                positional.append(arg)
        kinds = list(sp.positional)
        if sp.optional_leading and len(positional) == len(kinds) + 1:
            if "variables" not in self.required and sp.optional_leading == "s":
                raise SieveError(f"{name} with a variable name needs require \"variables\"", line, column)
            kinds.insert(0, sp.optional_leading)
        if sp.optional_trailing and len(positional) == len(kinds) + 1:
            kinds.append(sp.optional_trailing)
        if len(positional) != len(kinds):
            raise SieveError(f"{name} takes {len(kinds)} positional argument(s), got {len(positional)}",
                             line, column)
        args = tuple(self._kind(k, a, name) for k, a in zip(kinds, positional, strict=True))
        self._check_match(name, tags, line, column)
        if sp.optional_leading == "s" and len(args) == 2:
            self._variable_name(args[0], line, column)
        return tags, args

    def _kind(self, kind: str, arg: Argument, what: str) -> Any:
        if kind == "n":
            if not isinstance(arg, Number):
                raise SieveError(f"{what} expects a number", arg.line, arg.column)
            return arg.value
        if not isinstance(arg, StringList):
            raise SieveError(f"{what} expects a string", arg.line, arg.column)
        if "encoded-character" in self.required:
            arg = StringList(values=tuple(decode_encoded_characters(v, arg.line, arg.column) for v in arg.values),
                             bracketed=arg.bracketed, line=arg.line, column=arg.column)
        if kind == "s":
            if arg.bracketed and len(arg.values) != 1:
                raise SieveError(f"{what} expects a single string", arg.line, arg.column)
            return arg.values[0]
        return arg.values

    def _check_match(self, name: str, tags: dict[str, Any], line: int, column: int) -> None:
        comparator = tags.get("comparator")
        if comparator is not None:
            if comparator not in spec.COMPARATORS:                   # RFC 5228 2.7.3
                raise SieveError(f"unknown comparator {comparator!r}", line, column)
            self._need(spec.COMPARATORS[comparator], f"comparator {comparator}", line, column)
        for rel in ("count", "value"):
            if rel in tags and tags[rel].lower() not in spec.RELATIONAL_OPS:
                raise SieveError(f"unknown relational operator {tags[rel]!r}", line, column)
            if rel in tags:
                tags[rel] = tags[rel].lower()

    def _editheader(self, name: str, tags: dict[str, Any], args: tuple[Any, ...], line: int, column: int) -> None:
        """RFC 5293 4, 5: a field name as RFC 5322 defines it; a value without bare CR/LF."""
        if not _FIELD_NAME.match(args[0]) and not ("variables" in self.required and "${" in args[0]):
            raise SieveError(f"{name}: invalid header field name {args[0]!r}", line, column)
        if name == "addheader" and re.search(r"\r(?!\n)|(?<!\r)\n", args[1]):
            raise SieveError("addheader: the value has a bare CR or LF", line, column)
        if "last" in tags and "index" not in tags and name == "deleteheader":
            raise SieveError(":last needs :index", line, column)
        if "regex" in tags and len(args) == 2:
            self._regex_keys(tags, args[1], line, column)

    def _regex_keys(self, tags: dict[str, Any], keys: tuple[str, ...], line: int, column: int) -> None:
        """Keys are compiled at upload (those with variables at run time): a bad one is an error."""
        if tags.get("comparator", "i;ascii-casemap") not in ("i;octet", "i;ascii-casemap"):
            raise SieveError(":regex works with the i;octet and i;ascii-casemap comparators only", line, column)
        for key in keys:
            if "variables" in self.required and "${" in key:
                continue
            try:
                regex_pattern(key, tags.get("comparator", "i;ascii-casemap") == "i;ascii-casemap")
            except re.error as e:
                raise SieveError(f"invalid regular expression {key!r}: {e}", line, column) from None

    def _variable_name(self, value: str, line: int, column: int) -> None:
        if not _VARIABLE_NAME.match(value):
            raise SieveError(f"invalid variable name {value!r}", line, column)

    def _need(self, extension: str | None, what: str, line: int, column: int) -> None:
        if extension is not None and extension not in self.required:
            raise SieveError(f"{what} needs require \"{extension}\"", line, column)
