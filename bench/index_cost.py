"""Search indexing cost: CPU per message to index pending search text, and how long a
delivery waits while the indexer runs (issue 18: at most ~1 ms per 100 KB message, never
more than 50 ms added to a delivery).

    python bench/index_cost.py                    # 100 KB messages (bench/smtp_inbound.py's text)
    python bench/index_cost.py --size 4096 --messages 500
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
    asyncio.run(run(ap.parse_args()))


if __name__ == "__main__":
    main()
