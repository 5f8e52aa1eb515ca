"""The account's *managed* Sieve script ("mailhaven"): generated from structured state that
the webmail's Filters page and JMAP VacationResponse (RFC 8621 8) edit, and kept inside the
script itself so ManageSieve, JMAP and the webmail all see one state through the store's
Sieve script methods.

The script reads::

    # Mailhaven filters: ... (a banner)
    # mailhaven-state: {"rules": [...], "vacation": {...}}     <- the state, one JSON line
    require [...];                                             <- what every part needs
    <vacation>  <rules>
    # --- own rules ---
    <the raw tail the user typed>

The raw tail is checked on its own (so its errors carry the user's own line and column);
its leading ``require`` commands are merged into the script's and kept in the tail as
``#mh-require# `` comments, which the parser turns back into the text the user typed. A
script without the state line (written by hand over ManageSieve) reads as all raw tail.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from mailhaven.sieve.compiler import Script, compile_script
from mailhaven.sieve.errors import SieveError
from mailhaven.sieve.parser import StringList, parse

SCRIPT_NAME = "mailhaven"
STATE_PREFIX = "# mailhaven-state: "
TAIL_MARKER = "# --- own rules ---"
REQUIRE_PREFIX = "#mh-require# "
BANNER = ("# Mailhaven filters, written by the webmail's Filters page and JMAP VacationResponse.\n"
          "# Edit the state line or your own rules below the marker; the rest is regenerated.\n")

FIELDS = {                                             # rule field -> header names tested
    "from": ("from",), "to": ("to", "cc"), "subject": ("subject",), "list-id": ("list-id",)}
ACTIONS = ("move", "flag", "read", "forward", "delete")
_UTC_DATE = re.compile(r"\A(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})(?:\.\d+)?Z\Z")    # RFC 8620 1.4 UTCDate
MAX_RULES = 200


class StateError(ValueError):
    """The structured state is not valid (a field, an action, a date...)."""


class ChangedElsewhere(Exception):
    """The rules or the raw tail are no longer those the editor loaded (a ManageSieve
    PUTSCRIPT, another window): saving over them would lose that change."""


@dataclass(frozen=True, kw_only=True)
class Rule:
    field: str
    """One of FIELDS: which header(s) to look in."""
    contains: str
    """The text the header must contain (case-insensitive, RFC 5228 :contains)."""
    action: str
    """One of ACTIONS."""
    folder: str = ""
    """move: the folder (created when missing, RFC 5490 :create)."""
    address: str = ""
    """forward: where to."""
    keep_copy: bool = True
    """forward: keep a copy here too (RFC 3894 :copy)."""


@dataclass(frozen=True, kw_only=True)
class VacationState:
    """JMAP VacationResponse's properties (RFC 8621 8.1)."""

    enabled: bool = False
    from_date: str | None = None
    to_date: str | None = None
    subject: str | None = None
    text_body: str | None = None
    html_body: str | None = None


@dataclass(frozen=True, kw_only=True)
class ManagedState:
    rules: tuple[Rule, ...] = ()
    vacation: VacationState = field(default_factory=VacationState)
    raw: str = ""
    """The user's own Sieve text, run after the rules."""


# -- checking -----------------------------------------------------------------------------
def check_rule(rule: Rule) -> None:
    if rule.field not in FIELDS:
        raise StateError(f"unknown field {rule.field!r}")
    if rule.action not in ACTIONS:
        raise StateError(f"unknown action {rule.action!r}")
    if not rule.contains:
        raise StateError("a rule needs the text to look for")
    if rule.action == "move" and not rule.folder.strip():
        raise StateError("move needs a folder")
    if rule.action == "forward" and "@" not in rule.address:
        raise StateError("forward needs an email address")


