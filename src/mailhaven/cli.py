"""The ``mailhaven`` command: serve, and the admin commands that work while it runs.

Every command takes ``--data DIR`` (default ``./data``) and ``--config FILE`` (default
``DIR/mailhaven.toml`` when present), before or after the subcommand. Errors are one line on stderr and exit status 1
(2 for usage); never a traceback for a user's mistake.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import getpass
import importlib
import importlib.util
import json
import os
import shlex
import shutil
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from .config import Config, ConfigError, load_config, parse_size
from .datadir import restrict_umask
from .store import create_store
from .store.api import Store, StoreError

T = TypeVar("T")

# Modules that add subcommands with ``register(subparsers)``; missing ones are skipped.
# The command each module registers, so a run imports only the module of its own command
# (each pulls in its own dependencies: dkimpy, starlette, the IMAP client...); a run with
# no command, or one not listed here, builds the whole parser.
CLI_MODULES = {
    "queue": "mailhaven.queue.cli",
    "dkim": "mailhaven.queue.dkimcli",
    "tlsrpt": "mailhaven.queue.tlsrptcli",
    "dns": "mailhaven.dnscli",
    "security": "mailhaven.auth.cli",
    "mail": "mailhaven.ua.cli",
    "import": "mailhaven.transfer.cli",
    "export": "mailhaven.transfer.cli",
    "token": "mailhaven.web.cli",
    "store": "mailhaven.store.cli",
    "sieve": "mailhaven.sieve.cli",
    "dmarc": "mailhaven.filter.dmarccli",
    "spam": "mailhaven.filter.spam.cli",
    "acme": "mailhaven.certs.cli",
    "setup": "mailhaven.quickstart",
}


class CommandError(Exception):
    """A user-facing failure: printed as one line, exit status 1."""


def load(args: argparse.Namespace) -> Config:
    return load_config(args.data, args.config)


async def open_store(args: argparse.Namespace) -> Store:
    store = create_store(load(args))
    await store.open()
    return store


def with_store(args: argparse.Namespace, fn: Callable[[Store], Awaitable[T]]) -> T:
    """Open the store, run ``fn(store)``, close it; for short admin commands."""

    async def run() -> T:
        store = await open_store(args)
        try:
            return await fn(store)
        finally:
            await store.close()

    return asyncio.run(run())


def open_and_close(args: argparse.Namespace) -> None:
    """Open the store and close it, for what opening does by itself: the schema made or
    upgraded, and on SQLite a search index that is not ``mailhaven.db``'s emptied with a
    refill listed (searchdb.py's pairing)."""

    async def run() -> None:
        store = await open_store(args)
        await store.close()

    asyncio.run(run())


def read_password(args: argparse.Namespace) -> str:
    if getattr(args, "password_stdin", False):
        password = sys.stdin.readline().rstrip("\r\n")
    elif sys.stdin.isatty():
        password = getpass.getpass("Password: ")
        if getpass.getpass("Again: ") != password:
            raise CommandError("passwords do not match")
    else:
        raise CommandError("no password: use --password-stdin, or run in a terminal")
    if not password:
        raise CommandError("empty password")
    return password


def _quota(value: str | None) -> int | None:
    if value is None or value.lower() in ("", "none", "unlimited", "0"):
        return None
    try:
        return parse_size(value, "--quota")
    except ConfigError as exc:
        raise CommandError(str(exc)) from None


# -- serve ----------------------------------------------------------------------------
LAUNCH_DIR_ENV = "MAILHAVEN_LAUNCH_DIR"
"""Where the user typed the command; scripts/run sets it before it changes directory."""


def command_name() -> str:
    """How to run this command again, as typed in a fresh shell where the user started it:
    ``mailhaven`` when it is on PATH, else the path it was started by (``.venv/bin/mailhaven``)."""
    argv0 = sys.argv[0] if sys.argv and sys.argv[0] else "mailhaven"
    if Path(argv0).name == "__main__.py":          # python -m mailhaven
        return f"{shlex.quote(shown_path(sys.executable, command=True))} -m mailhaven"
    on_path = shutil.which(Path(argv0).name)
    if Path(argv0).name == "mailhaven" and on_path and Path(on_path).resolve() == Path(argv0).resolve():
        return "mailhaven"
    return shlex.quote(shown_path(argv0, command=True))


def shown_path(path: str | Path, *, command: bool = False) -> str:
    """``path`` relative to the user's directory when it is inside it, else absolute; a
    command keeps a slash (``./x``) so that the shell does not look it up on PATH."""
    full = Path(path).absolute()
    try:
        relative = full.relative_to(Path(os.environ.get(LAUNCH_DIR_ENV) or Path.cwd()).absolute())
    except ValueError:
        return str(full)
    return f"./{relative}" if command and "/" not in str(relative) else str(relative)


def lock_data_dir(data_dir: Path) -> Any:
    """Hold ``DATA/serve.lock`` for the life of this process: a second ``mailhaven serve`` on
    the same data directory refuses to start. Admin commands never take it (they work while
    the server runs), and SMTP worker processes inherit the held descriptor."""
    import fcntl

    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / "serve.lock"
    handle = open(path, "a+")  # noqa: SIM115 - held open until the process exits
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.seek(0)
        pid = handle.read().strip()
        handle.close()
        raise CommandError(f"another mailhaven serve is already running on {data_dir.resolve()}"
                           f"{f' (pid {pid})' if pid else ''}; stop it first, or give this one "
                           f"its own --data DIR (lock: {path})") from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle


def cmd_serve(args: argparse.Namespace) -> int:
    from . import logs
    from .app import Running, run, serve

    config = load(args)
    lock = lock_data_dir(config.data_dir)
    logs.setup(config.log_level, config.log_format)
    log = logs.Log("server")

    def ready(running: Running) -> None:
        print(f"Mailhaven {__import__('mailhaven').__version__} serving {config.hostname}, "
              f"data in {config.data_dir.resolve()} ({config.store.backend})", flush=True)
        for name, (host, port) in running.listeners.items():
            print(f"  {name:<12} {host}:{port}", flush=True)
        if "http" in running.listeners:
            host, port = running.listeners["http"]
            scheme = "http" if host.startswith("127.") or host in ("::1", "localhost") else "https"
            shown = f"[{host}]" if ":" in host else host
            print(f"Webmail: {scheme}://{shown}:{port}/   JMAP: {scheme}://{shown}:{port}/.well-known/jmap",
                  flush=True)
        admin = f"{command_name()} --data {shlex.quote(shown_path(args.data))}"
        if args.config:
            admin += f" --config {shlex.quote(shown_path(args.config))}"
        print("Log in everywhere with a full address and its password; add one with:\n"
              f"  {admin} domain add example.org\n"
              f"  {admin} user add you@example.org --password-stdin", flush=True)
        print("Ready.", flush=True)

    try:
        run(config, serve(config, log, ready))
    except KeyboardInterrupt:
        pass
    except OSError as exc:
        raise CommandError(f"cannot start: {exc}") from None
    finally:
        lock.close()
    return 0


# -- domains --------------------------------------------------------------------------
def cmd_domain(args: argparse.Namespace) -> int:
    if args.action == "add":
        with_store(args, lambda s: s.add_domain(args.name))
        print(f"domain {args.name} added")
    elif args.action == "remove":
        with_store(args, lambda s: s.remove_domain(args.name))
        print(f"domain {args.name} removed")
    else:
        for d in with_store(args, lambda s: s.list_domains()):
            print(d.name)
    return 0


# -- users ----------------------------------------------------------------------------
def plural(n: int, noun: str) -> str:
    """``1 message``, ``2 messages``."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _human(n: int | None) -> str:
    if n is None:
        return "unlimited"
    for unit in ("B", "K", "M", "G"):
        if n < 1024 or unit == "G":
            return f"{n:.0f}{unit}" if unit == "B" else f"{n:.1f}{unit}"
        n = n / 1024  # type: ignore[assignment]
    return str(n)


def cmd_user(args: argparse.Namespace) -> int:
    if args.action == "add":
        password = read_password(args)
        quota = _quota(args.quota)
        acct = with_store(args, lambda s: s.add_account(args.address, password, quota=quota))
        print(f"user {acct.address} added (quota {_human(acct.quota)})")
    elif args.action == "passwd":
        password = read_password(args)
        with_store(args, lambda s: s.set_password(args.address, password))
        print(f"password of {args.address} changed")
    elif args.action == "set":
        if args.quota is None:
            raise CommandError("nothing to set: give --quota SIZE")
        quota = _quota(args.quota)
        with_store(args, lambda s: s.set_quota(args.address, quota))
        print(f"quota of {args.address} set to {_human(quota)}")
    elif args.action == "remove":
        with_store(args, lambda s: s.remove_account(args.address))
        print(f"user {args.address} removed")
    else:
        accounts = with_store(args, lambda s: s.list_accounts())
        if args.json:
            print(json.dumps([{"address": a.address, "quota": a.quota, "used": a.used} for a in accounts]))
        else:
            for a in accounts:
                print(f"{a.address:<40} used {_human(a.used):>8}  quota {_human(a.quota)}")
    return 0


# -- aliases --------------------------------------------------------------------------
def cmd_alias(args: argparse.Namespace) -> int:
    if args.action == "add":
        if not args.targets:
            raise CommandError("alias add needs at least one TARGET address")
        with_store(args, lambda s: s.add_alias(args.address, args.targets))
        print(f"alias {args.address} -> {', '.join(args.targets)}")
    elif args.action == "remove":
        with_store(args, lambda s: s.remove_alias(args.address))
        print(f"alias {args.address} removed")
    else:
        for address, targets in with_store(args, lambda s: s.list_aliases()).items():
            print(f"{address} -> {', '.join(targets)}")
    return 0


# -- mailboxes ------------------------------------------------------------------------
def _first_address(addrs: list[dict[str, str]]) -> str:
    if not addrs:
        return ""
    a = addrs[0]
    return f"{a['name']} <{a['email']}>" if a.get("name") else a.get("email", "")


def cmd_mailbox(args: argparse.Namespace) -> int:
    async def listing(store: Store) -> list[dict[str, Any]]:
        acct = await store.get_account(args.address)
        box = await store.get_mailbox(acct.id, args.folder)
        return [
            {"uid": m.uid, "size": m.size,
             "date": datetime.datetime.fromtimestamp(m.internal_date, datetime.UTC).isoformat(timespec="seconds"),
             "from": _first_address(m.summary.get("from", [])), "subject": m.summary.get("subject", ""),
             "message_id": m.summary.get("message_id", ""), "flags": sorted(m.flags)}
            for m in await store.list_messages(box.id, with_summary=True)
        ]

    async def show(store: Store) -> bytes:
        acct = await store.get_account(args.address)
        box = await store.get_mailbox(acct.id, args.folder)
        found = await store.get_messages(box.id, [args.uid], with_summary=False)
        if not found:
            raise CommandError(f"no message with uid {args.uid} in {box.name}")
        return await store.read_blob(found[0].blob_id)

    async def folders(store: Store) -> list[dict[str, Any]]:
        acct = await store.get_account(args.address)
        return [{"name": b.name, "special_use": b.special_use, "messages": b.messages, "unseen": b.unseen,
                 "size": b.size} for b in await store.list_mailboxes(acct.id, counts=True)]

    if args.action == "show":
        sys.stdout.buffer.write(with_store(args, show))
        sys.stdout.flush()
    elif args.action == "folders":
        rows = with_store(args, folders)
        if args.json:
            print(json.dumps(rows))
        else:
            for r in rows:
                print(f"{r['name']:<30} {plural(r['messages'], 'message'):>15} {r['unseen']:>6} unseen "
                      f"{_human(r['size']):>8}")
    else:
        rows = with_store(args, listing)
        if args.json:
            print(json.dumps(rows, ensure_ascii=False))
        else:
            if rows:
                print(f"{'UID':>6} {'SIZE':>8} {'DATE (UTC)':<25} {'FROM':<30} SUBJECT  MESSAGE-ID FLAGS")
            else:
                print(f"no messages in {args.folder}", file=sys.stderr)
            for r in rows:
                print(f"{r['uid']:>6} {r['size']:>8} {r['date']:<25} {r['from'][:30]:<30} {r['subject'][:60]}"
                      f"  {r['message_id']} {' '.join(r['flags'])}")
    return 0


# -- config ---------------------------------------------------------------------------
def cmd_config(args: argparse.Namespace) -> int:
    config = load(args)
    read = Path(args.config) if args.config else Path(args.data) / "mailhaven.toml"
    if read.exists():
        print(f"read {read.resolve()}")
    else:
        print(f"no configuration file ({read.resolve()} does not exist): the defaults")
    for name in ("smtp", "submission", "submissions", "imap", "imaps", "pop3", "pop3s", "http"):
        address = config.listen.address(name)
        print(f"listen.{name:<12} {'disabled' if address is None else f'{address[0]}:{address[1]}'}")
    print(f"store.backend       {config.store.backend}")
    print(f"hostname            {config.hostname}")
    print("configuration OK")
    return 0


DATA_HELP = "data directory (default ./data)"
CONFIG_HELP = "config file (default DATA/mailhaven.toml when present)"


def _common_options_everywhere(parser: argparse.ArgumentParser) -> None:
    """Let every subcommand take --data and --config after its name as well
    (``mailhaven user list --data DIR``); given there, they win over the ones before it.
    SUPPRESS leaves the top-level value alone when a subcommand's copy is not given.
    ``mail`` (the user agent) has no data directory and is left out."""
    for action in parser._actions:
        if not isinstance(action, argparse._SubParsersAction):
            continue
        for name, child in action.choices.items():
            if name == "mail":          # the user agent reads accounts.toml, not a data directory
                continue
            if "--data" not in child._option_string_actions:
                child.add_argument("--data", default=argparse.SUPPRESS, help=DATA_HELP)
                child.add_argument("--config", default=argparse.SUPPRESS, help=CONFIG_HELP)
            _common_options_everywhere(child)


SERVE_DESCRIPTION = """\
Run every listener (SMTP, submission, IMAP, POP3, HTTP for webmail and JMAP) and the
outbound queue on one data directory until SIGINT or SIGTERM. Without a config file:
SQLite and files in DATA, unprivileged ports on 127.0.0.1 and a self-signed certificate
made once in DATA/tls. It prints each address it listens on, then "Ready.". One server
per data directory: a second one on the same DATA refuses to start (DATA/serve.lock)."""


def _command_of(argv: list[str]) -> str | None:
    """The command word of ``argv``: its first argument that is not an option or the value
    of ``--data``/``--config``."""
    args = iter(argv)
    for arg in args:
        if arg in ("--data", "--config"):
            next(args, None)
        elif not arg.startswith("-"):
            return arg
    return None


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The parser for ``argv``: every command, but only the module of the command given is
    imported (all of them when ``argv`` is None or names none we know)."""
    from . import __version__

    parser = argparse.ArgumentParser(prog="mailhaven", description="Mailhaven mail server")
    parser.add_argument("--version", action="version", version=f"mailhaven {__version__}")
    parser.add_argument("--data", default="data", help=DATA_HELP)
    parser.add_argument("--config", default=None, help=CONFIG_HELP)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("serve", help="run the server", description=SERVE_DESCRIPTION,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("domain", help="manage local domains")
    dsub = p.add_subparsers(dest="action", required=True)
    for action in ("add", "remove"):
        dsub.add_parser(action).add_argument("name")
    dsub.add_parser("list")
    p.set_defaults(func=cmd_domain)

    p = sub.add_parser("user", help="manage accounts")
    usub = p.add_subparsers(dest="action", required=True)
    a = usub.add_parser("add")
    a.add_argument("address")
    a.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    a.add_argument("--quota", default=None, help="e.g. 500M; default unlimited")
    a = usub.add_parser("passwd")
    a.add_argument("address")
    a.add_argument("--password-stdin", action="store_true")
    a = usub.add_parser("set")
    a.add_argument("address")
    a.add_argument("--quota", default=None)
    usub.add_parser("remove").add_argument("address")
    usub.add_parser("list").add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_user)

    p = sub.add_parser("alias", help="manage aliases (@domain is a catch-all)")
    asub = p.add_subparsers(dest="action", required=True)
    a = asub.add_parser("add")
    a.add_argument("address")
    a.add_argument("targets", nargs="*")
    asub.add_parser("remove").add_argument("address")
    asub.add_parser("list")
    p.set_defaults(func=cmd_alias)

    p = sub.add_parser("mailbox", help="look into an account's mail")
    msub = p.add_subparsers(dest="action", required=True)
    a = msub.add_parser("list", help="the messages of a folder: uid, size, date, from, subject, "
                                     "message-id, flags")
    a.add_argument("address", help="the account's full address")
    a.add_argument("--folder", default="INBOX", help="folder name (default INBOX)")
    a.add_argument("--json", action="store_true", help="one JSON array, for scripts")
    a = msub.add_parser("show", help="print one message as stored (raw RFC 5322)")
    a.add_argument("address", help="the account's full address")
    a.add_argument("uid", type=int, help="the message's UID (from mailbox list)")
    a.add_argument("--folder", default="INBOX", help="folder name (default INBOX)")
    a = msub.add_parser("folders", help="the account's folders with message and unseen counts")
    a.add_argument("address", help="the account's full address")
    a.add_argument("--json", action="store_true", help="one JSON array, for scripts")
    p.set_defaults(func=cmd_mailbox)

    p = sub.add_parser("config", help="configuration")
    csub = p.add_subparsers(dest="action", required=True)
    csub.add_parser("check")
    p.set_defaults(func=cmd_config)

    command = _command_of(argv) if argv is not None else None
    core = {"serve", "domain", "user", "alias", "mailbox", "config"}
    if command in CLI_MODULES:
        wanted = [CLI_MODULES[command]]
    elif command in core:
        wanted = []
    else:
        wanted = list(dict.fromkeys(CLI_MODULES.values()))
    for module_name in wanted:
        try:
            spec = importlib.util.find_spec(module_name)
        except ModuleNotFoundError:
            spec = None
        if spec is not None:
            importlib.import_module(module_name).register(sub)
    _common_options_everywhere(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    args.data = str(Path(args.data))
    if args.command != "mail":      # the user agent's files are the user's business
        restrict_umask()            # what admin commands create in the data directory is private
    try:
        return int(args.func(args) or 0)
    except (ConfigError, StoreError, CommandError) as exc:
        print(f"mailhaven: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (``mailhaven mailbox list ... | head``): not an error.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
