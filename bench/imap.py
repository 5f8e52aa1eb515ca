"""IMAP benchmark: logins/s, APPEND rate, FETCH and SEARCH throughput on a large mailbox,
and RSS with many idle IDLE connections. Optionally the same workload against Dovecot.

    python bench/imap.py [--messages 10000] [--idle 2000] [--dovecot]
    python bench/imap.py --messages 1000,10000,100000 --idle 0 --dovecot   # the scaling run

Starts its own ``mailhaven serve`` on free ports in a temporary directory (and, with
``--dovecot``, a private Dovecot instance beside it). The short timed runs alternate between
the two servers, so the ratio is not skewed by a slow spell of a shared machine falling on
one of them. Several ``--messages`` sizes make the scaling run: each size on fresh servers,
then every workload's ratio and Mailhaven's time per message side by side, and the memory
a selected mailbox costs (PSS with one session's mailbox of that size selected, less PSS
with an empty mailbox selected, Mailhaven freshly restarted). Each timed workload also gives the
servers' CPU (utime+stime of their processes) per operation, which moves much less than
the rates when the machine is shared. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

ROOT = Path(__file__).resolve().parent.parent
USER, PASSWORD = "bench@example.com", "bench-password"
T = TypeVar("T")
WORDS = ("alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november "
         "oscar papa quebec romeo sierra tango uniform victor whiskey xray yankee zulu").split()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_message(i: int, rng: random.Random) -> bytes:
    subject = " ".join(rng.choice(WORDS) for _ in range(5))
    body = "\r\n".join(" ".join(rng.choice(WORDS) for _ in range(12)) for _ in range(rng.randint(5, 60)))
    return (f"From: Sender {i % 97} <sender{i % 97}@example.org>\r\nTo: {USER}\r\n"
            f"Subject: {subject} {i}\r\nDate: Mon, 1 Jan 2024 10:{i % 60:02d}:00 +0000\r\n"
            f"Message-ID: <bench-{i}@example.org>\r\nMIME-Version: 1.0\r\n"
            f"Content-Type: text/plain; charset=utf-8\r\n\r\n{body}\r\n").encode()


# -- a minimal asyncio IMAP client ---------------------------------------------------------


class Conn:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.n = 0

    @classmethod
    async def open(cls, port: int) -> Conn:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
        conn = cls(reader, writer)
        await reader.readline()
        return conn

    async def read_response(self, tag: bytes) -> tuple[bytes, int]:
        """Until the tagged line; returns (tagged line, bytes read)."""
        total = 0
        while True:
            line = await self.reader.readline()
            if not line:
                raise ConnectionError("closed")
            total += len(line)
            if line.endswith(b"}\r\n"):
                start = line.rfind(b"{")
                n = int(line[start + 1:-3].rstrip(b"+"))
                total += len(await self.reader.readexactly(n))
                continue
            if line.startswith(tag + b" "):
                return line, total

    async def cmd(self, text: str, literal: bytes | None = None) -> tuple[bytes, int]:
        self.n += 1
        tag = b"b%d" % self.n
        if literal is None:
            self.writer.write(tag + b" " + text.encode() + b"\r\n")
        else:
            self.writer.write(tag + b" " + text.encode() + b" {%d+}\r\n" % len(literal) + literal + b"\r\n")
        line, total = await self.read_response(tag)
        if b" OK" not in line[:len(tag) + 4]:
            raise RuntimeError(f"{text[:60]!r}: {line!r}")
        return line, total

    async def login(self) -> None:
        await self.cmd(f'LOGIN "{USER}" "{PASSWORD}"')

    async def close(self) -> None:
        try:
            self.writer.write(b"z LOGOUT\r\n")
            await self.writer.drain()
        except ConnectionError:
            pass
        self.writer.close()


def _run(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(main)``, on uvloop where it is installed (as the server runs): the
    one-message FETCHes are one round trip after another, and the client's CPU is in each
    (75-100 µs a command on the stdlib loop, 56-70 on uvloop, alternating runs at load 4-5;
    either server's is 80-200): the same client for both servers, a smaller share of the
    rate. (Parsing responses from whole reads instead of a readline per line was slower.)"""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)


