"""Run a compiled script against one message for one recipient (RFC 5228 section 2.10):
evaluate the tests, collect the actions, add the implicit keep unless an action cancelled
it. Semantics follow Dovecot's Pigeonhole where the RFCs leave room: imap4flags applies
the current flags at each fileinto/keep; discard cancels only the implicit keep."""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from mailhaven.sieve.actions import Action, Vacation
from mailhaven.sieve.compiler import Command, Script, Test
from mailhaven.sieve.dates import date_part, header_date, in_zone
from mailhaven.sieve.errors import SieveRuntimeError
from mailhaven.sieve.match import match_any
from mailhaven.sieve.message import SieveMessage, field_addresses
from mailhaven.sieve.notify import Notify, encode_url, parse_mailto, valid_method

_VAR_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*|[0-9]+)\}")          # RFC 5229 3
_ADDRESS_HEADERS = frozenset({"from", "to", "cc", "bcc", "sender", "resent-from", "resent-to",
                              "resent-cc", "resent-bcc", "reply-to", "resent-reply-to",
                              "return-receipt-to", "errors-to", "delivered-to", "envelope-to",
                              "x-original-to"})


@dataclass(frozen=True, kw_only=True)
class Limits:
    max_steps: int = 10_000
    """Commands and tests evaluated per run."""
    max_actions: int = 32
    """Actions the script may take (RFC 5228 2.10.5 lets an implementation cap them)."""
    max_redirects: int = 4
    """redirect actions per message."""
    max_variable_length: int = 4000
    """A variable's value is truncated past this many characters (RFC 5229 3)."""


@dataclass(frozen=True, kw_only=True)
class Environment:
    """What a run knows of the world besides the message (injected: no clock read here)."""

    now: float | None = None
    """The current time for currentdate (RFC 5260 5); None: the time of the run."""
    local_zone: dt.tzinfo | None = None
    """The zone date parts are in without :zone (RFC 5260 4.1.1); None: the process's."""
    spam_header: str = "X-Spam-Score"
    """The field holding the spam filter's score (RFC 5235 spamtest); empty: never tested."""
    spam_max: float = 10.0
    """The score that means certainly spam (spamtest 10, :percent 100)."""
    virus_header: str = "X-Virus-Score"
    virus_max: float = 5.0
    includes: Mapping[str, Script] = field(default_factory=dict)
    """The account's personal scripts an include may name (RFC 6609), compiled; a name
    missing here is a run-time error unless the include is :optional."""
    max_include_depth: int = 10
    special_use: Mapping[str, str] = field(default_factory=dict)
    """Special-use attribute (lower case, ``\\junk``) -> the account's mailbox that has it (RFC 8579)."""
    duplicates: frozenset[str] = frozenset()
    """Keys (``duplicate_key``) of messages this account's duplicate tests recorded earlier
    and whose period has not ended (RFC 7352): loaded by the caller before the run."""
    duplicate_period: int = 12 * 3600
    """:seconds when the script gives none (Pigeonhole's default)."""
    duplicate_max_period: int = 2 * 86400


@dataclass(kw_only=True)
class Outcome:
    actions: list[Action]
    """What to do, the implicit keep last when it happens."""
    error: str | None = None
    """Why the script failed at run time (then the actions are the implicit keep alone)."""
    message: bytes | None = None
    """The message as editheader (RFC 5293) left it, None when unchanged: what to deliver."""
    duplicates: dict[str, int] = field(default_factory=dict)
    """RFC 7352 3: keys to remember for so many seconds, once the run succeeded."""


@dataclass(kw_only=True)
class _State:
    message: SieveMessage
    limits: Limits
    mailbox_exists: Callable[[str], bool]
    actions: list[Action] = field(default_factory=list)
    implicit_keep: bool = True
    flags: list[str] = field(default_factory=list)
    variables: dict[str, str] = field(default_factory=dict)
    captures: list[str] = field(default_factory=list)
    steps: int = 0
    variables_on: bool = False
    env: Environment = field(default_factory=Environment)
    global_names: set[str] = field(default_factory=set)
    """Variables this script declared global (RFC 6609 3.4): they live in ``globals``."""
    globals: dict[str, str] = field(default_factory=dict)
    chain: list[str] = field(default_factory=list)
    """The includes being run, outermost first (recursion is an error)."""
    included_once: set[str] = field(default_factory=set)
    duplicates: dict[str, int] = field(default_factory=dict)


