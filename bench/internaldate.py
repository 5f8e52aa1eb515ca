"""Micro-benchmark: rendering INTERNALDATE for FETCH 1:* (UID FLAGS RFC822.SIZE INTERNALDATE)
at 1k, 10k and 100k messages, the time per message of a repeated FETCH (the second pass,
when any cache is warm). Issue 18: a per-timestamp cache of 65,536 entries missed on every
message of a 100k mailbox; the time per message must stay flat in mailbox size.

    python bench/internaldate.py
    PYTHONPATH=/path/to/other/src python bench/internaldate.py   # another version
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.append(str(Path(__file__).resolve().parent.parent / "src"))    # after PYTHONPATH

from mailhaven.imap import fetch  # noqa: E402


def per_message_ns(count: int, passes: int = 5) -> float:
    """Best-of ``passes`` time per message of a FETCH 1:* after a first one, messages
    arriving every 37 s (about 2,300 a day) from 2023 on."""
    for cached in ("_internaldate_item", "_internaldate_day"):
        clear = getattr(getattr(fetch, cached, None), "cache_clear", None)
        if clear is not None:
            clear()
    render = fetch._internaldate_item
    dates = [1.7e9 + i * 37.25 for i in range(count)]
    for ts in dates:                        # the first FETCH 1:*
        render(ts)
    best = float("inf")
    for _ in range(passes):
        start = time.thread_time()        # CPU: the machine may be shared
        for ts in dates:
            render(ts)
        best = min(best, time.thread_time() - start)
    return best / count * 1e9


def main() -> None:
    results = {n: per_message_ns(n) for n in (1_000, 10_000, 100_000, 200_000)}
    for n, ns in results.items():
        print(f"{n:>7} messages: {ns:7.0f} ns per message")
    print(f"100k / 1k: {results[100_000] / results[1_000]:.1f}x")


if __name__ == "__main__":
    main()