# -- servers --------------------------------------------------------------------------


class Mailhaven:
    def __init__(self, tmp: Path, max_conns: int, name: str = "mailhaven", src: Path = ROOT / "src") -> None:
        self.name = name
        self.src = src
        """The source tree it runs (``--base``: another commit's, on a copy of the same data)."""
        self.data = tmp / name
        self.port = free_port()
        self.max_conns = max_conns
        self.proc: subprocess.Popen[str] | None = None

    def env(self) -> dict[str, str]:
        return dict(os.environ, PYTHONPATH=str(self.src), PYTHONUNBUFFERED="1")

    def cli(self, *args: str, input: str | None = None) -> None:
        subprocess.run([sys.executable, "-m", "mailhaven", "--data", str(self.data), *args], input=input,
                       text=True, check=True, capture_output=True, env=self.env())

    def start(self, filled: bool = False) -> None:
        """A new account in a new data directory, or (``filled``) the data already there."""
        self.data.mkdir(parents=True, exist_ok=filled)
        ports = {n: 0 for n in ("smtp", "submission", "submissions", "imaps", "pop3", "pop3s", "http",
                                "managesieve")}   # off: its default port is fixed (24190)
        listen = "\n".join(f'{n} = ""' for n in ports) + f'\nimap = "127.0.0.1:{self.port}"\n'
        (self.data / "mailhaven.toml").write_text(
            f'hostname = "bench.example"\n[listen]\n{listen}\n[limits]\n'
            f"connections = {self.max_conns + 100}\nconnections_per_ip = {self.max_conns + 100}\n"
            f"unauthenticated_per_ip = {self.max_conns + 100}\n"
            f"connections_per_network = {self.max_conns + 100}\n")
        if not filled:
            self.cli("domain", "add", "example.com")
            self.cli("user", "add", USER, "--password-stdin", input=PASSWORD + "\n")
        self.proc = subprocess.Popen([sys.executable, "-m", "mailhaven", "--data", str(self.data), "serve"],
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=self.env())
        assert self.proc.stdout is not None
        while True:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError("mailhaven did not start")
            if line.strip() == "Ready.":
                break

    def restart(self) -> None:
        """A fresh process on the same data (what a SELECT costs, not what APPENDs left)."""
        self.stop()
        self.proc = subprocess.Popen([sys.executable, "-m", "mailhaven", "--data", str(self.data), "serve"],
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=self.env())
        assert self.proc.stdout is not None
        while (line := self.proc.stdout.readline()) and line.strip() != "Ready.":
            pass

    def pids(self) -> list[int]:
        return [self.pid()]

    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def rss_kb(self) -> int:
        return _rss([self.pid()])

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()


