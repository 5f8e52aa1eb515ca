"""How many passwords can one address guess? The shared login throttle under attack.

    python bench/login_guessing.py [--seconds 120] [--parallel 16] [--config EXTRA.toml]

Starts its own ``mailhaven serve`` (the default ``[security]`` settings unless --config adds
some) with one account, then guesses from 127.0.0.2 with ``--parallel`` connections at once,
spread over IMAP LOGIN, SMTP AUTH PLAIN and POP3 USER/PASS, each connection guessing again
as soon as it is answered (clients wait up to 600 s for an answer). Meanwhile the owner logs in over IMAP from 127.0.0.3 every 2 s.
Prints how many passwords were actually checked (answered "wrong") per minute, how many
attempts were refused, and the owner's login times. Asserts nothing.
"""

from __future__ import annotations

import argparse
import base64
import imaplib
import poplib
import shutil
import smtplib
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
USER, PASSWORD = "owner@example.com", "owner-password"
GUESSER, OWNER = "127.0.0.2", "127.0.0.3"
LISTENERS = ("smtp", "submission", "submissions", "imap", "imaps", "pop3", "pop3s", "http")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class IMAP(imaplib.IMAP4):
    def __init__(self, port: int, source: str) -> None:
        self.source = source
        super().__init__("127.0.0.1", port, timeout=600)

    def _create_socket(self, timeout: Any) -> socket.socket:
        return socket.create_connection((self.host, self.port), timeout, source_address=(self.source, 0))


class POP3(poplib.POP3):
    def __init__(self, port: int, source: str) -> None:
        self.source = source
        super().__init__("127.0.0.1", port, timeout=600)

    def _create_socket(self, timeout: Any) -> socket.socket:
        return socket.create_connection((self.host, self.port), timeout, source_address=(self.source, 0))


def guess_imap(ports: dict[str, int], user: str) -> str:
    client = IMAP(ports["imap"], GUESSER)
    try:
        client.login(user, "guess")
        return "accepted"
    except imaplib.IMAP4.abort:
        return "refused"
    except imaplib.IMAP4.error:
        return "checked"
    finally:
        try:
            client.shutdown()
        except OSError:
            pass


def guess_smtp(ports: dict[str, int], user: str) -> str:
    with smtplib.SMTP("127.0.0.1", ports["submission"], timeout=600, source_address=(GUESSER, 0)) as s:
        s.ehlo()
        code, _ = s.docmd("AUTH", "PLAIN " + base64.b64encode(f"\0{user}\0guess".encode()).decode())
        return {535: "checked", 235: "accepted"}.get(code, "refused")


def guess_pop(ports: dict[str, int], user: str) -> str:
    client = POP3(ports["pop3"], GUESSER)
    try:
        client.user(user)
        client.pass_("guess")
        return "accepted"
    except poplib.error_proto as exc:
        return "checked" if b"Authentication failed" in exc.args[0] else "refused"
    finally:
        try:
            client.close()
        except OSError:
            pass


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=120.0)
    ap.add_argument("--parallel", type=int, default=16)
    ap.add_argument("--config", type=Path, help="extra TOML appended to the server's configuration")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="mh-guess-"))
    data = tmp / "data"
    data.mkdir()
    ports = {name: free_port() for name in LISTENERS}
    lines = ['hostname = "bench.example"', "[listen]"] + [f'{n} = "127.0.0.1:{p}"' for n, p in ports.items()]
    extra = args.config.read_text() if args.config else ""
    (data / "mailhaven.toml").write_text("\n".join(lines) + "\n" + extra + "\n")
    env = {"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin"}

    def cli(*argv: str, stdin: str = "") -> None:
        subprocess.run([sys.executable, "-m", "mailhaven", "--data", str(data), *argv], input=stdin,
                       text=True, check=True, env=env, capture_output=True)

    cli("domain", "add", "example.com")
    cli("user", "add", USER, "--password-stdin", stdin=PASSWORD + "\n")
    server = subprocess.Popen([sys.executable, "-m", "mailhaven", "--data", str(data), "serve"],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    assert server.stdout is not None
    while server.stdout.readline().strip() != "Ready.":
        if server.poll() is not None:
            raise SystemExit("server did not start")

    counts = {"checked": 0, "refused": 0, "accepted": 0, "error": 0}
    checked_at: list[float] = []
    lock = threading.Lock()
    started = time.monotonic()
    deadline = started + args.seconds
    guessers = (guess_imap, guess_smtp, guess_pop)

    def attacker(n: int) -> None:
        i = 0
        while time.monotonic() < deadline:
            i += 1
            user = USER if i % 2 else f"u{n}-{i}@example.com"
            try:
                outcome = guessers[(n + i) % 3](ports, user)
            except (OSError, EOFError, smtplib.SMTPException, imaplib.IMAP4.error, poplib.error_proto):
                outcome = "error"
            with lock:
                counts[outcome] += 1
                if outcome == "checked":
                    checked_at.append(time.monotonic() - started)
            if outcome in ("refused", "error"):
                time.sleep(0.5)

    owner_times: list[float] = []

    def owner() -> None:
        while time.monotonic() < deadline:
            t0 = time.monotonic()
            client = IMAP(ports["imap"], OWNER)
            client.login(USER, PASSWORD)
            owner_times.append(time.monotonic() - t0)
            client.logout()
            time.sleep(2.0)

    threads = [threading.Thread(target=attacker, args=(n,)) for n in range(args.parallel)]
    threads.append(threading.Thread(target=owner))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    server.terminate()
    server.wait(30)
    db = sqlite3.connect(data / "mailhaven.db")
    rows = db.execute("SELECT account, failures, blocked_until FROM login_failures WHERE address=?",
                      (GUESSER,)).fetchall()
    db.close()
    shutil.rmtree(tmp, ignore_errors=True)

    minutes = args.seconds / 60
    print(f"guessing from one address for {args.seconds:.0f} s with {args.parallel} parallel connections "
          "(IMAP, SMTP AUTH, POP3)")
    print(f"  passwords checked: {counts['checked']} ({counts['checked'] / minutes:.1f} per minute); "
          f"refused attempts: {counts['refused']}; accepted: {counts['accepted']}; errors: {counts['error']}")
    for account, failures, blocked_until in sorted(rows):
        state = f"blocked for {blocked_until - time.time():.0f} s more" if blocked_until > time.time() else "not blocked"
        print(f"  store: {GUESSER} {'as ' + account if account else 'alone'}: {failures} failures, {state}")
    if checked_at:
        print(f"  last password checked at {checked_at[-1]:.1f} s; times: "
              + ", ".join(f"{t:.1f}" for t in checked_at))
    if owner_times:
        print(f"  owner logins from another address: {len(owner_times)}, median "
              f"{statistics.median(owner_times) * 1000:.0f} ms, max {max(owner_times) * 1000:.0f} ms")


if __name__ == "__main__":
    main()
