"""POP3 and import/export figures: mbox import, mbox and Maildir export rates (CLI), POP3
login + UIDL + RETR-all throughput with poplib, and an ``import imap`` copy from the
same server.

    python bench/pop3_transfer.py [--messages 5000] [--dovecot] [--rounds 5] [--against SRC]

Starts its own ``mailhaven serve`` on free ports in a temporary directory. With
``--dovecot`` a private Dovecot serves the same messages from a Maildir, and the RETR-all
runs alternate between the two servers (A B, B A, ...): the median rate of each and the
server CPU time per RETR (the server processes' utime+stime, so that other work on a
shared machine does not count). ``--against`` also serves the same messages from another
checkout's ``src`` (say ``main``'s, for an A/B of a change), in its own interleaved turn.
Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import poplib
import random
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "tests")]

import conftest  # noqa: E402
from conftest import ServerProcess, mailhaven_env  # noqa: E402
from mailhaven.transfer import mbox as mb  # noqa: E402

USER, PASSWORD = "bench@example.com", "bench-password"
COPY = "copy@example.com"


def messages(n: int) -> list[tuple[bytes, bool, int]]:
    """(raw, seen, internal date) of the benchmark messages."""
    rnd = random.Random(1)
    words = "alpha bravo caf\u00e9 delta \u65e5\u672c echo foxtrot From golf".split()
    out = []
    for i in range(n):
        body = "\r\n".join(" ".join(rnd.choice(words) for _ in range(12)) for _ in range(rnd.randint(5, 80)))
        raw = (f"From: s{i}@example.net\r\nTo: {USER}\r\nSubject: bench {i}\r\n"
               f"Message-ID: <{i}@bench>\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{body}\r\n").encode()
        out.append((raw, bool(i % 3), 1_600_000_000 + i))
    return out


def make_mbox(path: Path, n: int) -> int:
    size = 0
    with open(path, "wb") as f:
        w = mb.MboxWriter(f)
        for raw, seen, date in messages(n):
            w.write(raw, {"\\Seen"} if seen else (), date)
            size += len(raw)
    return size


def timed(srv: ServerProcess, *args: str, env: dict[str, str] | None = None) -> tuple[float, str]:
    start = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "mailhaven", "--data", str(srv.data), *args],
                       capture_output=True, text=True, env=env or mailhaven_env(), timeout=3600)
    if r.returncode:
        raise SystemExit(r.stderr)
    return time.monotonic() - start, r.stderr.strip().splitlines()[-1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pids: list[int]) -> float:
    """utime + stime of ``pids`` and their waited-for children (/proc/PID/stat)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += sum(int(f) for f in fields[11:15])   # utime stime cutime cstime
    return total / tick


