"""``mailhaven security ...``: the login throttle's blocks (auth/throttle.py).

    mailhaven security blocked [--json]    # addresses (and address+account pairs) refused now
    mailhaven security unblock ADDRESS     # forget an address's failures (IPv6: any address of its /64)

The counts live in the store, so these work while the server runs and act on every
process and node at once.
"""

from __future__ import annotations

import argparse
import datetime
import ipaddress
import json
import time
from typing import Any

from .throttle import source_address


def register(sub: Any) -> None:
    p = sub.add_parser("security", help="login throttle: list and lift blocks")
    ssub = p.add_subparsers(dest="action", required=True)
    a = ssub.add_parser("blocked", help="addresses refused for too many failed logins")
    a.add_argument("--json", action="store_true")
    a = ssub.add_parser("unblock", help="lift an address's block and forget its failures")
    a.add_argument("address", help="an IP address (an IPv6 address stands for its /64)")
    p.set_defaults(func=cmd_security)


def _when(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def cmd_security(args: argparse.Namespace) -> int:
    from ..cli import CommandError, with_store

    if args.action == "blocked":
        now = time.time()

        async def blocked(store: Any) -> list[Any]:
            return list(await store.login_blocks(now))

        records = with_store(args, blocked)
        if args.json:
            print(json.dumps([{"address": r.address, "account": r.account or None, "failures": r.failures,
                               "last_failure": r.last_failure, "blocked_until": r.blocked_until}
                              for r in records], indent=2))
            return 0
        for r in records:
            who = f"{r.address} as {r.account}" if r.account else r.address
            left = int(r.blocked_until - now)
            print(f"{who}\t{r.failures} failures\tblocked until {_when(r.blocked_until)} ({left} s)")
        if not records:
            print("no blocked addresses")
        return 0
    text = args.address.strip()
    try:
        ipaddress.ip_address(text.split("/")[0])
    except ValueError:
        raise CommandError(f"not an IP address: {args.address!r}") from None
    address = source_address(text.split("/")[0])

    async def unblock(store: Any) -> int:
        return int(await store.login_unblock(address))

    removed = with_store(args, unblock)
    print(f"unblocked {address} ({removed} record(s) removed)" if removed else f"{address} was not blocked")
    return 0
