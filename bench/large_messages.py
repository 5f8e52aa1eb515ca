"""Server memory with large messages: RSS growth while 4 clients at once move a 50 MB
message each, in (SMTP DATA, the same DKIM-signed and verified on the way in, IMAP
APPEND) and out (IMAP FETCH BODY[], POP3 RETR), and
while the queue relays 4 of them at once, DKIM-signed, to a second server (queued while
that server is down; measured from when it comes up until all 4 have arrived).

    python bench/large_messages.py [--size-mb 50] [--parallel 4] [--pg-dsn postgresql://...]
    python bench/large_messages.py --dovecot [--size-mb 25] [--rounds 5]

With ``--dovecot`` it measures only the way out, against a private Dovecot serving the same
message from a Maildir: one message sent by IMAP ``FETCH 1 BODY.PEEK[]`` and by POP3
``RETR 1`` to a client that only reads the bytes, the servers alternating (A B, B A, ...);
per server the median time, the server CPU (utime+stime of its processes) and the peak
RSS growth over the run's start, and the ratio Dovecot's time / Mailhaven's (target: at
least 0.5).

With ``--pg-dsn`` the server runs on PostgreSQL (a fresh schema, dropped at the end):
large blobs are ``blob_chunks`` rows, read back a range or a row at a time.

Starts its own ``mailhaven serve`` in a temporary directory; samples the server's RSS
(the process and its children, from /proc) every 10 ms. For each phase it prints the peak
growth over the RSS at the phase's start and over the idle server's, and the time taken.
Target: under 100 MB growth for 4 x 50 MB. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import base64
import functools
import imaplib
import os
import poplib
import smtplib
import socket
import ssl
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "tests"), str(ROOT / "bench")]

from conftest import ServerProcess, free_port  # noqa: E402
from dnsserver import DNSServer  # noqa: E402

PASSWORD = "bench-password"


def users(n: int) -> list[str]:
    return [f"big{i}@example.com" for i in range(n)]


def big_message(size: int, to: str, tag: str) -> bytes:
    """A text part and a base64 attachment: how a large message usually looks."""
    head = (f"From: sender@example.net\r\nTo: {to}\r\nSubject: large {tag}\r\n"
            f"Message-ID: <large.{tag}@example.net>\r\nMIME-Version: 1.0\r\n"
            "Content-Type: multipart/mixed; boundary=b0\r\n\r\n--b0\r\n"
            "Content-Type: text/plain; charset=utf-8\r\n\r\nThe file is attached.\r\n--b0\r\n"
            "Content-Type: application/octet-stream\r\n"
            f"Content-Disposition: attachment; filename=\"{tag}.bin\"\r\n"
            "Content-Transfer-Encoding: base64\r\n\r\n").encode()
    tail = b"\r\n--b0--\r\n"
    need = size - len(head) - len(tail)
    raw = os.urandom(need // 78 * 57 + 57)
    lines = [base64.b64encode(raw[i:i + 57]) for i in range(0, len(raw), 57)]
    body = b"\r\n".join(lines)[:need]
    return head + body + tail


def signing_key() -> tuple[bytes, dict[str, dict[str, list[str]]]]:
    """An RSA key for ``sel._domainkey.example.net`` and the DNS records publishing it."""
    from dkimkeys import rsa_pair
    from dnsserver import txt

    pem, public = rsa_pair()
    return pem, {"sel._domainkey.example.net": {"TXT": [txt(f"v=DKIM1; k=rsa; p={public}")]},
                 "example.net": {"TXT": ['"v=spf1 ip4:127.0.0.1 -all"']}}


def rss_kb(pid: int) -> int:
    """RSS of ``pid`` and its descendants, in KiB."""
    total = 0
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    todo += [int(c) for c in f.read().split()]
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total


class Sampler:
    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_kb(self.pid))
            time.sleep(0.01)

    def __enter__(self) -> Sampler:
        self.peak = rss_kb(self.pid)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def parallel(fns: list[Callable[[], None]]) -> None:
    errors: list[BaseException] = []

    def run(fn: Callable[[], None]) -> None:
        try:
            fn()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(fn,)) for fn in fns]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


SCHEMA = f"mh_bench_{os.urandom(6).hex()}"


def pg_store(dsn: str | None) -> str:
    return f'[store]\nbackend = "postgres"\ndsn = "{dsn}"\nschema = "{SCHEMA}"\n' if dsn else ""


def drop_schema(dsn: str) -> None:
    import asyncio

    import asyncpg

    async def drop() -> None:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{SCHEMA}" CASCADE')
        finally:
            await conn.close()

    asyncio.run(drop())


def _read_until(sock: socket.socket, end: bytes) -> int:
    """Read from ``sock`` until the bytes end with ``end``; returns the count read."""
    total = 0
    tail = b""
    buf = bytearray(1 << 20)
    while True:
        n = sock.recv_into(buf)
        if not n:
            raise ConnectionError("closed")
        total += n
        tail = (tail + bytes(buf[max(0, n - 64):n]))[-64:]
        if tail.endswith(end):
            return total


def _imap_fetch_one(port: int, user: str) -> Callable[[], int]:
    """A logged-in IMAP session with INBOX selected; the returned call FETCHes message 1."""
    sock = socket.create_connection(("127.0.0.1", port))
    _read_until(sock, b"\r\n")
    sock.sendall(f'a LOGIN "{user}" "{PASSWORD}"\r\n'.encode())
    _read_tagged(sock, b"a")
    sock.sendall(b"b EXAMINE INBOX\r\n")
    _read_tagged(sock, b"b")
    count = iter(range(1 << 30))

    def fetch() -> int:
        tag = b"f%d" % next(count)
        sock.sendall(tag + b" FETCH 1 BODY.PEEK[]\r\n")
        return _read_tagged(sock, tag)
    return fetch


def _read_tagged(sock: socket.socket, tag: bytes) -> int:
    """Read until a line starting with ``tag`` ends (the literal before it is 25 MB of base64
    lines, which never start with the tag)."""
    total = 0
    tail = b"\r\n"                     # the line may be the first one read
    buf = bytearray(1 << 20)
    start = b"\r\n" + tag + b" "
    while True:
        n = sock.recv_into(buf)
        if not n:
            raise ConnectionError("closed")
        total += n
        tail = (tail + bytes(buf[max(0, n - 4096):n]))[-4096:]
        at = tail.rfind(start)
        if at >= 0 and tail.endswith(b"\r\n") and tail.find(b"\r\n", at + 2) == len(tail) - 2:
            return total


def _pop3_retr_one(port: int, user: str) -> Callable[[], int]:
    sock = socket.create_connection(("127.0.0.1", port))
    _read_until(sock, b"\r\n")
    for line in (f"USER {user}", f"PASS {PASSWORD}"):
        sock.sendall(line.encode() + b"\r\n")
        _read_until(sock, b"\r\n")

    def retr() -> int:
        sock.sendall(b"RETR 1\r\n")
        return _read_until(sock, b"\r\n.\r\n")
    return retr


def _cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def compare_dovecot(size: int, rounds: int) -> None:
    """One ``size`` message out by IMAP FETCH and POP3 RETR, Mailhaven and Dovecot alternating."""
    from pop3_transfer import USER, DovecotPop3

    raw = big_message(size, USER, "0")
    limits = "[limits]\nmessage_size = \"200M\"\nimap_literal = \"200M\"\n"
    with tempfile.TemporaryDirectory(prefix="mh-large-dc-") as tmp:
        Path(tmp).chmod(0o755)      # Dovecot's auth process must reach its passwd file
        srv = ServerProcess(Path(tmp) / "data", extra_config=limits).start()
        dovecot = DovecotPop3(Path(tmp), imap=True)
        try:
            srv.add_user(USER, PASSWORD)
            with imaplib.IMAP4("127.0.0.1", srv.port("imap"), timeout=600) as m:
                m.login(USER, PASSWORD)
                assert m.append("INBOX", None, None, raw)[0] == "OK"
            dovecot.start([(raw, True, 1_700_000_000)])
            assert srv.proc is not None
            mh_pid = srv.proc.pid
            sides = {"mailhaven": (srv.port("imap"), srv.port("pop3"), lambda: [mh_pid]),
                     "dovecot": (dovecot.imap_port, dovecot.port, dovecot.pids)}
            print(f"one {size / 1e6:.0f} MB message out, {rounds} rounds, load {os.getloadavg()[0]:.1f}")
            for proto in ("IMAP FETCH", "POP3 RETR"):
                calls = {name: (_imap_fetch_one(imap, USER) if proto == "IMAP FETCH" else _pop3_retr_one(pop3, USER))
                         for name, (imap, pop3, _) in sides.items()}
                for call in calls.values():
                    call()                              # warm: the file in the page cache, sessions started
                secs: dict[str, list[float]] = {k: [] for k in sides}
                cpus: dict[str, list[float]] = {k: [] for k in sides}
                peaks: dict[str, list[float]] = {k: [] for k in sides}
                order = list(sides)
                for r in range(rounds):
                    for name in order if r % 2 == 0 else reversed(order):
                        pids = sides[name][2]()
                        start_rss = rss_kb(pids[0])         # the process tree
                        cpu0 = _cpu_seconds(pids)
                        t0 = time.monotonic()
                        with Sampler(pids[0]) as sampler:
                            got = calls[name]()
                        secs[name].append(time.monotonic() - t0)
                        cpus[name].append(_cpu_seconds(pids) - cpu0)
                        peaks[name].append((sampler.peak - start_rss) / 1024)
                        assert got > size, got
                for name in sides:
                    print(f"{proto:10s} {name:9s} median {statistics.median(secs[name]) * 1000:7.0f} ms "
                          f"(runs {', '.join(f'{x * 1000:.0f}' for x in secs[name])}); server CPU "
                          f"{statistics.median(cpus[name]) * 1000:5.0f} ms; RSS growth "
                          f"{max(peaks[name]):5.1f} MB")
                ratio = statistics.median(secs["dovecot"]) / statistics.median(secs["mailhaven"])
                print(f"{proto:10s} dovecot time / mailhaven time: {ratio:.2f} (target >= 0.5)")
        finally:
            dovecot.stop()
            srv.stop()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-mb", type=float, default=50)
    ap.add_argument("--parallel", type=int, default=4)
    ap.add_argument("--pg-dsn", help="run the server on PostgreSQL (a fresh schema, dropped after)")
    ap.add_argument("--dovecot", action="store_true", help="only the way out, against a private Dovecot")
    ap.add_argument("--rounds", type=int, default=5, help="with --dovecot: runs per server and protocol")
    args = ap.parse_args()
    size = int(args.size_mb * 1_000_000)
    if args.dovecot:
        compare_dovecot(size, args.rounds)
        return
    accounts = users(args.parallel)
    limits = "[limits]\nmessage_size = \"200M\"\nimap_literal = \"200M\"\n"
    pem, records = signing_key()
    with tempfile.TemporaryDirectory(prefix="mh-large-") as tmp, DNSServer(records) as dns:
        # every size DKIM-verified (the filter's own default since verification streams)
        checks = f'[dns]\nnameservers = ["127.0.0.1:{dns.port}"]\n[filter]\ndkim_max_size = "1G"\n'

        far_port = free_port("127.0.0.1")
        far = ServerProcess(Path(tmp) / "far", ports={"smtp": far_port}, extra_config=limits)
        srv = ServerProcess(Path(tmp) / "data", extra_config=limits + checks + (
            '[queue]\nretry = ["1s"]\npoll = "1s"\n'
            f'[relay]\nroutes = {{"far.example" = "127.0.0.1:{far_port}"}}\n' + pg_store(args.pg_dsn)))
        srv.write_config()
        srv.admin("dkim", "generate", "example.com", "--algorithm", "rsa", "--selector", "bench")
        srv.start()
        try:
            for a in accounts:
                srv.add_user(a, PASSWORD)
            assert srv.proc is not None
            pid = srv.proc.pid
            messages = {a: big_message(size, a, f"{i}") for i, a in enumerate(accounts)}
            time.sleep(1.0)
            idle = rss_kb(pid)
            print(f"server idle RSS: {idle / 1024:.0f} MB; {args.parallel} x {size / 1e6:.0f} MB messages")

            def smtp(a: str) -> None:
                with smtplib.SMTP("127.0.0.1", srv.port("smtp"), timeout=600) as s:
                    s.sendmail("sender@example.net", [a], messages[a])

            import dkim

            signed = {a: dkim.sign(raw, b"sel", b"example.net", pem, include_headers=[b"from", b"subject"]) + raw
                      for a in accounts if (raw := messages[a].replace(b"large ", b"signed ", 1))}

            def smtp_signed(a: str) -> None:
                raw = signed[a]
                with smtplib.SMTP("127.0.0.1", srv.port("smtp"), timeout=600) as s:
                    s.sendmail("sender@example.net", [a], raw)
                with imaplib.IMAP4("127.0.0.1", srv.port("imap"), timeout=600) as m:
                    m.login(a, PASSWORD)
                    m.select("INBOX", readonly=True)
                    typ, data = m.fetch("2", "(BODY.PEEK[HEADER.FIELDS (Authentication-Results)])")
                    assert typ == "OK" and b"dkim=pass" in data[0][1], data  # type: ignore[index]

            def append(a: str) -> None:
                with imaplib.IMAP4("127.0.0.1", srv.port("imap"), timeout=600) as m:
                    m.login(a, PASSWORD)
                    typ, data = m.append("INBOX", None, None, messages[a].replace(b"large ", b"appended ", 1))
                    assert typ == "OK", data

            def fetch(a: str) -> None:
                with imaplib.IMAP4("127.0.0.1", srv.port("imap"), timeout=600) as m:
                    m.login(a, PASSWORD)
                    m.select("INBOX", readonly=True)
                    typ, data = m.fetch("1", "(BODY.PEEK[])")
                    assert typ == "OK" and data[0] is not None and isinstance(data[0], tuple)
                    assert data[0][1].endswith(messages[a]), len(data[0][1])

            def retr(a: str) -> None:
                p = poplib.POP3("127.0.0.1", srv.port("pop3"), timeout=600)
                try:
                    p.user(a)
                    p.pass_(PASSWORD)
                    _, lines, octets = p.retr(3)
                    assert octets > size
                finally:
                    p.quit()

            phases: list[tuple[str, Callable[[str], None]]] = [
                ("SMTP DATA in", smtp), ("SMTP in, DKIM", smtp_signed), ("IMAP APPEND in", append),
                ("IMAP FETCH out", fetch), ("POP3 RETR out", retr)]
            for name, fn in phases:
                start_rss = rss_kb(pid)
                t0 = time.monotonic()
                with Sampler(pid) as sampler:
                    parallel([functools.partial(fn, a) for a in accounts])
                took = time.monotonic() - t0
                print(f"{name:16s} peak growth {(sampler.peak - start_rss) / 1024:7.0f} MB over the phase start, "
                      f"{(sampler.peak - idle) / 1024:7.0f} MB over idle; {took:6.1f} s")

            def submit(i: int, a: str) -> None:
                raw = messages[a].replace(b"From: sender@example.net", f"From: {a}".encode(), 1).replace(
                    f"To: {a}".encode(), f"To: out{i}@far.example".encode(), 1)
                with smtplib.SMTP("127.0.0.1", srv.port("submission"), timeout=600) as s:
                    s.starttls(context=ssl._create_unverified_context())
                    s.login(a, PASSWORD)
                    s.sendmail(a, [f"out{i}@far.example"], raw)

            def arrived(i: int) -> bool:
                with imaplib.IMAP4("127.0.0.1", far.port("imap"), timeout=60) as m:
                    m.login(f"out{i}@far.example", PASSWORD)
                    return m.select("INBOX", readonly=True)[1][0] == b"1"

            # the receiving accounts exist before it listens (a recipient the queue reaches
            # first would be refused; an admin command also clears DATA/tmp under a running server)
            far.write_config()
            for i in range(len(accounts)):
                far.add_user(f"out{i}@far.example", PASSWORD)
            parallel([functools.partial(submit, i, a) for i, a in enumerate(accounts)])
            time.sleep(2.0)                             # each has failed to connect once
            start_rss = rss_kb(pid)
            t0 = time.monotonic()
            with Sampler(pid) as sampler:
                far.start()
                while not all(arrived(i) for i in range(len(accounts))):
                    time.sleep(0.5)
            took = time.monotonic() - t0
            print(f"{'queue out, DKIM':16s} peak growth {(sampler.peak - start_rss) / 1024:7.0f} MB over the "
                  f"phase start, {(sampler.peak - idle) / 1024:7.0f} MB over idle; {took:6.1f} s "
                  "(with the receiving server's start)")
        finally:
            srv.stop()
            far.stop()
            if args.pg_dsn:
                drop_schema(args.pg_dsn)


if __name__ == "__main__":
    main()
