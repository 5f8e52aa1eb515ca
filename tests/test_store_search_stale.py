"""SQLite: a search index that does not match ``mailhaven.db`` (restored from an older
backup, beside an older ``mailhaven.db``, or copied from another installation) is found at
open, emptied and refilled (searchdb.py's pairing): no IMAP SEARCH misses a message or
finds the wrong one, and a kill during the repair leaves the next open to finish it."""

from __future__ import annotations

import asyncio
import contextlib
import imaplib
import os
import shutil
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from conftest import ServerProcess, killed_child, wait_for
from mailhaven.store.sqlite import SQLiteStore
from test_store_search_index import _trigram_docs, bob_with, raw
from test_store_search_refill import WORDS, indexed_ids, message_ids, refill_listed


def back_up(data: Path, name: str, to: Path) -> None:
    """``DATA/<name>`` copied aside (the store closed: its WAL is in the file)."""
    to.mkdir(exist_ok=True)
    for suffix in ("", "-wal"):
        if (data / (name + suffix)).exists():
            shutil.copy2(data / (name + suffix), to / (name + suffix))


def restore(backup: Path, name: str, data: Path) -> None:
    """``DATA/<name>`` put back from :func:`back_up`, as an operator restores a file."""
    for suffix in ("", "-wal", "-shm"):
        (data / (name + suffix)).unlink(missing_ok=True)
    for suffix in ("", "-wal"):
        if (backup / (name + suffix)).exists():
            shutil.copy2(backup / (name + suffix), data / (name + suffix))


@contextlib.asynccontextmanager
async def opened(data: Path) -> AsyncIterator[SQLiteStore]:
    """The store in ``data``, opened (which checks the pairing, and repairs it), closed after."""
    store = SQLiteStore(data)
    await store.open()
    try:
        yield store
    finally:
        await store.close()


async def then_changed(data: Path) -> int:
    """After :func:`stored`: UID 12 (the largest id) expunged and its id given again to a new
    message, UID 13, then UID 14 delivered; all indexed. Returns bob's id."""
    async with opened(data) as store:
        bob = await store.get_account("bob@nyu.example")
        inbox = await store.get_mailbox(bob.id, "INBOX")
        await store.expunge(inbox.id, [3, 12])
        await store.flush_index()
        await store.deliver(await store.put_blob(raw("plover99q")), [bob.id])
        await store.deliver(await store.put_blob(raw("plover98q")), [bob.id])
        await store.flush_index()
        assert await message_ids(store) == [1, 2, *range(4, 14)]      # id 12 is UID 13's now
    return bob.id


async def restored_behind(data: Path, name: str) -> int:
    """``DATA/<name>`` backed up after :func:`stored`, then put back after
    :func:`then_changed`: one of the two databases restored from an older backup than the
    other. Returns bob's id."""
    await stored(data)
    back_up(data, name, data / "backup")
    bob_id = await then_changed(data)
    restore(data / "backup", name, data)
    return bob_id


async def stored(data: Path, words: list[str] = WORDS) -> int:
    async with opened(data) as store:
        bob = await bob_with(store, words)
        await store.flush_index()
    return bob.id


async def assert_exact(store: SQLiteStore, data: Path, counts: dict[str, int]) -> None:
    """Refilled to the end: each message indexed once, with its own text."""
    await store.refill_search_index()
    await store.flush_index()
    assert not refill_listed(data)
    assert await indexed_ids(store) == await message_ids(store)
    docs = _trigram_docs(data)
    for trigram, count in counts.items():
        assert docs.get(trigram, 0) == count, trigram


async def test_an_index_restored_from_an_older_backup_is_refilled(tmp_path: Path) -> None:
    # search.db behind mailhaven.db: the messages indexed since are missing from it, and it
    # holds the expunged UID 12's text under the id UID 13 was given.
    bob_id = await restored_behind(tmp_path, "search.db")
    async with opened(tmp_path) as store:
        inbox = await store.get_mailbox(bob_id, "INBOX")
        assert await store.search_text(inbox.id, "body", "plover99q") == {13}
        assert await store.search_text(inbox.id, "body", "plover98q") == {14}
        assert await store.search_text(inbox.id, "body", "plover11q") == set()
        assert await store.search_text(inbox.id, "body", "plover02q") == set()
        assert await store.search_text(inbox.id, "subject", "Quarterly") == {1, 2, *range(4, 12), 13, 14}
        assert store._refill_wanted
        await assert_exact(store, tmp_path, {"11q": 0, "02q": 0, "99q": 1, "98q": 1, "05q": 1})