class Dovecot:
    name = "dovecot"

    def __init__(self, tmp: Path, max_conns: int) -> None:
        self.data = self.dir = tmp / "dovecot"
        self.port = free_port()
        self.max_conns = max_conns
        self.binary = shutil.which("dovecot") or "/usr/sbin/dovecot"

    def start(self, filled: bool = False) -> None:
        d = self.dir
        for sub in ("run", "state", "home"):
            (d / sub).mkdir(parents=True, exist_ok=True)
        (d / "passwd").write_text(f"{USER}:{{PLAIN}}{PASSWORD}\n")
        uid = 65534  # nobody: Dovecot refuses to run mail processes as root
        os.chown(d / "home", uid, uid)
        conf = d / "dovecot.conf"
        conf.write_text(f"""
base_dir = {d}/run
state_dir = {d}/state
log_path = {d}/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
first_valid_uid = 0
mail_location = maildir:{d}/home/%u/Maildir
passdb {{
  driver = passwd-file
  args = {d}/passwd
}}
userdb {{
  driver = static
  args = uid={uid} gid={uid} home={d}/home/%u
}}
service auth {{
  client_limit = {2 * self.max_conns + 300}
}}
service anvil {{
  client_limit = {2 * self.max_conns + 300}
}}
default_process_limit = {self.max_conns + 100}
default_client_limit = {self.max_conns + 100}
service imap-login {{
  inet_listener imap {{
    port = {self.port}
  }}
  inet_listener imaps {{
    port = 0
  }}
  process_min_avail = 2
  service_count = 0
}}
service imap {{
  process_limit = {self.max_conns + 100}
}}
protocol imap {{
  mail_max_userip_connections = {self.max_conns + 100}
}}
""")
        self.conf = conf
        subprocess.run([self.binary, "-c", str(conf)], check=True)
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                time.sleep(1)  # let the auth process come up
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("dovecot did not start")

    def rss_kb(self) -> int:
        out = subprocess.run(["pgrep", "-f", f"{self.dir}"], capture_output=True, text=True).stdout.split()
        pids = [int(p) for p in out]
        master = (self.dir / "run" / "master.pid")
        if master.exists():
            mp = int(master.read_text().strip())
            pids += [int(p) for p in subprocess.run(["pgrep", "-P", str(mp)], capture_output=True,
                                                      text=True).stdout.split()] + [mp]
        return _rss(sorted(set(pids)))

    def restart(self) -> None:
        """Nothing to do: each Dovecot session has its own imap process."""

    def pids(self) -> list[int]:
        out = subprocess.run(["pgrep", "-f", f"{self.dir}"], capture_output=True, text=True).stdout.split()
        pids = [int(p) for p in out]
        master = (self.dir / "run" / "master.pid")
        if master.exists():
            mp = int(master.read_text().strip())
            pids += [int(p) for p in subprocess.run(["pgrep", "-P", str(mp)], capture_output=True,
                                                      text=True).stdout.split()] + [mp]
        return sorted(set(pids))

    def stop(self) -> None:
        master = self.dir / "run" / "master.pid"
        pid = int(master.read_text().strip()) if master.exists() else None
        subprocess.run([self.binary, "-c", str(self.conf), "stop"], capture_output=True)
        deadline = time.time() + 10
        while pid is not None and time.time() < deadline and Path(f"/proc/{pid}").exists():
            time.sleep(0.05)      # gone before a restart on the same files and port


def _rss(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total


def _pss_kb(pids: list[int]) -> int:
    """Proportional set size (shared pages split between their processes) of ``pids``."""
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total


# -- workloads ------------------------------------------------------------------------


async def bench_logins(ports: dict[str, int], seconds: float, concurrency: int) -> dict[str, float]:
    """Logins per second, in one-second turns per server, alternating, until each has had
    ``seconds`` (a whole series at once would put a slow spell on one server only)."""
    counts = {name: 0 for name in ports}
    spent = {name: 0.0 for name in ports}
    turns = max(1, round(seconds))
    for i in range(turns):
        for name in list(ports) if i % 2 == 0 else list(reversed(list(ports))):
            deadline = time.perf_counter() + seconds / turns

            async def worker(port: int = ports[name], name: str = name, deadline: float = deadline) -> None:
                while time.perf_counter() < deadline:
                    c = await Conn.open(port)
                    await c.login()
                    await c.close()
                    counts[name] += 1

            start = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(concurrency)))
            spent[name] += time.perf_counter() - start
    return {name: counts[name] / spent[name] for name in ports}


async def bench_append(port: int, messages: list[bytes], concurrency: int) -> dict[str, float]:
    """APPEND rate, and the rate counting the time until a first text SEARCH has answered:
    Mailhaven indexes search text after delivery (as Dovecot's indexer does), so the work
    an APPEND leaves behind is paid there, before the FETCH figures are taken."""
    conns = [await Conn.open(port) for _ in range(concurrency)]
    for c in conns:
        await c.login()
    queue = list(enumerate(messages))
    start = time.perf_counter()

    async def worker(c: Conn) -> None:
        while queue:
            _, raw = queue.pop()
            await c.cmd("APPEND INBOX", raw)

    await asyncio.gather(*(worker(c) for c in conns))
    appended = time.perf_counter() - start
    await conns[0].cmd("SELECT INBOX")
    await conns[0].cmd('SEARCH BODY "no-such-word-anywhere"')
    searchable = time.perf_counter() - start
    for c in conns:
        await c.close()
    return {"APPEND msgs/s (8 conns)": len(messages) / appended,
            "APPEND until searchable msgs/s": len(messages) / searchable}


