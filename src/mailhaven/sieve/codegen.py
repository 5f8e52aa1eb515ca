"""A compiled script as one generated Python function: the common tests (header, address
and envelope with constant keys under :is/:contains/:matches/:regex, exists, size, true,
false, not, allof, anyof) become straight-line code, the if/elsif/else chains plain ``if``
statements, each test's values a local computed once a run. Everything else (the
commands, the rarer tests, strings with ``${``) calls the interpreter's own code, so the
actions are those ``interpreter.py`` decides (tests/test_sieve_codegen.py checks it on
generated scripts and the corpus).

No script text ever reaches the source: the generator writes only its own names
(``t3``, ``v0``, ``c12``) and keywords; every value taken from the script (keys, header
names, the command and test nodes, the prepared matchers) is handed to the function as a
closure cell of a factory, never spliced into the text. :func:`generate` checks the source
against that alphabet before compiling it.

When it is used (``program.build``): a script with no ``include`` (its steps and
variables reach into other scripts) and no ``addheader``/``deleteheader`` (they change the
values the locals hold), run at the top level. A Sieve script has no loops, so a run
evaluates each command and test at most once: when their number is within the step limit
the limit cannot be reached, and the function counts no steps; otherwise (or when it
runs as an included script) it hands the run to the closures (sieve/program.py), which
count them.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from mailhaven.sieve import program as p
from mailhaven.sieve.compiler import Command, Script, Test
from mailhaven.sieve.interpreter import _ADDRESS_HEADERS, _command, _State, _Stop, _test
from mailhaven.sieve.match import _ASCII_LOWER

BlockFn = Callable[[_State], None]

MAX_DEPTH = 40
"""Indentation levels the source may reach (Python's tokenizer stops at 100); a script
nested deeper runs as closures."""

_EDITS = frozenset({"include", "addheader", "deleteheader"})
_SOURCE = re.compile(r"[A-Za-z0-9_ \n():=.,+<>]*\Z")
"""Every character the generator writes: identifiers, numbers it counted, punctuation."""


class _TooDeep(Exception):
    pass


def steps(script: Script) -> int:
    """The most steps a run of ``script`` can take: every command and test once."""
    def test(t: Test) -> int:
        return 1 + sum(test(x) for x in t.tests)

    def block(commands: tuple[Command, ...] | None) -> int:
        return sum(1 + (test(c.test) if c.test is not None else 0) + block(c.block) for c in commands or ())
    return block(script.commands)


def eligible(script: Script) -> bool:
    def edits(commands: tuple[Command, ...] | None) -> bool:
        return any(c.name in _EDITS or edits(c.block) for c in commands or ())
    return not edits(script.commands)


def build(script: Script) -> BlockFn:
    """The script's program: the generated function, or the closures when it is not one."""
    builder = p._Builder("variables" in script.extensions)
    closures = builder.block(script.commands)
    return generate(script, closures, builder) or closures


def generate(script: Script, fallback: BlockFn, builder: p._Builder) -> BlockFn | None:
    """The script as one function of the run's state, or None when it is not
    :func:`eligible` or nests deeper than :data:`MAX_DEPTH`. ``builder``: the closures'
    builder (program._Builder), whose decisions (which tests are constant, how values
    are folded and memoised, the :matches/:regex matchers) the function shares."""
    if not eligible(script):
        return None
    gen = _Generator(builder)
    try:
        body = gen.block(script.commands, 2)
    except _TooDeep:
        return None
    names = [f"c{i}" for i in range(len(gen.constants))]
    source = "\n".join([
        f"def factory({', '.join(['fallback', 'command', 'test', 'Stop', *names])}):",
        "    def sieve_program(st):",
        f"        if st.chain or st.steps + {steps(script)} > st.limits.max_steps:",
        "            return fallback(st)",
        *([f"        {' = '.join(gen.values)} = None"] if gen.values else []),
        *body,
        "        return None",
        "    return sieve_program",
        ""])
    if not _SOURCE.match(source):                # pragma: no cover - only our own text is written
        raise AssertionError("generated Sieve source holds a character it never writes")
    namespace: dict[str, Any] = {}
    exec(compile(source, "<sieve program>", "exec"), namespace)     # noqa: S102 - our own text, see above
    program: BlockFn = namespace["factory"](fallback, _command, _test, _Stop, *gen.constants)
    return program


class _Generator:
    def __init__(self, builder: Any) -> None:
        self.builder = builder
        self.constants: list[Any] = []
        self.values: list[str] = []
        """Locals holding a test's values, one per memo key (program._memo_key)."""
        self.value_of: dict[str, tuple[str, str]] = {}
        """Memo key -> its local and the constant computing it."""
        self.branches = 0

    def constant(self, value: Any) -> str:
        self.constants.append(value)
        return f"c{len(self.constants) - 1}"

    def block(self, commands: tuple[Command, ...] | None, depth: int) -> list[str]:
        if depth > MAX_DEPTH:
            raise _TooDeep
        pad = "    " * depth
        lines: list[str] = []
        chain = ""
        for cmd in commands or ():
            name = cmd.name
            if name == "if":                         # interpreter._block's branch_taken, one per chain
                chain = f"b{self.branches}"
                self.branches += 1
                lines += self.test(cmd.test, chain, depth)       # type: ignore[arg-type]
                lines += [f"{pad}if {chain}:", *self.body(cmd.block, depth + 1)]
            elif name == "elsif":
                lines.append(f"{pad}if not {chain}:")
                lines += self.test(cmd.test, chain, depth + 1)   # type: ignore[arg-type]
                lines += [f"{pad}    if {chain}:", *self.body(cmd.block, depth + 2)]
            elif name == "else":
                lines += [f"{pad}if not {chain}:", *self.body(cmd.block, depth + 1)]
                lines.append(f"{pad}{chain} = True")
            elif name == "require":
                continue
            elif name == "stop":                     # RFC 5228 3.3
                lines.append(f"{pad}raise Stop")
            else:
                lines.append(f"{pad}command(st, {self.constant(cmd)})")
        return lines

    def body(self, commands: tuple[Command, ...] | None, depth: int) -> list[str]:
        return self.block(commands, depth) or ["    " * depth + "pass"]

    # -- tests: each leaves its result in ``out`` ------------------------------------------
    def test(self, test: Test, out: str, depth: int) -> list[str]:
        if depth > MAX_DEPTH:
            raise _TooDeep
        pad = "    " * depth
        name, tags, b = test.name, test.tags, self.builder
        if name in ("true", "false"):
            return [f"{pad}{out} = {name.title()}"]
        if name == "not":
            return [*self.test(test.tests[0], out, depth), f"{pad}{out} = not {out}"]
        if name in ("allof", "anyof"):               # RFC 5228 5.2, short-circuit
            lines = self.test(test.tests[0], out, depth)
            guard = f"{pad}if {out}:" if name == "allof" else f"{pad}if not {out}:"
            for inner in test.tests[1:]:
                lines += [guard, *self.test(inner, out, depth + 1)]
            return lines
        if name == "size":                           # RFC 5228 5.9
            return [f"{pad}{out} = st.message.size {'>' if 'over' in tags else '<'} {self.constant(test.args[0])}"]
        if name == "exists" and b.constant(test.args[0]):           # RFC 5228 5.5
            has = [f"st.message.has_header({self.constant(h)})" for h in test.args[0]]
            return [f"{pad}{out} = {' and '.join(has) or 'True'}"]
        plan = self.plan(test)
        if plan is None:
            return [f"{pad}{out} = test(st, {self.constant(test)})"]
        key, values = plan
        if key not in self.value_of:             # one local and one function per memo key
            self.value_of[key] = (f"v{len(self.values)}", self.constant(values))
            self.values.append(self.value_of[key][0])
        found, compute = self.value_of[key]
        return [f"{pad}if {found} is None:", f"{pad}    {found} = {compute}(st)", *self.match(test, found, out, pad)]

    def plan(self, test: Test) -> tuple[str, Callable[[_State], list[str]]] | None:
        """program._Builder.test's memo key and values for the tests it matches itself."""
        name, tags, b = test.name, test.tags, self.builder
        if name == "header" and "index" not in tags and b.constant(test.args[0]):
            names = tuple(test.args[0])
            folds = b.folds(test)
            plan = p._memo_key("header", *names, folds), p._header_values(names, folds)
        elif name == "address" and "index" not in tags and b.constant(test.args[0]):
            names = tuple(h for h in test.args[0] if h.lower() in _ADDRESS_HEADERS)
            part, folds = p._address_part(tags), b.folds(test)
            plan = p._memo_key("address", *names, part, folds), p._address_values(names, part, folds)
        elif name == "envelope" and b.constant(test.args[0]):
            parts = tuple(x.lower() for x in test.args[0])
            part, folds = p._address_part(tags), b.folds(test)
            plan = p._memo_key("envelope", *parts, part, folds), p._envelope_values(parts, test, folds)
        else:
            return None
        keys = test.args[-1]
        comparator = tags.get("comparator", p._CASEMAP)
        if not b.constant(keys) or comparator not in (p._CASEMAP, "i;octet"):
            return None
        if p._match_type(tags) not in ("is", "contains", "matches", "regex"):
            return None                              # :count, :value
        return plan

    def match(self, test: Test, values: str, out: str, pad: str) -> list[str]:
        """program._Builder.matching's match, its keys prepared the same way."""
        keys = test.args[-1]
        casemap = test.tags.get("comparator", p._CASEMAP) == p._CASEMAP
        match_type = p._match_type(test.tags)
        if match_type == "is":                       # RFC 5228 2.7.1; values come folded (folds())
            wanted = frozenset(k.translate(_ASCII_LOWER) for k in keys) if casemap else frozenset(keys)
            return [f"{pad}{out} = not {self.constant(wanted)}.isdisjoint({values})"]
        if match_type == "contains":
            folded = [k.translate(_ASCII_LOWER) for k in keys] if casemap else list(keys)
            found = " or ".join(f"{self.constant(k)} in x" for k in folded) or "False"
            return [f"{pad}{out} = False",
                    f"{pad}for x in {values}:",
                    f"{pad}    if {found}:",
                    f"{pad}        {out} = True",
                    f"{pad}        break"]
        matcher = self.builder.matcher(match_type, casemap, keys)
        return [f"{pad}{out} = {self.constant(matcher)}(st, {values})"]