async def test_an_index_newer_than_a_restored_mailhaven_db_is_refilled(tmp_path: Path) -> None:
    # mailhaven.db behind search.db: UID 3 and UID 12 are back, but the index took them out
    # (drops applied after the backup), and holds a lost message's text under UID 12's id.
    bob_id = await restored_behind(tmp_path, "mailhaven.db")
    async with opened(tmp_path) as store:
        inbox = await store.get_mailbox(bob_id, "INBOX")
        assert await store.search_text(inbox.id, "body", "plover02q") == {3}
        assert await store.search_text(inbox.id, "body", "plover11q") == {12}
        assert await store.search_text(inbox.id, "body", "plover99q") == set()
        assert await store.search_text(inbox.id, "subject", "Quarterly") == set(range(1, 13))
        # A delivery after the restore is given id 13, which the index held for UID 14.
        await store.deliver(await store.put_blob(raw("plover97q")), [bob_id])
        assert await store.search_text(inbox.id, "body", "plover97q") == {13}
        assert await store.search_text(inbox.id, "body", "plover98q") == set()
        assert store._refill_wanted
        await assert_exact(store, tmp_path, {"11q": 1, "02q": 1, "99q": 0, "98q": 0, "97q": 1})


async def test_an_index_from_another_installation_is_refilled(tmp_path: Path) -> None:
    here, there = tmp_path / "here", tmp_path / "there"
    bob_id = await stored(here, WORDS[:6])
    await stored(there, [f"dunlin{i:02d}v" for i in range(9)])
    back_up(there, "search.db", tmp_path / "backup")
    restore(tmp_path / "backup", "search.db", here)
    async with opened(here) as store:
        inbox = await store.get_mailbox(bob_id, "INBOX")
        assert await store.search_text(inbox.id, "body", "plover03q") == {4}
        assert await store.search_text(inbox.id, "body", "dunlin03v") == set()
        assert await store.search_text(inbox.id, "text", "dunlin") == set()
        assert store._refill_wanted
        await assert_exact(store, here, {"03q": 1, "03v": 0, "unl": 0})


_REPAIR_CHILD = """
import asyncio, sys, time
from mailhaven.store import searchdb, sqliteindex, sqliterefill
from mailhaven.store.sqlite import SQLiteStore
sqliteindex.INDEX_SLICE_BYTES = 300          # a message a slice: many hand-offs to be killed in
sqliterefill.REFILL_BATCH = 1
sqliterefill.REFILL_PAUSE = 0.0
MOMENT = "@MOMENT@"
pair, empty, asked = searchdb.SearchDatabase.pair, searchdb.SearchDatabase._empty, []

def paired(self, trust):
    asked.append(1)
    if MOMENT == "listed" and len(asked) == 2:      # the refill listed, the index not emptied yet
        print("listed", flush=True)
        time.sleep(60)
    return pair(self, trust)

def emptied(conn):
    empty(conn)
    if MOMENT == "emptied":                          # emptied, its transaction not committed
        print("emptied", flush=True)
        time.sleep(60)

searchdb.SearchDatabase.pair = paired
searchdb.SearchDatabase._empty = staticmethod(emptied)

async def main() -> None:
    store = SQLiteStore(sys.argv[1])
    if MOMENT == "opening":
        print("opening", flush=True)         # killed during the open's check and repair, or after
    await store.open()
    store.refill_in_background()
    await asyncio.sleep(3600)

asyncio.run(main())
"""


@pytest.mark.parametrize(("moment", "delay"), [("listed", 0.0), ("emptied", 0.0), *(
    ("opening", delay) for delay in (0.0, 0.02, 0.03, 0.04, 0.05, 0.06, 0.1, 0.3))])
