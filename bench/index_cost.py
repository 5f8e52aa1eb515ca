"""Search indexing cost: CPU per message to index pending search text, and how long a
delivery waits while the indexer runs (issue 18: at most ~1 ms per 100 KB message, never
more than 50 ms added to a delivery).

    python bench/index_cost.py                    # 100 KB messages (bench/smtp_inbound.py's text)
    python bench/index_cost.py --size 4096 --messages 500
    python bench/index_cost.py --burst 1000         # issue 18's two bursts, indexer on vs off
    python bench/index_cost.py --loop-busy 0.7      # the event loop 70% busy, as under SMTP load
    PYTHONPATH=/path/to/other/src python bench/index_cost.py   # another version, same load

Indexing CPU is the process CPU time of ``flush_index`` (the same work the background
indexer does) divided by the messages, and the writer thread's own CPU in the index
transactions. The delay is measured two ways: delivery latency while a backlog is being
indexed against the same deliveries with nothing to index (rounds interleaved; on a shared
machine the difference is mostly noise), and from instrumentation (:class:`WritePathProbe`):
how long each index transaction holds the write connection, and how long each delivery that
found it busy waited for the writer thread. The probe deliveries stage their blob for the
delivery's transaction, as SMTP does (they used ``put_blob``, a second durable transaction
and fsync each, which SMTP never makes).
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

sys.path.append(str(Path(__file__).resolve().parent))
sys.path.append(str(Path(__file__).resolve().parent.parent / "src"))    # after PYTHONPATH

from smtp_inbound import message  # noqa: E402

from mailhaven.store import sqliteindex  # noqa: E402
from mailhaven.store.db import Database  # noqa: E402
from mailhaven.store.sqlite import SQLiteStore  # noqa: E402

try:                                            # the index's own database (issue 18); older versions lack it
    from mailhaven.store.searchdb import SearchDatabase
except ImportError:                             # the slice was a transaction of mailhaven.db
    SearchDatabase = None  # type: ignore[assignment,misc]


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
    if not values:
        return 0.0
    values = sorted(values)
    return values[min(len(values) - 1, int(p * len(values)))] * 1000


class WritePathProbe:
    """Instruments the store's writer (bench only: wraps two private methods of
    store/db.py's Database) to time what a delivery can wait for, without the machine's noise
    in a difference of two latencies:

    - every write transaction of mailhaven.db with search-index work: of index jobs alone
      (``durable=False``, the slices before the index had a database of its own), or holding
      a slice's clean-up (``forget_slice``, with the deliveries of its loop pass): its wall
      time from BEGIN to COMMIT, the time it holds the write connection, and its thread CPU;
    - every delivery that found the connection busy and went to the writer thread's queue:
      the time from there to the start of its transaction (what it waited for);
    - where the index has a database of its own (searchdb.py), every slice there: its wall
      time and thread CPU (no delivery waits for it; its clean-up in mailhaven.db is the
      first item's transaction)."""

    def __init__(self) -> None:
        self.holds: list[float] = []
        self.hold_cpu: list[float] = []
        self.waits: list[float] = []
        self.slices: list[float] = []
        self.slice_cpu: list[float] = []
        self._queued: dict[int, float] = {}
        self._saved: tuple[object, object, object] | None = None

    def install(self) -> None:
        run_transaction, to_writer = Database._run_transaction, Database._to_writer
        index_some = SearchDatabase.index_some if SearchDatabase is not None else None
        self._saved = (run_transaction, to_writer, index_some)
        probe = self

        def sliced(index: object, budget: int, chunk: int) -> object:
            start, cpu = time.perf_counter(), time.thread_time()
            out = index_some(index, budget, chunk)          # type: ignore[misc]
            probe.slices.append(time.perf_counter() - start)
            probe.slice_cpu.append(time.thread_time() - cpu)
            return out

        def timed(db: Database, conn: sqlite3.Connection, batch: list, *, begun: bool = False) -> object:
            start, cpu = time.perf_counter(), time.thread_time()
            for job in batch:
                queued = probe._queued.pop(id(job), None)
                if queued is not None:
                    probe.waits.append(start - queued)
            out = run_transaction(db, conn, batch, begun=begun)
            if batch and (not any(job.durable for job in batch)
                          or any(getattr(job.fn, "__name__", "") == "forget_slice" for job in batch)):
                probe.holds.append(time.perf_counter() - start)
                probe.hold_cpu.append(time.thread_time() - cpu)
            return out

        def queued(db: Database, batch: list) -> None:
            now = time.perf_counter()
            for job in batch:
                probe._queued[id(job)] = now
            to_writer(db, batch)

        Database._run_transaction = timed        # type: ignore[assignment,method-assign]
        Database._to_writer = queued             # type: ignore[assignment,method-assign]
        if SearchDatabase is not None:
            SearchDatabase.index_some = sliced   # type: ignore[assignment,method-assign]

    def uninstall(self) -> None:
        assert self._saved is not None
        Database._run_transaction, Database._to_writer, index_some = self._saved   # type: ignore[assignment,method-assign]
        if SearchDatabase is not None:
            SearchDatabase.index_some = index_some  # type: ignore[method-assign]


async def deliveries(store: SQLiteStore, account: int, size: int, count: int, gap: float, first: int,
                     until: asyncio.Task[None] | None = None) -> list[float]:
    """Latency of deliveries as SMTP makes them (the blob staged for the delivery's own
    transaction), one every ``gap`` seconds: ``count`` of them, or while ``until`` runs."""
    out: list[float] = []
    i = first
    while (until is not None and not until.done()) or (until is None and len(out) < count):
        raw = message(size, i)
        i += 1
        start = time.perf_counter()
        writer = store.blob_writer()
        writer.write(raw)
        await store.deliver(await writer.finish(deferred=True), [account])
        out.append(time.perf_counter() - start)
        await asyncio.sleep(gap)
    return out


async def fill(store: SQLiteStore, account: int, size: int, count: int, first: int) -> None:
    for i in range(count):
        writer = store.blob_writer()
        writer.write(message(size, first + i))
        await store.deliver(await writer.finish(deferred=True), [account])


async def keep_loop_busy(fraction: float) -> None:
    """Pure Python on the event loop ``fraction`` of the time, 1 ms at a stretch, as SMTP
    sessions keep it busy: a thread wanting the GIL back then waits out the switch interval."""
    while True:
        end = time.perf_counter() + 0.001
        while time.perf_counter() < end:
            pass
        await asyncio.sleep(0.001 * (1 - fraction) / fraction)


async def run(args: argparse.Namespace) -> None:
    sqliteindex.INDEX_QUIET = 3600.0        # type: ignore[misc]  # nothing indexed until asked
    if args.slice_bytes:
        sqliteindex.INDEX_SLICE_BYTES = args.slice_bytes   # type: ignore[misc]
    probe = WritePathProbe()
    busy_loop = asyncio.create_task(keep_loop_busy(args.loop_busy)) if args.loop_busy else None
    with tempfile.TemporaryDirectory(prefix="mh-index-") as tmp:
        store = SQLiteStore(tmp)
        await store.open()
        try:
            await store.add_domain("bench.example")
            bob = await store.add_account("bob@bench.example", "pw")
            await fill(store, bob.id, args.size, args.messages, 0)
            probe.install()
            cpu, wall = time.process_time(), time.perf_counter()
            await store.flush_index()
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
            n = args.messages
            print(f"indexing {n} x {args.size} B: {cpu / n * 1000:.2f} ms process CPU, "
                  f"{sum(probe.hold_cpu) / n * 1000:.2f} ms writer-thread CPU"
                  + (f" + {sum(probe.slice_cpu) / n * 1000:.2f} ms in search.db slices" if probe.slices else "")
                  + f", {wall / n * 1000:.2f} ms wall per message ({len(probe.holds)} transactions of mailhaven.db)")
            for kept in (probe.holds, probe.hold_cpu, probe.slices, probe.slice_cpu):
                kept.clear()

            # The delay: rounds of probe deliveries while a backlog is indexed and with
            # nothing to index, interleaved (A B, B A) so the machine's load falls on both.
            busy: list[float] = []
            idle: list[float] = []
            seq = 1_000_000
            for rnd in range(args.rounds):
                for indexing in ((True, False) if rnd % 2 == 0 else (False, True)):
                    if indexing:
                        await fill(store, bob.id, args.size, args.messages, seq)
                        seq += args.messages
                        indexer = asyncio.create_task(store.flush_index())
                        busy += await deliveries(store, bob.id, args.size, 0, args.gap, seq, until=indexer)
                        await indexer
                    else:
                        idle += await deliveries(store, bob.id, args.size, max(args.probes, len(busy) // (rnd + 1)),
                                                 args.gap, seq)
                    seq += 10_000
        finally:
            if busy_loop is not None:
                busy_loop.cancel()
            await store.close()
            probe.uninstall()
    print(f"delivery latency p50/p99/max: {pct(idle, .5):.1f}/{pct(idle, .99):.1f}/{max(idle) * 1000:.1f} ms idle "
          f"({len(idle)}), {pct(busy, .5):.1f}/{pct(busy, .99):.1f}/{max(busy) * 1000:.1f} ms while indexing "
          f"({len(busy)}), {args.rounds} rounds interleaved (the difference is the machine's noise too)")
    holds, waits = probe.holds, probe.waits
    print(f"index work holds mailhaven.db's write connection (instrumented, {len(holds)} transactions): p50/p99/max "
          f"{pct(holds, .5):.1f}/{pct(holds, .99):.1f}/{max(holds, default=0) * 1000:.1f} ms wall, "
          f"max {max(probe.hold_cpu, default=0) * 1000:.1f} ms thread CPU")
    if probe.slices:
        print(f"search.db slices ({len(probe.slices)}, no delivery waits for them): p50/p99/max "
              f"{pct(probe.slices, .5):.1f}/{pct(probe.slices, .99):.1f}/{max(probe.slices) * 1000:.1f} ms wall, "
              f"max {max(probe.slice_cpu) * 1000:.1f} ms thread CPU")
    print(f"deliveries that found the writer busy: {len(waits)} (of {len(busy)} while indexing), waited "
          f"p50/p99/max {pct(waits, .5):.1f}/{pct(waits, .99):.1f}/{max(waits, default=0) * 1000:.1f} ms; "
          "the others committed on the loop at once")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-m", "--messages", type=int, default=300)
    ap.add_argument("-s", "--size", type=int, default=100 * 1024)
    ap.add_argument("--probes", type=int, default=60, help="deliveries timed with nothing to index, at least")
    ap.add_argument("--gap", type=float, default=0.005, help="seconds between probe deliveries")
    ap.add_argument("--loop-busy", type=float, default=0.0,
                    help="keep the event loop this busy (0-1) with Python work, as SMTP sessions do")
    ap.add_argument("--slice-bytes", type=int, default=0, help="INDEX_SLICE_BYTES for this run (0: as set)")
    ap.add_argument("--burst", type=int, default=0, help="issue 18's bursts of this many messages instead")
    ap.add_argument("--pause", type=float, default=1.5, help="seconds between the two bursts")
    ap.add_argument("--concurrency", type=int, default=10, help="deliveries at a time in a burst")
    ap.add_argument("--rounds", type=int, default=4, help="runs each way (indexing / idle), interleaved")
    args = ap.parse_args()
    asyncio.run(bursts(args) if args.burst else run(args))


if __name__ == "__main__":
    main()
