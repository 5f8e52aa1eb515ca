"""``mailhaven dkim generate|list``: signing keys and their TXT records. The rest of a
domain's records: ``mailhaven dns records`` (dnscli.py)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ..cli import load
from . import dkim


def _txt(value: str) -> str:
    """A TXT value as zone-file strings of at most 255 octets each (RFC 1035 3.3.14)."""
    chunks = [value[i:i + 255] for i in range(0, len(value), 255)] or [""]
    return " ".join(f'"{c}"' for c in chunks)


def cmd_generate(args: argparse.Namespace) -> int:
    config = load(args)
    try:
        key = dkim.generate(config.data_dir, args.domain, args.selector, args.algorithm)
    except (ValueError, FileExistsError) as exc:
        print(f"mailhaven: {exc}", file=sys.stderr)
        return 1
    print(f"key written to {key.path}; outbound mail from {key.domain} is signed with it from the next start")
    print("publish:")
    print(f"{key.selector}._domainkey.{key.domain}. IN TXT {_txt(key.public_record())}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    config = load(args)
    keys = dkim.load_keys(config.data_dir)
    if not keys:
        print("no DKIM keys; create one with: mailhaven dkim generate DOMAIN")
    for key in keys:
        print(f"{key.domain}\t{key.selector}\t{key.algorithm}\t{key.path}")
    return 0


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("dkim", help="DKIM signing keys for outbound mail")
    sub = p.add_subparsers(dest="dkim_command", required=True)
    a = sub.add_parser("generate", help="create a key and print the TXT record to publish")
    a.add_argument("domain")
    a.add_argument("--selector", default=None, help="default: mh<year> for rsa, mh<year>e for ed25519")
    a.add_argument("--algorithm", choices=("rsa", "ed25519"), default="rsa")
    a.set_defaults(func=_with_selector(cmd_generate))
    a = sub.add_parser("list", help="the keys in use")
    a.set_defaults(func=cmd_list)


def _with_selector(fn: Any) -> Any:
    def run(args: argparse.Namespace) -> int:
        if args.selector is None:
            import time

            year = time.gmtime().tm_year
            args.selector = f"mh{year}" + ("e" if args.algorithm == "ed25519" else "")
        return int(fn(args))

    return run
