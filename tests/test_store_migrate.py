"""Moving a SQLite installation to PostgreSQL keeps every identity clients rely on."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from conftest import run_cli
from mailhaven.queue.api import OutboundMessage, OutboundRecipient
from mailhaven.store.api import BlobRef, FlagMode
from mailhaven.store.postgres import PostgresStore
from mailhaven.store.sqlite import SQLiteStore

RAW = (b"From: Alice <alice@lancs.example>\r\nTo: Bob <bob@nyu.example>\r\nSubject: Lunch on Friday\r\n"
       b"Message-ID: <m1@lancs.example>\r\n\r\nShall we meet at the Crown?\r\n")
REPLY = (b"From: Bob <bob@nyu.example>\r\nTo: alice@lancs.example\r\nSubject: Re: Lunch on Friday\r\n"
         b"Message-ID: <m2@nyu.example>\r\nIn-Reply-To: <m1@lancs.example>\r\n\r\nYes, at noon.\r\n")


@pytest.fixture
def pg(pg_schema: tuple[str, str]) -> tuple[str, str]:
    return pg_schema


async def _populate(data, *, indexed: bool = False) -> None:
    """A store with domains, accounts, aliases, messages, a queue entry and tokens;
    ``indexed``: every message's text in the search index by the end (else the background
    indexer has taken some, all or none of it)."""
    s = SQLiteStore(data)
    await s.open()
    try:
        await s.add_domain("nyu.example")
        bob = await s.add_account("bob@nyu.example", "s3cret", quota=10_000_000)
        carol = await s.add_account("carol@nyu.example", "pw")
        await s.add_alias("team@nyu.example", ["bob@nyu.example", "carol@nyu.example"])
        await s.add_alias("@nyu.example", ["carol@nyu.example"])
        work = await s.create_mailbox(bob.id, "Work/2026")
        await s.set_subscribed(bob.id, "Work/2026", True)
        inbox = await s.get_mailbox(bob.id, "INBOX")
        for raw in (RAW, REPLY, RAW + b"3", RAW + b"4"):
            await s.deliver(await s.put_blob(raw), [bob.id, carol.id])
        await s.set_flags(inbox.id, [1, 2], ["\\Seen", "$Important"], FlagMode.ADD)
        await s.expunge(inbox.id, [3])
        await s.move(inbox.id, [4], work.id)
        await s.copy(inbox.id, [1], work.id)
        # What the store keeps for the queue and the web layer goes along too.
        big = await s.put_blob(RAW * 5000)                  # a file under blobs/, named only by the queue
        await s.queue_enqueue(OutboundMessage(blob=big, mail_from="bob@nyu.example", smtputf8=True,
                                              recipients=(OutboundRecipient(address="x@remote.example"),)),
                              now=1000.0)
        await s.queue_defer(1, next_attempt=2000.0, reply="451 later", warned=True)
        await s.add_token(bob.id, "ab" * 32, "phone", created=5.0)
        await s.save_identity_settings(bob.id, "team@nyu.example", {"name": "The team"})
        if indexed:
            await s.flush_index()
    finally:
        await s.close()


async def _snapshot(s) -> dict:
    out: dict = {"aliases": await s.list_aliases(), "domains": await s.list_domains(), "accounts": {}}
    for acct in await s.list_accounts():
        boxes = await s.list_mailboxes(acct.id, counts=True)
        messages = {b.name: [(m.id, m.uid, m.blob_id, m.size, m.internal_date, m.flags, m.modseq,
                              m.thread_id, m.summary) for m in await s.list_messages(b.id, with_summary=True)]
                    for b in boxes}
        changed, destroyed, state = await s.account_changes_since(acct.id, 0)
        out["accounts"][acct.address] = (acct, boxes, messages, await s.list_subscriptions(acct.id),
                                         sorted(m.id for m in changed), destroyed, state,
                                         {b.name: (await s.changes_since(b.id, 0)).expunged for b in boxes})
    return out


async def test_migration_keeps_uids_ids_modseqs_and_passwords(tmp_path, pg):
    dsn, schema = pg
    data = tmp_path / "data"
    await _populate(data)
    lite = SQLiteStore(data)
    await lite.open()
    before = await _snapshot(lite)
    bob_lite = await lite.get_account("bob@nyu.example")
    heads = await lite.get_headers((await lite.get_mailbox(bob_lite.id, "INBOX")).id, range(1, 100))
    assert heads                                            # the header blocks stored at delivery
    await lite.close()

    result = await asyncio.to_thread(run_cli, data, "store", "migrate-to-postgres", "--dsn", dsn,
                                     "--schema", schema)
    assert "copied 8 message(s) of 2 account(s)" in result.stdout

    s = PostgresStore(dsn, tmp_path / "pg", schema=schema)
    await s.open()
    try:
        assert await _snapshot(s) == before
        assert await s.integrity_check() == []
        assert await s.authenticate("bob@nyu.example", "s3cret") is not None
        assert await s.get_scram("bob@nyu.example") is not None
        assert set((await s.resolve("anyone@nyu.example")).account_ids) == {
            (await s.get_account("carol@nyu.example")).id}
        bob = await s.get_account("bob@nyu.example")
        inbox = await s.get_mailbox(bob.id, "INBOX")
        assert await s.search_text(inbox.id, "body", "noon") == {2}
        assert await s.get_headers(inbox.id, range(1, 100)) == heads
        # New mail continues after the copied UIDs, ids and UIDVALIDITYs.
        [res] = await s.deliver(await s.put_blob(REPLY + b"new"), [bob.id])
        assert res.message is not None and res.message.uid == inbox.uidnext
        assert res.message.id > max(m[0] for b in before["accounts"].values() for ms in b[2].values() for m in ms)
        assert res.message.thread_id == (await s.get_messages(inbox.id, [1]))[0].thread_id
        (queued,) = await s.queue_list()
        assert (queued.id, queued.rcpt, queued.attempts, queued.warned, queued.smtputf8, queued.last_reply) == (
            1, "x@remote.example", 1, True, True, "451 later")
        assert await s.read_blob(queued.blob_id) == RAW * 5000
        assert await s.queue_enqueue(OutboundMessage(blob=BlobRef(id=queued.blob_id, size=queued.size),
                                                     mail_from="bob@nyu.example",
                                                     recipients=(OutboundRecipient(address="y@remote.example"),))
                                     ) == [2]
        assert await s.token_account("ab" * 32) == bob.id
        assert await s.identity_settings(bob.id) == {"team@nyu.example": {"name": "The team"}}
        fresh = await s.create_mailbox(bob.id, "Later")
        assert fresh.uidvalidity > max(b.uidvalidity for b in before["accounts"]["bob@nyu.example"][1])
    finally:
        await s.close()

    again = await asyncio.to_thread(run_cli, data, "store", "migrate-to-postgres", "--dsn", dsn,
                                    "--schema", schema, check=False)
    assert again.returncode == 1 and "is not empty" in again.stderr


async def test_store_check_command_on_both_backends(tmp_path, pg):
    dsn, schema = pg
    data = tmp_path / "data"
    await _populate(data)
    ok = await asyncio.to_thread(run_cli, data, "store", "check")
    assert ok.stdout.strip() == "store ok"
    reindexed = (await asyncio.to_thread(run_cli, data, "store", "reindex")).stdout.split()
    assert reindexed[0] == "reindexed" and int(reindexed[1]) > 0
    assert (await asyncio.to_thread(run_cli, data, "store", "check")).stdout.strip() == "store ok"
    await asyncio.to_thread(run_cli, data, "store", "migrate-to-postgres", "--dsn", dsn, "--schema", schema)
    pgdata = tmp_path / "pgdata"
    pgdata.mkdir()
    (pgdata / "mailhaven.toml").write_text(
        f'[store]\nbackend = "postgres"\ndsn = "{dsn}"\nschema = "{schema}"\n')
    assert (await asyncio.to_thread(run_cli, pgdata, "store", "check")).stdout.strip() == "store ok"
    assert (await asyncio.to_thread(run_cli, pgdata, "store", "reindex")).stdout.split()[:2] == reindexed[:2]
    conn = await asyncpg.connect(dsn, server_settings={"search_path": schema})
    try:
        await conn.execute("UPDATE accounts SET used = used + 1 WHERE address = 'bob@nyu.example'")
    finally:
        await conn.close()
    bad = await asyncio.to_thread(run_cli, pgdata, "store", "check", check=False)
    assert bad.returncode == 1 and "account bob@nyu.example quota usage differs" in bad.stdout
    gc = await asyncio.to_thread(run_cli, pgdata, "store", "gc", "--grace", "0s")
    assert gc.stdout.strip() == "removed 0 unreferenced blob(s)"


async def test_a_search_index_that_is_not_mailhaven_dbs_is_not_copied(tmp_path, pg):
    # search.db copied from another installation: its text, keyed by message id, would be
    # copied as this one's. Opening the store empties it and lists a refill; a migration
    # while a refill is listed would leave the messages not refilled yet without search text.
    import shutil

    dsn, schema = pg
    data, other = tmp_path / "data", tmp_path / "other"
    # Indexed: with every message's text still pending, nothing is left to refill, and the
    # open empties the index without listing a refill (the migration then goes ahead).
    await _populate(data, indexed=True)
    s = SQLiteStore(other)
    await s.open()
    try:
        await s.add_domain("nyu.example")
        bob = await s.add_account("bob@nyu.example", "pw")
        for word in (b"walrus", b"pelican", b"octopus", b"heron"):
            await s.deliver(await s.put_blob(REPLY.replace(b"noon", word)), [bob.id])
        await s.flush_index()
    finally:
        await s.close()
    for name in ("search.db", "search.db-wal", "search.db-shm"):
        (data / name).unlink(missing_ok=True)
    shutil.copy2(other / "search.db", data / "search.db")

    refused = await asyncio.to_thread(run_cli, data, "store", "migrate-to-postgres", "--dsn", dsn,
                                      "--schema", schema, check=False)
    assert refused.returncode == 1 and "being refilled" in refused.stderr
    await asyncio.to_thread(run_cli, data, "store", "reindex")       # or `serve` until the refill ends
    await asyncio.to_thread(run_cli, data, "store", "migrate-to-postgres", "--dsn", dsn, "--schema", schema)
    s = PostgresStore(dsn, tmp_path / "pg", schema=schema)
    await s.open()
    try:
        bob = await s.get_account("bob@nyu.example")
        inbox = await s.get_mailbox(bob.id, "INBOX")
        assert await s.search_text(inbox.id, "body", "noon") == {2}
        assert await s.search_text(inbox.id, "body", "pelican") == set()
        assert await s.search_text(inbox.id, "body", "Crown") == {1}
    finally:
        await s.close()
