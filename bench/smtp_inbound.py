"""Inbound SMTP benchmark: C concurrent sessions send M messages of S bytes.

Prints accepted messages/s, p50/p99 transaction latency (MAIL to the final 250) and the
server's peak RSS (``--pid``, VmHWM from /proc). Every 250 counted is a durable message
(Mailhaven answers it only after fsync and commit).

    python bench/smtp_inbound.py 127.0.0.1:2525 --to bench@bench.example --pid PID
    python bench/smtp_inbound.py --spawn                      # a throw-away Mailhaven
    python bench/smtp_inbound.py --spawn --driver smtp-source # Postfix's load generator
    python bench/smtp_inbound.py --spawn --postfix-port 127.0.0.5:2526 --postfix-to bench@postfix.example
    python bench/smtp_inbound.py --spawn --idle 1000          # RSS of 1000 idle sessions
    python bench/smtp_inbound.py --spawn --workers 2 --server-cpus 0 --client-cpus 1  # pinned apart
    python bench/smtp_inbound.py --spawn --driver smtp-source --workers 0,1,2 --rounds 3 --client-cpus 1

``--workers 0,1,2`` runs each worker count in turn on a fresh server (and Postfix once a
round), ``--rounds`` times, and prints per worker its sessions, messages, rate and CPU
(read from the workers' shared table, smtp/balance.py, and /proc), then each figure's range.

``--postfix-port`` runs the same load against a Postfix listening there (see
bench/postfix_peer.py) and prints the ratio.

Every figure is printed twice: to the last 250, and with the deferred work done too (issue
18): Mailhaven until its search index backlog (``fts_pending``, read from ``--data`` or the
spawned data directory) is empty and its process tree has been quiet for a moment, Postfix
until the messages are in its Maildir (``--postfix-maildir``) or its processes are quiet. ``--spawn`` starts ``mailhaven serve`` on a
temporary data directory with one domain and user and the connection limits raised.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def message(size: int, n: int) -> bytes:
    head = (f"From: bench@sender.example\r\nTo: bench\r\nSubject: bench {n}\r\n"
            f"Message-ID: <bench.{n}.{time.time_ns()}@sender.example>\r\n\r\n").encode()
    line = b"The quick brown fox jumps over the lazy dog, again and again and again.\r\n"
    body = (line * (size // len(line) + 1))[: max(0, size - len(head) - 2)]
    return head + body + b"\r\n"


async def read_reply(reader: asyncio.StreamReader) -> bytes:
    while True:
        line = await reader.readline()
        if not line:
            raise ConnectionError("server closed")
        if line[3:4] != b"-":
            return line


async def session(host: str, port: int, sender: str, rcpt: str, count: int, size: int,
                  latencies: list[float], counter: list[int]) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    await read_reply(reader)
    writer.write(b"EHLO bench.example\r\n")
    await read_reply(reader)
    for i in range(count):
        body = message(size, i)
        start = time.perf_counter()
        # PIPELINING (RFC 2920): MAIL, RCPT, DATA in one write.
        writer.write(f"MAIL FROM:<{sender}> SIZE={len(body)}\r\nRCPT TO:<{rcpt}>\r\nDATA\r\n".encode())
        replies = [await read_reply(reader) for _ in range(3)]
        if not replies[2].startswith(b"354"):
            raise RuntimeError(f"refused: {replies}")
        writer.write(body + b".\r\n")
        final = await read_reply(reader)
        if final.startswith(b"250"):
            latencies.append(time.perf_counter() - start)
            counter[0] += 1
        else:
            counter[1] += 1
    writer.write(b"QUIT\r\n")
    await read_reply(reader)
    writer.close()


async def run_python(host: str, port: int, args: argparse.Namespace, rcpt: str) -> dict[str, float]:
    latencies: list[float] = []
    counter = [0, 0]
    per = [args.messages // args.concurrency + (1 if i < args.messages % args.concurrency else 0)
           for i in range(args.concurrency)]
    start = time.perf_counter()
    await asyncio.gather(*(session(host, port, args.sender, rcpt, n, args.size, latencies, counter)
                           for n in per if n))
    elapsed = time.perf_counter() - start
    latencies.sort()

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000 if latencies else 0.0

    return {"accepted": counter[0], "refused": counter[1], "seconds": elapsed, "start": start,
            "rate": counter[0] / elapsed, "p50_ms": pct(0.50), "p99_ms": pct(0.99)}


def run_smtp_source(host: str, port: int, args: argparse.Namespace, rcpt: str) -> dict[str, float]:
    exe = shutil.which("smtp-source") or "/usr/sbin/smtp-source"
    cmd = [exe, "-d", "-l", str(args.size), "-m", str(args.messages), "-s", str(args.concurrency),
           "-f", args.sender, "-t", rcpt, f"{host}:{port}"]
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    elapsed = time.perf_counter() - start
    return {"accepted": args.messages, "refused": 0, "seconds": elapsed, "start": start,
            "rate": args.messages / elapsed, "p50_ms": float("nan"), "p99_ms": float("nan")}


def peak_rss_mb(pid: int | None) -> float | None:
    if not pid:
        return None
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _family_stats(pid: int) -> Iterator[tuple[int, list[str]]]:
    """``(pid, /proc stat fields after the name)`` of the process and of its live children
    (SMTP worker processes)."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(entry) == pid or int(fields[1]) == pid:
            yield int(entry), fields