async def test_a_repair_killed_at_any_moment_is_finished_by_the_next_open(tmp_path: Path, moment: str,
                                                                          delay: float) -> None:
    words = [f"stint{i:02d}z" for i in range(30)]
    await stored(tmp_path, words)
    back_up(tmp_path, "search.db", tmp_path / "backup")
    async with opened(tmp_path) as store:
        bob = await store.get_account("bob@nyu.example")
        inbox = await store.get_mailbox(bob.id, "INBOX")
        await store.expunge(inbox.id, [30])
        await store.flush_index()
        await store.deliver(await store.put_blob(raw("stint77z")), [bob.id])      # id 30 again
        await store.flush_index()
    restore(tmp_path / "backup", "search.db", tmp_path)
    await killed_child(_REPAIR_CHILD.replace("@MOMENT@", moment), str(tmp_path), f"{moment}\n".encode(), delay)
    if moment != "opening":
        # Killed there: the refill listed, the stale index whole (emptying it never committed).
        assert refill_listed(tmp_path)
        index = sqlite3.connect(tmp_path / "search.db")
        try:
            assert index.execute("SELECT count(*) FROM search_text").fetchone()[0] == 30
        finally:
            index.close()
    async with opened(tmp_path) as store:
        assert await store.search_text(inbox.id, "body", "stint29z") == set()
        assert await store.search_text(inbox.id, "body", "stint77z") == {31}
        assert await store.search_text(inbox.id, "body", "stint00z") == {1}
        await assert_exact(store, tmp_path, {**{f"{i:02d}z": 1 for i in range(29)}, "29z": 0, "77z": 1})


@pytest.mark.skipif(os.environ.get("MAILHAVEN_TEST_STORE") == "postgres", reason="SQLite's search.db")
def test_a_server_beside_an_older_index_answers_imap_search_rightly(tmp_path: Path) -> None:
    data = tmp_path / "data"

    async def prepare() -> None:
        await stored(data)
        back_up(data, "search.db", tmp_path / "backup")
        await then_changed(data)
        async with opened(data) as store:
            await store.set_password("bob@nyu.example", "s3cret")

    asyncio.run(prepare())
    restore(tmp_path / "backup", "search.db", data)
    server = ServerProcess(data).start()
    try:
        imap = imaplib.IMAP4("127.0.0.1", server.port("imap"))
        try:
            imap.login("bob@nyu.example", "s3cret")
            imap.select("INBOX")
            assert imap.uid("SEARCH", "BODY", "plover99q") == ("OK", [b"13"])
            assert imap.uid("SEARCH", "BODY", "plover11q") == ("OK", [b""])
            assert imap.uid("SEARCH", "TEXT", "plover98q") == ("OK", [b"14"])
            imap.logout()
        finally:
            imap.shutdown() if imap.state != "LOGOUT" else None
        wait_for(lambda: "search index refilled" in server.log_text(), timeout=60, what="the refill to end")
        assert not refill_listed(data)
    finally:
        server.stop()
    assert "does not match" in server.log_text()


def test_search_db_is_paired_with_its_mailhaven_db(tmp_path: Path) -> None:
    # The pairing itself: one token in both, and the marks the open compares.
    asyncio.run(stored(tmp_path, WORDS[:2]))
    main = sqlite3.connect(tmp_path / "mailhaven.db")
    index = sqlite3.connect(tmp_path / "search.db")
    try:
        token, changes, indexed = main.execute("SELECT token, changes, indexed FROM search_pairing").fetchone()
        paired, seen = index.execute("SELECT token, seen FROM pairing").fetchone()
        slices = index.execute("SELECT count FROM slices").fetchone()[0]
        assert paired == token and len(token) == 32
        assert changes == 2 and seen == 2                  # two texts pended, both seen by a slice
        assert 1 <= indexed <= slices
    finally:
        main.close()
        index.close()


def test_a_data_directory_from_before_pairing_is_paired_not_refilled(tmp_path: Path) -> None:
    # Both databases as a version before pairing left them: the index is trusted (as it was),
    # paired at open, and nothing is refilled.
    asyncio.run(stored(tmp_path, WORDS[:4]))
    main = sqlite3.connect(tmp_path / "mailhaven.db")
    index = sqlite3.connect(tmp_path / "search.db")
    with main, index:
        for name in ("search_pending_counted", "search_drops_counted"):
            main.execute(f"DROP TRIGGER {name}")
        main.execute("DROP TABLE search_pairing")
        index.execute("DROP TABLE pairing")
    main.close()
    index.close()

    async def reopened() -> None:
        async with opened(tmp_path) as store:
            assert not store._refill_wanted and not refill_listed(tmp_path)
            bob = await store.get_account("bob@nyu.example")
            inbox = await store.get_mailbox(bob.id, "INBOX")
            assert await store.search_text(inbox.id, "body", "plover02q") == {3}
            token = await store.db.read(lambda c: c.execute("SELECT token FROM search_pairing").fetchone()[0])
            assert await store.db.read(lambda c: c.execute("SELECT token FROM search.pairing").fetchone()[0]) == token

    asyncio.run(reopened())
    asyncio.run(reopened())              # and stays paired
