"""SQLite: what a delivery's transaction does (issue 18: the delivery transaction was about
a tenth of an inbound message's CPU on the event loop, a dozen statements a message)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from conftest import sqlite_store_with_bob

RAW = b"From: alice@lancs.example\r\nTo: bob@nyu.example\r\nSubject: %d\r\nMessage-ID: <m%d@lancs.example>\r\n\r\nHi.\r\n"



async def test_a_delivery_takes_its_mailbox_uid_and_thread_without_extra_statements(tmp_path: Path) -> None:
    """The mailbox (named, else INBOX) and its next UID are one statement, and a message
    that starts a thread names its own id as the thread's in its INSERT: no SELECT of the
    mailbox, no UPDATE of the row just written."""
    store, bob = await sqlite_store_with_bob(tmp_path)
    try:
        conn = store.db._write_conn
        assert conn is not None
        seen: list[str] = []
        conn.set_trace_callback(seen.append)
        first = (await store.deliver(await store.put_blob(RAW % (1, 1)), [bob]))[0].message
        elsewhere = (await store.deliver(await store.put_blob(RAW % (2, 2)), [bob], mailbox="No such"))[0].message
        await store.create_mailbox(bob, "Lists")
        listed = (await store.deliver(await store.put_blob(RAW % (3, 3)), [bob], mailbox="Lists"))[0].message
        conn.set_trace_callback(None)
        assert not [s for s in seen if s.startswith("SELECT id FROM mailboxes")]
        assert not [s for s in seen if s.startswith("UPDATE messages SET thread_id")]
        assert first is not None and elsewhere is not None and listed is not None
        inbox = await store.get_mailbox(bob, "INBOX")
        lists = await store.get_mailbox(bob, "Lists")
        assert (first.mailbox_id, first.uid, elsewhere.mailbox_id, elsewhere.uid) == (inbox.id, 1, inbox.id, 2)
        assert (listed.mailbox_id, listed.uid) == (lists.id, 1)
        assert [m.thread_id for m in (first, elsewhere, listed)] == [first.id, elsewhere.id, listed.id]
        stored = await store.get_messages(inbox.id, [1, 2])
        assert [(m.id, m.thread_id) for m in stored] == [(first.id, first.id), (elsewhere.id, elsewhere.id)]
        assert inbox.uidnext == 3 and lists.uidnext == 2
    finally:
        await store.close()


async def test_a_thread_starts_at_its_own_id_past_the_largest_id(tmp_path: Path) -> None:
    """With the largest id taken, SQLite picks a free one itself: the thread is still the
    message's own id; a reply joins it."""
    store, bob = await sqlite_store_with_bob(tmp_path)
    try:
        await store.deliver(await store.put_blob(RAW % (1, 1)), [bob])
        await store.db.write(lambda c: c.execute("UPDATE messages SET id = 9223372036854775807, "
                                                 "thread_id = 9223372036854775807"))
        [result] = await store.deliver(await store.put_blob(RAW % (2, 2)), [bob])
        msg = result.message
        assert msg is not None and msg.id != 9223372036854775807 and msg.thread_id == msg.id
        reply = RAW % (3, 3) + b""
        reply = reply.replace(b"\r\n\r\n", b"\r\nIn-Reply-To: <m2@lancs.example>\r\n\r\n", 1)
        [answer] = await store.deliver(await store.put_blob(reply), [bob])
        assert answer.message is not None and answer.message.thread_id == msg.id
        inbox = await store.get_mailbox(bob, "INBOX")
        [again] = await store.get_messages(inbox.id, [2])
        assert again.thread_id == msg.id
    finally:
        await store.close()


def _blob_indexes(conn: sqlite3.Connection) -> list[str]:
    """Indexes of ``messages`` whose columns include ``blob_id``."""
    return [name for _, name, *_ in conn.execute("PRAGMA index_list(messages)")
            if "blob_id" in [r[2] for r in conn.execute(f"PRAGMA index_info({name})")]]


async def test_a_delivery_writes_no_index_keyed_by_the_blob_hash(tmp_path: Path) -> None:
    """A sha256 key lands on a random B-tree leaf: one more WAL page a delivery (issue 18).
    No hot read used the index (the JMAP ownership check is planned on the account's index)."""
    store, bob = await sqlite_store_with_bob(tmp_path)
    try:
        conn = store.db._write_conn
        assert conn is not None
        assert _blob_indexes(conn) == []
        raw = RAW % (1, 1)
        [result] = await store.deliver(await store.put_blob(raw), [bob])
        assert result.message is not None
        blob = result.message.blob_id
        assert await store.account_has_blob(bob, blob)
        assert not await store.account_has_blob(bob, "0" * 64)
        plan = " ".join(str(r[-1]) for r in conn.execute(
            "EXPLAIN QUERY PLAN SELECT 1 FROM messages WHERE blob_id=? AND account_id=? LIMIT 1", (blob, bob)))
        assert "messages_account_modseq" in plan
        assert await store.collect_garbage(grace=0) == 0          # the delivered blob is still named
        assert await store.get_raw(result.message.mailbox_id, [result.message.uid]) == [(result.message.uid, raw)]
    finally:
        await store.close()


async def test_opening_an_older_database_drops_its_blob_index(tmp_path: Path) -> None:
    store, bob = await sqlite_store_with_bob(tmp_path)
    await store.deliver(await store.put_blob(RAW % (1, 1)), [bob])
    await store.db.write(lambda c: c.execute("CREATE INDEX IF NOT EXISTS messages_blob ON messages (blob_id)"))
    conn = store.db._write_conn
    assert conn is not None and _blob_indexes(conn) == ["messages_blob"]
    await store.close()
    from mailhaven.store.sqlite import SQLiteStore

    store = SQLiteStore(tmp_path)
    await store.open()
    try:
        conn = store.db._write_conn
        assert conn is not None and _blob_indexes(conn) == []
        inbox = await store.get_mailbox(bob, "INBOX")
        assert [m.uid for m in await store.list_messages(inbox.id)] == [1]
        ok = await store.db.read(lambda c: c.execute("PRAGMA integrity_check").fetchone()[0])
        assert ok == "ok"
    finally:
        await store.close()