def cpu_seconds(pid: int | None) -> tuple[float, float] | None:
    """(user, system) CPU seconds of the process (all its threads) and of its live
    children (SMTP worker processes), from /proc."""
    if not pid:
        return None
    tick = os.sysconf("SC_CLK_TCK")
    stats = list(_family_stats(pid))
    if not stats:
        return None
    return (sum(int(f[11]) for _, f in stats) / tick, sum(int(f[12]) for _, f in stats) / tick)


def run_delay(pid: int) -> float:
    """Seconds ``pid``'s threads spent runnable but waiting for a core (schedstat): CPU
    the machine did not give, as against work the process did not have."""
    total = 0.0
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            total += int(Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        pass
    return total


def tree_cpu(pid: int) -> dict[int, float]:
    """CPU seconds (user + system) of ``pid`` and of each of its children, by pid; each
    one's wait for a core under ``-pid``."""
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[int, float] = {}
    for proc, fields in _family_stats(pid):
        out[proc] = (int(fields[11]) + int(fields[12])) / tick
        out[-proc] = run_delay(proc)
    return out


def per_worker(pid: int, before: dict[int, float], after: dict[int, float],
               table_before: list[dict[str, float]] | None, seconds: float) -> list[dict[str, float]]:
    """Each SMTP worker's share of a run: messages delivered and sessions accepted (the
    workers' shared table), its rate over the run and its CPU; the main process last."""
    rows = table(pid) or []
    out = []
    for i, row in enumerate(rows):
        was = table_before[i] if table_before and i < len(table_before) else {"messages": 0, "accepted": 0}
        wpid = int(row["pid"])
        out.append({"worker": i, "messages": row["messages"] - was["messages"],
                    "sessions": row["accepted"] - was["accepted"],
                    "rate": (row["messages"] - was["messages"]) / seconds,
                    "cpu": after.get(wpid, 0.0) - before.get(wpid, 0.0),
                    "waited": after.get(-wpid, 0.0) - before.get(-wpid, 0.0)})
    out.append({"worker": -1, "cpu": after.get(pid, 0.0) - before.get(pid, 0.0),
                "waited": after.get(-pid, 0.0) - before.get(-pid, 0.0)})
    return out


def table(pid: int | None) -> list[dict[str, float]] | None:
    """The SMTP workers' shared table (smtp/balance.py); None on a server without one."""
    if not pid:
        return None
    sys.path.insert(0, str(ROOT / "src"))
    try:
        from mailhaven.smtp.balance import read_table
    except ImportError:                 # a server from before the table (by CPU only)
        return [{"pid": p, "messages": 0, "accepted": 0} for p in sorted(tree_cpu(pid)) if p > 0 and p != pid] or None
    return read_table(pid)


def report_workers(rows: list[dict[str, float]], seconds: float) -> None:
    total = sum(r.get("messages", 0) for r in rows) or 1
    for r in rows:
        if r["worker"] < 0:
            print(f"  main process: CPU {r['cpu']:.2f} s ({r['cpu'] / seconds * 100:.0f}% of a core), "
                  f"waited for a core {r['waited']:.2f} s")
            continue
        if not r["sessions"]:           # no table (a server from before it): CPU only
            print(f"  worker {int(r['worker'])}: CPU {r['cpu']:.2f} s ({r['cpu'] / seconds * 100:.0f}% of a core), "
                  f"waited for a core {r['waited']:.2f} s")
            continue
        print(f"  worker {int(r['worker'])}: {int(r['sessions'])} sessions, {int(r['messages'])} messages "
              f"({r['messages'] / total * 100:.0f}%), {r['rate']:.0f} msg/s, CPU {r['cpu']:.2f} s "
              f"({r['cpu'] / seconds * 100:.0f}% of a core, "
              f"{r['cpu'] / max(1, r['messages']) * 1000:.2f} ms a message), "
              f"runnable but waiting for a core {r['waited']:.2f} s ({r['waited'] / seconds * 100:.0f}% of the run)")


def load_average() -> str:
    return Path("/proc/loadavg").read_text().split()[0]


QUIET_CPU = 0.2
"""Share of one core below which a server process tree counts as quiet."""


def index_backlog(db: Path) -> int:
    """Messages whose search text waits in ``fts_pending`` (-1: unreadable just now)."""
    import sqlite3

    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as conn:
            return int(conn.execute("SELECT count(*) FROM fts_pending").fetchone()[0])
    except sqlite3.Error:
        return -1


def maildir_count(maildir: Path) -> int:
    return sum(len(os.listdir(maildir / d)) for d in ("new", "cur") if (maildir / d).is_dir())


def settled(pid: int | None, busy_now: Callable[[], bool], hold: float) -> float:
    """perf_counter time at which the server's deferred work ended: ``busy_now()`` false and
    the process tree (``pid``, when known) below QUIET_CPU, for ``hold`` seconds after it."""
    sample = 0.1
    last_busy = time.perf_counter()
    before = cpu_seconds(pid)
    while True:
        time.sleep(sample)
        now = time.perf_counter()
        after = cpu_seconds(pid)
        busy = busy_now()
        if before is not None and after is not None:
            busy = busy or sum(after) - sum(before) > QUIET_CPU * sample
        before = after
        if busy:
            last_busy = now
        elif now - last_busy >= hold:
            return last_busy


def with_deferred(r: dict[str, float], end: float) -> None:
    r["deferred_seconds"] = max(r["seconds"], end - r["start"])
    r["deferred_rate"] = r["accepted"] / r["deferred_seconds"]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Spawned:
    """A throw-away ``mailhaven serve`` with one domain and user."""

    def __init__(self, rcpt: str, workers: int = 0, cpus: str | None = None) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="mh-bench-"))
        self.port = free_port()
        env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
        self.env = env
        listen = "\n".join(f'{n} = ""' for n in ("submission", "submissions", "imap", "imaps",
                                                  "pop3", "pop3s", "http", "managesieve"))
        (self.dir / "mailhaven.toml").write_text(
            f'hostname = "bench.example"\nlog_level = "warning"\n[listen]\nsmtp = "127.0.0.1:{self.port}"\n'
            f"{listen}\n[limits]\nconnections = 5000\nconnections_per_ip = 5000\n"
            "unauthenticated_per_ip = 5000\nconnections_per_network = 5000\n"
            f"[smtp]\nworkers = {workers}\n")
        domain = rcpt.rpartition("@")[2]
        self.cli("domain", "add", domain)
        self.cli("user", "add", rcpt, "--password-stdin", input="bench-password\n")
        pin = ["taskset", "-c", cpus] if cpus else []         # the server and its workers
        # A session of its own, as a daemon (Postfix's master setsid()s): with the kernel's
        # autogroup scheduling a session shares one fair share of the CPU, so the server
        # left in this process's session competed with its own load generator for it.
        self.proc = subprocess.Popen([*pin, sys.executable, "-m", "mailhaven", "--data", str(self.dir), "serve"],
                                     env=env, stdout=subprocess.PIPE, stderr=None, text=True,
                                     start_new_session=True)
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.strip() == "Ready.":
                break

    def cli(self, *args: str, input: str | None = None) -> None:
        subprocess.run([sys.executable, "-m", "mailhaven", "--data", str(self.dir), *args],
                       env=self.env, check=True, input=input, text=True, stdout=subprocess.DEVNULL)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=30)
        shutil.rmtree(self.dir, ignore_errors=True)