class DovecotPop3:
    """A private Dovecot serving POP3 (and, with ``imap``, IMAP on :attr:`imap_port`) from
    a Maildir holding the same messages."""

    def __init__(self, tmp: Path, imap: bool = False) -> None:
        self.dir = tmp / "dovecot"
        self.port = free_port()
        self.imap_port = free_port() if imap else 0
        self.binary = shutil.which("dovecot") or "/usr/sbin/dovecot"

    def start(self, msgs: list[tuple[bytes, bool, int]]) -> None:
        d = self.dir
        for sub in ("run", "state", "home"):
            (d / sub).mkdir(parents=True, exist_ok=True)
        maildir = d / "home" / USER / "Maildir"
        for sub in ("cur", "new", "tmp"):
            (maildir / sub).mkdir(parents=True, exist_ok=True)
        for i, (raw, seen, date) in enumerate(msgs):
            path = maildir / "cur" / f"{date}.M{i}P1.bench,S={len(raw)}:2,{'S' if seen else ''}"
            path.write_bytes(raw)
            os.utime(path, (date, date))
        (d / "passwd").write_text(f"{USER}:{{PLAIN}}{PASSWORD}\n")
        uid = 65534  # nobody: Dovecot refuses to run mail processes as root
        for root, dirs, files in os.walk(d / "home"):
            for name in dirs + files:
                os.chown(os.path.join(root, name), uid, uid)
        os.chown(d / "home", uid, uid)
        self.conf = d / "dovecot.conf"
        imap = f"""
service imap-login {{
  inet_listener imap {{
    port = {self.imap_port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
""" if self.imap_port else ""
        self.conf.write_text(f"""
base_dir = {d}/run
state_dir = {d}/state
log_path = {d}/dovecot.log
protocols = pop3{" imap" if self.imap_port else ""}
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
first_valid_uid = 0
mail_location = maildir:{d}/home/%u/Maildir
pop3_uidl_format = %08Xu%08Xv
passdb {{
  driver = passwd-file
  args = {d}/passwd
}}
userdb {{
  driver = static
  args = uid={uid} gid={uid} home={d}/home/%u
}}
service pop3-login {{
  inet_listener pop3 {{
    port = {self.port}
  }}
  inet_listener pop3s {{
    port = 0
  }}
}}
{imap}""")
        subprocess.run([self.binary, "-c", str(self.conf)], check=True)
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                time.sleep(1)
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("dovecot did not start")

    def pids(self) -> list[int]:
        master = int((self.dir / "run" / "master.pid").read_text().strip())
        out = subprocess.run(["pgrep", "-P", str(master)], capture_output=True, text=True).stdout.split()
        return [master, *map(int, out)]

    def stop(self) -> None:
        subprocess.run([self.binary, "-c", str(self.conf), "stop"], capture_output=True)


def retr_all(port: int, n: int, pids: Callable[[], list[int]]) -> tuple[float, float, float]:
    """One session: login, UIDL, RETR 1..n, QUIT (nothing deleted). Returns (seconds for the
    RETRs, server CPU seconds for them, seconds from connecting to the UIDL listing). ``pids``
    is asked after login: Dovecot's pop3 process exists only while the session does."""
    start = time.monotonic()
    p = poplib.POP3("127.0.0.1", port)
    p.user(USER)
    p.pass_(PASSWORD)
    p.uidl()
    login = time.monotonic() - start
    procs = pids()
    cpu0 = cpu_seconds(procs)
    start = time.monotonic()
    for i in range(1, n + 1):
        p.retr(i)
    secs = time.monotonic() - start
    cpu = cpu_seconds(procs) - cpu0
    p.quit()
    return secs, cpu, login


def other_source(src: Path, data: Path, mbox: Path) -> ServerProcess:
    """A server run from another checkout's ``src`` holding the messages of ``mbox``."""
    saved = conftest.SRC
    conftest.SRC = src
    try:
        srv = ServerProcess(data).start()
        srv.add_user(USER, PASSWORD)
        timed(srv, "import", "mbox", str(mbox), "--user", USER)
    finally:
        conftest.SRC = saved
    return srv


