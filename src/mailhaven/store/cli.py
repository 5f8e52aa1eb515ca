"""``mailhaven store ...``: check and clean the store, move it to PostgreSQL.

    mailhaven store check                 # consistency of rows and message bytes (exit 1 on problems)
    mailhaven store gc [--grace 1h]       # remove message bytes no row names
    mailhaven store reindex               # recompute summaries, IMAP structures, header blocks, search text
                                          # (a lost search.db needs none: `serve` refills it by itself)
    mailhaven store migrate-to-postgres --dsn postgresql://... [--schema mailhaven]
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import Any

import asyncpg

from ..config import parse_duration


def register(sub: Any) -> None:
    p = sub.add_parser("store", help="check the store, collect garbage, reindex, move to PostgreSQL")
    ssub = p.add_subparsers(dest="action", required=True)
    ssub.add_parser("check", help="report inconsistencies (exit status 1 when there are any)")
    a = ssub.add_parser("gc", help="remove message bytes that no row names")
    a.add_argument("--grace", default="1h", help="only bytes older than this (default 1h)")
    ssub.add_parser("reindex", help="recompute every message's summary, IMAP ENVELOPE/BODYSTRUCTURE, header "
                    "block and search text from its bytes (after an upgrade; safe while the server runs)")
    a = ssub.add_parser("migrate-to-postgres", help="copy this SQLite store into an empty PostgreSQL schema")
    a.add_argument("--dsn", required=True, help="postgresql://user:password@host/database")
    a.add_argument("--schema", default="mailhaven", help="target schema (default mailhaven); must be empty")
    p.set_defaults(func=cmd_store)


def cmd_store(args: argparse.Namespace) -> int:
    from ..cli import CommandError, load, open_and_close, with_store

    if args.action == "check":
        problems: list[str] = with_store(args, _check)
        for line in problems:
            print(line)
        print("store ok" if not problems else f"{len(problems)} problem(s)")
        return 1 if problems else 0
    if args.action == "gc":
        grace = parse_duration(args.grace)

        async def gc(store: Any) -> int:
            collect = getattr(store, "collect_garbage", None)
            if collect is None:
                raise CommandError("this store has no garbage collector")
            return int(await collect(grace=grace))

        print(f"removed {with_store(args, gc)} unreferenced blob(s)")
        return 0
    if args.action == "reindex":
        async def reindex(store: Any) -> int:
            return int(await store.reindex())

        print(f"reindexed {with_store(args, reindex)} message(s)")
        return 0
    config = load(args)
    if config.store.backend != "sqlite":
        raise CommandError("the configured store is not SQLite: nothing to migrate")
    from .migrate import MigrationError, sqlite_to_postgres

    # Opening the store finds a search index that is not mailhaven.db's and empties it,
    # listing a refill, so that none of its text is copied; the migration then asks for
    # the refill to end first.
    open_and_close(args)
    try:
        counts = asyncio.run(sqlite_to_postgres(Path(config.data_dir), args.dsn, args.schema, progress=print))
    except (MigrationError, ValueError) as exc:
        raise CommandError(str(exc)) from None
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise CommandError(f"migration failed, nothing was written: {exc}") from None
    print(f"copied {counts.get('messages', 0)} message(s) of {counts.get('accounts', 0)} account(s); "
          f'now set [store] backend = "postgres", dsn and schema = "{args.schema}" and start the nodes')
    return 0


async def _check(store: Any) -> list[str]:
    check = getattr(store, "integrity_check", None)
    return list(await check()) if check is not None else []
