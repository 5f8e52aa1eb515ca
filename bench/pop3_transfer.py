"""POP3 and import/export figures: mbox import, mbox and Maildir export rates (CLI), POP3
login + UIDL + RETR-all throughput with poplib, and an ``import imap`` copy from the
same server.

    python bench/pop3_transfer.py [--messages 5000]

Starts its own ``mailhaven serve`` on free ports in a temporary directory. Prints
figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import poplib
import random
import re
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "tests")]

from conftest import ServerProcess, mailhaven_env  # noqa: E402
from mailhaven.transfer import mbox as mb  # noqa: E402

USER, PASSWORD = "bench@example.com", "bench-password"
COPY = "copy@example.com"


def make_mbox(path: Path, n: int) -> int:
    rnd = random.Random(1)
    words = "alpha bravo caf\u00e9 delta \u65e5\u672c echo foxtrot From golf".split()
    size = 0
    with open(path, "wb") as f:
        w = mb.MboxWriter(f)
        for i in range(n):
            body = "\r\n".join(" ".join(rnd.choice(words) for _ in range(12)) for _ in range(rnd.randint(5, 80)))
            raw = (f"From: s{i}@example.net\r\nTo: {USER}\r\nSubject: bench {i}\r\n"
                   f"Message-ID: <{i}@bench>\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{body}\r\n").encode()
            w.write(raw, {"\\Seen"} if i % 3 else (), 1_600_000_000 + i)
            size += len(raw)
    return size


def timed(srv: ServerProcess, *args: str, env: dict[str, str] | None = None) -> tuple[float, str]:
    import subprocess

    start = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "mailhaven", "--data", str(srv.data), *args],
                       capture_output=True, text=True, env=env or mailhaven_env(), timeout=3600)
    if r.returncode:
        raise SystemExit(r.stderr)
    return time.monotonic() - start, r.stderr.strip().splitlines()[-1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=5000)
    args = ap.parse_args()
    n = args.messages
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        srv = ServerProcess(t / "data").start()
        try:
            srv.add_user(USER, PASSWORD)
            srv.add_user(COPY, PASSWORD)
            size = make_mbox(t / "in.mbox", n)
            print(f"{n} messages, {size / 1048576:.1f} MiB")
            secs, line = timed(srv, "import", "mbox", str(t / "in.mbox"), "--user", USER)
            print(f"import mbox:     {n / secs:8.0f} messages/s  ({line})")
            for fmt in ("mbox", "maildir"):
                secs, line = timed(srv, "export", "--user", USER, "--format", fmt, str(t / fmt))
                print(f"export {fmt:<8} {n / secs:8.0f} messages/s  ({line})")
            start = time.monotonic()
            p = poplib.POP3("127.0.0.1", srv.port("pop3"))
            p.user(USER)
            p.pass_(PASSWORD)
            login = time.monotonic() - start
            p.uidl()
            got = 0
            start = time.monotonic()
            for i in range(1, n + 1):
                got += p.retr(i)[2]
            secs = time.monotonic() - start
            p.quit()
            print(f"POP3 login+snapshot of {n}: {login * 1000:.0f} ms; RETR all: {n / secs:.0f} messages/s, "
                  f"{got / secs / 1048576:.1f} MiB/s")
            env = mailhaven_env()
            env["MAILHAVEN_IMPORT_PASSWORD"] = PASSWORD
            secs, line = timed(srv, "import", "imap", "--from", f"imap://{USER}@127.0.0.1:{srv.port('imap')}",
                               "--insecure", "--user", COPY, env=env)
            print(f"import imap:     {n / secs:8.0f} messages/s  ({line})")
            secs, line = timed(srv, "import", "imap", "--from", f"imap://{USER}@127.0.0.1:{srv.port('imap')}",
                               "--insecure", "--user", COPY, env=env)
            print(f"import imap again (nothing to copy): {secs:.1f} s  ({re.sub(r'in [0-9.]+s, ', '', line)})")
        finally:
            srv.stop()


if __name__ == "__main__":
    main()
