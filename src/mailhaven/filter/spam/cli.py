"""``mailhaven spam ...``: teach the classifier from existing mail, keep allow/block lists.

    mailhaven spam train --spam bob@example.org Junk     # every message of the folder is spam
    mailhaven spam train --ham bob@example.org INBOX
    mailhaven spam allow bob@example.org friend@lancs.example   # or a domain
    mailhaven spam block bob@example.org spammy.example
    mailhaven spam unlist bob@example.org spammy.example
    mailhaven spam lists bob@example.org
"""

from __future__ import annotations

import argparse
from typing import Any

from ...store.api import NotFound, Store
from .train import train_uids


def register(sub: Any) -> None:
    p = sub.add_parser("spam", help="train the spam classifier, per-account allow and block lists")
    ssub = p.add_subparsers(dest="action", required=True)
    a = ssub.add_parser("train", help="learn every message of a folder as spam or as ham")
    kind = a.add_mutually_exclusive_group(required=True)
    kind.add_argument("--spam", action="store_true", help="the folder holds spam")
    kind.add_argument("--ham", action="store_true", help="the folder holds wanted mail")
    a.add_argument("address", help="the account's full address")
    a.add_argument("folder", help="folder name, e.g. Junk or INBOX")
    for name, text in (("allow", "never treat mail from this sender or domain as spam (when authenticated)"),
                       ("block", "always treat mail from this sender or domain as spam"),
                       ("unlist", "take the entry off both lists")):
        a = ssub.add_parser(name, help=text)
        a.add_argument("address", help="the account's full address")
        a.add_argument("entry", help="a sender address or a domain")
    ssub.add_parser("lists", help="the account's allow and block lists").add_argument("address")
    p.set_defaults(func=cmd_spam)


def cmd_spam(args: argparse.Namespace) -> int:
    from ...cli import CommandError, with_store

    async def run(store: Store) -> str:
        try:
            account = await store.get_account(args.address)
        except NotFound:
            raise CommandError(f"no account {args.address}") from None
        if args.action == "train":
            try:
                box = await store.get_mailbox(account.id, args.folder, counts=False)
            except NotFound:
                raise CommandError(f"no folder {args.folder!r} in {account.address}") from None
            uids = [m.uid for m in await store.list_messages(box.id)]
            count = await train_uids(store, account.id, box.id, uids, spam=args.spam)
            return f"learnt {count} message(s) from {box.name} as {'spam' if args.spam else 'ham'}"
        if args.action == "lists":
            entries = await store.spam_lists(account.id)
            return "\n".join(f"{kind} {entry}" for entry, kind in sorted(entries.items())) or "no entries"
        entry = args.entry.strip().lower()
        if not entry or " " in entry:
            raise CommandError(f"not an address or domain: {args.entry!r}")
        await store.set_spam_list(account.id, entry, None if args.action == "unlist" else args.action)
        return f"{entry}: {'off the lists' if args.action == 'unlist' else args.action}"

    print(with_store(args, run))
    return 0
