"""SQLite: a search index lost (``DATA/search.db`` missing at open while messages are stored)
is refilled from the messages' bytes by itself, in the background (sqliterefill.py): no
search misses an old message, none finds an expunged one, and a kill mid-refill loses or
doubles nothing."""

from __future__ import annotations

import asyncio
import imaplib
import logging
import os
import sqlite3
import threading
from pathlib import Path

import pytest

from conftest import ServerProcess, killed_child, wait_for
from mailhaven.store import sqliterefill
from mailhaven.store.sqlite import SQLiteStore
from test_store_search_index import _trigram_docs, bob_with, pending, raw

WORDS = [f"plover{i:02d}q" for i in range(12)]
"""One message a word, UID i+1 in INBOX; trigram ``{i:02d}q`` is in that message alone."""


def lose_index(data: Path) -> None:
    """search.db gone, as after a backup restored without it."""
    for name in ("search.db", "search.db-wal", "search.db-shm"):
        (data / name).unlink(missing_ok=True)


async def stored_then_lost(data: Path, words: list[str] = WORDS) -> int:
    """bob with a message a word, indexed, then the index lost; returns bob's account id."""
    store = SQLiteStore(data)
    await store.open()
    bob = await bob_with(store, words)
    await store.flush_index()
    await store.close()
    lose_index(data)
    return bob.id


async def indexed_ids(store: SQLiteStore) -> list[int]:
    return [r[0] for r in await store.db.read(lambda c: c.execute("SELECT id FROM search_text ORDER BY id").fetchall())]


async def message_ids(store: SQLiteStore) -> list[int]:
    return [r[0] for r in await store.db.read(lambda c: c.execute("SELECT id FROM messages ORDER BY id").fetchall())]


def refill_listed(data: Path) -> bool:
    conn = sqlite3.connect(f"file:{data / 'mailhaven.db'}?mode=ro", uri=True)
    try:
        return conn.execute("SELECT count(*) FROM search_refill").fetchone()[0] > 0
    finally:
        conn.close()


async def test_a_lost_index_refills_itself_in_the_background(tmp_path: Path, caplog) -> None:  # type: ignore[no-untyped-def]
    bob_id = await stored_then_lost(tmp_path)
    store = SQLiteStore(tmp_path)
    with caplog.at_level(logging.INFO, logger="mailhaven.store"):
        await store.open()
        try:
            assert refill_listed(tmp_path)
            assert await indexed_ids(store) == []
            store.refill_in_background()
            assert store._refiller is not None
            assert await store._refiller == len(WORDS)
            # Nobody searched and nobody ran reindex: the background indexer takes the text.
            await wait_for_index(store, len(WORDS))
            assert await indexed_ids(store) == await message_ids(store)
            assert not refill_listed(tmp_path)
            inbox = await store.get_mailbox(bob_id, "INBOX")
            assert await store.search_text(inbox.id, "body", "plover07q") == {8}
            assert await store.search_text(inbox.id, "subject", "Quarterly") == set(range(1, 13))
        finally:
            await store.close()
    assert "refilling the search index" in caplog.text and f"from the bytes of {len(WORDS)} message" in caplog.text
    assert f"search index refilled: {len(WORDS)} message(s)" in caplog.text
    # Reopened: nothing listed, nothing to refill, nothing said.
    caplog.clear()
    store = SQLiteStore(tmp_path)
    with caplog.at_level(logging.INFO, logger="mailhaven.store"):
        await store.open()
    try:
        assert not store._refill_wanted and await store.refill_search_index() == 0
        assert "refill" not in caplog.text
    finally:
        await store.close()


async def wait_for_index(store: SQLiteStore, count: int) -> None:
    for _ in range(200):
        if len(await indexed_ids(store)) >= count and not await pending(store):
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the background indexer did not take the refilled text")


async def test_a_search_before_the_refill_refills_its_mailbox_first(tmp_path: Path, monkeypatch, caplog) -> None:  # type: ignore[no-untyped-def]
    # A one-shot command (no background refill) or a search that comes before the refill got
    # to its mailbox: the mailbox's messages are refilled first, the answer is whole.
    bob_id = await stored_then_lost(tmp_path)
    store = SQLiteStore(tmp_path)
    await store.open()
    try:
        inbox = await store.get_mailbox(bob_id, "INBOX")
        archive = await store.get_mailbox(bob_id, "Archive")
        await store.move(inbox.id, [11, 12], archive.id)
        assert await store.search_text(inbox.id, "body", "plover03q") == {4}
        assert await store.search_text(inbox.id, "text", "plover11q") == set()
        assert len(await indexed_ids(store)) == 10             # the inbox's, not the archive's
        assert refill_listed(tmp_path)                         # the rest is left for the refill
        # A mailbox with more left than a search refills: answered from what is indexed, said so.
        monkeypatch.setattr(sqliterefill, "SEARCH_REFILL_MAX", 1)
        with caplog.at_level(logging.WARNING, logger="mailhaven.store"):
            assert await store.search_text(archive.id, "body", "plover11q") == set()
            assert await store.search_text(archive.id, "body", "plover10q") == set()
        assert caplog.text.count("still to be refilled") == 1           # once a mailbox
        assert await store.refill_search_index() == 2
        assert await store.search_text(archive.id, "body", "plover11q") == {2}
    finally:
        await store.close()


