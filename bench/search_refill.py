"""A lost search index refilled (sqliterefill.py): its rate, and whether deliveries beside it
wait.

    python bench/search_refill.py [--messages 1500] [--deliveries 200] [--corpus ../shared/corpus]

Delivers ``--messages`` messages cycled from the corpus's single-message files (each made
unique by one header line) into a fresh SQLite store, indexes them, deletes search.db, and
reopens the store. Then, with the background refill running as ``serve`` runs it, delivers
``--deliveries`` small messages one after another and times each (put_blob + deliver), and
the same with no refill running (before the index was lost). Prints the refill's rate
(messages pended a second of wall-clock, and of extraction alone), and the deliveries'
median and 95th percentile latency with and without it. Asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "bench")]

from storage import corpus_messages  # noqa: E402

from mailhaven.store import sqliterefill  # noqa: E402
from mailhaven.store.sqlite import SQLiteStore  # noqa: E402

USER = "bench@example.com"
SMALL = b"From: a@example.org\r\nTo: bench@example.com\r\nSubject: ping %d\r\n\r\nhello %d\r\n"


async def deliveries(store: SQLiteStore, account_id: int, n: int, until: asyncio.Task[int] | None) -> list[float]:
    """Latency of ``n`` deliveries one after another (ms); stops early when ``until`` ends."""
    out = []
    for i in range(n):
        if until is not None and until.done():
            break
        started = time.perf_counter()
        await store.deliver(await store.put_blob(SMALL % (i, i)), [account_id])
        out.append((time.perf_counter() - started) * 1000)
        await asyncio.sleep(0.01)
    return out


def stats(name: str, ms: list[float]) -> None:
    ms = sorted(ms)
    print(f"  {name}: {len(ms)} deliveries, median {statistics.median(ms):.2f} ms, "
          f"p95 {ms[int(len(ms) * 0.95) - 1]:.2f} ms")


async def run(data: Path, mix: list[bytes], n: int, d: int) -> None:
    store = SQLiteStore(data)
    await store.open()
    await store.add_domain("example.com")
    account = await store.add_account(USER, "bench-password")
    for i in range(n):
        await store.deliver(await store.put_blob(f"X-Bench-Sequence: {i}\r\n".encode() + mix[i % len(mix)]),
                            [account.id])
    await store.flush_index()
    stats("no refill", await deliveries(store, account.id, d, None))
    await store.close()
    for name in ("search.db", "search.db-wal", "search.db-shm"):
        (data / name).unlink(missing_ok=True)

    store = SQLiteStore(data)
    await store.open()
    extracting = 0.0
    batch = store._refill_batch

    async def timed(*args):  # type: ignore[no-untyped-def]
        nonlocal extracting
        out = await batch(*args)
        if out is not None:
            extracting += out[3]
        return out

    store._refill_batch = timed  # type: ignore[method-assign]
    started = time.monotonic()
    store.refill_in_background()
    assert store._refiller is not None
    during = await deliveries(store, account.id, d, store._refiller)
    pended = await store._refiller
    took = time.monotonic() - started
    stats("during the refill", during)
    print(f"  refill: {pended} messages in {took:.1f} s ({pended / took:.0f}/s wall-clock, pause "
          f"{sqliterefill.REFILL_PAUSE}); extraction alone {pended / extracting:.0f}/s")
    await store.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--messages", type=int, default=1500)
    ap.add_argument("--deliveries", type=int, default=200)
    ap.add_argument("--corpus", type=Path, default=ROOT.parent.parent / "shared" / "corpus"
                    if (ROOT.parent.parent / "shared" / "corpus").exists() else ROOT.parent / "shared" / "corpus")
    args = ap.parse_args()
    mix = corpus_messages(args.corpus)
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(run(Path(tmp), mix, args.messages, args.deliveries))


if __name__ == "__main__":
    main()
