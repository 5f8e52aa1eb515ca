"""``mailhaven queue list|show|retry|hold|release|delete``: the outbound queue by hand.

They work while the server runs: they change rows in the store, and the runner sees the
change at its next pass (within ``[queue] poll``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from ..cli import with_store
from .store import Entry, queue_store


def _age(seconds: float) -> str:
    seconds = max(0, int(seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


async def _queue(store: Any) -> Any:
    q = queue_store(store)
    await q.open()
    return q


def cmd_list(args: argparse.Namespace) -> int:
    async def run(store: Any) -> list[Entry]:
        return await (await _queue(store)).list()

    entries = with_store(args, run)
    if args.json:
        print(json.dumps([e.as_json() for e in entries], indent=2))
        return 0
    if not entries:
        print("queue is empty")
        return 0
    now = time.time()
    print(f"{'ID':>6} {'STATE':7} {'AGE':>5} {'TRIES':>5} {'NEXT':>5}  FROM -> TO")
    for e in entries:
        nxt = _age(e.next_attempt - now) if e.state == "queued" else "-"
        print(f"{e.id:>6} {e.state:7} {_age(now - e.created):>5} {e.attempts:>5} {nxt:>5}  "
              f"<{e.mail_from}> -> <{e.rcpt}>")
        if e.last_reply:
            print(f"{'':>6} {e.last_reply}")
    print(f"{len(entries)} recipient(s) queued")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    async def run(store: Any) -> tuple[Entry | None, bytes]:
        entry = await (await _queue(store)).get(args.id)
        if entry is None:
            return None, b""
        return entry, await store.read_blob(entry.blob_id)

    entry, raw = with_store(args, run)
    if entry is None:
        print(f"mailhaven: no queue entry {args.id}", file=sys.stderr)
        return 1
    for key, value in entry.as_json().items():
        print(f"{key}: {value}")
    print()
    sys.stdout.flush()
    sys.stdout.buffer.write(raw)
    return 0


def _set_state(args: argparse.Namespace, state: str, *, retry_now: bool = False) -> int:
    entry_id = None if getattr(args, "all", False) else args.id
    if entry_id is None and not getattr(args, "all", False):
        print("mailhaven: give an ID or --all", file=sys.stderr)
        return 2

    async def run(store: Any) -> int:
        return await (await _queue(store)).set_state(entry_id, state, now=time.time() if retry_now else None)

    n = with_store(args, run)
    if not n:
        print(f"mailhaven: no queue entry {entry_id}", file=sys.stderr)
        return 1
    print(f"{n} entr{'y' if n == 1 else 'ies'} {state}{' (due now)' if retry_now else ''}")
    return 0


def cmd_retry(args: argparse.Namespace) -> int:
    return _set_state(args, "queued", retry_now=True)


def cmd_hold(args: argparse.Namespace) -> int:
    return _set_state(args, "held")


def cmd_release(args: argparse.Namespace) -> int:
    return _set_state(args, "queued", retry_now=True)


def cmd_delete(args: argparse.Namespace) -> int:
    async def run(store: Any) -> bool:
        return await (await _queue(store)).delete(args.id)

    if not with_store(args, run):
        print(f"mailhaven: no queue entry {args.id}", file=sys.stderr)
        return 1
    print(f"entry {args.id} deleted (no DSN is sent)")
    return 0


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("queue", help="the outbound queue: list, show, retry, hold, release, delete")
    sub = p.add_subparsers(dest="queue_command", required=True)
    a = sub.add_parser("list", help="every queued recipient, with its last reply")
    a.add_argument("--json", action="store_true")
    a.set_defaults(func=cmd_list)
    a = sub.add_parser("show", help="one entry and its message")
    a.add_argument("id", type=int)
    a.set_defaults(func=cmd_show)
    a = sub.add_parser("retry", help="attempt now")
    g = a.add_mutually_exclusive_group(required=True)
    g.add_argument("id", type=int, nargs="?")
    g.add_argument("--all", action="store_true")
    a.set_defaults(func=cmd_retry)
    a = sub.add_parser("hold", help="stop attempting an entry until released")
    a.add_argument("id", type=int)
    a.set_defaults(func=cmd_hold)
    a = sub.add_parser("release", help="attempt a held entry again (now)")
    a.add_argument("id", type=int)
    a.set_defaults(func=cmd_release)
    a = sub.add_parser("delete", help="drop an entry without a DSN")
    a.add_argument("id", type=int)
    a.set_defaults(func=cmd_delete)