def utc_date(value: Any) -> str | None:
    """RFC 8621 8.1 fromDate/toDate: a UTCDate or null."""
    if value is None:
        return None
    if not isinstance(value, str) or not _UTC_DATE.match(value):
        raise StateError(f"not a UTCDate: {value!r}")
    try:
        datetime.strptime(value[:19], "%Y-%m-%dT%H:%M:%S")
    except ValueError:
        raise StateError(f"not a UTCDate: {value!r}") from None
    return value


def check_raw(raw: str) -> Script | None:
    """Compile the raw tail on its own; SieveError (line and column in ``raw``) if bad."""
    if not raw.strip():
        return None
    return compile_script(raw)


# -- generating ---------------------------------------------------------------------------
def quote(text: str) -> str:
    """A Sieve quoted string (RFC 5228 2.4.2): backslash and double quote escaped."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _string_list(items: tuple[str, ...]) -> str:
    return quote(items[0]) if len(items) == 1 else "[" + ", ".join(quote(i) for i in items) + "]"


def _rule_lines(rule: Rule, needs: set[str]) -> list[str]:
    test = f"header :contains {_string_list(FIELDS[rule.field])} {quote(rule.contains)}"
    if rule.action == "move":
        needs |= {"fileinto", "mailbox"}
        body = f"fileinto :create {quote(rule.folder.strip())};"            # RFC 5490 3.2
    elif rule.action == "flag":
        needs.add("imap4flags")
        body = 'addflag "\\\\Flagged";'                                    # RFC 5232 3.2
    elif rule.action == "read":
        needs.add("imap4flags")
        body = 'addflag "\\\\Seen";'
    elif rule.action == "forward":
        if rule.keep_copy:
            needs.add("copy")                                               # RFC 3894 3
        body = f"redirect {':copy ' if rule.keep_copy else ''}{quote(rule.address.strip())};"
    else:
        body = "discard;"                                                   # RFC 5228 4.5
    return [f"if {test} {{", f"  {body}", "}"]


def _vacation_reason(v: VacationState) -> tuple[str, bool]:
    """(reason, is a MIME entity): plain text, or multipart/alternative when there is HTML."""
    text = v.text_body if v.text_body is not None else ""
    if v.html_body is None:
        return (text or "I am away and will read your message when I am back."), False
    boundary = "=_mh_" + hashlib.sha256((text + v.html_body).encode()).hexdigest()[:24]
    parts = [f'Content-Type: multipart/alternative; boundary="{boundary}"', ""]
    if text:
        parts += [f"--{boundary}", "Content-Type: text/plain; charset=utf-8",
                  "Content-Transfer-Encoding: 8bit", "", text]
    parts += [f"--{boundary}", "Content-Type: text/html; charset=utf-8",
              "Content-Transfer-Encoding: 8bit", "", v.html_body, f"--{boundary}--", ""]
    return "\n".join(parts), True                                           # RFC 5230 5.3 :mime


def _iso(utc: str) -> str:
    return utc[:19] + "+00:00"          # what currentdate "iso8601" gives in :zone "+0000"


def _vacation_lines(v: VacationState, needs: set[str]) -> list[str]:
    if not v.enabled:
        return []
    needs.add("vacation")
    reason, mime = _vacation_reason(v)
    tags = (f":subject {quote(v.subject)} " if v.subject else "") + (":mime " if mime else "")
    action = f"vacation {tags}{quote(reason)};"
    tests = []
    if v.from_date:                                                         # RFC 5260 5, RFC 5231
        tests.append(f'currentdate :zone "+0000" :value "ge" "iso8601" {quote(_iso(v.from_date))}')
    if v.to_date:
        tests.append(f'currentdate :zone "+0000" :value "lt" "iso8601" {quote(_iso(v.to_date))}')
    if not tests:
        return [action]
    needs |= {"date", "relational"}
    test = tests[0] if len(tests) == 1 else "allof(" + ", ".join(tests) + ")"
    return [f"if {test} {{", f"  {action}", "}"]


def _lift_requires(raw: str) -> tuple[list[str], str]:
    """The tail's leading require commands' extensions, and the tail with those lines
    commented out (``#mh-require# ``) so it can follow other commands."""
    nodes = parse(raw)
    extensions: list[str] = []
    first = None
    for node in nodes:
        if node.name != "require":
            first = node
            break
        for arg in node.arguments:
            if isinstance(arg, StringList):
                extensions += list(arg.values)
    if not extensions:
        return [], raw
    lines = raw.split("\n")
    end_line = first.line if first is not None else len(lines) + 1
    if first is not None and lines[first.line - 1][:first.column - 1].strip():
        before, after = lines[first.line - 1][:first.column - 1], lines[first.line - 1][first.column - 1:]
        lines[first.line - 1:first.line] = [before, after]                  # the command to a line of its own
        end_line += 1
    out = [REQUIRE_PREFIX + line if i < end_line - 1 else line for i, line in enumerate(lines)]
    return extensions, "\n".join(out)


def generate(state: ManagedState) -> str:
    """The script for ``state``; raises StateError or SieveError (the raw tail's, with
    its own line and column) when the state cannot make a valid script."""
    if len(state.rules) > MAX_RULES:
        raise StateError(f"at most {MAX_RULES} rules")
    for rule in state.rules:
        check_rule(rule)
    utc_date(state.vacation.from_date)
    utc_date(state.vacation.to_date)
    check_raw(state.raw)
    needs: set[str] = set()
    body = _vacation_lines(state.vacation, needs)
    flags_first = sorted(state.rules, key=lambda r: r.action not in ("flag", "read"))
    for rule in flags_first:                    # RFC 5232 3: flags apply at the fileinto that follows
        body += _rule_lines(rule, needs)
    tail = ""
    if state.raw.strip():
        extensions, tail = _lift_requires(state.raw)
        needs.update(extensions)
    head = [BANNER.rstrip("\n"), STATE_PREFIX + json.dumps(_state_json(state))]
    if needs:
        head.append(f"require {_string_list(tuple(sorted(needs)))};")
    text = "\n".join([*head, *body, TAIL_MARKER]) + "\n" + tail
    if tail and not tail.endswith("\n"):
        text += "\n"
    compile_script(text)                                                    # both parts together
    return text


def _state_json(state: ManagedState) -> dict[str, Any]:
    return {"rules": [asdict(r) for r in state.rules], "vacation": asdict(state.vacation)}


# -- parsing back -------------------------------------------------------------------------
def rule_from(obj: Any) -> Rule:
    if not isinstance(obj, dict):
        raise StateError("a rule is an object")
    known = {"field", "contains", "action", "folder", "address", "keep_copy"}
    values = {k: v for k, v in obj.items() if k in known}
    for key, value in values.items():
        if not isinstance(value, bool if key == "keep_copy" else str):
            raise StateError(f"rule {key} has the wrong type")
    try:
        rule = Rule(**values)
    except TypeError as exc:
        raise StateError(f"incomplete rule: {exc}") from None
    check_rule(rule)
    return rule


def vacation_from(obj: Any) -> VacationState:
    if not isinstance(obj, dict):
        return VacationState()
    strings = {k: obj.get(k) if isinstance(obj.get(k), str) else None
               for k in ("from_date", "to_date", "subject", "text_body", "html_body")}
    return VacationState(enabled=obj.get("enabled") is True, **strings)


def parse_managed(text: str) -> ManagedState:
    """The state a managed script holds; a script without the state line is all raw tail."""
    lines = [line.removesuffix("\r") for line in text.split("\n")]
    state_line = next((line for line in lines if line.startswith(STATE_PREFIX)), None)
    if state_line is None or TAIL_MARKER not in lines:
        return ManagedState(raw=text)
    try:
        obj = json.loads(state_line[len(STATE_PREFIX):])
        rules = tuple(rule_from(r) for r in obj.get("rules") or ())
        vacation = vacation_from(obj.get("vacation"))
    except (ValueError, AttributeError):
        return ManagedState(raw=text)
    tail = lines[lines.index(TAIL_MARKER) + 1:]
    raw = "\n".join(line[len(REQUIRE_PREFIX):] if line.startswith(REQUIRE_PREFIX) else line for line in tail)
    return ManagedState(rules=rules, vacation=vacation, raw=raw)


def fingerprint(state: ManagedState) -> str:
    """A digest of what the Filters page edits (the rules and the raw tail, not the
    vacation, which JMAP edits): the page saves against the one it loaded."""
    data = json.dumps([[asdict(r) for r in state.rules], state.raw], sort_keys=True)
    return hashlib.sha256(data.encode()).hexdigest()[:32]


def now_utc() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# -- the store ----------------------------------------------------------------------------
async def load(store: Any, account_id: int) -> tuple[ManagedState, bool]:
    """(the state, whether the managed script is the active one). Before there is a managed
    script, the active script (if any) reads as the raw tail, so saving keeps its rules."""
    from mailhaven.store.api import NotFound

    active = await store.get_active_sieve_script(account_id)
    try:
        text = await store.get_sieve_script(account_id, SCRIPT_NAME)
    except NotFound:
        return (parse_managed(active[1]) if active else ManagedState()), False
    return parse_managed(text), active is not None and active[0] == SCRIPT_NAME


async def save(store: Any, account_id: int, state: ManagedState, *, quota: Any = None,
               if_version: int | None = None) -> str:
    """Write the managed script for ``state`` and make it the active one (StateError and
    SieveError as :func:`generate`). ``quota`` is ``[sieve]`` (max_script_size,
    max_scripts), the limits ManageSieve holds every script to (RFC 5804 2.1.1 QUOTA).
    ``if_version``: only if the account's Sieve version is still that (the store raises
    SieveConflict otherwise and nothing is written)."""
    text = generate(state)
    if quota is not None:
        size = len(text.encode())
        if size > quota.max_script_size:
            raise StateError(f"the filters make a script of {size} octets, more than {quota.max_script_size}")
        names = {i.name for i in await store.list_sieve_scripts(account_id)}
        if SCRIPT_NAME not in names and len(names) >= quota.max_scripts:
            raise StateError(f"there are already {len(names)} Sieve scripts, the most allowed")
    await store.put_sieve_script(account_id, SCRIPT_NAME, text, activate=True, if_version=if_version)
    return text


MAX_ATTEMPTS = 8
"""Read-edit-write rounds :func:`update` makes while other writers keep changing the scripts."""


async def update(store: Any, account_id: int, edit: Callable[[ManagedState], ManagedState], *,
                 quota: Any = None, precondition: Callable[[ManagedState, bool], None] | None = None) -> ManagedState:
    """Read the state, apply ``edit``, write it back only if no one changed the account's
    scripts meanwhile (a compare-and-set on the store's Sieve version); when someone did,
    read again and apply ``edit`` to their result, so that the Filters page's rules and
    JMAP's vacation saved at the same moment both survive. ``precondition(state, active)``
    runs on every read and may raise (JMAP ifInState): it holds for what is written."""
    from mailhaven.store.api import SieveConflict

    for attempt in range(MAX_ATTEMPTS):
        version = await store.sieve_version(account_id)
        current, active = await load(store, account_id)
        if precondition is not None:
            precondition(current, active)
        state = edit(current)
        try:
            await save(store, account_id, state, quota=quota, if_version=version)
            return state
        except SieveConflict:
            if attempt == MAX_ATTEMPTS - 1:
                raise
    raise AssertionError("unreachable")


def error_json(exc: SieveError | StateError) -> dict[str, Any]:
    """What the webmail and JMAP show for a state that does not make a valid script."""
    if isinstance(exc, SieveError):
        return {"message": exc.message, "line": exc.line, "column": exc.column}
    return {"message": str(exc), "line": 0, "column": 0}
