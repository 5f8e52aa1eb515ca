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



KEPT = {"sqlite_autoindex_messages_1", "messages_mailbox_modseq", "messages_message_id"}
"""The indexes of ``messages``: (mailbox, uid), (mailbox, modseq), (account, Message-ID)."""


def _indexes(conn: sqlite3.Connection) -> set[str]:
    return {r[1] for r in conn.execute("PRAGMA index_list(messages)")}


def _plan(conn: sqlite3.Connection, sql: str, params: tuple[object, ...]) -> str:
    return " ".join(str(r[-1]) for r in conn.execute("EXPLAIN QUERY PLAN " + sql, params))


async def test_a_delivery_writes_only_the_indexes_reads_need(tmp_path: Path) -> None:
    """Each index of ``messages`` is one more B-tree page a delivery writes to the WAL (issue
    18): none keyed by the blob's sha256 (a random leaf each time; no hot read used it) and
    none by (account, modseq) (an account's changes are its mailboxes' changes). The reads
    they served still find their rows through an index."""
    store, bob = await sqlite_store_with_bob(tmp_path)
    try:
        conn = store.db._write_conn
        assert conn is not None
        assert _indexes(conn) == KEPT
        raw = RAW % (1, 1)
        [result] = await store.deliver(await store.put_blob(raw), [bob])
        msg = result.message
        assert msg is not None
        await store.create_mailbox(bob, "Lists")
        [listed] = await store.deliver(await store.put_blob(RAW % (2, 2)), [bob], mailbox="Lists")
        assert listed.message is not None
        assert await store.account_has_blob(bob, msg.blob_id)
        assert not await store.account_has_blob(bob, "0" * 64)
        changed, gone, current = await store.account_changes_since(bob, msg.modseq)
        assert [m.id for m in changed] == [listed.message.id] and gone == [] and current == listed.message.modseq
        changed, _, _ = await store.account_changes_since(bob, 0)
        assert [m.id for m in changed] == [msg.id, listed.message.id]
        for sql, params in (
                ("SELECT 1 FROM messages WHERE blob_id=? AND account_id=? LIMIT 1", (msg.blob_id, bob)),
                ("SELECT id FROM messages WHERE mailbox_id IN (SELECT id FROM mailboxes WHERE account_id=?) "
                 "AND modseq>? ORDER BY id", (bob, 0)),
                ("SELECT id FROM messages WHERE account_id=?", (bob,))):
            plan = _plan(conn, sql, params)
            assert "USING" in plan and "SCAN messages" not in plan, plan
        assert await store.collect_garbage(grace=0) == 0          # the delivered blobs are still named
        assert await store.get_raw(msg.mailbox_id, [msg.uid]) == [(msg.uid, raw)]
    finally:
        await store.close()


async def test_opening_an_older_database_drops_the_indexes_no_read_needs(tmp_path: Path) -> None:
    store, bob = await sqlite_store_with_bob(tmp_path)
    await store.deliver(await store.put_blob(RAW % (1, 1)), [bob])

    def older(c: sqlite3.Connection) -> None:
        c.execute("CREATE INDEX IF NOT EXISTS messages_blob ON messages (blob_id)")
        c.execute("CREATE INDEX IF NOT EXISTS messages_account_modseq ON messages (account_id, modseq)")

    await store.db.write(older)
    conn = store.db._write_conn
    assert conn is not None and _indexes(conn) == KEPT | {"messages_blob", "messages_account_modseq"}
    await store.close()
    from mailhaven.store.sqlite import SQLiteStore

    store = SQLiteStore(tmp_path)
    await store.open()
    try:
        conn = store.db._write_conn
        assert conn is not None and _indexes(conn) == KEPT
        inbox = await store.get_mailbox(bob, "INBOX")
        assert [m.uid for m in await store.list_messages(inbox.id)] == [1]
        ok = await store.db.read(lambda c: c.execute("PRAGMA integrity_check").fetchone()[0])
        assert ok == "ok"
    finally:
        await store.close()