async def idle_connections(host: str, port: int, n: int, pid: int | None) -> None:
    before = rss_mb(pid) if pid else None
    conns = []
    for _ in range(n):
        reader, writer = await asyncio.open_connection(host, port)
        conns.append((reader, writer))
    for reader, writer in conns:
        line = await reader.readline()
        if not line.startswith(b"220"):
            raise RuntimeError(f"connection refused: {line!r}")
        writer.write(b"EHLO idle.example\r\n")
    for reader, _ in conns:
        await read_reply(reader)
    await asyncio.sleep(1)
    after = rss_mb(pid) if pid else None
    print(f"idle sessions: {n} open after EHLO")
    if pid and before is not None and after is not None:
        print(f"server RSS: {before:.1f} MB before, {after:.1f} MB with {n} idle sessions "
              f"({(after - before) * 1024 / n:.1f} KB each)")
    for _, writer in conns:
        writer.close()


def report(label: str, r: dict[str, float], pid: int | None) -> None:
    rss = peak_rss_mb(pid)
    cpu = r.get("cpu")
    print(f"{label}: {int(r['accepted'])} accepted, {int(r['refused'])} refused in {r['seconds']:.2f} s "
          f"= {r['rate']:.0f} msg/s; latency p50 {r['p50_ms']:.1f} ms p99 {r['p99_ms']:.1f} ms"
          + (f"; server peak RSS {rss:.1f} MB" if rss else "")
          + (f"; server CPU {cpu:.2f} s, {r['cpu_user']:.2f} s user ({cpu / r['seconds'] * 100:.0f}% of one core, "
             f"{cpu / max(1, r['accepted']) * 1000:.2f} ms per message)" if cpu else ""))
    if "deferred_seconds" in r:
        print(f"{label} with deferred work: {r['deferred_seconds']:.2f} s = {r['deferred_rate']:.0f} msg/s "
              f"({r['deferred_seconds'] - r['seconds']:.2f} s after the last 250)"
              + (f"; server CPU {r['deferred_cpu']:.2f} s, {r['deferred_cpu'] / max(1, r['accepted']) * 1000:.2f} ms "
                 "per message" if "deferred_cpu" in r else ""))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("target", nargs="?", help="host:port of the Mailhaven SMTP listener")
    ap.add_argument("-c", "--concurrency", type=int, default=10)
    ap.add_argument("-m", "--messages", type=int, default=20000)
    ap.add_argument("-s", "--size", type=int, default=4096)
    ap.add_argument("--sender", default="bench@sender.example")
    ap.add_argument("--to", default="bench@bench.example")
    ap.add_argument("--pid", type=int, help="server process id, for its peak RSS")
    ap.add_argument("--driver", choices=["python", "smtp-source"], default="python")
    ap.add_argument("--spawn", action="store_true", help="start a throw-away Mailhaven")
    ap.add_argument("--postfix-port", help="host:port of a Postfix to run the same load against")
    ap.add_argument("--postfix-to", default="bench@postfix.example")
    ap.add_argument("--postfix-pid", type=int, help="Postfix master pid (its processes' CPU and quiet)")
    ap.add_argument("--postfix-maildir", type=Path, help="the Maildir Postfix delivers the load into")
    ap.add_argument("--data", type=Path, help="data directory of the target Mailhaven (its search backlog)")
    ap.add_argument("--idle", type=int, default=0, help="measure RSS of this many idle sessions instead")
    ap.add_argument("--workers", default="0",
                    help="[smtp] workers of the spawned server; a list (0,1,2) runs each in turn")
    ap.add_argument("--rounds", type=int, default=1, help="with --spawn: repeat the list this often")
    ap.add_argument("--server-cpus", help="taskset CPU list for the spawned server (and its workers)")
    ap.add_argument("--client-cpus", help="CPU list for this load generator, e.g. 1 (kept apart from the server)")
    args = ap.parse_args()
    if args.client_cpus:
        # The spawned server inherits this process's affinity: without --server-cpus it
        # would share the generator's CPU (every worker on one core). Give it what this
        # process had before pinning itself.
        if not args.server_cpus:
            args.server_cpus = ",".join(str(c) for c in sorted(os.sched_getaffinity(0)))
        os.sched_setaffinity(0, {int(c) for c in args.client_cpus.split(",")})
    if args.driver == "smtp-source" and not (shutil.which("smtp-source") or Path("/usr/sbin/smtp-source").exists()):
        sys.exit("smtp-source is not installed (Debian: apt-get install postfix)")
    counts = [int(w) for w in args.workers.split(",")]
    print(f"load: {args.concurrency} sessions, {args.messages} messages of {args.size} bytes, "
          f"driver {args.driver}" + (f", load generator on CPU {args.client_cpus}" if args.client_cpus else ""))
    if not args.spawn:
        if not args.target:
            sys.exit("give host:port or --spawn")
        host, _, p = args.target.rpartition(":")
        one_run(args, host, int(p), args.pid, args.data, None)
        return
    results: dict[str, list[dict[str, float]]] = {}
    for rnd in range(args.rounds):
        for workers in counts:
            spawned = Spawned(args.to, workers, args.server_cpus)
            try:
                label = f"workers={workers}"
                print(f"-- round {rnd + 1}, {label}, load {load_average()}")
                r = one_run(args, "127.0.0.1", spawned.port, spawned.proc.pid, spawned.dir, label)
                results.setdefault(label, []).append(r)
            finally:
                spawned.stop()
        if args.postfix_port:
            print(f"-- round {rnd + 1}, postfix, load {load_average()}")
            theirs = postfix_run(args)
            results.setdefault("postfix", []).append(theirs)
            for workers in counts:
                print_ratio(f"workers={workers}", results[f"workers={workers}"][-1], theirs)
    if args.rounds > 1 or len(counts) > 1:
        print("summary (ranges over rounds):")
        for label, rs in results.items():
            def rng(key: str, scale: float = 1.0, rs: list[dict[str, float]] = rs) -> str:
                vals = [r[key] * scale for r in rs if key in r]
                return f"{min(vals):.0f}-{max(vals):.0f}" if vals and scale == 1.0 else (
                    f"{min(vals):.2f}-{max(vals):.2f}" if vals else "-")
            print(f"  {label}: {rng('rate')} msg/s to the last 250, {rng('deferred_rate')} with deferred work; "
                  f"server CPU {rng('cpu_per_message', 1000.0)} ms a message; loads {[r['load'] for r in rs]}")


