"""Search indexing cost: CPU per message to index pending search text, and how long a
delivery waits while the indexer runs (issue 18: at most ~1 ms per 100 KB message, never
more than 50 ms added to a delivery).

    python bench/index_cost.py                    # 100 KB messages (bench/smtp_inbound.py's text)
    python bench/index_cost.py --size 4096 --messages 500
    python bench/index_cost.py --burst 1000         # issue 18's two bursts, indexer on vs off
    PYTHONPATH=/path/to/other/src python bench/index_cost.py   # another version, same load

Indexing CPU is the process CPU time of ``flush_index`` (the same work the background
indexer does) divided by the messages; the delay is the delivery latency while a backlog is
being indexed, minus the same deliveries' latency with nothing to index.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

sys.path.append(str(Path(__file__).resolve().parent))
sys.path.append(str(Path(__file__).resolve().parent.parent / "src"))    # after PYTHONPATH

from smtp_inbound import message  # noqa: E402

from mailhaven.store import sqliteindex  # noqa: E402
from mailhaven.store.sqlite import SQLiteStore  # noqa: E402


async def deliveries(store: SQLiteStore, account: int, size: int, count: int, gap: float) -> list[float]:
    """Latency of ``count`` deliveries (blob and message), one every ``gap`` seconds."""
    out = []
    for i in range(count):
        raw = message(size, 10_000_000 + i)
        start = time.perf_counter()
        await store.deliver(await store.put_blob(raw), [account])     # the blob's row is a write too
        out.append(time.perf_counter() - start)
        await asyncio.sleep(gap)
    return out


async def burst_run(size: int, count: int, pause: float, concurrency: int, index: bool) -> tuple[list[float], float]:
    """Two bursts of ``count`` deliveries (``concurrency`` at a time, as SMTP sessions
    deliver) ``pause`` seconds apart into a fresh store, the background indexer running
    (``index``) or held off; the second burst's latencies and the process CPU per message
    until the index is done."""
    sqliteindex.INDEX_QUIET = 0.0 if index else 3600.0           # type: ignore[misc]
    sqliteindex.INDEX_BACKLOG = 20_000 if index else 10**9      # type: ignore[misc]
    with tempfile.TemporaryDirectory(prefix="mh-burst-") as tmp:
        store = SQLiteStore(tmp)
        await store.open()
        try:
            await store.add_domain("bench.example")
            bob = await store.add_account("bob@bench.example", "pw")
            cpu = time.process_time()
            sem = asyncio.Semaphore(concurrency)

            async def one(n: int, out: list[float]) -> None:
                raw = message(size, n)
                async with sem:
                    start = time.perf_counter()
                    await store.deliver(await store.put_blob(raw), [bob.id])
                    out.append(time.perf_counter() - start)

            first: list[float] = []
            second: list[float] = []
            await asyncio.gather(*(one(i, first) for i in range(count)))
            await asyncio.sleep(pause)
            await asyncio.gather(*(one(count + i, second) for i in range(count)))
            await store.flush_index()
            cpu = time.process_time() - cpu
        finally:
            await store.close()
    return second, cpu / (2 * count)


async def bursts(args: argparse.Namespace) -> None:
    results: dict[bool, list[tuple[list[float], float]]] = {False: [], True: []}
    for rnd in range(args.rounds):
        for index in ((False, True) if rnd % 2 == 0 else (True, False)):    # interleaved A B, B A
            results[index].append(await burst_run(args.size, args.burst, args.pause, args.concurrency, index))
    for index in (False, True):
        for second, cpu in results[index]:
            print(f"indexer {'on ' if index else 'off'}: second burst latency p50/p99/max "
                  f"{pct(second, .5):.1f}/{pct(second, .99):.1f}/{max(second) * 1000:.1f} ms, "
                  f"CPU {cpu * 1000:.2f} ms a message (indexing included)")
    off = [pct(s, .99) for s, _ in results[False]]
    on = [pct(s, .99) for s, _ in results[True]]
    print(f"added at p99 by indexing: {min(on) - max(off):.1f} .. {max(on) - min(off):.1f} ms; "
          f"max {min(max(s) for s, _ in results[True]) * 1000:.0f}-{max(max(s) for s, _ in results[True]) * 1000:.0f} ms "
          f"on vs {min(max(s) for s, _ in results[False]) * 1000:.0f}-{max(max(s) for s, _ in results[False]) * 1000:.0f} off")


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(p * len(values)))] * 1000


async def run(args: argparse.Namespace) -> None:
    sqliteindex.INDEX_QUIET = 3600.0        # type: ignore[misc]  # nothing indexed until asked
    with tempfile.TemporaryDirectory(prefix="mh-index-") as tmp:
        store = SQLiteStore(tmp)
        await store.open()
        try:
            await store.add_domain("bench.example")
            bob = await store.add_account("bob@bench.example", "pw")
            for i in range(args.messages):
                await store.deliver(await store.put_blob(message(args.size, i)), [bob.id])
            cpu, wall = time.process_time(), time.perf_counter()
            await store.flush_index()
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
            print(f"indexing {args.messages} x {args.size} B: {cpu / args.messages * 1000:.2f} ms CPU, "
                  f"{wall / args.messages * 1000:.2f} ms wall per message")

            quiet = await deliveries(store, bob.id, args.size, args.probes, 0.01)
            await store.flush_index()
            for i in range(args.messages):
                await store.deliver(await store.put_blob(message(args.size, 20_000_000 + i)), [bob.id])
            indexer = asyncio.create_task(store.flush_index())
            busy = await deliveries(store, bob.id, args.size, args.probes, 0.01)
            await indexer
            print(f"delivery latency p50/p99/max: {pct(quiet, .5):.1f}/{pct(quiet, .99):.1f}/{max(quiet) * 1000:.1f} ms "
                  f"idle, {pct(busy, .5):.1f}/{pct(busy, .99):.1f}/{max(busy) * 1000:.1f} ms while indexing "
                  f"(added at p99: {pct(busy, .99) - pct(quiet, .99):.1f} ms, "
                  f"max: {(max(busy) - max(quiet)) * 1000:.1f} ms)")
        finally:
            await store.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-m", "--messages", type=int, default=300)
    ap.add_argument("-s", "--size", type=int, default=100 * 1024)
    ap.add_argument("--probes", type=int, default=60, help="deliveries timed while indexing")
    ap.add_argument("--burst", type=int, default=0, help="issue 18's bursts of this many messages instead")
    ap.add_argument("--pause", type=float, default=1.5, help="seconds between the two bursts")
    ap.add_argument("--concurrency", type=int, default=10, help="deliveries at a time in a burst")
    ap.add_argument("--rounds", type=int, default=2, help="burst runs each way, interleaved")
    args = ap.parse_args()
    asyncio.run(bursts(args) if args.burst else run(args))


if __name__ == "__main__":
    main()