REPEAT = 5
BULK = 4
"""Bulk FETCHes per timed run (see bench_fetch_search)."""
"""Each timed workload runs this many times per server and the median rate is reported:
one run of a bulk FETCH lasts a fraction of a second, and on a shared machine a single run
swung the ratio to Dovecot by a factor of two either way."""

SINGLES = 1000
"""One-message FETCHes per timed run (200 before: at 10 ms a CPU tick, too few to time their CPU)."""

Run = Callable[[], Awaitable[object]]


def cpu_seconds(pids: list[int]) -> float:
    """CPU time of ``pids``: the scheduler's run time of each of their threads
    (``/proc/PID/task/TID/schedstat``, in nanoseconds), else utime + stime from
    ``/proc/PID/stat``, counted in clock ticks: 10 ms, so 1,000 one-message FETCHes could
    only be told apart by 10 µs a command (every figure came out a multiple of ten)."""
    total = 0.0
    for pid in pids:
        try:
            tids = os.listdir(f"/proc/{pid}/task")
            total += sum(int(Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()[0])
                         for tid in tids) / 1e9
            continue
        except (OSError, ValueError, IndexError):
            pass
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


CPU_SUFFIX = " server CPU us/op"
"""Added to a workload's label for the server CPU (utime+stime) per operation, the median
over its runs: a firmer figure than the rate on a shared machine."""


async def _median_rates(n: int, runs: dict[str, Run], repeat: int = REPEAT,
                        pids: dict[str, Callable[[], list[int]]] | None = None) -> dict[str, tuple[float, float]]:
    """The median rate of each server's run and its server CPU per operation (µs), the
    servers' runs interleaved (A B, then B A, ...) so that a slow spell of the shared
    machine falls on both, not on one server's whole series."""
    rates: dict[str, list[float]] = {name: [] for name in runs}
    cpus: dict[str, list[float]] = {name: [] for name in runs}
    order = list(runs)
    for i in range(repeat):
        for name in order if i % 2 == 0 else reversed(order):
            procs = pids[name]() if pids else []
            cpu = cpu_seconds(procs)
            start = time.perf_counter()
            await runs[name]()
            rates[name].append(n / (time.perf_counter() - start))
            cpus[name].append((cpu_seconds(procs) - cpu) / n * 1e6)
    return {name: (statistics.median(rates[name]), statistics.median(cpus[name])) for name in runs}


