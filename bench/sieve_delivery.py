"""CPU per local delivery with and without an active 50-rule Sieve script.

    python bench/sieve_delivery.py [--messages 400]

Delivers the same message ``--messages`` times to one account of a fresh SQLite store
through ``localdelivery.deliver_local`` (what SMTP calls at the end of DATA), once with no
script and once with a 50-rule script whose rules all miss but the last (so every test
runs), and prints the process CPU time per delivery and the difference. The SMTP session
itself is not included: the real per-message cost of a delivery is larger, so the share
printed here is an upper bound of what the script adds.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from mailhaven.localdelivery import deliver_local
from mailhaven.store.sqlite import SQLiteStore

RAW = (b"Return-Path: <owner-dev@lists.example.org>\r\nReceived: from a by b; Mon, 1 Dec 2026 10:00:00 +0000\r\n"
       b"From: Alice Example <alice@example.org>\r\nTo: dev@lists.example.org\r\nCc: carol@example.net\r\n"
       b"Subject: [dev] Release 2.0 is out\r\nList-Id: Developers <dev.lists.example.org>\r\n"
       b"Message-ID: <1@example.org>\r\nDate: Mon, 1 Dec 2026 10:00:00 +0000\r\n\r\n"
       + b"The release is out. " * 100 + b"\r\n")


def fifty_rules() -> str:
    rules = ['require ["fileinto", "imap4flags", "envelope", "variables"];']
    for i in range(49):
        kind = i % 4
        if kind == 0:
            rules.append(f'if header :contains "subject" "project-{i}" {{ fileinto "P{i}"; stop; }}')
        elif kind == 1:
            rules.append(f'if address :is :domain "from" "domain{i}.example" {{ addflag "$D{i}"; fileinto "D{i}"; }}')
        elif kind == 2:
            rules.append(f'if header :matches "list-id" "*list{i}.example*" {{ fileinto "L{i}"; stop; }}')
        else:
            rules.append(f'if envelope :is "from" "sender{i}@example.com" {{ discard; stop; }}')
    rules.append('if header :contains "list-id" "dev.lists.example.org" { addflag "$List"; fileinto "Lists"; }')
    return "\n".join(rules) + "\n"


async def measure(n: int, script: str | None) -> float:
    with tempfile.TemporaryDirectory() as d:
        store = SQLiteStore(Path(d) / "store")
        await store.open()
        try:
            await store.add_domain("nyu.example")
            bob = await store.add_account("bob@nyu.example", "pw")
            await store.create_mailbox(bob.id, "Lists")
            if script is not None:
                await store.put_sieve_script(bob.id, "main", script)
                await store.activate_sieve_script(bob.id, "main")
            rcpts = {"bob@nyu.example": [bob.id]}
            for _ in range(20):                                      # warm up
                blob = await store.put_blob(RAW)
                await deliver_local(store, blob, rcpts, mail_from="owner-dev@lists.example.org")
            start = time.process_time()
            for _ in range(n):
                blob = await store.put_blob(RAW)
                await deliver_local(store, blob, rcpts, mail_from="owner-dev@lists.example.org")
            return (time.process_time() - start) / n
        finally:
            await store.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=400)
    args = ap.parse_args()
    plain = asyncio.run(measure(args.messages, None))
    scripted = asyncio.run(measure(args.messages, fifty_rules()))
    print(f"no script:      {plain * 1e3:.2f} ms CPU per delivery")
    print(f"50-rule script: {scripted * 1e3:.2f} ms CPU per delivery (+{(scripted / plain - 1) * 100:.1f}%)")


if __name__ == "__main__":
    main()
