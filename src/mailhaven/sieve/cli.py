"""``mailhaven sieve ...``: a user's Sieve script, compiled at upload.

    mailhaven sieve put ADDRESS FILE [--name NAME]   # compile, store and activate (errors: FILE:LINE:COLUMN)
    mailhaven sieve show ADDRESS                      # print the active script
    mailhaven sieve remove ADDRESS                    # delete the active script (mail goes to INBOX again)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from mailhaven.sieve.compiler import compile_script
from mailhaven.sieve.errors import SieveError

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
    p.set_defaults(func=cmd_sieve)


def cmd_sieve(args: argparse.Namespace) -> int:
    from mailhaven.cli import CommandError, with_store

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
