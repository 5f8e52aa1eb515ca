"""``mailhaven setup``: a first configuration in one step, like ``mox quickstart``.

It asks for (or takes as flags) the server's hostname, the first mail domain and the
administrator's address, then writes ``DATA/mailhaven.toml`` with the standard ports and
certificates by ACME, adds the domain, creates its DKIM key and the administrator's account
(with a generated password, printed once), and prints the DNS records to publish
(``dnsrecords.py``, as ``dns records`` does) and what to do next. An existing configuration
is never overwritten.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import secrets
import sys
import time
from pathlib import Path
from typing import TextIO

from .cli import CommandError, command_name, shown_path
from .config import ConfigError, load_config
from .dnsrecords import expected_records
from .queue import dkim
from .store import create_store

LETS_ENCRYPT = "https://acme-v02.api.letsencrypt.org/directory"
STANDARD_PORTS = {
    "smtp": 25, "submission": 587, "submissions": 465, "imap": 143, "imaps": 993,
    "pop3": 110, "pop3s": 995, "http": 443, "acme_http": 80,
}
"""RFC 5321 (25), RFC 6409 (587), RFC 8314 (465, 993, 995), RFC 3501 (143), RFC 1939 (110),
HTTPS for the webmail, JMAP and the MTA-STS policy (443), ACME http-01 (80)."""
_NAME = re.compile(r"(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z][a-z0-9-]{0,62}[a-z0-9]")
QUESTIONS = (
    ("hostname", "This server's public name (its A/AAAA and MX target), e.g. mail.example.org"),
    ("domain", "The first mail domain, e.g. example.org"),
    ("admin", "The administrator's address (the first account, the ACME contact)"),
)


def _ask(prompt: str, stdin: TextIO, interactive: bool) -> str:
    if interactive:
        return input(f"{prompt}: ").strip()
    line = stdin.readline()
    if not line:
        raise CommandError(f"no answer for: {prompt} (give it as a flag)")
    return line.strip()


def _answers(args: argparse.Namespace) -> dict[str, str]:
    interactive = sys.stdin.isatty()
    values = {}
    for key, prompt in QUESTIONS:
        value = getattr(args, key) or ""
        if not value:
            value = _ask(prompt, sys.stdin, interactive)
        values[key] = value.lower().rstrip(".")
    for key in ("hostname", "domain"):
        if not _NAME.fullmatch(values[key]):
            raise CommandError(f"{key}: {values[key]!r} is not a domain name")
    local, _, domain = values["admin"].rpartition("@")
    if not local or domain != values["domain"]:
        raise CommandError(f"admin: expected an address at {values['domain']}, got {values['admin']!r}")
    return values


def config_text(hostname: str, admin: str, acme_directory: str, ca_file: str) -> str:
    listen = "\n".join(f'{name} = ":{port}"' for name, port in STANDARD_PORTS.items())
    acme = f'directory = "{acme_directory}"\nemail = "{admin}"\n'
    if ca_file:
        acme += f'ca_file = "{ca_file}"\n'
    return (f"# Written by mailhaven setup on {time.strftime('%Y-%m-%d')}.\n"
            f'hostname = "{hostname}"\n\n[listen]\n{listen}\n\n'
            "# Certificates for the hostname and the mta-sts./autoconfig. names of every domain\n"
            f"[acme]\n{acme}")


async def _create(config_path: Path, data: Path, domain: str, admin: str, password: str) -> None:
    config = load_config(data, config_path)
    store = create_store(config)
    await store.open()
    try:
        if not await store.is_local_domain(domain):
            await store.add_domain(domain)
        await store.add_account(admin, password)
    finally:
        await store.close()


def cmd_setup(args: argparse.Namespace) -> int:
    data = Path(args.data)
    config_path = Path(args.config) if args.config else data / "mailhaven.toml"
    if config_path.exists():
        raise CommandError(f"{config_path} exists: setup writes a new configuration only")
    values = _answers(args)
    hostname, domain, admin = values["hostname"], values["domain"], values["admin"]
    data.mkdir(parents=True, exist_ok=True)
    text = config_text(hostname, admin, args.acme_directory, args.acme_ca_file)
    config_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = config_path.with_name(config_path.name + ".tmp")
    tmp.write_text(text)
    try:
        config = load_config(data, tmp)  # what we wrote must load
    except ConfigError as exc:
        tmp.unlink()
        raise CommandError(f"the configuration would not load: {exc}") from None
    tmp.replace(config_path)
    password = secrets.token_urlsafe(12)
    asyncio.run(_create(config_path, data, domain, admin, password))
    key = dkim.generate(data, domain, f"mh{time.gmtime().tm_year}", "rsa")
    admin_cmd = f"{command_name()} --data {shown_path(str(data))}"
    if args.config:
        admin_cmd += f" --config {shown_path(args.config)}"
    out = [
        f"Configuration written to {config_path}.",
        f"Account {admin} created with password: {password}",
        "  (shown once; change it with: " + f"{admin_cmd} user passwd {admin})",
        f"DKIM key {key.selector} for {domain} in {key.path}.",
        "",
        f"Publish these DNS records for {domain}:",
        *(r.zone_line() for r in expected_records(config, domain, [key])),
        f"{hostname}. IN A / AAAA  this server's public addresses, with reverse DNS (PTR) naming {hostname}",
        "",
        "Next steps:",
        f"  1. Publish the records above; check them with: {admin_cmd} dns check {domain}",
        "  2. Open ports 25, 80, 110, 143, 443, 465, 587, 993, 995 to this machine.",
        f"  3. Start the server: {admin_cmd} serve",
        "     (it gets its certificate by ACME once the names resolve here).",
        f"  4. Log in with {admin} in a mail client (autoconfig) or at https://{hostname}/.",
    ]
    print("\n".join(out))
    return 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("setup", help="write a first configuration, domain, DKIM key and account")
    p.add_argument("--hostname", help="this server's public name, e.g. mail.example.org")
    p.add_argument("--domain", help="the first mail domain, e.g. example.org")
    p.add_argument("--admin", help="the administrator's address, e.g. admin@example.org")
    p.add_argument("--acme-directory", default=LETS_ENCRYPT, help="ACME CA (default Let's Encrypt)")
    p.add_argument("--acme-ca-file", default="", help="trust for the ACME CA's HTTPS (test CAs)")
    p.set_defaults(func=cmd_setup)
