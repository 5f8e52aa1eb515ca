"""``mailhaven sieve ...``: a user's Sieve scripts, compiled at upload.

    mailhaven sieve list ADDRESS [--json]               # the account's scripts, the active one marked
    mailhaven sieve get ADDRESS [NAME]                  # print a script (default: the active one)
    mailhaven sieve put ADDRESS [NAME] FILE [--activate] # compile and store ('-': stdin; errors FILE:LINE:COLUMN);
                                                        # activated when no script is active yet
    mailhaven sieve activate ADDRESS NAME               # the script run at delivery
    mailhaven sieve deactivate ADDRESS                  # none: mail goes to INBOX again
    mailhaven sieve delete ADDRESS NAME
    mailhaven sieve show ADDRESS / remove ADDRESS       # the active script (older spellings)
    mailhaven sieve test SCRIPT MESSAGE [--from ADDR] [--to ADDR] [--json]   # what it would do, no delivery

The same store methods serve ManageSieve (managesieve/), so both see the same scripts.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from mailhaven.sieve.actions import Action
from mailhaven.sieve.compiler import compile_script
from mailhaven.sieve.errors import SieveError
from mailhaven.sieve.interpreter import run
from mailhaven.sieve.message import SieveMessage
from mailhaven.store.api import NotFound

DEFAULT_NAME = "main"


def register(sub: Any) -> None:
    p = sub.add_parser("sieve", help="a user's Sieve scripts: list, get, put, activate, deactivate, delete, test")
    ssub = p.add_subparsers(dest="action", required=True)
    a = ssub.add_parser("list", help="the account's scripts; the active one is marked")
    a.add_argument("address")
    a.add_argument("--json", action="store_true", help="a JSON list of {name, active}")
    a = ssub.add_parser("get", help="print a script (default: the active one)")
    a.add_argument("address")
    a.add_argument("name", nargs="?")
    a = ssub.add_parser("put", help="compile FILE ('-' for stdin) and store it as NAME")
    a.add_argument("address")
    a.add_argument("args", nargs="+", metavar="[NAME] FILE")
    a.add_argument("--name", default=None, help=f"the script's name (default {DEFAULT_NAME})")
    a.add_argument("--activate", action="store_true", help="make it the active script")
    a = ssub.add_parser("activate", help="make NAME the script run at delivery")
    a.add_argument("address")
    a.add_argument("name")
    a = ssub.add_parser("deactivate", help="no script runs at delivery")
    a.add_argument("address")
    a = ssub.add_parser("delete", help="delete the script NAME")
    a.add_argument("address")
    a.add_argument("name")
    a = ssub.add_parser("show", help="print the active script")
    a.add_argument("address")
    a = ssub.add_parser("remove", help="delete the active script")
    a.add_argument("address")
    a = ssub.add_parser("test", help="run SCRIPT on MESSAGE and print the actions, delivering nothing")
    a.add_argument("script")
    a.add_argument("message")
    a.add_argument("--from", dest="mail_from", default="", help="envelope sender (default: null)")
    a.add_argument("--to", dest="rcpt_to", default="", help="envelope recipient")
    a.add_argument("--json", action="store_true", help="one JSON object: actions and errors")
    p.set_defaults(func=cmd_sieve)


def _action_json(action: Action) -> dict[str, Any]:
    out: dict[str, Any] = {"action": action.kind, "implicit": action.implicit}
    if action.mailbox is not None:
        out["mailbox"] = action.mailbox
    if action.address is not None:
        out["address"] = action.address
    if action.reason is not None:
        out["reason"] = action.reason
    if action.kind in ("keep", "fileinto"):
        out["flags"] = list(action.flags)
    if action.create:
        out["create"] = True
    if action.copy:
        out["copy"] = True
    if action.vacation is not None:                    # RFC 5230 4: what the reply would be
        v = action.vacation
        out.update({"seconds": v.seconds, "handle": v.handle, "mime": v.mime, "addresses": list(v.addresses)})
        if v.subject is not None:
            out["subject"] = v.subject
        if v.sender is not None:
            out["from"] = v.sender
    if action.notify is not None:                      # RFC 5435 3: what would be sent
        n = action.notify
        out.update({"method": n.method, "importance": n.importance,
                    "recipients": [a for _, a in n.recipients]})
        if n.subject is not None:
            out["subject"] = n.subject
    return out


def _action_text(action: Action) -> str:
    what = {"keep": "keep in", "fileinto": "file into"}.get(action.kind, action.kind)
    parts = [("implicit " if action.implicit else "") + what]
    parts += [v for v in (action.mailbox, action.address, action.reason) if v is not None]
    if action.flags:
        parts.append("flags " + " ".join(action.flags))
    parts += [t for t, on in (("(create)", action.create), ("(copy)", action.copy)) if on]
    if action.vacation is not None:
        parts.append(f"(every {action.vacation.seconds}s)")
    if action.notify is not None:
        parts.append(action.notify.method)
    return " ".join(parts)


def cmd_test(args: argparse.Namespace) -> int:
    source = Path(args.script).read_bytes()
    raw = sys.stdin.buffer.read() if args.message == "-" else Path(args.message).read_bytes()
    try:
        script = compile_script(source)
    except SieveError as e:
        if args.json:
            print(json.dumps({"actions": [], "errors": [
                {"line": e.line, "column": e.column, "message": e.message}]}))
        else:
            print(f"{args.script}:{e.line}:{e.column}: {e.message}", file=sys.stderr)
        return 1
    outcome = run(script, SieveMessage(raw=raw, mail_from=args.mail_from, rcpt_to=args.rcpt_to))
    errors = [{"message": outcome.error}] if outcome.error else []
    if args.json:
        print(json.dumps({"actions": [_action_json(a) for a in outcome.actions], "errors": errors}))
    else:
        for error in errors:
            print(f"run-time error: {error['message']}")
        for action in outcome.actions:
            print(_action_text(action))
    return 0


def cmd_sieve(args: argparse.Namespace) -> int:
    from mailhaven.cli import CommandError, with_store

    if args.action == "test":
        return cmd_test(args)
    handler = {"list": _list, "get": _get, "show": _get, "put": _put, "activate": _activate,
               "deactivate": _activate, "delete": _delete, "remove": _delete}[args.action]
    try:
        return handler(args, with_store)
    except NotFound as e:
        raise CommandError(str(e)) from None


def _list(args: argparse.Namespace, with_store: Any) -> int:
    async def listing(store: Any) -> list[Any]:
        return list(await store.list_sieve_scripts((await store.get_account(args.address)).id))

    scripts = with_store(args, listing)
    if args.json:
        print(json.dumps([{"name": i.name, "active": i.active} for i in scripts]))
    for info in [] if args.json else scripts:
        print(f"{info.name}\tactive" if info.active else info.name)
    return 0


def _get(args: argparse.Namespace, with_store: Any) -> int:
    name = getattr(args, "name", None)

    async def fetch(store: Any) -> str:
        account = await store.get_account(args.address)
        if name is not None:
            return str(await store.get_sieve_script(account.id, name))
        active = await store.get_active_sieve_script(account.id)
        if active is None:
            raise NotFound(f"no active Sieve script for {args.address}")
        return str(active[1])

    text = with_store(args, fetch)
    sys.stdout.write(text if text.endswith("\n") else text + "\n")
    return 0


def _put(args: argparse.Namespace, with_store: Any) -> int:
    from mailhaven.cli import CommandError

    if len(args.args) > 2 or (len(args.args) == 2 and args.name):
        raise CommandError("sieve put ADDRESS [NAME] FILE")
    name = args.args[0] if len(args.args) == 2 else (args.name or DEFAULT_NAME)
    file = args.args[-1]
    source = sys.stdin.buffer.read() if file == "-" else Path(file).read_bytes()
    try:
        compile_script(source)                         # errors at upload, never at delivery
    except SieveError as e:
        raise CommandError(f"{file}:{e.line}:{e.column}: {e.message}") from None
    try:
        text = source.decode("utf-8")
    except UnicodeDecodeError:
        raise CommandError(f"{file}: not UTF-8") from None

    async def put(store: Any) -> bool:
        account = await store.get_account(args.address)
        await store.put_sieve_script(account.id, name, text)
        if args.activate or await store.get_active_sieve_script(account.id) is None:
            await store.activate_sieve_script(account.id, name)
            return True
        return False

    active = with_store(args, put)
    print(f"script {name!r} stored" + (f" and active for {args.address}" if active else f" for {args.address}"))
    return 0


def _activate(args: argparse.Namespace, with_store: Any) -> int:
    name = args.name if args.action == "activate" else None

    async def activate(store: Any) -> None:
        await store.activate_sieve_script((await store.get_account(args.address)).id, name)

    with_store(args, activate)
    print(f"script {name!r} active for {args.address}" if name else f"no script active for {args.address}")
    return 0


def _delete(args: argparse.Namespace, with_store: Any) -> int:
    async def delete(store: Any) -> str:
        account = await store.get_account(args.address)
        name = getattr(args, "name", None)
        if name is None:                               # remove: the active one
            active = await store.get_active_sieve_script(account.id)
            if active is None:
                raise NotFound(f"no active Sieve script for {args.address}")
            name = active[0]
        await store.delete_sieve_script(account.id, name)
        return str(name)

    name = with_store(args, delete)
    print(f"script {name!r} deleted for {args.address}")
    return 0
