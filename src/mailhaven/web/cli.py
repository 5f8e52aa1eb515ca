"""``mailhaven token create|list|revoke ADDRESS``: app passwords (bearer tokens) for JMAP
clients (RFC 6750). A token is shown once; the store keeps its SHA-256 only."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from ..cli import with_store
from .auth import create_token, list_tokens, revoke_token


def cmd_create(args: argparse.Namespace) -> int:
    async def run(store: Any) -> str:
        account = await store.get_account(args.address)
        return await create_token(store, account.id, args.label)

    token = with_store(args, run)
    print(token)
    print(f"use it as 'Authorization: Bearer {token[:6]}…'; it is not shown again", file=sys.stderr)
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    async def run(store: Any) -> list[tuple[str, str, float]]:
        account = await store.get_account(args.address)
        return await list_tokens(store, account.id)

    for prefix, label, created in with_store(args, run):
        print(f"{prefix}\t{time.strftime('%Y-%m-%d %H:%M', time.gmtime(created))}\t{label}")
    return 0


def cmd_revoke(args: argparse.Namespace) -> int:
    async def run(store: Any) -> int:
        account = await store.get_account(args.address)
        return await revoke_token(store, account.id, args.id)

    n = with_store(args, run)
    if not n:
        print(f"mailhaven: no token {args.id} for {args.address}", file=sys.stderr)
        return 1
    print(f"revoked {n} token(s)")
    return 0


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("token", help="app passwords (bearer tokens) for JMAP clients")
    sub = p.add_subparsers(dest="token_command", required=True)
    a = sub.add_parser("create", help="print a new token for ADDRESS")
    a.add_argument("address")
    a.add_argument("--label", default="app")
    a.set_defaults(func=cmd_create)
    a = sub.add_parser("list", help="an account's tokens (id prefix, created, label)")
    a.add_argument("address")
    a.set_defaults(func=cmd_list)
    a = sub.add_parser("revoke", help="revoke by the id prefix 'list' shows")
    a.add_argument("address")
    a.add_argument("id")
    a.set_defaults(func=cmd_revoke)
