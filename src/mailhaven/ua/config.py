"""The user agent's accounts: ``$XDG_CONFIG_HOME/mailhaven/accounts.toml`` (default
``~/.config/mailhaven/accounts.toml``)::

    [accounts.work]
    address = "alice@example.org"
    name = "Alice Liddell"
    imap = "imaps://mail.example.org"            # imaps:// (993) or imap:// (143, STARTTLS)
    smtp = "submissions://mail.example.org"      # submissions:// (465) or submission:// (587, STARTTLS)
    user = "alice@example.org"                   # default: address
    password_command = "pass show mail/work"     # or the system keyring, or $MAILHAVEN_PASSWORD
    ca_file = "/srv/mailhaven/data/tls/cert.pem" # trust this certificate (a server's self-signed one)
    insecure = false                             # true: do not verify certificates (test servers only)
    default = true

A password written in the file is refused unless ``allow_plaintext_password = true`` says
the user means it. TLS is always used, except ``imap://``/``submission://`` to a loopback
address with ``starttls = false``. A key the agent does not know stops it with the key's
name (and the known key it resembles), so a typo never silently drops a setting.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import shlex
import subprocess
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

PASSWORD_ENV = "MAILHAVEN_PASSWORD"

ACCOUNT_KEYS = ("address", "name", "imap", "smtp", "user", "password_command", "password",
                "allow_plaintext_password", "ca_file", "insecure", "starttls", "default")
"""Every key an [accounts.NAME] table may have."""

ACCOUNTS_HELP = """\
The accounts file ({path}) names one or more accounts:

  [accounts.work]
  address = "alice@example.org"
  name = "Alice Liddell"                      # optional display name
  imap = "imaps://mail.example.org"           # or imap://host[:port] (STARTTLS)
  smtp = "submissions://mail.example.org"     # or submission://host[:port] (587, STARTTLS)
  user = "alice@example.org"                  # login name; default: address
  password_command = "pass show mail/work"    # or the system keyring, or $MAILHAVEN_PASSWORD
  ca_file = "/path/to/mailhaven/data/tls/cert.pem"   # trust this certificate file
  insecure = false                            # true: no certificate check (test servers only)
  default = true                              # the account used without --account

