"""PostgreSQL-only behaviour: several store instances (nodes) sharing one database.

The backend-neutral contract is tests/test_store_contract.py; these tests cover what only
a shared database has: the change feed crossing nodes by LISTEN/NOTIFY, UIDs and MODSEQs
handed out by two nodes at once, the listener reconnecting, schema isolation, blobs in
the database, and the corpus stored identically to the SQLite backend.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets

import asyncpg
import pytest

from mailhaven.store.api import FlagMode
from mailhaven.store.postgres import PostgresStore
from mailhaven.store.sqlite import SQLiteStore

RAW = (b"From: Alice <alice@lancs.example>\r\nTo: Bob <bob@nyu.example>\r\n"
       b"Subject: Lunch on Friday\r\nMessage-ID: <m1@lancs.example>\r\n\r\nShall we meet at the Crown?\r\n")


@pytest.fixture
def dsn() -> str:
    value = os.environ.get("MAILHAVEN_TEST_PG_DSN")
    if not value:
        reason = "MAILHAVEN_TEST_PG_DSN is not set (scripts/test starts scripts/pg-test-cluster)"
        if os.environ.get("CI") == "true":
            pytest.fail(reason + ": the PostgreSQL backend must be tested under CI=true")
        pytest.skip(reason)
    return value


@pytest.fixture
async def nodes(dsn, tmp_path):
    """Two stores on one schema, as two Mailhaven processes on two machines would be."""
    schema = f"mh_test_{secrets.token_hex(6)}"
    a = PostgresStore(dsn, tmp_path / "a", schema=schema, fresh_schema=True)
    await a.open()
    b = PostgresStore(dsn, tmp_path / "b", schema=schema)
    await b.open()
    await a.add_domain("nyu.example")
    try:
        yield a, b
    finally:
        await b.close()
        await a.close()
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            await conn.close()


async def test_change_feed_crosses_nodes_once(nodes):
    a, b = nodes
    bob = await a.add_account("bob@nyu.example", "pw")
    inbox = await a.get_mailbox(bob.id, "INBOX")
    on_b = b.subscribe(bob.id)
    on_a = a.subscribe(bob.id)
    try:
        await a.deliver(await a.put_blob(RAW), [bob.id])
        # Committed on node A, announced by NOTIFY, heard by node B's listener.
        change = await asyncio.wait_for(on_b.get(), 1.0)
        assert (change.kind, change.mailbox_id, change.account_id) == ("exists", inbox.id, bob.id)
        assert [m.uid for m in await b.list_messages(inbox.id)] == [1]
        # And the other way round.
        await b.set_flags(inbox.id, [1], ["\\Seen"], FlagMode.ADD)
        assert (await asyncio.wait_for(on_a.get(), 1.0)).kind == "exists"  # A's own, published locally
        flags = await asyncio.wait_for(on_a.get(), 1.0)
        assert flags.kind == "flags" and flags.modseq == (await a.get_account_by_id(bob.id)).modseq
        assert (await asyncio.wait_for(on_b.get(), 1.0)).kind == "flags"
        # Each node hears each change exactly once: its own NOTIFY is not published twice.
        await asyncio.sleep(0.3)
        assert not on_a.pending() and not on_b.pending()
    finally:
        on_a.close()
        on_b.close()


async def test_rolled_back_change_is_never_announced(nodes):
    a, b = nodes
    bob = await a.add_account("bob@nyu.example", "pw", quota=10)
    inbox = await a.get_mailbox(bob.id, "INBOX")
    on_b = b.subscribe(None)
    try:
        with pytest.raises(Exception, match="quota"):
            await a.append(inbox.id, await a.put_blob(RAW))
        await asyncio.sleep(0.3)
        assert not on_b.pending()
    finally:
        on_b.close()


async def test_listener_reconnects_and_asks_for_resync(nodes):
    a, b = nodes
    bob = await a.add_account("bob@nyu.example", "pw")
    inbox = await a.get_mailbox(bob.id, "INBOX")
    on_b = b.subscribe(bob.id)
    try:
        assert b._listener is not None
        b._listener.kill_connection()
        # Whatever was committed while B was deaf must be re-read: B says so.
        assert (await asyncio.wait_for(on_b.get(), 5.0)).kind == "resync"
        await a.deliver(await a.put_blob(RAW), [bob.id])
        change = await asyncio.wait_for(on_b.get(), 2.0)
        assert change.kind == "exists" and change.mailbox_id == inbox.id
    finally:
        on_b.close()


async def test_two_nodes_share_uid_and_modseq_counters(nodes):
    a, b = nodes
    bob = await a.add_account("bob@nyu.example", "pw")
    carol = await b.add_account("carol@nyu.example", "pw")
    blobs = [await (a if i % 2 else b).put_blob(RAW + str(i).encode()) for i in range(120)]
    # Deliveries to two accounts at once from both nodes, in both recipient orders:
    # the account locks are taken in id order, so they never deadlock.
    await asyncio.gather(*(
        (a if i % 2 else b).deliver(blob, [bob.id, carol.id] if i % 3 else [carol.id, bob.id])
        for i, blob in enumerate(blobs)))
    for acct in (bob, carol):
        inbox = await b.get_mailbox(acct.id, "INBOX")
        msgs = await a.list_messages(inbox.id)
        assert [m.uid for m in msgs] == list(range(1, 121))
        assert len({m.modseq for m in msgs}) == 120
        assert inbox.uidnext == 121 and inbox.messages == 120
        assert (await a.get_account_by_id(acct.id)).used == sum(b.size for b in blobs)
    assert await a.integrity_check() == []


async def test_integrity_check_reports_damage(nodes):
    a, _ = nodes
    bob = await a.add_account("bob@nyu.example", "pw")
    inbox = await a.get_mailbox(bob.id, "INBOX")
    await a.append(inbox.id, await a.put_blob(RAW))
    assert await a.integrity_check() == []
    async with a.pool.acquire() as conn:
        await conn.execute("UPDATE mailboxes SET uidnext = 1 WHERE id = $1", inbox.id)
        await conn.execute("UPDATE blobs SET size = size + 1")
        await conn.execute("UPDATE accounts SET used = 5")
    problems = await a.integrity_check()
    assert f"mailbox {inbox.id} uidnext not above its highest uid" in problems
    assert any("wrong size" in p for p in problems)
    assert "account bob@nyu.example quota usage differs from its messages" in problems


async def test_large_message_spools_to_disk_and_abort_stores_nothing(nodes):
    a, b = nodes
    before = set(await a.blob_ids())
    aborted = a.blob_writer()
    aborted.write(b"x" * 1000)
    aborted.abort()
    assert set(await a.blob_ids()) == before
    big = RAW + b"".join(b"line %07d of a long message\r\n" % i for i in range(100_000))
    writer = a.blob_writer()
    for i in range(0, len(big), 65536):
        writer.write(big[i:i + 65536])
    ref = await writer.finish()
    assert ref.size == len(big) and await b.read_blob(ref.id) == big  # the other node reads it
    assert a.blob_path(ref.id) is None
    assert not list((a.data_dir / "tmp").iterdir())  # the spool file is gone
    with pytest.raises(FileNotFoundError):
        await b.read_blob("0" * 64)


async def test_garbage_collection_grace_and_other_references(nodes):
    a, b = nodes
    orphan = await a.put_blob(b"nobody's bytes")
    assert await a.collect_garbage(grace=3600) == 0  # too young: a row may be about to name it
    # A table of another module naming blobs by foreign key (as the queue does).
    schema = "CREATE TABLE IF NOT EXISTS held (blob_id text NOT NULL REFERENCES blobs(id))"
    await asyncio.gather(a.ensure_schema(schema), b.ensure_schema(schema))
    held = await a.put_blob(b"queued bytes")

    async def hold(tx):
        await tx.conn.execute("INSERT INTO held VALUES ($1)", held.id)
        tx.publish(1, None, "queue", 1)

    everyone = a.subscribe(None)
    await b.write(hold)
    assert (await asyncio.wait_for(everyone.get(), 1.0)).kind == "queue"  # other node's runners wake
    everyone.close()
    assert await a.collect_garbage(grace=0) == 1
    assert set(await a.blob_ids()) == {held.id}
    assert orphan.id not in set(await a.blob_ids())


async def test_schemas_are_isolated_and_created_concurrently(dsn, tmp_path):
    schema = f"mh_test_{secrets.token_hex(6)}"
    # Four nodes starting at once on an empty schema: the advisory lock serialises DDL.
    stores = [PostgresStore(dsn, tmp_path / str(i), schema=schema) for i in range(4)]
    other = PostgresStore(dsn, tmp_path / "other", fresh_schema=True)
    try:
        await asyncio.gather(*(s.open() for s in stores), other.open())
        await stores[0].add_domain("nyu.example")
        assert [d.name for d in await stores[3].list_domains()] == ["nyu.example"]
        assert await other.list_domains() == []
    finally:
        for s in (*stores, other):
            await s.close()
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
            gone = await conn.fetchval("SELECT count(*) FROM pg_namespace WHERE nspname = $1", other.schema)
        finally:
            await conn.close()
        assert gone == 0  # a throwaway schema is dropped by close()


async def test_corpus_stored_as_sqlite_stores_it(dsn, tmp_path, corpus_files):
    from conftest import corpus_messages

    messages = corpus_messages()
    pg = PostgresStore(dsn, tmp_path / "pg", fresh_schema=True)
    lite = SQLiteStore(tmp_path / "lite")
    await pg.open()
    await lite.open()
    try:
        inboxes = []
        for s in (pg, lite):
            await s.add_domain("nyu.example")
            bob = await s.add_account("bob@nyu.example", "pw")
            for _, raw in messages:
                await s.deliver(await s.put_blob(raw), [bob.id])
            inboxes.append((await s.get_mailbox(bob.id, "INBOX")).id)
        pg_msgs = await pg.list_messages(inboxes[0], with_summary=True)
        lite_msgs = await lite.list_messages(inboxes[1], with_summary=True)
        assert len(pg_msgs) == len(lite_msgs) == len(messages)
        for p, q in zip(pg_msgs, lite_msgs, strict=True):
            assert (p.uid, p.blob_id, p.size) == (q.uid, q.blob_id, q.size)
            assert json.dumps(p.summary, sort_keys=True) == json.dumps(q.summary, sort_keys=True)
            assert await pg.read_blob(p.blob_id) == await lite.read_blob(q.blob_id)
        # Thread grouping agrees: the same messages share a thread on both backends.
        def groups(msgs):
            by_thread: dict[int, list[int]] = {}
            for m in msgs:
                by_thread.setdefault(m.thread_id, []).append(m.uid)
            return sorted(by_thread.values())

        assert groups(pg_msgs) == groups(lite_msgs)
        for field, needle in [("subject", "re:"), ("from", "example"), ("body", "the"),
                              ("text", "http"), ("header", "received"), ("body", "zq")]:
            found = await pg.search_text(inboxes[0], field, needle)
            assert found == await lite.search_text(inboxes[1], field, needle), (field, needle)
        assert await pg.integrity_check() == []
    finally:
        await pg.close()
        await lite.close()


async def test_read_many_blobs_in_one_query(nodes):
    a, b = nodes
    refs = [await a.put_blob(RAW + bytes([65 + i])) for i in range(5)]
    wanted = [refs[3].id, refs[0].id, refs[3].id, refs[4].id]
    assert await b.read_blobs(wanted) == [RAW + b"D", RAW + b"A", RAW + b"D", RAW + b"E"]
    with pytest.raises(FileNotFoundError):
        await b.read_blobs([refs[1].id, "f" * 64])


async def test_unreachable_database_is_one_clear_error(tmp_path):
    from conftest import free_port, run_cli
    from mailhaven.store.api import StoreError

    dsn = f"postgresql://mh:hunter2@127.0.0.1:{free_port()}/mail"
    with pytest.raises(StoreError) as info:
        await PostgresStore(dsn, tmp_path / "x").open()
    assert "cannot open the PostgreSQL store" in str(info.value) and "hunter2" not in str(info.value)
    data = tmp_path / "data"
    data.mkdir()
    (data / "mailhaven.toml").write_text(f'[store]\nbackend = "postgres"\ndsn = "{dsn}"\n')
    result = await asyncio.to_thread(run_cli, data, "domain", "list", check=False)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    # The last line (a warning that the new directory's modes were tightened may come first).
    assert result.stderr.strip().splitlines()[-1].startswith("mailhaven: cannot open the PostgreSQL store at postgresql://mh:***@")


async def test_a_schema_from_before_the_header_blocks_gets_the_column(nodes, tmp_path):
    """A schema whose messages table has no ``header`` column (an older version's) gets it
    when a node opens; its rows have no block (FETCH reads the message), new mail has one."""
    a, b = nodes
    bob = await a.add_account("bob@nyu.example", "pw")
    await a.deliver(await a.put_blob(RAW), [bob.id])
    await a.pool.execute("ALTER TABLE messages DROP COLUMN header")
    c = PostgresStore(a.dsn, tmp_path / "c", schema=a.schema)
    await c.open()
    try:
        inbox = await c.get_mailbox(bob.id, "INBOX")
        assert await c.get_headers(inbox.id, [1]) == []
        assert await c.get_raw(inbox.id, [1]) == [(1, RAW)]
        monday = RAW.replace(b"Friday", b"Monday")
        await c.deliver(await c.put_blob(monday), [bob.id])
        assert await c.get_headers(inbox.id, [1, 2]) == [(2, monday[:monday.index(b"\r\n\r\n") + 4])]
    finally:
        await c.close()