class _Stop(Exception):
    pass


class _Return(Exception):
    """RFC 6609 3.3: back to the including script (at the top: the end of the script)."""


_IMPLICIT_KEEP = Action(kind="keep", mailbox="INBOX", implicit=True)
"""The implicit keep without flags, what most runs end in (285 of the bench's 300 corpus
messages): one shared value (Action is frozen) where building it cost ~2 us a run, as
much as a tenth of a 50-rule run."""


def run(script: Script, message: SieveMessage, *, limits: Limits | None = None,
        mailbox_exists: Callable[[str], bool] = lambda name: name.upper() == "INBOX",
        env: Environment | None = None) -> Outcome:
    """Never raises for a valid script: a runtime failure gives the implicit keep alone."""
    st = _State(message=message, limits=limits or Limits(), mailbox_exists=mailbox_exists,
                variables_on="variables" in script.extensions, env=env or Environment())
    try:
        _run_script(st, script)
    except (_Stop, _Return):
        pass
    except SieveRuntimeError as e:                                  # RFC 5228 2.10.6
        return Outcome(actions=[Action(kind="keep", mailbox="INBOX", implicit=True)], error=str(e))
    actions = st.actions
    if st.implicit_keep:                                            # RFC 5228 2.10.2
        actions.append(Action(kind="keep", mailbox="INBOX", flags=tuple(st.flags), implicit=True)
                       if st.flags else _IMPLICIT_KEEP)
    return Outcome(actions=actions, message=message.raw if message.edited else None,
                   duplicates=st.duplicates)


def _run_script(st: _State, script: Script) -> None:
    if script.program is not None:                                  # sieve/program.py
        script.program(st)
    else:
        _block(st, script.commands)


# -- commands ----------------------------------------------------------------------------------
def _step(st: _State) -> None:
    st.steps += 1
    if st.steps > st.limits.max_steps:
        raise SieveRuntimeError("too many steps")


def _block(st: _State, commands: tuple[Command, ...]) -> None:
    branch_taken = False
    for cmd in commands:
        _step(st)
        name = cmd.name
        if name == "if":
            branch_taken = _test(st, cmd.test)  # type: ignore[arg-type]
            if branch_taken:
                _block(st, cmd.block or ())
        elif name == "elsif":
            if not branch_taken:
                branch_taken = _test(st, cmd.test)  # type: ignore[arg-type]
                if branch_taken:
                    _block(st, cmd.block or ())
        elif name == "else":
            if not branch_taken:
                _block(st, cmd.block or ())
            branch_taken = True
        else:
            _command(st, cmd)