Against your own Mailhaven, which makes a self-signed certificate in DATA/tls/cert.pem,
point ca_file at that file (relative paths are read from the accounts file's folder);
the server's certificate is then checked like any other. A password written in the file
is refused unless allow_plaintext_password = true is set as well."""


class UAError(Exception):
    """A problem to report in one line (bad config, server refused, no such message)."""


@dataclass(frozen=True, kw_only=True)
class Endpoint:
    host: str
    port: int
    implicit_tls: bool
    starttls: bool


@dataclass(frozen=True, kw_only=True)
class Account:
    name: str
    address: str
    display_name: str
    user: str
    imap: Endpoint
    smtp: Endpoint
    password_command: str | None
    password: str | None
    insecure: bool
    ca_file: str | None = None
    """A PEM file of certificates to trust instead of the system's (a self-signed server's own)."""

    def get_password(self) -> str:
        if self.password_command:
            try:
                out = subprocess.run(self.password_command, shell=True, capture_output=True, text=True, timeout=60)
            except (OSError, subprocess.TimeoutExpired) as exc:
                raise UAError(f"password_command failed: {exc}") from None
            if out.returncode != 0:
                raise UAError(f"password_command exited {out.returncode}: {out.stderr.strip()[:200]}")
            return out.stdout.rstrip("\r\n")
        if self.password is not None:
            return self.password
        if os.environ.get(PASSWORD_ENV):
            return os.environ[PASSWORD_ENV]
        try:
            import keyring  # type: ignore[import-not-found]
        except ImportError:
            keyring = None
        if keyring is not None:
            secret = keyring.get_password("mailhaven", f"{self.user}@{self.imap.host}")
            if secret:
                return str(secret)
        raise UAError(f"no password for {self.name}: set password_command in the account, "
                      f"or ${PASSWORD_ENV}, or store it in the system keyring")


def config_path(explicit: str | None = None) -> Path:
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "mailhaven" / "accounts.toml"


def _endpoint(url: str, kind: str) -> Endpoint:
    parts = urlsplit(url if "://" in url else f"{'imaps' if kind == 'imap' else 'submissions'}://{url}")
    scheme = parts.scheme.lower()
    table = {"imap": {"imaps": (993, True), "imap": (143, False)},
             "smtp": {"submissions": (465, True), "smtps": (465, True), "submission": (587, False),
                      "smtp": (587, False)}}[kind]
    if scheme not in table or not parts.hostname:
        raise UAError(f"bad {kind} address {url!r} (use {' or '.join(s + '://host[:port]' for s in table)})")
    default_port, implicit = table[scheme]
    return Endpoint(host=parts.hostname, port=parts.port or default_port, implicit_tls=implicit, starttls=not implicit)


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def load_accounts(path: Path) -> dict[str, Account]:
    if not path.exists():
        raise UAError(f"no accounts file at {path}; create one (see 'mailhaven mail --help')")
    try:
        data = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UAError(f"{path}: {exc}") from None
    accounts: dict[str, Account] = {}
    default = None
    for name, raw in (data.get("accounts") or {}).items():
        if not isinstance(raw, dict):
            raise UAError(f"{path}: accounts.{name} must be a table")
        accounts[name] = _account(name, raw, path)
        if raw.get("default"):
            default = name
    if not accounts:
        raise UAError(f"{path}: no [accounts.NAME] tables")
    if default:
        accounts = {default: accounts[default], **{k: v for k, v in accounts.items() if k != default}}
    return accounts


def _account(name: str, raw: dict[str, Any], path: Path) -> Account:
    for key in raw:
        if key not in ACCOUNT_KEYS:
            close = difflib.get_close_matches(key, ACCOUNT_KEYS, n=1)
            hint = f"; did you mean {close[0]}?" if close else f" (known: {', '.join(ACCOUNT_KEYS)})"
            raise UAError(f"{path}: accounts.{name}.{key} is not a known key{hint}")
    address = raw.get("address")
    if not isinstance(address, str) or "@" not in address:
        raise UAError(f"{path}: accounts.{name}.address must be an email address")
    for key in ("imap", "smtp"):
        if not isinstance(raw.get(key), str):
            raise UAError(f"{path}: accounts.{name}.{key} is required")
    password = raw.get("password")
    if password is not None and not raw.get("allow_plaintext_password"):
        raise UAError(f"{path}: accounts.{name}.password is a plain-text password; use password_command "
                      "(or set allow_plaintext_password = true if you really mean it)")
    imap = _endpoint(raw["imap"], "imap")
    smtp = _endpoint(raw["smtp"], "smtp")
    if raw.get("starttls") is False:
        if not all(_loopback(ep.host) for ep in (imap, smtp)):
            raise UAError(f"{path}: accounts.{name}.starttls = false is only allowed for loopback servers")
        imap = Endpoint(host=imap.host, port=imap.port, implicit_tls=imap.implicit_tls, starttls=False)
        smtp = Endpoint(host=smtp.host, port=smtp.port, implicit_tls=smtp.implicit_tls, starttls=False)
    command = raw.get("password_command")
    ca_file = None
    if raw.get("ca_file") is not None:
        ca_path = path.parent / Path(str(raw["ca_file"])).expanduser()
        if not ca_path.is_file():
            raise UAError(f"{path}: accounts.{name}.ca_file: no file {ca_path}")
        ca_file = str(ca_path)
    return Account(ca_file=ca_file, name=name, address=address, display_name=str(raw.get("name", "")), user=str(raw.get("user", address)),
                   imap=imap, smtp=smtp, password_command=str(command) if command else None,
                   password=str(password) if password is not None else None, insecure=bool(raw.get("insecure")))


def pick(accounts: dict[str, Account], name: str | None) -> Account:
    if name is None:
        return next(iter(accounts.values()))
    if name not in accounts:
        raise UAError(f"no account {name!r} (have: {', '.join(accounts)})")
    return accounts[name]


def editor_command() -> list[str]:
    return shlex.split(os.environ.get("VISUAL") or os.environ.get("EDITOR") or "vi")