def compare_retr(srv: ServerProcess, dovecot: DovecotPop3 | None, n: int, rounds: int,
                 against: ServerProcess | None = None) -> None:
    """RETR-all runs alternating between the servers; median rate and CPU per RETR."""
    proc = srv.proc
    assert proc is not None
    sides: dict[str, tuple[int, Callable[[], list[int]]]] = {"mailhaven": (srv.port("pop3"), lambda: [proc.pid])}
    if against is not None:
        other = against.proc
        assert other is not None
        sides["against"] = (against.port("pop3"), lambda: [other.pid])
    if dovecot is not None:
        sides["dovecot"] = (dovecot.port, dovecot.pids)
    rates: dict[str, list[float]] = {k: [] for k in sides}
    cpus: dict[str, list[float]] = {k: [] for k in sides}
    logins: dict[str, list[float]] = {k: [] for k in sides}
    order = list(sides)
    for r in range(rounds):
        for name in order if r % 2 == 0 else reversed(order):
            secs, cpu, login = retr_all(*sides[name][:1], n, sides[name][1])
            rates[name].append(n / secs)
            cpus[name].append(cpu / n * 1000)
            logins[name].append(login * 1000)
    for name in sides:
        print(f"POP3 RETR all {name:<9} {statistics.median(rates[name]):8.0f} messages/s "
              f"(runs {', '.join(f'{x:.0f}' for x in rates[name])}); "
              f"server CPU {statistics.median(cpus[name]):.3f} ms/RETR")
    for name in sides:      # not in the rates above: their clock starts after the UIDL listing
        print(f"POP3 login+UIDL {name:<9} {statistics.median(logins[name]):6.0f} ms "
              f"(runs {', '.join(f'{x:.0f}' for x in logins[name])})")
    if dovecot is not None:
        ratio = statistics.median(rates["mailhaven"]) / statistics.median(rates["dovecot"])
        per_run = [a / b for a, b in zip(rates["mailhaven"], rates["dovecot"], strict=True)]
        print(f"POP3 RETR mailhaven/dovecot: {ratio:.2f} (per round {min(per_run):.2f}-{max(per_run):.2f})")
    if against is not None:
        ratio = statistics.median(rates["mailhaven"]) / statistics.median(rates["against"])
        print(f"POP3 RETR mailhaven/against: {ratio:.2f}; server CPU per RETR against/mailhaven: "
              f"{statistics.median(cpus['against']) / statistics.median(cpus['mailhaven']):.2f}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=5000)
    ap.add_argument("--dovecot", action="store_true", help="also RETR from a private Dovecot, interleaved")
    ap.add_argument("--rounds", type=int, default=5, help="RETR-all runs per server")
    ap.add_argument("--pop3-only", action="store_true", help="skip the import/export figures")
    ap.add_argument("--against", type=Path, help="another checkout's src directory, served alongside")
    args = ap.parse_args()
    n = args.messages
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        t.chmod(0o755)  # Dovecot's auth process must reach its passwd file
        srv = ServerProcess(t / "data").start()
        dovecot = DovecotPop3(t) if args.dovecot and shutil.which("dovecot") else None
        against: ServerProcess | None = None
        try:
            srv.add_user(USER, PASSWORD)
            srv.add_user(COPY, PASSWORD)
            size = make_mbox(t / "in.mbox", n)
            print(f"{n} messages, {size / 1048576:.1f} MiB")
            secs, line = timed(srv, "import", "mbox", str(t / "in.mbox"), "--user", USER)
            print(f"import mbox:     {n / secs:8.0f} messages/s  ({line})")
            if dovecot is not None:
                dovecot.start(messages(n))
            if args.against is not None:
                against = other_source(args.against.resolve(), t / "against", t / "in.mbox")
            if not args.pop3_only:
                for fmt in ("mbox", "maildir"):
                    secs, line = timed(srv, "export", "--user", USER, "--format", fmt, str(t / fmt))
                    print(f"export {fmt:<8} {n / secs:8.0f} messages/s  ({line})")
            start = time.monotonic()
            p = poplib.POP3("127.0.0.1", srv.port("pop3"))
            p.user(USER)
            p.pass_(PASSWORD)
            p.uidl()
            p.quit()
            print(f"POP3 first login+UIDL of {n}: {(time.monotonic() - start) * 1000:.0f} ms")
            compare_retr(srv, dovecot, n, args.rounds, against)
            if args.pop3_only:
                return
            env = mailhaven_env()
            env["MAILHAVEN_IMPORT_PASSWORD"] = PASSWORD
            secs, line = timed(srv, "import", "imap", "--from", f"imap://{USER}@127.0.0.1:{srv.port('imap')}",
                               "--insecure", "--user", COPY, env=env)
            print(f"import imap:     {n / secs:8.0f} messages/s  ({line})")
            secs, line = timed(srv, "import", "imap", "--from", f"imap://{USER}@127.0.0.1:{srv.port('imap')}",
                               "--insecure", "--user", COPY, env=env)
            print(f"import imap again (nothing to copy): {secs:.1f} s  ({re.sub(r'in [0-9.]+s, ', '', line)})")
        finally:
            if dovecot is not None:
                dovecot.stop()
            if against is not None:
                against.stop()
            srv.stop()


if __name__ == "__main__":
    main()