async def bench_fetch_search(ports: dict[str, int], total: int, pids: dict[str, Callable[[], list[int]]],
                             only: list[str] | None = None) -> dict[str, dict[str, float]]:
    """The timed FETCH, SEARCH, SELECT and STORE workloads (``only``: those whose label
    holds one of these strings)."""
    conns: dict[str, Conn] = {}
    for name, port in ports.items():
        conns[name] = c = await Conn.open(port)
        await c.login()
        await c.cmd("SELECT INBOX")
    out: dict[str, dict[str, float]] = {name: {} for name in ports}

    async def measure(label: str, n: int, command: Callable[[Conn], Run], repeat: int = REPEAT) -> None:
        if only and not any(o in label for o in only):
            return
        print(f"  {label}", file=sys.stderr, flush=True)
        figures = await _median_rates(n, {k: command(c) for k, c in conns.items()}, repeat, pids)
        for name, (rate, cpu) in figures.items():
            out[name][label] = rate
            out[name][label + CPU_SUFFIX] = cpu

    def cmd(text: str, times: int = 1) -> Callable[[Conn], Run]:
        """``text`` sent ``times`` times in a row per timed run."""
        def run(c: Conn) -> Run:
            async def go() -> None:
                for _ in range(times):
                    await c.cmd(text)
            return go
        return run

    # A bulk FETCH of the benchmark mailbox takes tens of milliseconds; a timed run of one
    # swung the ratio by a third between runs on the shared machine, so each run is BULK in a row.
    await measure("fetch flags msgs/s", BULK * total, cmd("FETCH 1:* (UID FLAGS RFC822.SIZE INTERNALDATE)", BULK))
    await measure("fetch envelope+bodystructure msgs/s", BULK * total, cmd("FETCH 1:* (ENVELOPE BODYSTRUCTURE)", BULK))
    n = min(total, 2000)
    sizes = {name: (await c.cmd(f"FETCH 1:{n} (BODY.PEEK[])"))[1] for name, c in conns.items()}
    await measure("fetch BODY[] msgs/s", BULK * n, cmd(f"FETCH 1:{n} (BODY.PEEK[])", BULK))
    for name in out:
        if "fetch BODY[] msgs/s" in out[name]:
            out[name]["fetch BODY[] MB/s"] = out[name]["fetch BODY[] msgs/s"] * sizes[name] / n / 1e6

    def singles(c: Conn) -> Run:
        async def run() -> None:
            for _ in range(SINGLES):
                await c.cmd(f"UID FETCH {random.randint(1, total)} (BODY.PEEK[HEADER.FIELDS (SUBJECT FROM)] FLAGS)")
        return run

    await measure("single-message fetch cmds/s", SINGLES, singles)
    searches = {
        "search UNSEEN LARGER": "SEARCH UNSEEN LARGER 1000",
        "search SUBJECT (fts)": 'SEARCH SUBJECT "tango"',
        "search BODY (fts)": 'SEARCH BODY "whiskey xray"',
        "search FROM (fts)": 'SEARCH FROM "sender42"',
    }
    for label, command in searches.items():
        await measure(f"{label} searches/s", 1, cmd(command), repeat=10)
    await measure("SELECT of the big mailbox /s", 1, cmd("SELECT INBOX"), repeat=9)

    def stores(c: Conn) -> Run:
        signs = iter(["+", "-"] * REPEAT)
        return lambda: c.cmd(f"STORE 1:* {next(signs)}FLAGS.SILENT (\\Seen)")

    await measure("store +FLAGS/-FLAGS msgs/s", total, stores, repeat=2 * REPEAT)
    for c in conns.values():
        await c.close()
    return out


APPEND_MAX = 10000
"""Bigger mailboxes are APPENDed this many messages, then grown by COPY (untimed): APPENDing
100,000 messages took Dovecot half an hour on the shared machine."""


async def grow_by_copies(port: int, count: int, total: int) -> None:
    """COPY the INBOX's first messages onto its end until it holds ``total``, then one
    SEARCH BODY so that the copies are searchable before anything is timed."""
    c = await Conn.open(port)
    await c.login()
    await c.cmd("SELECT INBOX")
    while count < total:
        n = min(count, total - count)
        tagged, _ = await c.cmd(f"COPY 1:{n} INBOX")
        if b" OK" not in tagged:
            raise RuntimeError(f"COPY failed: {tagged!r}")
        count += n
        await c.cmd("NOOP")
    await c.cmd('SEARCH BODY "no-such-word-anywhere"')
    await c.close()


async def bench_selected_memory(server: Mailhaven | Dovecot, port: int) -> dict[str, float]:
    """PSS with one session's empty mailbox selected, then the big INBOX selected, then
    after a FETCH 1:* of its flags (the server freshly started: what one selection costs)."""
    server.restart()
    c = await Conn.open(port)
    await c.login()
    await c.cmd("CREATE Empty")
    await c.cmd("SELECT Empty")
    await asyncio.sleep(0.5)
    empty = _pss_kb(server.pids())
    await c.cmd("SELECT INBOX")
    await asyncio.sleep(0.5)
    selected = _pss_kb(server.pids())
    await c.cmd("FETCH 1:* (UID FLAGS RFC822.SIZE INTERNALDATE)")
    await asyncio.sleep(0.5)
    fetched = _pss_kb(server.pids())
    await c.close()
    return {"PSS MB, empty mailbox selected": empty / 1024,
            "PSS MB growth, big mailbox selected": (selected - empty) / 1024,
            "PSS MB growth, after FETCH 1:* flags": (fetched - empty) / 1024}