async def test_a_fresh_or_fully_pending_data_directory_lists_no_refill(tmp_path: Path, monkeypatch, caplog) -> None:  # type: ignore[no-untyped-def]
    from mailhaven.store import sqliteindex

    with caplog.at_level(logging.INFO, logger="mailhaven.store"):
        store = SQLiteStore(tmp_path / "fresh")
        await store.open()
        try:
            assert not store._refill_wanted and await store.refill_search_index() == 0
        finally:
            await store.close()
        assert not refill_listed(tmp_path / "fresh")
        # Messages whose text is all still pending (the index never took any): nothing lost.
        monkeypatch.setattr(sqliteindex, "INDEX_QUIET", 3600.0)
        store = SQLiteStore(tmp_path / "pending")
        await store.open()
        await bob_with(store, WORDS[:3])
        await store.close()
        lose_index(tmp_path / "pending")
        store = SQLiteStore(tmp_path / "pending")
        await store.open()
        try:
            assert not store._refill_wanted and await store.refill_search_index() == 0
        finally:
            await store.close()
    assert "refill" not in caplog.text


async def test_expunge_delivery_and_copy_during_the_refill_come_out_right(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(sqliterefill, "REFILL_BATCH", 3)
    bob_id = await stored_then_lost(tmp_path)
    store = SQLiteStore(tmp_path)
    await store.open()
    try:
        inbox = await store.get_mailbox(bob_id, "INBOX")
        archive = await store.get_mailbox(bob_id, "Archive")
        entered, go = threading.Event(), threading.Event()
        extract = store._extract

        def held_first(rows):  # type: ignore[no-untyped-def]
            if not entered.is_set():      # the first batch (UIDs 1-3) waits, its rows read
                entered.set()
                go.wait(10)
            return extract(rows)

        monkeypatch.setattr(store, "_extract", held_first)
        store.refill_in_background()
        assert await asyncio.to_thread(entered.wait, 10)
        await store.expunge(inbox.id, [2, 7])              # one in the batch under way, one ahead
        await store.copy(inbox.id, [9], archive.id)         # not refilled yet: its copy pends nothing
        await store.deliver(await store.put_blob(raw("plover99q")), [bob_id])      # UID 13
        go.set()
        assert store._refiller is not None
        await store._refiller
        await store.flush_index()
        assert await indexed_ids(store) == await message_ids(store)
        docs = _trigram_docs(tmp_path)
        for i in range(12):
            assert docs.get(f"{i:02d}q", 0) == {1: 0, 6: 0, 8: 2}.get(i, 1), i
        assert docs["99q"] == 1
        assert await store.search_text(inbox.id, "body", "plover01q") == set()
        assert await store.search_text(inbox.id, "body", "plover06q") == set()
        assert await store.search_text(inbox.id, "body", "plover99q") == {13}
        assert await store.search_text(archive.id, "body", "plover08q") == {1}
        assert await store.search_text(inbox.id, "subject", "Quarterly") == set(range(1, 14)) - {2, 7}
        assert not refill_listed(tmp_path)
    finally:
        await store.close()


async def test_reindex_beside_a_refill_leaves_each_message_indexed_once(tmp_path: Path) -> None:
    # Both pend text (reindex replacing it with a drop listed, the refill never replacing):
    # each message ends up indexed once, with its text; a reindex through every message
    # unlists the refill.
    bob_id = await stored_then_lost(tmp_path)
    store = SQLiteStore(tmp_path)
    await store.open()
    try:
        refilled, reindexed = await asyncio.gather(store.refill_search_index(), store.reindex(batch=2))
        assert reindexed == len(WORDS) and 0 <= refilled <= len(WORDS)
        await store.flush_index()
        assert await indexed_ids(store) == await message_ids(store)
        docs = _trigram_docs(tmp_path)
        assert all(docs[f"{i:02d}q"] == 1 for i in range(12))
        assert not refill_listed(tmp_path)
        inbox = await store.get_mailbox(bob_id, "INBOX")
        assert await store.search_text(inbox.id, "body", "plover05q") == {6}
    finally:
        await store.close()


_REFILL_CHILD = """
import asyncio, sys
from mailhaven.store import sqliteindex, sqliterefill
from mailhaven.store.sqlite import SQLiteStore
sqliteindex.INDEX_SLICE_BYTES = 300          # a message a slice: many hand-offs to be killed in
sqliterefill.REFILL_BATCH = 1                # a message a batch: many transactions to be killed in
sqliterefill.REFILL_PAUSE = 0.0

async def main() -> None:
    store = SQLiteStore(sys.argv[1])
    await store.open()
    print("refilling", flush=True)
    store.refill_in_background()
    await asyncio.sleep(3600)

asyncio.run(main())
"""


@pytest.mark.parametrize("delay", [0.0, 0.02, 0.05, 0.1, 0.3])
async def test_the_refill_is_exact_after_a_process_killed_mid_refill(tmp_path: Path, delay: float) -> None:
    words = [f"stint{i:02d}z" for i in range(40)]
    bob_id = await stored_then_lost(tmp_path, words)
    await killed_child(_REFILL_CHILD, str(tmp_path), b"refilling\n", delay)
    # search.db exists now, part-filled or not: the refill stays listed until it ends.
    store = SQLiteStore(tmp_path)
    await store.open()
    try:
        assert store._refill_wanted == refill_listed(tmp_path)
        await store.refill_search_index()
        await store.flush_index()
        assert not refill_listed(tmp_path)
        assert await indexed_ids(store) == await message_ids(store)
        docs = _trigram_docs(tmp_path)
        assert all(docs[f"{i:02d}z"] == 1 for i in range(40))
        inbox = await store.get_mailbox(bob_id, "INBOX")
        assert await store.search_text(inbox.id, "body", "stint00z") == {1}
        assert await store.search_text(inbox.id, "body", "stint39z") == {40}
    finally:
        await store.close()


async def test_a_refill_cancelled_at_close_is_finished_by_the_next_open(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(sqliterefill, "REFILL_BATCH", 2)
    bob_id = await stored_then_lost(tmp_path)
    store = SQLiteStore(tmp_path)
    await store.open()
    entered = threading.Event()
    extract = store._extract

    def noted(rows):  # type: ignore[no-untyped-def]
        entered.set()
        return extract(rows)

    monkeypatch.setattr(store, "_extract", noted)
    store.refill_in_background()
    assert await asyncio.to_thread(entered.wait, 10)
    await store.close()                 # cancelled mid-refill (the batch on its thread ends first)
    assert refill_listed(tmp_path)
    store = SQLiteStore(tmp_path)
    await store.open()
    try:
        assert store._refill_wanted
        await store.refill_search_index()
        await store.flush_index()
        assert await indexed_ids(store) == await message_ids(store)
        assert all(_trigram_docs(tmp_path)[f"{i:02d}q"] == 1 for i in range(12))
        inbox = await store.get_mailbox(bob_id, "INBOX")
        assert await store.search_text(inbox.id, "body", "plover11q") == {12}
    finally:
        await store.close()


@pytest.mark.skipif(os.environ.get("MAILHAVEN_TEST_STORE") == "postgres", reason="SQLite's search.db")
def test_a_server_whose_index_was_lost_finds_old_messages_by_imap_search(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()

    async def prepare() -> None:
        store = SQLiteStore(data)
        await store.open()
        await store.add_domain("nyu.example")
        bob = await store.add_account("bob@nyu.example", "s3cret")
        for word in WORDS:
            await store.deliver(await store.put_blob(raw(word)), [bob.id])
        archive = await store.get_mailbox(bob.id, "Archive")
        inbox = await store.get_mailbox(bob.id, "INBOX")
        await store.move(inbox.id, [12], archive.id)
        await store.flush_index()
        await store.close()

    asyncio.run(prepare())
    lose_index(data)
    server = ServerProcess(data).start()
    try:
        # `serve` refills by itself: nobody searches, nobody runs reindex.
        wait_for(lambda: "search index refilled" in server.log_text(), timeout=60, what="the refill to end")
        assert not refill_listed(data)
        imap = imaplib.IMAP4("127.0.0.1", server.port("imap"))
        try:
            imap.login("bob@nyu.example", "s3cret")
            imap.select("INBOX")
            assert imap.uid("SEARCH", "BODY", "plover04q") == ("OK", [b"5"])
            assert imap.uid("SEARCH", "SUBJECT", "Quarterly") == ("OK", [" ".join(map(str, range(1, 12))).encode()])
            imap.select("Archive")
            assert imap.uid("SEARCH", "TEXT", "plover11q") == ("OK", [b"1"])
            imap.logout()
        finally:
            imap.shutdown() if imap.state != "LOGOUT" else None
    finally:
        server.stop()
    assert "refilling the search index" in server.log_text()
