"""SQLite: a read of messages whose bytes are inline runs on the event loop (no
reader-thread hop) up to ``LOOP_READ_BYTES``, and gives what the reader thread gives; the
rest of a bigger read, and bytes in files, still go to a reader thread."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mailhaven.store import sqlitemessages
from mailhaven.store.sqlite import SQLiteStore


def raw(i: int, body: bytes = b"Hello.\r\n") -> bytes:
    return (b"From: a@lancs.example\r\nTo: bob@nyu.example\r\nSubject: note %d\r\n"
            b"Message-ID: <%d@lancs.example>\r\n\r\n" % (i, i)) + body


async def test_few_message_reads_skip_the_reader_thread(tmp_path: Path, monkeypatch: Any) -> None:
    # A process that did not write the blobs (nothing in the in-memory recent set).
    writer = SQLiteStore(tmp_path)
    await writer.open()
    try:
        await writer.add_domain("nyu.example")
        bob = await writer.add_account("bob@nyu.example", "pw")
        big = raw(9, b"x" * 200_000 + b"\r\n")                # over INLINE_MAX: a file
        messages = [raw(i) for i in range(1, 9)] + [big]
        for data in messages:
            await writer.deliver(await writer.put_blob(data), [bob.id])
    finally:
        await writer.close()
    store = SQLiteStore(tmp_path)
    await store.open()
    trips: list[Any] = []
    submit = store.db._readers.submit
    try:
        inbox = await store.get_mailbox(bob.id, "INBOX")
        monkeypatch.setattr(store.db._readers, "submit", lambda fn: trips.append(fn) or submit(fn))
        assert await store.get_raw(inbox.id, [3]) == [(3, messages[2])]
        [(m, data)] = await store.get_messages_raw(inbox.id, [2], with_summary=False)
        assert (m.uid, data) == (2, messages[1])
        assert await store.get_raw(inbox.id, [1, 2, 4, 99]) == [(1, messages[0]), (2, messages[1]),
                                                             (4, messages[3])]
        assert trips == []                                  # all on the event loop
        assert await store.get_raw(inbox.id, [9]) == [(9, big)]                 # its file: a thread
        assert len(trips) == 1
        many = list(range(1, 9))                            # POP3's read-ahead batch: on the loop
        assert await store.get_raw(inbox.id, many) == [(i, messages[i - 1]) for i in many]
        assert len(trips) == 1
        every = list(range(1, 10))                          # up to the file on the loop, the file on a thread
        assert await store.get_raw(inbox.id, every) == [(i, messages[i - 1]) for i in every]
        assert len(trips) == 2
        monkeypatch.setattr(sqlitemessages, "LOOP_READ_BYTES", 3 * len(messages[0]))
        assert await store.get_raw(inbox.id, [1, 2, 3, 5, 6, 7, 8]) == [(i, messages[i - 1])
                                                                      for i in (1, 2, 3, 5, 6, 7, 8)]
        assert len(trips) == 3                              # past the cap: the rest on a thread
    finally:
        await store.close()


async def test_select_lookups_skip_the_reader_thread(tmp_path: Path, monkeypatch: Any) -> None:
    # SELECT looks its mailbox up (no counts), and the session then asks what changed since
    # the view it loaded: both on the loop when nothing did; a real change still goes to a
    # reader thread and is reported.
    store = SQLiteStore(tmp_path)
    await store.open()
    trips: list[Any] = []
    submit = store.db._readers.submit
    try:
        await store.add_domain("nyu.example")
        bob = await store.add_account("bob@nyu.example", "pw")
        await store.deliver(await store.put_blob(raw(1)), [bob.id])
        inbox = await store.get_mailbox(bob.id, "INBOX")
        monkeypatch.setattr(store.db._readers, "submit", lambda fn: trips.append(fn) or submit(fn))
        box = await store.get_mailbox(bob.id, "INBOX", counts=False)
        assert (box.id, box.highestmodseq) == (inbox.id, inbox.highestmodseq)
        nothing = await store.changes_since(inbox.id, inbox.highestmodseq)
        assert (nothing.changed, nothing.expunged, nothing.highestmodseq) == ([], [], inbox.highestmodseq)
        assert trips == []
        await store.deliver(await store.put_blob(raw(2)), [bob.id])
        changes = await store.changes_since(inbox.id, inbox.highestmodseq)
        assert [m.uid for m in changes.changed] == [2] and changes.highestmodseq > inbox.highestmodseq
        assert len(trips) == 1
    finally:
        await store.close()


def test_uid_reads_return_only_the_uids_asked_for() -> None:
    """A dense run with a gap where the asked-for UID is gone (expunged) and another, not
    asked for, exists: only the UIDs asked for come back, from the list and the row-at-a-time
    reader alike (the list reader's row count happened to match and kept UID 2)."""
    import sqlite3

    from mailhaven.store.sqliterows import _uid_row_iter, _uid_rows

    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE messages (mailbox_id INTEGER, uid INTEGER)")
    conn.executemany("INSERT INTO messages VALUES (1, ?)", [(u,) for u in (1, 2, 4, 5, 9, 2000)])
    select = "SELECT m.uid FROM messages m"
    for uids, expected in (([1, 3], [1]), ([1, 2, 3, 4, 5], [1, 2, 4, 5]), ([1, 9, 2000], [1, 9, 2000]),
                           (list(range(1, 1200)), [1, 2, 4, 5, 9])):
        assert [r[0] for r in _uid_rows(conn, select, 1, uids)] == expected
        assert [r[0] for r in _uid_row_iter(conn, select, 1, uids)] == expected


async def test_loop_reads_see_another_process_delivery_once_told(tmp_path: Path, monkeypatch: Any) -> None:
    # The loop's reads share a snapshot (db.LOOP_SNAPSHOT_S, made long here); a delivery by
    # another process (an SMTP worker: another store on the same data) is read once its
    # change notice is published in this one, before any session hears of it.
    from mailhaven.store import db as dbmodule
    from mailhaven.store.api import Change

    monkeypatch.setattr(dbmodule, "LOOP_SNAPSHOT_S", 60.0, raising=False)
    store = SQLiteStore(tmp_path)
    await store.open()
    worker = SQLiteStore(tmp_path)
    await worker.open()
    for each in (store, worker):
        # No indexer: its clean-up commits would move this process's generation at moments
        # of the machine's choosing and end the snapshot early (CI saw it once).
        each.index_elsewhere()
    try:
        await store.add_domain("nyu.example")
        bob = await store.add_account("bob@nyu.example", "pw")
        await store.deliver(await store.put_blob(raw(1)), [bob.id])
        inbox = await store.get_mailbox(bob.id, "INBOX", counts=False)
        generation = store.db.generation
        for _ in range(2):                                              # the second read holds it
            assert [u for u, _ in store.get_header_now(inbox.id, 1)] == [1]
        await worker.deliver(await worker.put_blob(raw(2)), [bob.id])
        assert store.db.generation == generation                        # nothing this store heard of
        assert store.get_header_now(inbox.id, 2) == []                 # not told yet: the snapshot
        seen: list[list[tuple[int, bytes]]] = []
        store.subscribe(bob.id).on_change(lambda change: seen.append(store.get_header_now(inbox.id, 2)))
        store.hub.publish(Change(account_id=bob.id, mailbox_id=inbox.id, kind="exists", modseq=0))
        assert [[u for u, _ in rows] for rows in seen] == [[2]]          # the subscriber reads it
        box = await store.get_mailbox(bob.id, "INBOX", counts=False)
        assert box.uidnext == 3
    finally:
        await worker.close()
        await store.close()
