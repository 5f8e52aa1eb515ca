"""SQLite: search text is indexed in the background, and a search never misses a message
whose text is still waiting (from this process or another one)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from mailhaven.store import sqliteindex as sqlite_store
from mailhaven.store.api import FlagMode
from mailhaven.store.sqlite import SQLiteStore

RAW = (b"From: Alice <alice@lancs.example>\r\nTo: bob@nyu.example\r\nSubject: Quarterly %s\r\n"
       b"Message-ID: <%s@lancs.example>\r\n\r\nThe figures mention %s twice: %s.\r\n")


def raw(word: str) -> bytes:
    w = word.encode()
    return RAW % (w, w, w, w)


async def pending(store: SQLiteStore) -> int:
    return int(await store.db.read(lambda c: c.execute("SELECT count(*) FROM fts_pending").fetchone()[0]))


async def test_search_sees_pending_text_and_the_indexer_catches_up(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(sqlite_store, "INDEX_QUIET", 3600.0)       # no background indexing yet
    store = SQLiteStore(tmp_path)
    await store.open()
    try:
        await store.add_domain("nyu.example")
        bob = await store.add_account("bob@nyu.example", "pw")
        for word in ("walrus", "pelican", "octopus"):
            await store.deliver(await store.put_blob(raw(word)), [bob.id])
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


async def test_the_indexer_gives_the_write_lock_back_after_its_slice(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(sqlite_store, "INDEX_QUIET", 3600.0)
    store = SQLiteStore(tmp_path)
    await store.open()
    try:
        await store.add_domain("nyu.example")
        bob = await store.add_account("bob@nyu.example", "pw")
        for word in ("heron", "egret", "ibis"):
            await store.deliver(await store.put_blob(raw(word)), [bob.id])
        # A slice used up by its first message: one message per write transaction, so a
        # delivery waits behind one message's indexing, never a whole chunk's.
        monkeypatch.setattr(sqlite_store, "INDEX_SLICE_BYTES", 0)
        assert await store.db.write(sqlite_store._index_some) == 1
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


async def test_a_database_with_the_old_index_is_moved_to_the_contentless_one(tmp_path: Path) -> None:
    # Issue 18 (storage): the trigram index kept its own copy of the text, a quarter of it.
    # A database from before has that table: its text is moved over and searches still work.
    import sqlite3

    from mailhaven.store.sqliteindex import unpack_text

    store = SQLiteStore(tmp_path)
    await store.open()
    await store.add_domain("nyu.example")
    bob = await store.add_account("bob@nyu.example", "pw")
    for word in ("walrus", "pelican", "octopus"):
        await store.deliver(await store.put_blob(raw(word)), [bob.id])
    await store.flush_index()
    await store.close()
    conn = sqlite3.connect(tmp_path / "mailhaven.db")        # made as the old version made it
    with conn:
        texts = conn.execute("SELECT id, text FROM search_text").fetchall()
        conn.execute("DROP TABLE search_index")
        conn.execute("DROP TABLE search_text")
        conn.execute(_OLD_INDEX)
        for message_id, stored in texts:
            conn.execute("INSERT INTO messages_fts (rowid, subject, sender, recipients, cc, bcc, body, headers) "
                         "VALUES (?,?,?,?,?,?,?,?)", (message_id, *unpack_text(stored)))
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
            return {r[0] for r in c.execute("SELECT name FROM sqlite_master WHERE type='table'")}

        names = await store.db.read(tables)
        assert "messages_fts" not in names
        assert not any(name.endswith("_content") for name in names)         # no second copy of the text
    finally:
        await store.close()


def _trigram_docs(data: Path) -> dict[str, int]:
    """How many messages the search index holds each trigram for (and that it is sound)."""
    import sqlite3

    conn = sqlite3.connect(data / "mailhaven.db")
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
        await store.add_domain("nyu.example")
        bob = await store.add_account("bob@nyu.example", "pw")
        for word in ("heron", "egret", "ibis"):
            await store.deliver(await store.put_blob(raw(word)), [bob.id])
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
        assert _trigram_docs(tmp_path)["her"] == 1
        assert await store.search_text(inbox.id, "subject", "heron") == {1}
    finally:
        await store.close()


async def test_a_slice_ends_early_for_a_delivery_waiting_for_the_writer(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    # Issue 18: a delivery queued behind the indexer waited out its whole slice (59-150 ms
    # at the worst under load); now the slice commits after the message it is on.
    import threading

    monkeypatch.setattr(sqlite_store, "INDEX_QUIET", 3600.0)
    store = SQLiteStore(tmp_path)
    await store.open()
    try:
        await store.add_domain("nyu.example")
        bob = await store.add_account("bob@nyu.example", "pw")
        for word in ("heron", "egret", "ibis", "stork"):
            await store.deliver(await store.put_blob(raw(word)), [bob.id])
        monkeypatch.setattr(sqlite_store, "INDEX_SLICE_BYTES", 10**9)   # its size alone would take them all
        blob = await store.put_blob(raw("crane"))
        release = threading.Event()
        held = asyncio.ensure_future(store.db.write(lambda c: release.wait(10)))   # the writer is busy
        await asyncio.sleep(0.05)
        indexing = asyncio.ensure_future(store.db.write(
            lambda c: sqlite_store._index_some(c, store.db.writes_waiting), durable=False))
        await asyncio.sleep(0.01)
        delivery = asyncio.ensure_future(store.deliver(blob, [bob.id]))
        await asyncio.sleep(0.05)
        release.set()
        await held
        assert await indexing == 1                    # one message, then the delivery's turn
        await delivery
        assert await pending(store) == 4
        assert await store.db.write(lambda c: sqlite_store._index_some(c, store.db.writes_waiting)) == 4
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