def _command(st: _State, cmd: Command) -> None:
    name = cmd.name
    if name == "require":
        return
    if name == "stop":                                              # RFC 5228 3.3
        raise _Stop
    if name == "keep":                                              # RFC 5228 4.3
        _add(st, Action(kind="keep", mailbox="INBOX", flags=_action_flags(st, cmd)))
        st.implicit_keep = False
    elif name == "discard":                                         # RFC 5228 4.4
        if not any(a.kind == "discard" for a in st.actions):
            st.actions.append(Action(kind="discard"))
        st.implicit_keep = False
    elif name == "fileinto":                                        # RFC 5228 4.1
        mailbox = _special_use(st, cmd, _expand(st, cmd.args[0]))
        copy = "copy" in cmd.tags
        _add(st, Action(kind="fileinto", mailbox=mailbox, flags=_action_flags(st, cmd),
                        create="create" in cmd.tags, copy=copy))
        if not copy:
            st.implicit_keep = False
    elif name == "redirect":                                        # RFC 5228 4.2
        address = _expand(st, cmd.args[0])
        if sum(a.kind == "redirect" for a in st.actions) >= st.limits.max_redirects:
            raise SieveRuntimeError("too many redirects")
        copy = "copy" in cmd.tags
        _add(st, Action(kind="redirect", address=address, copy=copy))
        if not copy:
            st.implicit_keep = False
    elif name in ("reject", "ereject"):                             # RFC 5429 2.1, 2.2
        _add(st, Action(kind=name, reason=_expand(st, cmd.args[0])))
        st.implicit_keep = False
    elif name == "vacation":                                        # RFC 5230 4
        _vacation(st, cmd)
    elif name in ("setflag", "addflag", "removeflag"):              # RFC 5232 3
        _flag_command(st, cmd)
    elif name == "set":                                             # RFC 5229 4
        _set(st, cmd)
    elif name == "notify":                                          # RFC 5435 3
        _notify(st, cmd)
    elif name == "include":                                         # RFC 6609 3.2
        _include(st, cmd)
    elif name == "return":                                          # RFC 6609 3.3
        raise _Return
    elif name == "global":                                          # RFC 6609 3.4
        for var in cmd.args[0]:
            var = var.lower()
            st.global_names.add(var)
            st.globals.setdefault(var, st.variables.pop(var, ""))
    elif name == "addheader":                                       # RFC 5293 4
        field_name = _expand(st, cmd.args[0])
        if field_name.lower() not in PROTECTED_FIELDS:
            st.message.add_header(field_name, _expand(st, cmd.args[1]), last="last" in cmd.tags)
    elif name == "deleteheader":                                    # RFC 5293 5
        _deleteheader(st, cmd)
    else:  # pragma: no cover - the compiler knows every command
        raise SieveRuntimeError(f"unknown command {name}")


def _add(st: _State, action: Action) -> None:
    delivers = action.kind in ("keep", "fileinto", "redirect")
    for other in st.actions:                                        # RFC 5429 2.1
        if (action.kind in ("reject", "ereject") and other.kind in ("keep", "fileinto", "redirect", "vacation")) or \
                (delivers and other.kind in ("reject", "ereject")):
            raise SieveRuntimeError("reject conflicts with an action that delivers the message")
    if action.kind in ("reject", "ereject") and any(a.kind in ("reject", "ereject") for a in st.actions):
        raise SieveRuntimeError("more than one reject")
    for i, other in enumerate(st.actions):                          # RFC 5228 2.10.3: once each
        if (other.kind, other.mailbox, other.address) == (action.kind, action.mailbox, action.address) \
                and action.kind in ("fileinto", "redirect"):
            merged = tuple(dict.fromkeys(other.flags + action.flags))
            st.actions[i] = Action(kind=other.kind, mailbox=other.mailbox, address=other.address,
                                   flags=merged, create=other.create or action.create,
                                   copy=other.copy and action.copy)
            return
    if len(st.actions) >= st.limits.max_actions:
        raise SieveRuntimeError("too many actions")
    st.actions.append(action)


DAY = 86400
DEFAULT_DAYS = 7                                                    # RFC 5230 4.1: site-defined


