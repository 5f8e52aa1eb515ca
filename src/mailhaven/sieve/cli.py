"""``mailhaven sieve ...``: a user's Sieve script, compiled at upload.

    mailhaven sieve put ADDRESS FILE [--name NAME]   # compile, store and activate (errors: FILE:LINE:COLUMN)
    mailhaven sieve show ADDRESS                      # print the active script
    mailhaven sieve remove ADDRESS                    # delete the active script (mail goes to INBOX again)
    mailhaven sieve test SCRIPT MESSAGE [--from ADDR] [--to ADDR] [--json]   # what it would do, no delivery
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

DEFAULT_NAME = "main"


def register(sub: Any) -> None:
    p = sub.add_parser("sieve", help="a user's Sieve script: put (compile and activate), show, remove")
    ssub = p.add_subparsers(dest="action", required=True)
    a = ssub.add_parser("put", help="compile FILE ('-' for stdin), store it and make it the active script")
    a.add_argument("address")
    a.add_argument("file")
    a.add_argument("--name", default=DEFAULT_NAME, help=f"the script's name (default {DEFAULT_NAME})")
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

    if args.action == "put":
        source = sys.stdin.buffer.read() if args.file == "-" else Path(args.file).read_bytes()
        try:
            compile_script(source)                         # errors at upload, never at delivery
        except SieveError as e:
            raise CommandError(f"{args.file}:{e.line}:{e.column}: {e.message}") from None
        text = source.decode("utf-8")

        async def put(store: Any) -> None:
            account = await store.get_account(args.address)
            await store.put_sieve_script(account.id, args.name, text)
            await store.activate_sieve_script(account.id, args.name)

        with_store(args, put)
        print(f"script {args.name!r} active for {args.address}")
        return 0

    async def active(store: Any) -> tuple[int, tuple[str, str] | None]:
        account = await store.get_account(args.address)
        return account.id, await store.get_active_sieve_script(account.id)

    if args.action == "show":
        _, found = with_store(args, active)
        if found is None:
            raise CommandError(f"no active Sieve script for {args.address}")
        sys.stdout.write(found[1] if found[1].endswith("\n") else found[1] + "\n")
        return 0

    async def remove(store: Any) -> str:
        account_id, found = await active(store)
        if found is None:
            raise CommandError(f"no active Sieve script for {args.address}")
        await store.delete_sieve_script(account_id, found[0])
        return found[0]

    name = with_store(args, remove)
    print(f"script {name!r} removed for {args.address}")
    return 0
