"""SQLite: search text is indexed in the background, and a search never misses a message
whose text is still waiting (from this process or another one)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from pathlib import Path

import pytest

from mailhaven.store import sqliteindex as sqlite_store
from mailhaven.store.api import Account, FlagMode, StorageFull
from mailhaven.store.searchdb import SearchDatabase, forget_indexed
from mailhaven.store.sqlite import SQLiteStore

RAW = (b"From: Alice <alice@lancs.example>\r\nTo: bob@nyu.example\r\nSubject: Quarterly %s\r\n"
       b"Message-ID: <%s@lancs.example>\r\n\r\nThe figures mention %s twice: %s.\r\n")


def raw(word: str) -> bytes:
    w = word.encode()
    return RAW % (w, w, w, w)


async def pending(store: SQLiteStore) -> int:
    return int(await store.db.read(lambda c: c.execute("SELECT count(*) FROM fts_pending").fetchone()[0]))


async def bob_with(store: SQLiteStore, words: Iterable[str]) -> Account:
    """nyu.example, its user bob, and one message delivered to him per word (:func:`raw`)."""
    await store.add_domain("nyu.example")
    bob = await store.add_account("bob@nyu.example", "pw")
    for word in words:
        await store.deliver(await store.put_blob(raw(word)), [bob.id])
    return bob


async def test_search_sees_pending_text_and_the_indexer_catches_up(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(sqlite_store, "INDEX_QUIET", 3600.0)       # no background indexing yet
    store = SQLiteStore(tmp_path)
    await store.open()
    try:
        bob = await bob_with(store, ("walrus", "pelican", "octopus"))
        inbox = await store.get_mailbox(bob.id, "INBOX")
        assert await pending(store) == 3
        assert await store.search_text(inbox.id, "body", "pelican") == {2}   # flushed first
        assert await pending(store) == 0
        # A copy of a message whose text is pending is found in its new mailbox too.
        await store.deliver(await store.put_blob(raw("narwhal")), [bob.id])
        archive = await store.create_mailbox(bob.id, "Kept")
        await store.copy(inbox.id, [4], archive.id)
        assert await store.search_text(archive.id, "subject", "narwhal") == {1}
        # An expunged message takes its pending text with it.
        await store.deliver(await store.put_blob(raw("manatee")), [bob.id])
        await store.set_flags(inbox.id, [5], ["\\Deleted"], FlagMode.ADD)
        await store.expunge(inbox.id, [5])
        assert await pending(store) == 0
        assert await store.search_text(inbox.id, "text", "manatee") == set()
    finally:
        await store.close()


async def test_text_left_pending_by_another_process_is_found(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(sqlite_store, "INDEX_QUIET", 3600.0)
    writer, reader = SQLiteStore(tmp_path), SQLiteStore(tmp_path)    # as an SMTP worker and the server
    await writer.open()
    await reader.open()
    try:
        await writer.add_domain("nyu.example")
        bob = await writer.add_account("bob@nyu.example", "pw")
        await writer.deliver(await writer.put_blob(raw("axolotl")), [bob.id])
        inbox = await reader.get_mailbox(bob.id, "INBOX")
        assert reader._index_pending == 0 and await pending(reader) == 1
        assert await reader.search_text(inbox.id, "body", "axolotl") == {1}
    finally:
        await writer.close()
        await reader.close()


async def test_background_indexing_when_delivery_is_quiet(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(sqlite_store, "INDEX_QUIET", 0.2)
    monkeypatch.setattr(sqlite_store, "INDEX_CHUNK", 2)
    store = SQLiteStore(tmp_path)
    await store.open()
    try:
        await store.add_domain("nyu.example")
        bob = await store.add_account("bob@nyu.example", "pw")
        for i in range(5):
            await store.deliver(await store.put_blob(raw(f"word{i}")), [bob.id])
        for _ in range(100):
            if await pending(store) == 0:
                break
            await asyncio.sleep(0.05)
        assert await pending(store) == 0
        indexed = await store.db.read(lambda c: c.execute("SELECT count(*) FROM search_text").fetchone()[0])
        assert indexed == 5
    finally:
        await store.close()
    # Text still pending at a crash or stop is indexed after the next start.
    monkeypatch.setattr(sqlite_store, "INDEX_QUIET", 3600.0)
    store = SQLiteStore(tmp_path)
    await store.open()
    await store.deliver(await store.put_blob(raw("late")), [bob.id])
    await store.close()
    monkeypatch.setattr(sqlite_store, "INDEX_QUIET", 0.2)
    store = SQLiteStore(tmp_path)
    await store.open()
    try:
        assert store._index_pending == 1
        for _ in range(100):
            if await pending(store) == 0:
                break
            await asyncio.sleep(0.05)
        assert await pending(store) == 0
    finally:
        await store.close()


async def test_the_indexer_outlives_a_full_disk(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """A slice whose clean-up in mailhaven.db finds the disk full (StorageFull, not an
    sqlite3 error) is tried again later; the background indexer does not end."""
    monkeypatch.setattr(sqlite_store, "INDEX_QUIET", 0.05)
    monkeypatch.setattr(sqlite_store, "INDEX_POLL", 0.05)
    failures = [StorageFull("database or disk is full")]

    def forget_or_fail(conn, done):  # type: ignore[no-untyped-def]
        if failures:
            raise failures.pop()
        return forget_indexed(conn, done)

    monkeypatch.setattr(sqlite_store, "forget_indexed", forget_or_fail)
    store = SQLiteStore(tmp_path)
    await store.open()
    try:
        await store.add_domain("nyu.example")
        bob = await store.add_account("bob@nyu.example", "pw")
        await store.deliver(await store.put_blob(raw("dugong")), [bob.id])
        for _ in range(200):
            if not failures and await pending(store) == 0:
                break
            await asyncio.sleep(0.05)
        assert not failures                                   # the full disk was met
        assert store._indexer is not None and not store._indexer.done()
        assert await pending(store) == 0                      # and the text indexed after it
        inbox = await store.get_mailbox(bob.id, "INBOX")
        assert await store.search_text(inbox.id, "body", "dugong") == {1}
    finally:
        await store.close()


async def test_a_stream_of_deliveries_is_indexed_in_gathered_slices(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Issue 18: each slice is an FTS5 segment and an fsync of search.db, so while messages
    keep arriving the indexer lets them gather (INDEX_GATHER) instead of slicing a message or
    two at every poll; all of them are still indexed soon after the stream ends."""
    monkeypatch.setattr(sqlite_store, "INDEX_GATHER", 0.25)
    store = SQLiteStore(tmp_path)
    await store.open()
    slices: list[int] = []
    index_some = store.search.index_some

    def counted(budget: int, chunk: int):  # type: ignore[no-untyped-def]
        done = index_some(budget, chunk)
        slices.append(len(done.ids))
        return done

    monkeypatch.setattr(store.search, "index_some", counted)
    try:
        await store.add_domain("nyu.example")
        bob = await store.add_account("bob@nyu.example", "pw")
        for i in range(40):                                 # about a second of deliveries
            await store.deliver(await store.put_blob(raw(f"gathered{i}")), [bob.id])
            await asyncio.sleep(0.025)
        for _ in range(200):
            if await pending(store) == 0:
                break
            await asyncio.sleep(0.05)
        assert await pending(store) == 0
        taken = [n for n in slices if n]
        assert sum(taken) == 40
        # Slicing at every poll (0.02 s) took one or two messages a slice, 20 or more slices.
        assert len(taken) <= 10, taken
    finally:
        await store.close()