def _vacation(st: _State, cmd: Command) -> None:
    """RFC 5230 4; the reply is decided by the caller (to whom, whether already sent).
    Keeps the implicit keep (RFC 5230 4.7)."""
    if any(a.kind == "vacation" for a in st.actions):
        raise SieveRuntimeError("more than one vacation")
    if any(a.kind in ("reject", "ereject") for a in st.actions):    # RFC 5230 4.7
        raise SieveRuntimeError("vacation conflicts with reject")
    tags = cmd.tags
    if "seconds" in tags:                                           # RFC 6131 2: 0 = every time
        seconds = int(tags["seconds"])
    elif "days" in tags:                                            # RFC 5230 4.1: at least one
        seconds = max(1, int(tags["days"])) * DAY
    else:
        seconds = DEFAULT_DAYS * DAY
    reason = _expand(st, cmd.args[0])
    subject = _expand(st, tags["subject"]) if "subject" in tags else None
    sender = _expand(st, tags["from"]) if "from" in tags else None
    addresses = tuple(_expand(st, a) for a in tags.get("addresses", ()))
    mime = "mime" in tags
    if "handle" in tags:
        handle = _expand(st, tags["handle"])
    else:                                                           # RFC 5230 4.2, as Pigeonhole makes it:
        handle = "".join([cmd.args[0], tags.get("subject", "<default-subject>"),   # the unexpanded text
                          tags.get("from", "<default-from>"),
                          "<MIME>" if mime else "<NO-MIME>"])
    if len(st.actions) >= st.limits.max_actions:
        raise SieveRuntimeError("too many actions")
    fcc = _special_use(st, cmd, _expand(st, tags["fcc"])) if "fcc" in tags else None   # RFC 8580 4
    st.actions.append(Action(kind="vacation", reason=reason, vacation=Vacation(
        reason=reason, seconds=seconds, handle=handle, subject=subject, sender=sender,
        addresses=addresses, mime=mime, fcc=fcc, fcc_flags=_action_flags(st, cmd) if fcc else (),
        fcc_create="create" in tags)))


def _special_use(st: _State, cmd: Command, mailbox: str) -> str:
    """RFC 8579 4: the mailbox that has the :specialuse attribute when there is one."""
    if "specialuse" not in cmd.tags:
        return mailbox
    return st.env.special_use.get(_expand(st, cmd.tags["specialuse"]).lower(), mailbox)


def _action_flags(st: _State, cmd: Command) -> tuple[str, ...]:
    """RFC 5232 5: :flags replaces the internal variable for this action."""
    if "flags" in cmd.tags:
        return tuple(_flag_set([_expand(st, f) for f in cmd.tags["flags"]]))
    return tuple(st.flags)


def _flag_set(values: list[str]) -> list[str]:
    """Space-separated flag names, duplicates removed case-insensitively (RFC 5232 3)."""
    out: dict[str, str] = {}
    for v in values:
        for flag in v.split():
            out.setdefault(flag.lower(), flag)
    return list(out.values())


def _flag_command(st: _State, cmd: Command) -> None:
    if len(cmd.args) == 2:
        var, values = _expand(st, cmd.args[0]).lower(), cmd.args[1]
        current = _flag_set([st.variables.get(var, "")])
    else:
        var, values = None, cmd.args[0]
        current = list(st.flags)
    given = _flag_set([_expand(st, v) for v in values])
    if cmd.name == "setflag":
        result = given
    elif cmd.name == "addflag":
        result = _flag_set(current + given)
    else:
        drop = {f.lower() for f in given}
        result = [f for f in current if f.lower() not in drop]
    if var is None:
        st.flags = result
    else:
        st.variables[var] = " ".join(result)


def _notify(st: _State, cmd: Command) -> None:
    method = _expand(st, cmd.args[0])
    parsed = parse_mailto(method)
    if parsed is None:                                              # RFC 5435 3.8: a run-time error
        raise SieveRuntimeError(f"invalid notification method {method!r}")
    recipients, headers = parsed
    tags = cmd.tags
    message = _expand(st, tags["message"]) if "message" in tags else None
    notify = Notify(method=method, recipients=tuple(recipients), importance=tags.get("importance", "2"),
                    subject=message if message is not None else headers.get("subject"),
                    sender=_expand(st, tags["from"]) if "from" in tags else None, body=headers.get("body"),
                    headers=tuple(headers.items()))
    # RFC 5435 3.9 (as Pigeonhole): a recipient already notified by this run is not again.
    done = {r[1].lower() for a in st.actions if a.notify is not None for r in a.notify.recipients}
    fresh = tuple(r for r in notify.recipients if r[1].lower() not in done)
    if not fresh:
        return
    notify = replace(notify, recipients=fresh)
    if len(st.actions) >= st.limits.max_actions:
        raise SieveRuntimeError("too many actions")
    st.actions.append(Action(kind="notify", notify=notify))


