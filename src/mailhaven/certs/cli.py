"""``mailhaven acme status`` (the ACME certificate's names and dates) and ``mailhaven acme
renew`` (ask the running server to order a new one now, and wait for it)."""

from __future__ import annotations

import argparse
import fcntl
import os
import signal
import time
from pathlib import Path

from ..cli import CommandError, load
from .files import cert_paths, read_info

RENEW_SIGNAL = signal.SIGUSR1
"""What ``acme renew`` sends the server (its pid is in DATA/serve.lock)."""


def _status(cert: Path) -> str:
    info = read_info(cert)
    if info is None:
        return "no ACME certificate yet"
    return (f"names:      {' '.join(sorted(info.names))}\n"
            f"valid from: {info.not_before.isoformat()}\n"
            f"valid to:   {info.not_after.isoformat()}\n"
            f"renewal:    {info.renew_at().isoformat()}")


def _server_pid(data_dir: Path) -> int:
    """The pid of the ``mailhaven serve`` holding the data directory's lock."""
    path = data_dir / "serve.lock"
    try:
        handle = open(path)  # noqa: SIM115 - closed below
    except FileNotFoundError:
        raise CommandError(f"no mailhaven serve is running on {data_dir}") from None
    with handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            text = handle.read().strip()
            if text.isdigit():
                return int(text)
        raise CommandError(f"no mailhaven serve is running on {data_dir}")


def cmd_acme(args: argparse.Namespace) -> int:
    config = load(args)
    cert = cert_paths(config.data_dir)[0]
    if args.action == "status":
        print(_status(cert))
        return 0
    if not config.acme.directory:
        raise CommandError("no [acme] directory in the configuration")
    pid = _server_pid(config.data_dir)
    before = cert.stat().st_mtime_ns if cert.exists() else 0
    os.kill(pid, RENEW_SIGNAL)
    deadline = time.monotonic() + args.wait
    while time.monotonic() < deadline:
        if cert.exists() and cert.stat().st_mtime_ns != before:
            print("renewed\n" + _status(cert))
            return 0
        time.sleep(0.2)
    raise CommandError(f"no new certificate after {args.wait:g} s; the server's log says why")


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("acme", help="the certificate from the ACME CA")
    asub = p.add_subparsers(dest="action", required=True)
    asub.add_parser("status", help="names and dates of the current certificate")
    r = asub.add_parser("renew", help="order a new certificate now (the server must be running)")
    r.add_argument("--wait", type=float, default=120.0, help="seconds to wait for it (default 120)")
    p.set_defaults(func=cmd_acme)
