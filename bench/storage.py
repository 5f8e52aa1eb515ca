"""Data directory size for a corpus-like mix of messages, by part: blobs, message rows,
summaries (parsed summary and the stored ENVELOPE/BODYSTRUCTURE), header blocks, the search
index.

    python bench/storage.py [--messages 20000] [--corpus ../shared/corpus]

Delivers ``--messages`` messages cycled from the corpus's single-message files (each made
unique by one header line, so content addressing cannot share their blobs) into one
account of a fresh SQLite store in a temporary directory, waits until the search index has
taken all of them, checkpoints the WAL and measures every table and index with SQLite's
``dbstat``. Prints bytes per message by part and the data directory over the raw message
bytes (issue 18's target: at most 2x). Asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "src")]

from mailhaven.store.sqlite import SQLiteStore  # noqa: E402

USER = "bench@example.com"

PARTS = {
    "blobs": ("blob_data", "sqlite_autoindex_blob_data_1"),
    "rows": ("messages", "sqlite_autoindex_messages_1", "messages_account_modseq", "messages_mailbox_modseq",
             "messages_message_id", "messages_blob", "message_refs", "message_refs_ref"),
    "summaries": ("message_data",),
    "header blocks": ("message_headers",),
    "index": ("search_index", "search_index_data", "search_index_idx", "search_index_docsize",
              "search_index_config", "search_text", "fts_pending", "search_drops", "search_drops_id", "slices",
              # (before the index was contentless)
              "messages_fts", "messages_fts_data", "messages_fts_idx", "messages_fts_content",
              "messages_fts_docsize", "messages_fts_config"),
}


def corpus_messages(corpus: Path) -> list[bytes]:
    """The corpus's single-message files (mbox files hold several and are left out)."""
    out = []
    for line in (corpus / "MANIFEST.tsv").read_text().splitlines()[1:]:
        path, _, _, categories = (line.split("\t") + [""])[:4]
        if "mbox" not in categories.split(","):
            out.append((corpus / path).read_bytes())
    return out


def du(path: Path) -> int:
    """Bytes allocated on disk under ``path`` (st_blocks, as du counts)."""
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            total += os.lstat(os.path.join(root, name)).st_blocks * 512
    return total


async def fill(data: Path, mix: list[bytes], n: int) -> int:
    store = SQLiteStore(data)
    await store.open()
    raw_total = 0
    try:
        await store.add_domain("example.com")
        account = await store.add_account(USER, "bench-password")
        sem = asyncio.Semaphore(16)

        async def one(i: int) -> int:
            raw = f"X-Bench-Sequence: {i}\r\n".encode() + mix[i % len(mix)]
            async with sem:
                blob = await store.put_blob(raw)
                await store.deliver(blob, [account.id])
            return len(raw)

        for start in range(0, n, 1000):
            raw_total += sum(await asyncio.gather(*(one(i) for i in range(start, min(n, start + 1000)))))
            print(f"  {min(n, start + 1000)} delivered", file=sys.stderr, flush=True)
        await store.flush_index()
    finally:
        await store.close()
    return raw_total


def measure(data: Path) -> tuple[dict[str, int], int, dict[str, int]]:
    """Bytes by part in the database files (mailhaven.db, and search.db where the index has a
    file of its own), the free pages, and the index's tables."""
    by_table: dict[str, int] = {}
    free = 0
    for db in (data / "mailhaven.db", data / "search.db"):
        if not db.exists():
            continue
        conn = sqlite3.connect(db)
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        for name, size in conn.execute("SELECT name, SUM(pgsize) FROM dbstat GROUP BY name").fetchall():
            by_table[name] = by_table.get(name, 0) + size
        page = conn.execute("PRAGMA page_size").fetchone()[0]
        free += conn.execute("PRAGMA freelist_count").fetchone()[0] * page
        conn.close()
    index = {t: by_table.get(t, 0) for t in PARTS["index"]}
    parts = {part: sum(by_table.pop(t, 0) for t in tables) for part, tables in PARTS.items()}
    parts["other tables"] = sum(by_table.values())
    return parts, free, index


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--messages", type=int, default=20000)
    ap.add_argument("--corpus", type=Path, default=ROOT.parent.parent / "shared" / "corpus"
                    if (ROOT.parent.parent / "shared" / "corpus").exists() else ROOT.parent / "shared" / "corpus")
    args = ap.parse_args()
    mix = corpus_messages(args.corpus)
    n = args.messages
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        start = time.monotonic()
        raw = asyncio.run(fill(data, mix, n))
        secs = time.monotonic() - start
        parts, free, index = measure(data)
        files = du(data / "blobs") if (data / "blobs").exists() else 0
        parts["blobs"] += files
        total = du(data)
    print(f"\n{n} messages from {len(mix)} corpus files, {raw / n:.0f} bytes each on average "
          f"({raw / 1e6:.1f} MB raw), delivered in {secs:.0f} s")
    print(f"{'part':16}{'bytes/message':>15}{'x raw':>8}")
    for part, size in parts.items():
        print(f"{part:16}{size / n:15.0f}{size / raw:8.2f}")
    print(f"{'free pages':16}{free / n:15.0f}{free / raw:8.2f}")
    print("  of the index: " + ", ".join(f"{t} {size / n:.0f}" for t, size in index.items() if size))
    print(f"{'data directory':16}{total / n:15.0f}{total / raw:8.2f}   (du, blob files {files / n:.0f}/message)")


if __name__ == "__main__":
    main()
