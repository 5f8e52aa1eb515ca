"""WAL frames an inbound SMTP delivery writes to ``mailhaven.db``, and which B-trees they are.

Spawns a throw-away ``mailhaven serve`` (as ``bench/smtp_inbound.py --spawn``), holds a read
transaction on its database from before the load until the end, so no checkpoint can copy
or restart the WAL, runs the load (smtp-source or the Python driver), waits for the
deferred work (the search index backlog), then reads the WAL: every frame's header names
its page, and a commit frame carries the database size. Pages are named after the table or
index holding them at the end (``dbstat``); a page that is free by then is ``(free)``.

    python bench/wal_frames.py -c 1 -m 300                 # one session
    python bench/wal_frames.py -c 10 -m 1500 --driver smtp-source

Prints frames and bytes a message, commits and messages a commit, and frames a message by
B-tree. Holding the snapshot keeps the WAL growing (no restart), which changes the
fsync's cost but not what each transaction writes.
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import struct
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from smtp_inbound import Spawned, index_backlog, run_python, run_smtp_source, settled  # noqa: E402

WAL_HEADER = 32
FRAME_HEADER = 24


def read_wal(path: Path) -> tuple[int, list[tuple[int, int]]]:
    """(page size, [(page number, database size or 0 for a frame that ends no commit)])
    of the valid frames: those carrying the header's salts, up to the first that does not."""
    data = path.read_bytes()
    if len(data) < WAL_HEADER:
        return 0, []
    page_size = struct.unpack(">I", data[8:12])[0]
    salts = data[16:24]
    frames = []
    offset = WAL_HEADER
    while offset + FRAME_HEADER + page_size <= len(data):
        page, commit = struct.unpack(">II", data[offset:offset + 8])
        if data[offset + 8:offset + 16] != salts:
            break
        frames.append((page, commit))
        offset += FRAME_HEADER + page_size
    return page_size, frames


def page_owners(db: Path) -> dict[int, str]:
    """Page number -> the table or index holding it (``dbstat``), read as of now."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        owners = {int(page): str(name) for name, page in conn.execute("SELECT name, pageno FROM dbstat")}
    owners.setdefault(1, "sqlite_schema")
    return owners


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-c", "--concurrency", type=int, default=1)
    ap.add_argument("-m", "--messages", type=int, default=300)
    ap.add_argument("-s", "--size", type=int, default=4096)
    ap.add_argument("--sender", default="sender@client.example")
    ap.add_argument("--to", default="bench@bench.example")
    ap.add_argument("--driver", choices=("python", "smtp-source"), default="smtp-source")
    ap.add_argument("--commits", action="store_true", help="also print the frames of each of the first commits")
    args = ap.parse_args()
    spawned = Spawned(args.to)
    try:
        db = spawned.dir / "mailhaven.db"
        wal = Path(str(db) + "-wal")
        holder = sqlite3.connect(db, isolation_level=None)
        holder.execute("BEGIN")
        holder.execute("SELECT count(*) FROM accounts").fetchone()
        _, before = read_wal(wal)
        if args.driver == "smtp-source":
            result = run_smtp_source("127.0.0.1", spawned.port, args, args.to)
        else:
            result = asyncio.run(run_python("127.0.0.1", spawned.port, args, args.to))
        settled(spawned.proc.pid, lambda: index_backlog(db) != 0, 0.5)
        page_size, frames = read_wal(wal)
        holder.execute("COMMIT")
        holder.close()
        new = frames[len(before):]
        owners = page_owners(db)
        accepted = result["accepted"]
        commits = [i for i, (_, size) in enumerate(new) if size]
        print(f"{args.concurrency} sessions x {accepted} x {args.size} B ({args.driver}), page {page_size} B: "
              f"{len(new)} frames, {len(new) / accepted:.2f} a message ({len(new) * (page_size + FRAME_HEADER) / accepted / 1024:.1f} KB); "
              f"{len(commits)} commits, {accepted / max(1, len(commits)):.2f} messages a commit, "
              f"{len(new) / max(1, len(commits)):.2f} frames a commit")
        by_tree = Counter(owners.get(page, "(free)") for page, _ in new)
        for name, n in by_tree.most_common():
            print(f"  {name:40s} {n:7d}  {n / accepted:6.2f} a message")
        if args.commits:
            start = 0
            for end in commits[:20]:
                names = Counter(owners.get(page, "(free)") for page, _ in new[start:end + 1])
                print("  commit:", dict(names))
                start = end + 1
    finally:
        spawned.stop()


if __name__ == "__main__":
    main()
