"""PostgreSQL store benchmark: two store instances (nodes) on one database.

Prints deliveries/s (blob insert + delivery, C concurrent callers spread over both
nodes, S-byte messages) and the change-feed latency from a commit on node A to the
event on node B (LISTEN/NOTIFY), p50/p99. The same delivery load runs against the
SQLite store on the same machine for comparison.

    python bench/pg_store.py postgresql://postgres@127.0.0.1:5432/mailhaven_test
    python bench/pg_store.py --start-cluster        # a throwaway cluster (scripts/pg-test-cluster)

The test cluster runs with fsync=off; point it at a real server for durable figures.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from mailhaven.store.api import FlagMode  # noqa: E402
from mailhaven.store.postgres import PostgresStore  # noqa: E402
from mailhaven.store.sqlite import SQLiteStore  # noqa: E402


def message(size: int, n: int) -> bytes:
    head = (f"From: bench@sender.example\r\nTo: bob@nyu.example\r\nSubject: bench {n}\r\n"
            f"Message-ID: <bench.{n}.{time.time_ns()}@sender.example>\r\n\r\n").encode()
    line = b"The quick brown fox jumps over the lazy dog, again and again and again.\r\n"
    return head + (line * (size // len(line) + 1))[: max(0, size - len(head))]


async def deliveries(stores: list, count: int, concurrency: int, size: int) -> float:
    for s in stores[:1]:
        await s.add_domain("nyu.example")
        await s.add_account("bob@nyu.example", "pw")
    bob = await stores[0].get_account("bob@nyu.example")
    todo = iter(range(count))

    async def worker(i: int) -> None:
        s = stores[i % len(stores)]
        for n in todo:
            ref = await s.put_blob(message(size, n))
            await s.deliver(ref, [bob.id])

    started = time.perf_counter()
    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    return count / (time.perf_counter() - started)


async def feed_latency(a: PostgresStore, b: PostgresStore, rounds: int) -> list[float]:
    bob = await a.get_account("bob@nyu.example")
    inbox = await a.get_mailbox(bob.id, "INBOX")
    sub = b.subscribe(bob.id)
    out = []
    try:
        for i in range(rounds):
            flag = f"$k{i % 2}"
            started = time.perf_counter()
            await a.set_flags(inbox.id, [1], [flag], FlagMode.REPLACE)
            await asyncio.wait_for(sub.get(), 5)
            out.append(time.perf_counter() - started)
    finally:
        sub.close()
    return out


async def run(dsn: str, count: int, concurrency: int, size: int) -> None:
    schema = f"mh_bench_{secrets.token_hex(4)}"
    with tempfile.TemporaryDirectory() as tmp:
        a = PostgresStore(dsn, Path(tmp) / "a", schema=schema, fresh_schema=True, pool_size=concurrency)
        b = PostgresStore(dsn, Path(tmp) / "b", schema=schema, pool_size=concurrency)
        await a.open()
        await b.open()
        try:
            rate = await deliveries([a, b], count, concurrency, size)
            print(f"postgres, 2 nodes: {rate:8.0f} deliveries/s ({count} x {size} B, {concurrency} callers)")
            lat = sorted(await feed_latency(a, b, 200))
            print(f"change feed A->B (commit to event): p50 {statistics.median(lat) * 1000:.2f} ms, "
                  f"p99 {lat[int(len(lat) * 0.99) - 1] * 1000:.2f} ms")
            async with a.pool.acquire() as conn:
                await conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
        finally:
            await b.close()
            await a.close()
        lite = SQLiteStore(Path(tmp) / "lite")
        await lite.open()
        try:
            rate = await deliveries([lite], count, concurrency, size)
            print(f"sqlite, 1 node:    {rate:8.0f} deliveries/s (same load, fsync on)")
        finally:
            await lite.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dsn", nargs="?", default=os.environ.get("MAILHAVEN_TEST_PG_DSN", ""))
    ap.add_argument("--start-cluster", action="store_true")
    ap.add_argument("-n", "--count", type=int, default=2000)
    ap.add_argument("-c", "--concurrency", type=int, default=10)
    ap.add_argument("-s", "--size", type=int, default=4096)
    args = ap.parse_args()
    script = ROOT / "scripts" / "pg-test-cluster"
    if args.start_cluster:
        args.dsn = subprocess.run(["bash", str(script), "start"], check=True, capture_output=True,
                                  text=True).stdout.strip()
    if not args.dsn:
        ap.error("give a DSN, set MAILHAVEN_TEST_PG_DSN, or use --start-cluster")
    try:
        asyncio.run(run(args.dsn, args.count, args.concurrency, args.size))
    finally:
        if args.start_cluster:
            subprocess.run(["bash", str(script), "stop"], check=False)

if __name__ == "__main__":
    main()
