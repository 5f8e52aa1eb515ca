"""``mailhaven import mbox|maildir|imap`` and ``mailhaven export``.

Progress goes to stderr (a redrawn line on a terminal, a line every few seconds
otherwise), the summary last. A message that cannot be imported is reported and
skipped; the exit status is 0 when the run completed (even with skips), 1 when it could
not run at all (no such user, unreadable source, login refused).
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from ..cli import CommandError, load, open_store
from . import imapsync
from .progress import Progress
from .store_io import Importer, export_account, import_maildir, import_mbox

PASSWORD_ENV = "MAILHAVEN_IMPORT_PASSWORD"


def _run(args: argparse.Namespace, work: Any, verb: str) -> int:
    config = load(args)
    progress = Progress(verb=verb, quiet=getattr(args, "quiet", False))

    async def main() -> None:
        store = await open_store(args)
        try:
            account = await store.get_account(args.user)
            await work(store, account, progress, config)
        finally:
            await store.close()

    try:
        asyncio.run(main())
    except FileNotFoundError as exc:
        raise CommandError(str(exc)) from None
    except imapsync.ImapSourceError as exc:
        progress.finish()
        raise CommandError(str(exc)) from None
    except KeyboardInterrupt:
        progress.finish()
        print("interrupted; run the same command again to continue" if verb == "copied"
              else "interrupted", file=sys.stderr)
        return 130
    progress.finish()
    return 0


def cmd_import_mbox(args: argparse.Namespace) -> int:
    path = Path(args.path)
    if not path.exists():
        raise CommandError(f"{path}: no such file or directory")

    async def work(store: Any, account: Any, progress: Progress, config: Any) -> None:
        importer = Importer(store, account, progress, max_size=config.limits.message_size)
        try:
            await import_mbox(importer, path, args.folder, args.mbox_format)
        finally:
            await importer.close()

    return _run(args, work, "imported")


def cmd_import_maildir(args: argparse.Namespace) -> int:
    path = Path(args.path)
    if not path.is_dir():
        raise CommandError(f"{path}: not a directory")

    async def work(store: Any, account: Any, progress: Progress, config: Any) -> None:
        importer = Importer(store, account, progress, max_size=config.limits.message_size)
        try:
            await import_maildir(importer, path, args.folder)
        finally:
            await importer.close()

    return _run(args, work, "imported")


def _password(args: argparse.Namespace, source: imapsync.Source) -> str:
    if args.password_command:
        result = subprocess.run(args.password_command, shell=True, capture_output=True, text=True)
        if result.returncode != 0:
            raise CommandError(f"--password-command failed ({result.returncode}): {result.stderr.strip()}")
        return result.stdout.split("\n", 1)[0].rstrip("\r")
    if os.environ.get(PASSWORD_ENV):
        return os.environ[PASSWORD_ENV]
    if sys.stdin.isatty():
        return getpass.getpass(f"Password for {source.user} at {source.host}: ")
    raise CommandError(f"no password: use --password-command CMD or set {PASSWORD_ENV}")


def cmd_import_imap(args: argparse.Namespace) -> int:
    try:
        source = imapsync.parse_source(args.source)
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    mapping: dict[str, str] = {}
    for item in args.folder_map or ():
        src, sep, dst = item.partition("=")
        if not sep or not src or not dst:
            raise CommandError(f"--folder-map: expected SRC=DST, got {item!r}")
        mapping[src] = dst
    password = _password(args, source)

    async def work(store: Any, account: Any, progress: Progress, config: Any) -> None:
        client = await asyncio.to_thread(imapsync.ImapSource, source, password, insecure=args.insecure)
        importer = Importer(store, account, progress, max_size=config.limits.message_size)
        try:
            await imapsync.import_imap(importer, client, mapping)
        finally:
            await importer.close()
            await asyncio.to_thread(client.close)

    return _run(args, work, "copied")


def cmd_export(args: argparse.Namespace) -> int:
    target = Path(args.path)
    if target.exists() and any(target.iterdir()) and not args.force:
        raise CommandError(f"{target} is not empty (use --force to write into it anyway)")

    async def work(store: Any, account: Any, progress: Progress, config: Any) -> None:
        await export_account(store, account, args.format, target, progress, args.mbox_format)

    return _run(args, work, "exported")


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("import", help="import mail from mbox, Maildir or another IMAP server")
    isub = p.add_subparsers(dest="source_kind", required=True)

    a = isub.add_parser("mbox", help="an mbox file, or a directory of *.mbox files (our export)")
    a.add_argument("path", metavar="FILE")
    a.add_argument("--user", required=True, metavar="ADDRESS")
    a.add_argument("--folder", default=None, help="target folder (default INBOX; a prefix for a directory)")
    a.add_argument("--mbox-format", choices=("mboxrd", "mboxcl2"), default="mboxrd")
    a.add_argument("--quiet", action="store_true", help="only problems and the summary")
    a.set_defaults(func=cmd_import_mbox)

    a = isub.add_parser("maildir", help="a Maildir with Maildir++ subfolders")
    a.add_argument("path", metavar="DIR")
    a.add_argument("--user", required=True, metavar="ADDRESS")
    a.add_argument("--folder", default=None, help="target folder for the Maildir's INBOX (a prefix for the rest)")
    a.add_argument("--quiet", action="store_true")
    a.set_defaults(func=cmd_import_maildir)

    a = isub.add_parser("imap", help="copy every folder from another IMAP server (resumable, idempotent)")
    a.add_argument("--from", dest="source", required=True, metavar="URL",
                   help="imaps://user@host[:port] (or imap:// with STARTTLS)")
    a.add_argument("--user", required=True, metavar="ADDRESS")
    a.add_argument("--password-command", default=None, metavar="CMD",
                   help=f"prints the source password (default: ${PASSWORD_ENV}, else a prompt)")
    a.add_argument("--folder-map", action="append", metavar="SRC=DST", help="rename a folder (and its children)")
    a.add_argument("--insecure", action="store_true",
                   help="do not verify the server's certificate; allow imap:// without STARTTLS")
    a.add_argument("--quiet", action="store_true")
    a.set_defaults(func=cmd_import_imap)

    p = subparsers.add_parser("export", help="export an account to mbox files or a Maildir")
    p.add_argument("path", metavar="DIR")
    p.add_argument("--user", required=True, metavar="ADDRESS")
    p.add_argument("--format", choices=("mbox", "maildir"), required=True)
    p.add_argument("--mbox-format", choices=("mboxrd", "mboxcl2"), default="mboxrd")
    p.add_argument("--force", action="store_true", help="write into a non-empty directory")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_export)