async def bench_idle(server: Mailhaven | Dovecot, port: int, count: int) -> dict[str, float]:
    """``count`` connections IDLE on a small mailbox of their own (a typical user's INBOX is
    not the 10,000-message benchmark mailbox); one delivery must reach all of them."""
    setup_conn = await Conn.open(port)
    await setup_conn.login()
    await setup_conn.cmd("CREATE Idle")
    for i in range(20):
        await setup_conn.cmd("APPEND Idle", make_message(i, random.Random(i)))
    await setup_conn.close()
    base = server.rss_kb()
    conns: list[Conn] = []
    sem = asyncio.Semaphore(50)

    async def one() -> None:
        async with sem:
            c = await Conn.open(port)
            await c.login()
            await c.cmd("SELECT Idle")
            c.writer.write(b"i IDLE\r\n")
            await c.reader.readline()
            conns.append(c)

    start = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(count)))
    setup = time.perf_counter() - start
    await asyncio.sleep(2)
    rss = server.rss_kb()
    # One delivery: how long until every IDLE connection hears of it?
    writer = await Conn.open(port)
    await writer.login()
    start = time.perf_counter()
    await writer.cmd("APPEND Idle", make_message(999999, random.Random(1)))

    async def hear(c: Conn) -> None:
        while True:
            line = await c.reader.readline()
            if b"EXISTS" in line:
                return

    await asyncio.wait_for(asyncio.gather(*(hear(c) for c in conns)), timeout=120)
    fanout = time.perf_counter() - start
    for c in conns:
        c.writer.close()
    await writer.close()
    return {
        "idle connections": count,
        "idle setup s": setup,
        "RSS MB total": rss / 1024,
        "RSS KB per idle conn": (rss - base) / max(count, 1),
        "RSS MB extrapolated to 10k": (base + (rss - base) / max(count, 1) * 10000) / 1024,
        "new-mail fan-out to all IDLE s": fanout,
    }


async def run_all(servers: list[Mailhaven | Dovecot], args: argparse.Namespace,
                  total: int, filled: bool, keep: Path | None, base: Mailhaven | None) -> dict[str, dict[str, float]]:
    """Every workload on every server: APPENDs and IDLE one server at a time (they measure
    a server's own memory and throughput over tens of seconds), the short timed runs
    interleaved between the servers. ``filled``: the servers start on mailboxes kept by an
    earlier run (``--keep``), so there are no APPEND figures; ``base`` starts on a copy of
    the first server's filled data."""
    rng = random.Random(42)
    messages = [make_message(i, rng) for i in range(min(total, APPEND_MAX))]
    results: dict[str, dict[str, float]] = {server.name: {} for server in servers}
    if not filled:
        for server in servers:
            print(f"[{server.name}] append", file=sys.stderr, flush=True)
            results[server.name].update(await bench_append(server.port, messages, 8))
            if total > len(messages):
                print(f"[{server.name}] copy up to {total}", file=sys.stderr, flush=True)
                await grow_by_copies(server.port, len(messages), total)
        if keep is not None:
            _keep_filled(servers, keep)
    if base is not None:
        _copy_data(servers[0], base)
        base.start(filled=True)
        servers = [servers[0], base, *servers[1:]]
        results = {server.name: results.get(server.name, {}) for server in servers}
    ports = {server.name: server.port for server in servers}
    for server in servers:
        print(f"[{server.name}] selected-mailbox memory", file=sys.stderr, flush=True)
        results[server.name].update(await bench_selected_memory(server, server.port))
    print("fetch/search", file=sys.stderr, flush=True)
    only = args.only.split(",") if args.only else None
    for name, figures in (await bench_fetch_search(ports, total, {s.name: s.pids for s in servers}, only)).items():
        results[name].update(figures)
    if not only or any(o in "logins/s" for o in only):
        print("logins", file=sys.stderr, flush=True)
        for name, rate in (await bench_logins(ports, args.login_seconds, 4)).items():
            results[name]["logins/s (4 conns)"] = rate
    if args.idle:
        for server in servers:
            print(f"[{server.name}] idle", file=sys.stderr, flush=True)
            results[server.name].update(await bench_idle(server, server.port, args.idle))
    return results


