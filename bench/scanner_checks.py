"""CPU per message of the rate limits and the content scanners (rspamd, clamd), in process.

    python bench/scanner_checks.py [-n 300]

Starts Debian's rspamd and clamd as tests/test_filter_scanners.py does (own config,
ephemeral port / socket, no redis, the test's EICAR signature only), then runs each
check on 4 KB messages one at a time and prints, per message, the CPU of this process
and of the daemon (its whole process group, from /proc), and the wall time:

- rate limits: the two ``Store.rate_take`` calls of a port-25 MAIL FROM (SQLite, and
  PostgreSQL when MAILHAVEN_TEST_PG_DSN is set; the server's CPU is not counted);
- clamd: ``ClamdClient.scan`` (INSTREAM);
- rspamd: ``RspamdClient.check`` (POST /checkv2), with the test's small rule set, so
  rspamd's figure is a floor: a production rule set (DNS lists, Bayes in redis) costs more.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import sys
import tempfile
import time
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from conftest import wait_for  # noqa: E402
from mailhaven.config import RateLimitConfig  # noqa: E402
from mailhaven.filter.clamd import ClamdClient  # noqa: E402
from mailhaven.filter.ratelimit import RateLimiter  # noqa: E402
from mailhaven.filter.rspamd import RspamdClient  # noqa: E402
from mailhaven.store.sqlite import SQLiteStore  # noqa: E402
from test_filter_scanners import start_clamd, start_rspamd, stop  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


def group_cpu(pgid: int) -> float:
    """User+system CPU seconds of every live process in the process group."""
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:
            total += int(fields[11]) + int(fields[12])
    return total / TICK


async def measure(n: int, one: Callable[[int], Awaitable[None]], pgid: int | None) -> tuple[float, float, float]:
    for i in range(5):
        await one(i)                                       # warm up
    peer0 = group_cpu(pgid) if pgid else 0.0
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for i in range(n):
        await one(i)
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    peer = (group_cpu(pgid) - peer0) if pgid else 0.0
    return cpu / n * 1000, peer / n * 1000, wall / n * 1000


async def bench(n: int, root: Path) -> None:
    rspamd, rspamd_port = start_rspamd(root / "rspamd")
    clamd, clamd_socket = start_clamd(root / "clamd")
    try:
        wait_for(lambda: _ping(rspamd_port), timeout=300, what="rspamd")
        wait_for(clamd_socket.exists, timeout=300, what="clamd")
        body = ("Lorem ipsum dolor sit amet, consectetur adipiscing elit sed do.\r\n" * 60).encode()
        messages = [(f"From: alice@good.example\r\nTo: bob@nyu.example\r\nSubject: m{i}\r\n"
                     f"Message-ID: <m{i}@good.example>\r\n\r\n").encode() + body for i in range(n + 5)]
        store = SQLiteStore(root / "store")
        await store.open()
        limiter = RateLimiter(store, RateLimitConfig(messages_per_address=10**9, messages_per_sender_domain=10**9))
        clam = ClamdClient(str(clamd_socket), 30.0)
        spam = RspamdClient(f"http://127.0.0.1:{rspamd_port}", 30.0, "mx.bench.example")

        async def rate(i: int) -> None:
            await limiter.inbound_message(f"192.0.2.{i % 250}", f"a@d{i % 50}.example")

        async def virus(i: int) -> None:
            assert await clam.scan(io.BytesIO(messages[i])) is None

        async def rspamd_check(i: int) -> None:
            result = await spam.check(io.BytesIO(messages[i]), len(messages[i]), ip="192.0.2.1", helo="c.example",
                                      mail_from="alice@good.example", rcpts=["bob@nyu.example"], queue_id=f"q{i}")
            assert result.action == "deliver", result

        cases: list[tuple[str, Callable[[int], Awaitable[None]], int | None]] = [
            ("rate limits (2 takes, SQLite)", rate, None)]
        pg = None
        if os.environ.get("MAILHAVEN_TEST_PG_DSN"):
            from mailhaven.store.postgres import PostgresStore

            pg = PostgresStore(os.environ["MAILHAVEN_TEST_PG_DSN"], root / "pg", fresh_schema=True)
            await pg.open()
            pg_limiter = RateLimiter(pg, limiter.policy)

            async def rate_pg(i: int) -> None:
                await pg_limiter.inbound_message(f"192.0.2.{i % 250}", f"a@d{i % 50}.example")

            cases.append(("rate limits (2 takes, PostgreSQL)", rate_pg, None))
        cases += [("clamd INSTREAM", virus, clamd.pid), ("rspamd /checkv2", rspamd_check, rspamd.pid)]
        print(f"{n} messages of {len(messages[0])} bytes; ms per message: "
              "CPU here / CPU of the daemon / wall")
        for name, one, pgid in cases:
            here, peer, wall = await measure(n, one, pgid)
            print(f"  {name:34} {here:7.2f} {peer:7.2f} {wall:7.2f}")
        await store.close()
        if pg is not None:
            await pg.close()
    finally:
        stop(rspamd)
        stop(clamd)


def _ping(port: int) -> bool:
    try:
        return urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2).read().strip() == b"pong"
    except OSError:
        return False


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("-n", type=int, default=300)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(bench(args.n, Path(tmp)))


if __name__ == "__main__":
    main()