def _encoded_lines(data: bytes) -> bytes:
    import base64

    return base64.encodebytes(data).replace(b"\n", b"\r\n")


async def test_attachments_are_indexed_by_name_never_by_their_base64(tmp_path: Path) -> None:
    import random

    payload = random.Random(7).randbytes(30_000)
    encoded = _encoded_lines(payload)
    needle = encoded.splitlines()[40][10:40].decode()           # base64 from inside the attachment
    with_attachment = (
        b"From: Alice <alice@lancs.example>\r\nTo: bob@nyu.example\r\nSubject: Q3\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n--b1\r\nContent-Type: text/plain\r\n\r\n"
        b"The walrus figures are attached.\r\n--b1\r\nContent-Type: application/pdf; name=\"q3-figures.pdf\"\r\n"
        b"Content-Disposition: attachment; filename=\"q3-figures.pdf\"\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        + encoded + b"--b1--\r\n")
    # An attachment pasted into the text by a client that wrote no MIME headers.
    pasted = (b"From: Alice <alice@lancs.example>\r\nTo: bob@nyu.example\r\nSubject: scan\r\n\r\n"
              b"Here is the pelican scan.\r\n\r\n" + encoded + b"\r\nRegards, Alice\r\n")
    store = SQLiteStore(tmp_path)
    await store.open()
    try:
        await store.add_domain("nyu.example")
        bob = await store.add_account("bob@nyu.example", "pw")
        for raw_message in (with_attachment, pasted):
            await store.deliver(await store.put_blob(raw_message), [bob.id])
        inbox = await store.get_mailbox(bob.id, "INBOX")
        assert await store.search_text(inbox.id, "body", "walrus figures") == {1}
        assert await store.search_text(inbox.id, "body", "q3-figures.pdf") == {1}
        assert await store.search_text(inbox.id, "text", "pelican scan") == {2}
        assert await store.search_text(inbox.id, "text", "Regards, Alice") == {2}
        assert await store.search_text(inbox.id, "body", needle) == set()
        assert await store.search_text(inbox.id, "text", needle) == set()
    finally:
        await store.close()


async def test_a_slice_is_its_budget_of_text_and_at_least_one_message(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(sqlite_store, "INDEX_QUIET", 3600.0)
    store = SQLiteStore(tmp_path)
    await store.open()
    try:
        bob = await bob_with(store, ("heron", "egret", "ibis"))
        done = await asyncio.to_thread(store.search.index_some, 0, 200)   # a budget its first message uses up
        assert done.ids == (1,)
        assert await store.db.write(lambda c: forget_indexed(c, done)) == 1
        assert await pending(store) == 2
        await store.flush_index()                     # slice after slice until none is left
        assert await pending(store) == 0
        inbox = await store.get_mailbox(bob.id, "INBOX")
        assert await store.search_text(inbox.id, "body", "egret") == {2}
    finally:
        await store.close()


async def test_indexing_keeps_up_while_deliveries_go_on(tmp_path: Path) -> None:
    # Issue 18: the indexer waited for a second without deliveries, so under steady mail
    # nothing was searchable from the index and a burst's indexing all came after it.
    store = SQLiteStore(tmp_path)
    await store.open()
    try:
        await store.add_domain("nyu.example")
        bob = await store.add_account("bob@nyu.example", "pw")
        indexed = 0
        for i in range(40):                               # one message every 0.1 s
            await store.deliver(await store.put_blob(raw(f"steady{i}")), [bob.id])
            await asyncio.sleep(0.1)
            indexed = await store.db.read(lambda c: c.execute("SELECT count(*) FROM search_text").fetchone()[0])
            if i >= 3 and indexed:
                break
        assert indexed > 0
    finally:
        await store.close()


_OLD_INDEX = ("CREATE VIRTUAL TABLE messages_fts USING fts5 (subject, sender, recipients, cc, bcc, body, headers, "
              "tokenize = 'trigram')")


_PREVIOUS_INDEX = ("CREATE VIRTUAL TABLE search_index USING fts5 (subject, sender, recipients, cc, bcc, body, headers, "
                   "tokenize = 'trigram', content = '', detail = column)")


@pytest.mark.parametrize("layout", ["messages_fts", "in mailhaven.db"])
async def test_a_data_directory_with_an_older_index_is_upgraded(tmp_path: Path, layout: str) -> None:
    # Issue 18: the trigram index kept its own copy of the text (messages_fts), then lived in
    # mailhaven.db (search_index, search_text), where its slices held the deliveries' write
    # lock. A data directory from either has it moved to search.db; searches still work.
    import sqlite3

    from mailhaven.store.sqliteindex import unpack_text

    store = SQLiteStore(tmp_path)
    await store.open()
    bob = await bob_with(store, ("walrus", "pelican", "octopus"))
    await store.flush_index()
    await store.close()
    index = sqlite3.connect(tmp_path / "search.db")
    texts = index.execute("SELECT id, text FROM search_text").fetchall()
    index.close()
    for name in ("search.db", "search.db-wal", "search.db-shm"):
        (tmp_path / name).unlink(missing_ok=True)
    conn = sqlite3.connect(tmp_path / "mailhaven.db")        # made as the old version made it
    with conn:
        conn.execute("DROP TABLE search_drops")
        if layout == "messages_fts":
            conn.execute(_OLD_INDEX)
            for message_id, stored in texts:
                conn.execute("INSERT INTO messages_fts (rowid, subject, sender, recipients, cc, bcc, body, headers) "
                             "VALUES (?,?,?,?,?,?,?,?)", (message_id, *unpack_text(stored)))
        else:
            conn.execute(_PREVIOUS_INDEX)
            conn.execute("CREATE TABLE search_text (id INTEGER PRIMARY KEY, text TEXT NOT NULL)")
            for message_id, stored in texts:
                conn.execute("INSERT INTO search_index (rowid, subject, sender, recipients, cc, bcc, body, headers) "
                             "VALUES (?,?,?,?,?,?,?,?)", (message_id, *unpack_text(stored)))
                conn.execute("INSERT INTO search_text VALUES (?,?)", (message_id, stored))
    conn.close()

    store = SQLiteStore(tmp_path)
    await store.open()
    try:
        inbox = await store.get_mailbox(bob.id, "INBOX")
        assert await store.search_text(inbox.id, "body", "pelican") == {2}
        assert await store.search_text(inbox.id, "subject", "quarterly") == {1, 2, 3}
        assert await store.search_text(inbox.id, "from", "Al") == {1, 2, 3}    # too short for trigrams
        assert await store.search_text(inbox.id, "subject", "Xq") == set()
        await store.expunge(inbox.id, [1])
        assert await store.search_text(inbox.id, "text", "walrus") == set()
        kept = await store.create_mailbox(bob.id, "Kept")
        await store.copy(inbox.id, [3], kept.id)
        assert await store.search_text(kept.id, "text", "octopus") == {1}

        def tables(c: sqlite3.Connection) -> set[str]:
            return {r[0] for r in c.execute("SELECT name FROM main.sqlite_master WHERE type='table'")}

        names = await store.db.read(tables)
        assert not names & {"messages_fts", "search_index", "search_text"}
        assert not any(name.startswith("search_index") for name in names)
        await store.flush_index()
        assert _trigram_docs(tmp_path)["oct"] == 2 and "wal" not in _trigram_docs(tmp_path)
        assert (tmp_path / "search.db").stat().st_mode & 0o777 == 0o600
    finally:
        await store.close()


def _trigram_docs(data: Path) -> dict[str, int]:
    """How many messages the search index holds each trigram for (and that it is sound)."""
    import sqlite3

    conn = sqlite3.connect(_index_file(data))
    try:
        conn.execute("INSERT INTO search_index (search_index, rank) VALUES ('integrity-check', 0)")
        conn.execute("CREATE VIRTUAL TABLE temp.v USING fts5vocab(main, search_index, 'row')")
        return dict(conn.execute("SELECT term, doc FROM temp.v").fetchall())
    finally:
        conn.close()


async def test_expunge_and_reindex_keep_the_contentless_index_exact(tmp_path: Path) -> None:
    # A contentless FTS5 table forgets what it indexed: taking a message out must tell it the
    # very text it took, or its trigrams stay behind (and a later search finds a ghost).
    store = SQLiteStore(tmp_path)
    await store.open()
    try:
        bob = await bob_with(store, ("heron", "egret", "ibis"))
        await store.flush_index()
        inbox = await store.get_mailbox(bob.id, "INBOX")
        await store.expunge(inbox.id, [2])
        assert await store.reindex() == 2
        await store.flush_index()
        docs = _trigram_docs(tmp_path)
        assert "egr" not in docs and docs["her"] == 1 and docs["qua"] == 2
        box = await store.create_mailbox(bob.id, "Gone")
        await store.copy(inbox.id, [1, 3], box.id)
        await store.flush_index()
        assert _trigram_docs(tmp_path)["her"] == 2
        await store.delete_mailbox(box.id)
        await store.flush_index()                     # the drops listed are applied
        assert _trigram_docs(tmp_path)["her"] == 1
        assert await store.search_text(inbox.id, "subject", "heron") == {1}
    finally:
        await store.close()


def _index_file(data: Path) -> Path:
    """The database file that holds the search index (search.db; mailhaven.db before it had
    one of its own)."""
    import sqlite3

    for path in (data / "search.db", data / "mailhaven.db"):
        if path.exists():
            conn = sqlite3.connect(path)
            try:
                if conn.execute("SELECT 1 FROM sqlite_master WHERE name='search_text'").fetchone():
                    return path
            finally:
                conn.close()
    raise AssertionError("no search index")


async def test_a_delivery_never_waits_for_an_index_transaction(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    # Issue 18: an index slice held the write lock deliveries take for p50 10-32 ms, up to
    # 156 ms under load. With the index in a database of its own, a transaction held open on
    # it (as a slice in progress holds it) delays no delivery; the indexing waits instead.
    import sqlite3

    monkeypatch.setattr(sqlite_store, "INDEX_QUIET", 3600.0)
    store = SQLiteStore(tmp_path)
    await store.open()
    try:
        bob = await bob_with(store, ("heron", "egret", "ibis"))
        held = sqlite3.connect(_index_file(tmp_path), timeout=0, isolation_level=None)
        held.execute("BEGIN IMMEDIATE")
        held.execute("INSERT INTO search_text (id, text) VALUES (1000000, 'slice in progress')")
        try:
            indexing = asyncio.ensure_future(store.flush_index())          # waits for the index's lock
            await asyncio.sleep(0.1)
            for word in ("crane", "stork"):
                await asyncio.wait_for(store.deliver(await store.put_blob(raw(word)), [bob.id]), 5)
            assert not indexing.done()
        finally:
            held.execute("ROLLBACK")
            held.close()
        await asyncio.wait_for(indexing, 30)
        inbox = await store.get_mailbox(bob.id, "INBOX")
        assert await store.search_text(inbox.id, "body", "stork") == {5}
        assert await store.search_text(inbox.id, "body", "egret") == {2}
    finally:
        await store.close()


async def test_a_slice_applied_again_after_a_crash_indexes_each_message_once(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    # The slice commits in search.db, then mailhaven.db forgets the text it took: a crash
    # between the two leaves the text pending, and the next slice must not index it twice.
    monkeypatch.setattr(sqlite_store, "INDEX_QUIET", 3600.0)
    store = SQLiteStore(tmp_path)
    await store.open()
    bob = await bob_with(store, ("heron", "egret", "ibis"))
    done = await asyncio.to_thread(store.search.index_some, 10**9, 200)
    assert done.ids == (1, 2, 3)
    await store.close()                               # "crashed" before forget_indexed
    store = SQLiteStore(tmp_path)
    await store.open()
    try:
        assert await pending(store) == 3
        await store.flush_index()
        assert await pending(store) == 0
        docs = _trigram_docs(tmp_path)
        assert docs["her"] == 1 and docs["egr"] == 1 and docs["qua"] == 3
        inbox = await store.get_mailbox(bob.id, "INBOX")
        assert await store.search_text(inbox.id, "subject", "quarterly") == {1, 2, 3}
    finally:
        await store.close()


async def test_a_slice_that_fails_writes_nothing_and_the_next_one_indexes_it_all(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    # The slice's transaction rolls back whole (its count, its pairing mark, the text it
    # indexed) and lets go of search.db's write lock: the next slice does it all again.
    monkeypatch.setattr(sqlite_store, "INDEX_QUIET", 3600.0)
    store = SQLiteStore(tmp_path)
    await store.open()
    try:
        await bob_with(store, ("heron", "egret"))
        real = SearchDatabase._index_some

        def fails_after(self, conn, budget, chunk):  # type: ignore[no-untyped-def]
            real(self, conn, budget, chunk)
            raise OSError("disk gone")

        monkeypatch.setattr(SearchDatabase, "_index_some", fails_after)
        with pytest.raises(OSError, match="disk gone"):
            await asyncio.to_thread(store.search.index_some, 10**9, 200)
        assert _trigram_docs(tmp_path).get("her") is None
        monkeypatch.setattr(SearchDatabase, "_index_some", real)
        done = await asyncio.to_thread(store.search.index_some, 10**9, 200)
        assert (done.ids, done.number) == ((1, 2), 1)
        assert _trigram_docs(tmp_path)["her"] == 1
    finally:
        await store.close()


async def test_text_pended_again_after_a_slice_read_it_is_not_forgotten(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    # A reindex (or an expunge and a new message under the same id) between a slice's
    # snapshot and its clean-up lists a drop after the snapshot: the new pending text stays.
    monkeypatch.setattr(sqlite_store, "INDEX_QUIET", 3600.0)
    store = SQLiteStore(tmp_path)
    await store.open()
    try:
        bob = await bob_with(store, ("heron", "egret"))
        done = await asyncio.to_thread(store.search.index_some, 10**9, 200)
        assert await store.reindex() == 2
        assert await store.db.write(lambda c: forget_indexed(c, done)) == 0
        assert await pending(store) == 2
        await store.flush_index()
        docs = _trigram_docs(tmp_path)
        assert docs["her"] == 1 and docs["qua"] == 2
        # The last message expunged and its id given to a new one before the index heard of it:
        # neither a search nor a copy takes the old text for the new message.
        inbox = await store.get_mailbox(bob.id, "INBOX")
        await store.expunge(inbox.id, [2])
        await store.deliver(await store.put_blob(raw("stork")), [bob.id])
        ids = await store.db.read(lambda c: [r[0] for r in c.execute("SELECT id FROM messages ORDER BY id")])
        assert ids == [1, 2]                          # SQLite gave the expunged id again
        kept = await store.create_mailbox(bob.id, "Kept")
        await store.copy(inbox.id, [3], kept.id)
        assert await store.search_text(inbox.id, "body", "egret") == set()
        assert await store.search_text(kept.id, "body", "egret") == set()
        assert await store.search_text(kept.id, "body", "stork") == {1}
        await store.flush_index()
        assert "egr" not in _trigram_docs(tmp_path)
    finally:
        await store.close()


async def test_a_nul_in_the_text_is_indexed_as_a_space_and_taken_out_exactly(tmp_path: Path) -> None:
    # NUL separates the kept fields; a header holding one must not shift them (a delete
    # told other text than was indexed would leave trigrams behind).
    store = SQLiteStore(tmp_path)
    await store.open()
    try:
        await store.add_domain("nyu.example")
        bob = await store.add_account("bob@nyu.example", "pw")
        odd = b"From: a@lancs.example\r\nTo: bob@nyu.example\r\nX-Odd: gan\x00net\r\nSubject: gannet\r\n\r\nx\r\n"
        await store.deliver(await store.put_blob(odd), [bob.id])
        await store.deliver(await store.put_blob(raw("puffin")), [bob.id])
        inbox = await store.get_mailbox(bob.id, "INBOX")
        assert await store.search_text(inbox.id, "header", "gan net") == {1}
        assert await store.search_text(inbox.id, "subject", "gannet") == {1}
        assert await store.search_text(inbox.id, "subject", "puffin") == {2}
        await store.expunge(inbox.id, [1])
        await store.flush_index()
        docs = _trigram_docs(tmp_path)
        assert "gan" not in docs and "odd" not in docs and docs["puf"] == 1
    finally:
        await store.close()


async def test_the_indexed_text_of_a_message_is_capped(tmp_path: Path) -> None:
    # Issue 18: indexing costs by the kilobyte of text, so only the first INDEX_TEXT_LIMIT
    # characters of a long text are indexed (and kept): a word past them is not found.
    from mailhaven.message.summary import INDEX_TEXT_LIMIT

    line = "The quarterly figures for the northern region are attached below.\r\n"
    filler = line * (4 * INDEX_TEXT_LIMIT // len(line))
    long_text = ("From: a@lancs.example\r\nTo: bob@nyu.example\r\nSubject: long\r\n\r\n"
                 "kittiwake early\r\n" + filler + "guillemot late\r\n").encode()
    store = SQLiteStore(tmp_path)
    await store.open()
    try:
        await store.add_domain("nyu.example")
        bob = await store.add_account("bob@nyu.example", "pw")
        await store.deliver(await store.put_blob(long_text), [bob.id])
        inbox = await store.get_mailbox(bob.id, "INBOX")
        assert await store.search_text(inbox.id, "body", "kittiwake") == {1}
        assert await store.search_text(inbox.id, "body", "guillemot") == set()
        kept = await store.db.read(lambda c: c.execute("SELECT length(text) FROM search_text").fetchone()[0])
        assert kept <= INDEX_TEXT_LIMIT + 1024
    finally:
        await store.close()


async def test_the_wal_is_checkpointed_beside_the_writer_not_by_a_delivery(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    # Issue 18: at SQLite's default the commit that crossed 1,000 pages of WAL copied it into
    # the database (300-500 ms under load, on a delivery when the indexer had filled it). Now
    # the writer's own checkpoint is a far backstop and the indexer's loop checkpoints.
    from mailhaven.store import db as db_module

    monkeypatch.setattr(sqlite_store, "CHECKPOINT_EVERY", 0.0)
    store = SQLiteStore(tmp_path)
    await store.open()
    try:
        assert await store.db.write(lambda c: c.execute("PRAGMA wal_autocheckpoint").fetchone()[0]) \
            == db_module.WAL_AUTOCHECKPOINT
        await store.add_domain("nyu.example")
        bob = await store.add_account("bob@nyu.example", "pw")
        main = tmp_path / "mailhaven.db"
        before = main.stat().st_size
        for i in range(20):                                   # far fewer than 1,000 pages
            await store.deliver(await store.put_blob(raw(f"tern{i}")), [bob.id])
        for _ in range(100):
            if main.stat().st_size > before:
                break
            await asyncio.sleep(0.05)
        assert main.stat().st_size > before                   # the WAL's pages reached the database
    finally:
        await store.close()


async def test_an_expunged_message_leaves_the_index_in_the_background(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    # An expunge lists the message's id for the indexer (the index is in search.db, which the
    # expunge's transaction cannot write); the indexer applies it without a search asking.
    monkeypatch.setattr(sqlite_store, "INDEX_LOOK_EVERY", 0.1)
    store = SQLiteStore(tmp_path)
    await store.open()
    try:
        bob = await bob_with(store, ("heron", "egret"))
        await store.flush_index()
        inbox = await store.get_mailbox(bob.id, "INBOX")
        await store.expunge(inbox.id, [2])
        for _ in range(100):
            if "egr" not in _trigram_docs(tmp_path):
                break
            await asyncio.sleep(0.05)
        assert "egr" not in _trigram_docs(tmp_path) and _trigram_docs(tmp_path)["her"] == 1
        assert await store.search_text(inbox.id, "body", "egret") == set()
    finally:
        await store.close()


_INDEXING_CHILD = """
import asyncio, sys
from mailhaven.store import sqliteindex
from mailhaven.store.sqlite import SQLiteStore
sqliteindex.INDEX_QUIET = 3600.0
sqliteindex.INDEX_SLICE_BYTES = 300          # a message a slice: many hand-offs to be killed in

async def main() -> None:
    store = SQLiteStore(sys.argv[1])
    await store.open()
    bob = await store.get_account("bob@nyu.example")
    inbox = await store.get_mailbox(bob.id, "INBOX")
    await store.expunge(inbox.id, [1, 2])    # drops listed for the indexer too
    print("indexing", flush=True)
    while True:
        await store.flush_index()
        await asyncio.sleep(0)

asyncio.run(main())
"""


@pytest.mark.parametrize("delay", [0.01, 0.02, 0.04, 0.06])
async def test_the_index_is_exact_after_a_process_killed_while_indexing(tmp_path: Path, monkeypatch,  # type: ignore[no-untyped-def]
                                                                        delay: float) -> None:
    # A process killed (SIGKILL) between a slice's commit in search.db and its clean-up in
    # mailhaven.db, or in either, leaves text pending and drops listed that were applied
    # already: applying them again must leave every message indexed once, and none expunged.
    from conftest import killed_child

    monkeypatch.setattr(sqlite_store, "INDEX_QUIET", 3600.0)
    store = SQLiteStore(tmp_path)
    await store.open()
    await store.add_domain("nyu.example")
    bob = await store.add_account("bob@nyu.example", "pw")
    words = [f"bird{i:02d}x" for i in range(40)]
    for word in words:
        await store.deliver(await store.put_blob(raw(word)), [bob.id])
    await store.flush_index()                         # the first two in the index, to be dropped
    for word in words:
        await store.deliver(await store.put_blob(raw(word + "y")), [bob.id])
    await store.close()
    await killed_child(_INDEXING_CHILD, str(tmp_path), b"indexing\n", delay)
    store = SQLiteStore(tmp_path)
    await store.open()
    try:
        assert not store._refill_wanted       # a slice killed before its clean-up: still paired
        await store.flush_index()
        assert await pending(store) == 0
        inbox = await store.get_mailbox(bob.id, "INBOX")
        docs = _trigram_docs(tmp_path)
        assert docs["d00"] == 1 and docs["d01"] == 1       # bird00xy, bird01xy; bird00x, bird01x dropped
        assert all(docs[f"{i:02d}x"] == (2 if i > 1 else 1) for i in range(40))
        assert await store.search_text(inbox.id, "subject", "bird00x") == {41}
        assert await store.search_text(inbox.id, "subject", "bird39x") == {40, 80}
        indexed = await store.db.read(lambda c: c.execute("SELECT count(*) FROM search_text").fetchone()[0])
        assert indexed == 78
    finally:
        await store.close()


async def test_a_missing_index_database_is_made_anew_and_reindex_still_refills_it(tmp_path: Path, caplog) -> None:  # type: ignore[no-untyped-def]
    # (The refill by itself: test_store_search_refill.py.) A one-shot command's store starts
    # no background refill; `mailhaven store reindex` refills the index and unlists the refill.
    import logging

    store = SQLiteStore(tmp_path)
    await store.open()
    bob = await bob_with(store, ("heron", "egret"))
    await store.flush_index()
    await store.close()
    for name in ("search.db", "search.db-wal", "search.db-shm"):
        (tmp_path / name).unlink(missing_ok=True)
    store = SQLiteStore(tmp_path)
    with caplog.at_level(logging.WARNING, logger="mailhaven.store"):
        await store.open()
    try:
        assert "is being refilled" in caplog.text
        assert await store.db.read(lambda c: c.execute("SELECT count(*) FROM search_text").fetchone()[0]) == 0
        assert await store.reindex() == 2
        assert not store._refill_wanted
        assert await store.db.read(lambda c: c.execute("SELECT count(*) FROM search_refill").fetchone()[0]) == 0
        inbox = await store.get_mailbox(bob.id, "INBOX")
        assert await store.search_text(inbox.id, "body", "egret") == {2}
        assert (tmp_path / "search.db").stat().st_mode & 0o777 == 0o600
    finally:
        await store.close()