def _copy_data(server: Mailhaven | Dovecot, to: Mailhaven | Dovecot | Path) -> None:
    """The server's data directory copied (stopped for the copy, then started again on it)."""
    server.stop()
    _copy_tree(server.data, to if isinstance(to, Path) else to.data)
    server.start(filled=True)


def _copy_tree(source: Path, dest: Path) -> None:
    """``cp -a``: Dovecot's mail files must keep their owner."""
    dest.mkdir(parents=True, exist_ok=True)
    subprocess.run(["cp", "-a", f"{source}/.", str(dest)], check=True)


def _keep_filled(servers: list[Mailhaven | Dovecot], keep: Path) -> None:
    for server in servers:
        print(f"[{server.name}] keeping the filled data in {keep}", file=sys.stderr, flush=True)
        _copy_data(server, keep / server.data.name)
    (keep / "filled").write_text("")


PER_MESSAGE = ("fetch flags msgs/s", "fetch envelope+bodystructure msgs/s", "fetch BODY[] msgs/s",
               "store +FLAGS/-FLAGS msgs/s", "single-message fetch cmds/s")
"""Workloads whose time per message must stay flat as the mailbox grows (the one-message
FETCH: its time per command)."""


def run_size(args: argparse.Namespace, total: int) -> dict[str, dict[str, float]] | None:
    """Every workload at one mailbox size, on fresh servers in a fresh directory (with
    ``--keep``, on a copy of the mailboxes an earlier run filled to this size)."""
    tmp = Path(tempfile.mkdtemp(prefix="mh-imap-bench-"))
    tmp.chmod(0o755)  # Dovecot's auth process must reach its passwd file
    servers: list[Mailhaven | Dovecot] = [] if args.only_dovecot else [Mailhaven(tmp, args.idle)]
    if (args.dovecot or args.only_dovecot) and shutil.which("dovecot"):
        servers.append(Dovecot(tmp, args.idle))
    base = Mailhaven(tmp, args.idle, "base", Path(args.base).resolve()) if args.base and servers and \
        isinstance(servers[0], Mailhaven) else None
    keep = Path(args.keep).resolve() / str(total) if args.keep else None
    filled = keep is not None and (keep / "filled").exists()
    if filled and keep is not None:
        missing = [s.name for s in servers if not (keep / s.data.name).is_dir()]
        if missing:
            print(f"{keep} holds no filled data for {', '.join(missing)}: use another --keep directory",
                  file=sys.stderr)
            return None
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
        keep.chmod(0o755)
        keep.parent.chmod(0o755)
    started: list[Mailhaven | Dovecot] = []
    try:
        for server in servers:
            if filled:
                assert keep is not None
                print(f"[{server.name}] copying the filled data from {keep}", file=sys.stderr, flush=True)
                _copy_tree(keep / server.data.name, server.data)
            server.start(filled=filled)
            started.append(server)
        if base is not None:
            started.append(base)
        return _run(run_all(servers, args, total, filled, keep, base))
    except Exception as exc:  # noqa: BLE001 - say what failed, with Dovecot's log if it was Dovecot
        print(f"benchmark failed: {exc!r}", file=sys.stderr)
        log = tmp / "dovecot" / "dovecot.log"
        if log.exists():
            print(log.read_text()[-2000:], file=sys.stderr)
        return None
    finally:
        for server in started:
            server.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def _pairs(names: list[str]) -> list[tuple[str, str]]:
    """The ratios shown: each server against the last (the peer), and with ``--base`` the
    first against the base."""
    pairs = [(n, names[-1]) for n in names[:-1]]
    return pairs + [(names[0], names[1])] if len(names) > 2 else pairs