def load(args: argparse.Namespace, h: str, pt: int, rcpt: str, server_pid: int | None,
         settle: Callable[[], float] | None) -> dict[str, float]:
    cpu_before = cpu_seconds(server_pid)
    if args.driver == "smtp-source":
        result = run_smtp_source(h, pt, args, rcpt)
    else:
        result = asyncio.run(run_python(h, pt, args, rcpt))
    cpu_after = cpu_seconds(server_pid)
    if cpu_before is not None and cpu_after is not None:
        result["cpu_user"] = cpu_after[0] - cpu_before[0]
        result["cpu"] = result["cpu_user"] + cpu_after[1] - cpu_before[1]
    if settle is not None:
        with_deferred(result, settle())
        cpu_settled = cpu_seconds(server_pid)
        if cpu_before is not None and cpu_settled is not None:
            result["deferred_cpu"] = sum(cpu_settled) - sum(cpu_before)
    cpu = result.get("deferred_cpu", result.get("cpu"))
    if cpu is not None:
        result["cpu_per_message"] = cpu / max(1, result["accepted"])
    result["load"] = float(load_average())
    return result


def one_run(args: argparse.Namespace, host: str, port: int, pid: int | None, data: Path | None,
            label: str | None) -> dict[str, float]:
    if args.idle:
        asyncio.run(idle_connections(host, port, args.idle, pid))
        return {}
    db = data / "mailhaven.db" if data is not None else None
    procs_before = tree_cpu(pid) if pid else {}
    table_before = table(pid)
    # Without the backlog to read, quiet must outlast the indexer's wait for quiet (1 s).
    ours = load(args, host, port, args.to, pid, (lambda: settled(
        pid, lambda: db is not None and index_backlog(db) != 0, 0.5 if db is not None else 2.0))
        if db is not None or pid else None)
    report(f"mailhaven {label}" if label else "mailhaven", ours, pid)
    if pid:
        rows = per_worker(pid, procs_before, tree_cpu(pid), table_before, ours["seconds"])
        if len(rows) > 1:
            report_workers(rows, ours["seconds"])
    if args.postfix_port and not args.spawn:
        print_ratio("mailhaven", ours, postfix_run(args))
    return ours


def print_ratio(label: str, ours: dict[str, float], theirs: dict[str, float]) -> None:
    print(f"ratio {label}/postfix: {ours['rate'] / theirs['rate']:.2f} to the last 250"
          + (f", {ours['deferred_rate'] / theirs['deferred_rate']:.2f} with deferred work"
             if "deferred_rate" in ours and "deferred_rate" in theirs else ""))


def postfix_run(args: argparse.Namespace) -> dict[str, float]:
    ph, _, pp = args.postfix_port.rpartition(":")
    maildir = args.postfix_maildir
    expected = (maildir_count(maildir) if maildir else 0) + args.messages
    theirs = load(args, ph, int(pp), args.postfix_to, args.postfix_pid, (lambda: settled(
        args.postfix_pid, lambda: maildir is not None and maildir_count(maildir) < expected, 0.5))
        if maildir is not None or args.postfix_pid else None)
    report("postfix", theirs, args.postfix_pid)
    return theirs


if __name__ == "__main__":
    main()