def _include(st: _State, cmd: Command) -> None:
    name = cmd.args[0]
    if "once" in cmd.tags and name in st.included_once:
        return
    script = None if "global" in cmd.tags else st.env.includes.get(name)   # no global scripts here
    if script is None:
        if "optional" in cmd.tags:
            return
        raise SieveRuntimeError(f"included script {name!r} does not exist")
    if name in st.chain or len(st.chain) >= st.env.max_include_depth:
        raise SieveRuntimeError(f"include of {name!r} recurses")
    st.included_once.add(name)
    saved = (st.variables, st.global_names, st.variables_on)
    st.variables, st.global_names = {}, set()                      # RFC 6609 3.4: its own variables
    st.variables_on = "variables" in script.extensions
    st.chain.append(name)
    try:
        _run_script(st, script)
    except _Return:
        pass
    finally:
        st.chain.pop()
        st.variables, st.global_names, st.variables_on = saved


PROTECTED_FIELDS = frozenset({"received", "auto-submitted"})
"""RFC 5293 6 (and Pigeonhole's default): left alone by addheader and deleteheader."""


def _deleteheader(st: _State, cmd: Command) -> None:
    field_name = _expand(st, cmd.args[0])
    if field_name.lower() in PROTECTED_FIELDS:
        return
    values = st.message.headers(field_name)
    positions = list(range(len(values)))
    if "index" in cmd.tags:                                         # RFC 5293 5: :index [:last]
        n = int(cmd.tags["index"])
        if n > len(values):
            return
        positions = [len(values) - n if "last" in cmd.tags else n - 1]
    if len(cmd.args) == 2:                                          # only the values that match
        positions = [i for i in positions if _match(st, cmd, [values[i]], cmd.args[1], captures=False)]
    if positions:
        st.message.delete_headers(field_name, set(positions))


def _set(st: _State, cmd: Command) -> None:
    name, value = cmd.args[0].lower(), _expand(st, cmd.args[1])
    tags = cmd.tags
    if "lower" in tags:                                             # RFC 5229 4.1, by precedence
        value = value.lower()
    if "upper" in tags:
        value = value.upper()
    if "lowerfirst" in tags:
        value = value[:1].lower() + value[1:]
    if "upperfirst" in tags:
        value = value[:1].upper() + value[1:]
    if "quotewildcard" in tags:
        value = re.sub(r"([*?\\])", r"\\\1", value)
    if "encodeurl" in tags:                                         # RFC 5435 6
        value = encode_url(value)
    if "length" in tags:
        value = str(len(value))
    value = value[:st.limits.max_variable_length]
    if name in st.global_names:
        st.globals[name] = value
    else:
        st.variables[name] = value


def _expand(st: _State, s: str) -> str:
    """RFC 5229 3: ${name} and ${N} in strings, when variables is required."""
    if not st.variables_on or "${" not in s:
        return s

    def sub(m: re.Match[str]) -> str:
        ref = m.group(1)
        if ref.isdigit():
            i = int(ref)
            return st.captures[i] if i < len(st.captures) else ""
        key = ref.lower()
        return st.globals.get(key, "") if key in st.global_names else st.variables.get(key, "")
    return _VAR_REF.sub(sub, s)