def print_table(total: int, table: dict[str, dict[str, float]]) -> None:
    names = list(table)
    pairs = _pairs(names)
    print(f"\nIMAP benchmark, {total} messages, python {sys.version.split()[0]}, {os.cpu_count()} CPUs")
    header = f"{'metric':42}" + "".join(f"{n:>14}" for n in names) + "".join(f"{a + '/' + b:>20}" for a, b in pairs)
    if pairs:
        print("(ratio a/b: a's rate / b's; for CPU rows b's CPU / a's: above 1, a is ahead either way)")
    print(header)
    for key in dict.fromkeys(k for n in names for k in table[n]):
        row = f"{key:42}" + "".join(f"{table[n].get(key, float('nan')):14.1f}" for n in names)
        row += "".join(f"{_ratio(key, table[a].get(key), table[b].get(key)):>20}" for a, b in pairs)
        print(row)


def _ratio(key: str, a: float | None, b: float | None) -> str:
    """``a / b`` for a rate, ``b / a`` for a CPU figure (above 1: ``a`` is ahead), or '-'."""
    if not a or not b:
        return "-"
    return f"{b / a:.2f}" if key.endswith(CPU_SUFFIX) else f"{a / b:.2f}"


def print_scaling(tables: dict[int, dict[str, dict[str, float]]]) -> None:
    """Per workload: the ratio to the peer at each size (for CPU rows the peer's CPU over
    Mailhaven's), and Mailhaven's time per message."""
    sizes = list(tables)
    first = tables[sizes[0]]
    names = list(first)
    keys = list(dict.fromkeys(k for n in names for k in first[n]))
    print(f"\nScaling, {' / '.join(str(n) for n in sizes)} messages")
    for a, b in _pairs(names):
        print(f"{'ratio ' + a + '/' + b:42}" + "".join(f"{n:>10}" for n in sizes))
        for key in keys:
            cells = [f"{_ratio(key, tables[n][a].get(key), tables[n][b].get(key)):>10}" for n in sizes]
            print(f"{key:42}" + "".join(cells))
    for name in names:
        if name == "dovecot" and len(names) > 1:
            continue
        print(f"{name + ' us per message':42}" + "".join(f"{n:>10}" for n in sizes))
        for key in (k for k in PER_MESSAGE if any(k in tables[n][name] for n in sizes)):
            print(f"{key.replace(' msgs/s', ''):42}"
                  + "".join(f"{1e6 / tables[n][name][key]:10.1f}" for n in sizes if tables[n][name].get(key)))
            print(f"{'  server CPU us':42}"
                  + "".join(f"{tables[n][name][key + CPU_SUFFIX]:10.1f}" for n in sizes
                            if tables[n][name].get(key + CPU_SUFFIX) is not None))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--messages", default="10000", help="mailbox size, or sizes separated by commas")
    ap.add_argument("--idle", type=int, default=2000, help="idle IDLE connections (0 to skip)")
    ap.add_argument("--login-seconds", type=float, default=5.0)
    ap.add_argument("--dovecot", action="store_true", help="also run against a private Dovecot")
    ap.add_argument("--only-dovecot", action="store_true", help="run against Dovecot alone")
    ap.add_argument("--keep", metavar="DIR", help="keep the filled mailboxes of each size in DIR/SIZE, and "
                    "start from a copy of them when they are there (no APPEND figures then)")
    ap.add_argument("--only", metavar="LABELS", help="only the timed workloads whose label holds one of these "
                    "comma-separated strings (e.g. 'single,BODY[]'); the memory figures are always taken")
    ap.add_argument("--base", metavar="SRC", help="also run another source tree's Mailhaven (its src/ "
                    "directory) on a copy of the same filled data, interleaved with the others")
    args = ap.parse_args()
    try:
        import resource
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError):
        pass
    tables: dict[int, dict[str, dict[str, float]]] = {}
    for total in (int(n) for n in args.messages.split(",")):
        table = run_size(args, total)
        if table is None:
            return 1
        print_table(total, table)
        tables[total] = table
    if len(tables) > 1:
        print_scaling(tables)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
