"""``mailhaven dkim generate|list`` and ``mailhaven dns records DOMAIN``: what to publish.

``dns records`` prints, as zone-file lines, everything other servers look up about a
domain served here: MX (RFC 5321), SPF (RFC 7208), a DKIM key per selector (RFC 6376 /
8463), DMARC (RFC 7489), TLS reporting (RFC 8460) and the SRV records mail clients use to
find submission, IMAP and POP3 (RFC 6186, RFC 8314).
"""

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


def cmd_records(args: argparse.Namespace) -> int:
    config = load(args)
    domain = args.domain.lower().rstrip(".")
    host = config.hostname.rstrip(".")
    lines = [
        f"; mail for {domain} is received and sent by {host}",
        f"{domain}. IN MX 10 {host}.",
        f"{domain}. IN TXT {_txt('v=spf1 mx -all')}",
    ]
    keys = [k for k in dkim.load_keys(config.data_dir) if k.domain == domain]
    for key in keys:
        lines.append(f"{key.selector}._domainkey.{domain}. IN TXT {_txt(key.public_record())}")
    if not keys:
        lines.append(f"; no DKIM key for {domain} yet: mailhaven dkim generate {domain}")
    lines += [
        f"_dmarc.{domain}. IN TXT {_txt(f'v=DMARC1; p=quarantine; adkim=s; aspf=s; rua=mailto:postmaster@{domain}')}",
        f"_smtp._tls.{domain}. IN TXT {_txt(f'v=TLSRPTv1; rua=mailto:postmaster@{domain}')}",
        f"_submissions._tcp.{domain}. IN SRV 0 1 465 {host}.",
        f"_submission._tcp.{domain}. IN SRV 0 1 587 {host}.",
        f"_imaps._tcp.{domain}. IN SRV 0 1 993 {host}.",
        f"_imap._tcp.{domain}. IN SRV 0 1 143 {host}.",
        f"_pop3s._tcp.{domain}. IN SRV 0 1 995 {host}.",
        f"; and the address records of {host} (A/AAAA) with matching reverse DNS (PTR)",
    ]
    print("\n".join(lines))
    if _not_public(host):
        print(f"mailhaven: warning: the hostname is {host!r}, which other servers cannot reach; set "
              f"hostname = \"mail.{domain}\" (this server's public name) in the config before publishing "
              "these records", file=sys.stderr)
    return 0


def _not_public(host: str) -> bool:
    """``localhost``, a bare name or an IP literal: nothing an MX record may name (RFC 5321 5.1)."""
    import ipaddress

    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        pass
    return host == "localhost" or host.endswith(".localhost") or "." not in host


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
    p = subparsers.add_parser("dns", help="DNS records to publish")
    sub = p.add_subparsers(dest="dns_command", required=True)
    a = sub.add_parser("records", help="MX, SPF, DKIM, DMARC, TLS-RPT and client SRV records for a domain")
    a.add_argument("domain")
    a.set_defaults(func=cmd_records)


def _with_selector(fn: Any) -> Any:
    def run(args: argparse.Namespace) -> int:
        if args.selector is None:
            import time

            year = time.gmtime().tm_year
            args.selector = f"mh{year}" + ("e" if args.algorithm == "ed25519" else "")
        return int(fn(args))

    return run