# -- tests -------------------------------------------------------------------------------------
def _test(st: _State, test: Test) -> bool:
    _step(st)
    name = test.name
    if name == "header":                                            # RFC 5228 5.7 (most tests are)
        values = [v for h in test.args[0] for v in _indexed(test, st.message.headers(_expand(st, h)))]
        return _match(st, test, values, test.args[1])
    if name == "true":
        return True
    if name == "false":
        return False
    if name == "not":
        return not _test(st, test.tests[0])
    if name == "allof":                                             # RFC 5228 5.2, short-circuit
        return all(_test(st, t) for t in test.tests)
    if name == "anyof":
        return any(_test(st, t) for t in test.tests)
    if name == "size":                                              # RFC 5228 5.9
        limit = test.args[0]
        return st.message.size > limit if "over" in test.tags else st.message.size < limit
    if name == "exists":                                            # RFC 5228 5.5
        return all(st.message.has_header(_expand(st, h)) for h in test.args[0])
    if name == "address":                                           # RFC 5228 5.1
        values = []
        for h in test.args[0]:
            h = _expand(st, h)
            if h.lower() not in _ADDRESS_HEADERS:
                continue
            if "index" in test.tags:                                # RFC 5260 6: the nth field's addresses
                values.extend(a for f in _indexed(test, st.message.raw_fields(h)) for a in field_addresses(f))
            else:
                values.extend(st.message.addresses(h))
        return _match(st, test, [p for a in values if (p := _part(test, a)) is not None], test.args[1])
    if name == "date":                                              # RFC 5260 4
        fields = _indexed(test, st.message.headers(_expand(st, test.args[0])))
        when = header_date(fields[0]) if fields else None
        return _date_match(st, test, when, test.args[1], test.args[2])
    if name == "currentdate":                                       # RFC 5260 5
        now = st.env.now if st.env.now is not None else time.time()
        return _date_match(st, test, dt.datetime.fromtimestamp(now, dt.UTC), test.args[0], test.args[1])
    if name == "duplicate":                                         # RFC 7352 3
        return _duplicate(st, test)
    if name in ("spamtest", "virustest"):                           # RFC 5235 3.2 - 3.4
        return _match(st, test, [_score(st, test)], test.args[0])
    if name == "envelope":                                          # RFC 5228 5.4
        values = []
        for part in test.args[0]:
            part = _expand(st, part).lower()
            if part == "from":
                values.append(st.message.mail_from)
            elif part == "to":
                values.append(st.message.rcpt_to)
        return _match(st, test, [p for a in values if (p := _part(test, a)) is not None], test.args[1])
    if name == "hasflag":                                           # RFC 5232 4
        if len(test.args) == 2:
            flags = _flag_set([st.variables.get(_expand(st, v).lower(), "") for v in test.args[0]])
            keys = test.args[1]
        else:
            flags, keys = list(st.flags), test.args[0]
        return _match(st, test, flags, keys)
    if name == "string":                                            # RFC 5229 5
        values = [v for s in test.args[0] if (v := _expand(st, s)) != "" or "count" not in test.tags]
        return _match(st, test, values, test.args[1])
    if name == "valid_notify_method":                               # RFC 5435 5.1
        return all(valid_method(_expand(st, u)) for u in test.args[0])
    if name == "notify_method_capability":                          # RFC 5435 5.2, RFC 5436 2.8
        uri, capability = _expand(st, test.args[0]), _expand(st, test.args[1]).lower()
        if not valid_method(uri) or capability != "online":
            return False
        return _match(st, test, ["maybe"], test.args[2])
    if name == "specialuse_exists":                                 # RFC 8579 3
        attrs = [_expand(st, a).lower() for a in test.args[-1]]
        if len(test.args) == 2:
            box = _expand(st, test.args[0][0]).lower()
            return st.mailbox_exists(box) and all(st.env.special_use.get(a, "").lower() == box for a in attrs)
        return all(a in st.env.special_use for a in attrs)
    if name == "mailboxexists":                                     # RFC 5490 3.1
        return all(st.mailbox_exists(_expand(st, m)) for m in test.args[0])
    if name == "body":                                              # RFC 5173 5
        if "raw" in test.tags:
            texts = st.message.body_texts("raw")
        elif "content" in test.tags:
            texts = st.message.body_texts("content", tuple(test.tags["content"]))
        else:
            texts = st.message.body_texts("text")
        return _match(st, test, texts, test.args[0], captures=False)
    raise SieveRuntimeError(f"unknown test {name}")  # pragma: no cover


def duplicate_key(handle: str, unique_id: str) -> str:
    """What the store keeps of a tracked message: a digest, never the ID itself."""
    return hashlib.sha256(f"{handle}\0{unique_id}".encode()).hexdigest()


def _duplicate(st: _State, test: Test) -> bool:
    """True when an earlier delivery's run recorded this ID within its period; the ID is
    recorded (or, with :last, its period restarted) only if this run succeeds. Checks within
    one run see only earlier deliveries, as in Pigeonhole."""
    tags = test.tags
    if "uniqueid" in tags:
        unique_id: str | None = _expand(st, tags["uniqueid"])
    else:                                                           # RFC 7352 3.1: Message-ID
        values = st.message.headers(_expand(st, tags.get("header", "message-id")))
        unique_id = values[0].strip() if values else None
    if not unique_id:
        return False
    key = duplicate_key(_expand(st, tags.get("handle", "")), unique_id)
    seen = key in st.env.duplicates
    seconds = min(int(tags.get("seconds", st.env.duplicate_period)), st.env.duplicate_max_period)
    if not seen or "last" in tags:
        st.duplicates[key] = seconds
    return seen


def _indexed(test: Test, values: list[str]) -> list[str]:
    """RFC 5260 6: only the :index'th field (from the end with :last), or every one."""
    if "index" not in test.tags:
        return values
    n = int(test.tags["index"])
    if n > len(values):
        return []
    return [values[-n] if "last" in test.tags else values[n - 1]]


def _date_match(st: _State, test: Test, when: dt.datetime | None, part: str, keys: tuple[str, ...]) -> bool:
    if when is None:                                                # RFC 5260 4.1: no date, no match
        return False
    local = st.env.local_zone or dt.datetime.now().astimezone().tzinfo or dt.UTC
    zone = _expand(st, test.tags["zone"]) if "zone" in test.tags else None
    shown = in_zone(when, zone, "originalzone" in test.tags, local)
    if shown is None:
        return False
    return _match(st, test, [date_part(shown, _expand(st, part).lower())], keys)


_SCORE = re.compile(r"-?[0-9]+(?:\.[0-9]+)?\Z")


def _score(st: _State, test: Test) -> str:
    """RFC 5235 3.2: "0" when the message was not tested, then 1 (not spam) to 10 (spam);
    :percent 0 to 100; virustest 1 to 5. Scaled as Pigeonhole scales a score header."""
    spam = test.name == "spamtest"
    header = st.env.spam_header if spam else st.env.virus_header
    top = st.env.spam_max if spam else st.env.virus_max
    values = st.message.headers(header) if header else []
    text = values[0].strip() if values else ""
    if not _SCORE.match(text) or top <= 0:
        return "0"
    ratio = min(max(float(text), 0.0) / top, 1.0)
    if "percent" in test.tags:
        return str(int(ratio * 100))
    if ratio <= 0:
        return "1"
    return str(int(1 + (9 if spam else 4) * ratio))


def _part(test: Test, address: str) -> str | None:
    """RFC 5228 2.7.4 address parts; RFC 5233 :user/:detail with '+' as separator."""
    local, at, domain = address.rpartition("@")
    if not at:
        local, domain = address, ""
    tags = test.tags
    if "localpart" in tags:
        return local
    if "domain" in tags:
        return domain
    if "user" in tags:
        return local.partition("+")[0]
    if "detail" in tags:
        user, plus, detail = local.partition("+")
        return detail if plus else None                             # RFC 5233 4: no detail, no match
    return address


def _match(st: _State, test: Test | Command, values: list[str], keys: tuple[str, ...], *,
           captures: bool = True) -> bool:
    tags: dict[str, Any] = test.tags
    comparator = tags.get("comparator", "i;ascii-casemap")
    relation = None
    if "count" in tags:
        match_type, relation = "count", tags["count"]
    elif "value" in tags:
        match_type, relation = "value", tags["value"]
    elif "matches" in tags:
        match_type = "matches"
    elif "regex" in tags:
        match_type = "regex"
    elif "contains" in tags:
        match_type = "contains"
    else:
        match_type = "is"
    expanded = [_expand(st, k) for k in keys] if st.variables_on else keys
    got = match_any(match_type, comparator, values, expanded, relation)
    if got is not None and match_type in ("matches", "regex") and captures and st.variables_on:
        st.captures = got[:10]                                      # RFC 5229 3.2
    return got is not None
