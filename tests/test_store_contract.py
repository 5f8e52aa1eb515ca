"""The contract every store backend must pass (run against each backend by the fixture)."""

from __future__ import annotations

import asyncio
import os

import pytest

from mailhaven.store.api import (
    AlreadyExists,
    FlagMode,
    InvalidName,
    NotFound,
    QuotaExceeded,
    SieveConflict,
)

BACKENDS = ["sqlite", "postgres"]

RAW = (b"From: Alice <alice@lancs.example>\r\nTo: Bob <bob@nyu.example>\r\n"
       b"Subject: Lunch on Friday\r\nMessage-ID: <m1@lancs.example>\r\n"
       b"Date: Mon, 23 Nov 2026 10:00:00 +0000\r\n\r\nShall we meet at the Crown?\r\n")
REPLY = (b"From: Bob <bob@nyu.example>\r\nTo: alice@lancs.example\r\nSubject: Re: Lunch on Friday\r\n"
         b"Message-ID: <m2@nyu.example>\r\nIn-Reply-To: <m1@lancs.example>\r\n"
         b"References: <m1@lancs.example>\r\n\r\nYes, at noon.\r\n")


@pytest.fixture(params=BACKENDS)
async def backend(request, tmp_path):
    if request.param == "sqlite":
        from mailhaven.store.sqlite import SQLiteStore

        s = SQLiteStore(tmp_path / "store")
    else:
        if not os.environ.get("MAILHAVEN_TEST_PG_DSN"):
            reason = "MAILHAVEN_TEST_PG_DSN is not set (scripts/test starts scripts/pg-test-cluster)"
            if os.environ.get("CI") == "true":
                pytest.fail(reason + ": the PostgreSQL backend must be tested under CI=true")
            pytest.skip(reason)
        from mailhaven.store.postgres import PostgresStore

        s = PostgresStore(os.environ["MAILHAVEN_TEST_PG_DSN"], tmp_path / "store", fresh_schema=True)
    await s.open()
    await s.add_domain("nyu.example")
    try:
        yield s
    finally:
        await s.close()


async def stored_blob_ids(s) -> set[str]:
    """Every blob the backend holds: files for SQLite, rows for PostgreSQL."""
    if hasattr(s, "blob_ids"):
        return set(await s.blob_ids())
    return set(s.blobs.all_ids())


async def _bob(s, quota=None):
    return await s.add_account("bob@nyu.example", "s3cret", quota=quota)


async def test_accounts_and_auth(backend):
    s = backend
    bob = await _bob(s)
    assert bob.address == "bob@nyu.example" and bob.used == 0
    assert (await s.authenticate("BOB@nyu.example", "s3cret")).id == bob.id
    assert await s.authenticate("bob@nyu.example", "wrong") is None
    assert await s.authenticate("nobody@nyu.example", "s3cret") is None
    with pytest.raises(AlreadyExists):
        await _bob(s)
    with pytest.raises(NotFound):
        await s.add_account("x@elsewhere.example", "pw")
    await s.set_password("bob@nyu.example", "new")
    assert await s.authenticate("bob@nyu.example", "new") is not None
    scram = await s.get_scram("bob@nyu.example")
    assert scram is not None and scram.iterations >= 4096 and len(scram.stored_key) == 32
    names = {m.name: m.special_use for m in await s.list_mailboxes(bob.id)}
    assert names == {"INBOX": None, "Sent": "\\Sent", "Drafts": "\\Drafts", "Trash": "\\Trash",
                     "Junk": "\\Junk", "Archive": "\\Archive"}


async def test_resolution_aliases_catchall(backend):
    s = backend
    bob = await _bob(s)
    carol = await s.add_account("carol@nyu.example", "pw")
    assert (await s.resolve("Bob@NYU.Example")).account_ids == (bob.id,)
    assert await s.resolve("bob@lancs.example") == type(await s.resolve("x@y.z"))(local_domain=False)
    unknown = await s.resolve("nobody@nyu.example")
    assert unknown.local_domain and unknown.account_ids == ()
    await s.add_alias("team@nyu.example", ["bob@nyu.example", "carol@nyu.example"])
    assert set((await s.resolve("team@nyu.example")).account_ids) == {bob.id, carol.id}
    await s.add_alias("postmaster@nyu.example", ["bob@nyu.example"])
    assert "postmaster@nyu.example" in await s.addresses_of(bob.id)
    assert "team@nyu.example" not in await s.addresses_of(bob.id)
    await s.add_alias("@nyu.example", ["carol@nyu.example"])
    assert (await s.resolve("anything@nyu.example")).account_ids == (carol.id,)
    assert (await s.resolve("bob@nyu.example")).account_ids == (bob.id,)
    await s.remove_alias("@nyu.example")
    assert (await s.resolve("anything@nyu.example")).account_ids == ()


async def test_alias_with_external_targets_forwards(backend):
    s = backend
    bob = await _bob(s)
    await s.add_alias("fwd@nyu.example", ["Carol@Remote.example", "bob@nyu.example"])
    got = await s.resolve("fwd@nyu.example")
    assert got.account_ids == (bob.id,) and got.forward == ("carol@remote.example",)
    await s.add_alias("out@nyu.example", ["dave@remote.example", "fwd@nyu.example"])   # nested
    got = await s.resolve("out@nyu.example")
    assert got.account_ids == (bob.id,) and set(got.forward) == {"dave@remote.example", "carol@remote.example"}
    assert (await s.resolve("bob@nyu.example")).forward == ()
    assert await s.count_alias_forward("fwd@nyu.example", now=1000.0, window=3600.0, limit=2)
    assert await s.count_alias_forward("FWD@nyu.example", now=1001.0, window=3600.0, limit=2)
    assert not await s.count_alias_forward("fwd@nyu.example", now=1002.0, window=3600.0, limit=2)
    assert await s.count_alias_forward("out@nyu.example", now=1002.0, window=3600.0, limit=2)   # per alias
    assert await s.count_alias_forward("fwd@nyu.example", now=4600.5, window=3600.0, limit=2)   # aged out


async def test_deliver_one_blob_many_accounts(backend):
    s = backend
    bob = await _bob(s)
    carol = await s.add_account("carol@nyu.example", "pw")
    blob = await s.put_blob(RAW)
    results = await s.deliver(blob, [bob.id, carol.id])
    assert [r.over_quota for r in results] == [False, False]
    for acct in (bob, carol):
        inbox = await s.get_mailbox(acct.id, "INBOX")
        msgs = await s.list_messages(inbox.id, with_summary=True)
        assert [m.uid for m in msgs] == [1]
        assert msgs[0].blob_id == blob.id and msgs[0].size == len(RAW)
        assert msgs[0].summary["subject"] == "Lunch on Friday"
        assert await s.read_blob(msgs[0].blob_id) == RAW
        assert (await s.get_account_by_id(acct.id)).used == len(RAW)
    assert await stored_blob_ids(s) == {blob.id}


async def test_quota(backend):
    s = backend
    bob = await _bob(s, quota=len(RAW) + 10)
    blob = await s.put_blob(RAW)
    assert not (await s.deliver(blob, [bob.id]))[0].over_quota
    assert (await s.deliver(blob, [bob.id]))[0].over_quota
    inbox = await s.get_mailbox(bob.id, "INBOX")
    with pytest.raises(QuotaExceeded):
        await s.append(inbox.id, blob)
    forced = (await s.deliver(blob, [bob.id], ignore_quota=True))[0]
    assert not forced.over_quota and forced.message is not None       # an accepted message
    assert (await s.get_account_by_id(bob.id)).used == 2 * len(RAW)
    await s.expunge(inbox.id, [forced.message.uid])
    await s.set_quota("bob@nyu.example", None)
    assert not (await s.deliver(blob, [bob.id]))[0].over_quota
    await s.expunge(inbox.id, [1, 3])
    assert (await s.get_account_by_id(bob.id)).used == 0


async def test_uids_modseq_flags_expunge(backend):
    s = backend
    bob = await _bob(s)
    inbox = await s.get_mailbox(bob.id, "INBOX")
    blob = await s.put_blob(RAW)
    for _ in range(3):
        await s.append(inbox.id, blob, flags=["\\Draft"])
    box = await s.get_mailbox_by_id(inbox.id)
    assert box.uidnext == 4 and box.messages == 3 and box.unseen == 3
    start = box.highestmodseq
    changed, failed = await s.set_flags(inbox.id, [1, 2], ["\\Seen", "$Important"], FlagMode.ADD)
    assert [m.uid for m in changed] == [1, 2] and failed == []
    assert all(m.modseq > start for m in changed)
    # No-op change: no new modseq.
    again, _ = await s.set_flags(inbox.id, [1], ["\\Seen"], FlagMode.ADD)
    assert again == []
    # UNCHANGEDSINCE older than the message's modseq fails it (RFC 7162).
    changed, failed = await s.set_flags(inbox.id, [1, 3], ["\\Flagged"], FlagMode.ADD, unchanged_since=start)
    assert [m.uid for m in changed] == [3] and failed == [1]
    changed, _ = await s.set_flags(inbox.id, [3], ["\\Answered"], FlagMode.REPLACE)
    assert changed[0].flags == frozenset({"\\Answered"})
    mid = (await s.get_mailbox_by_id(inbox.id)).highestmodseq
    assert await s.expunge(inbox.id, [2, 99]) == [2]
    ch = await s.changes_since(inbox.id, mid)
    assert ch.expunged == [2] and ch.highestmodseq > mid
    # UIDs are never reused.
    m = await s.append(inbox.id, blob)
    assert m.uid == 4
    assert [x.uid for x in await s.list_messages(inbox.id)] == [1, 3, 4]
    assert (await s.get_mailbox_by_id(inbox.id)).unseen == 2


async def test_copy_move_and_threads(backend):
    s = backend
    bob = await _bob(s)
    inbox = await s.get_mailbox(bob.id, "INBOX")
    archive = await s.get_mailbox(bob.id, "Archive")
    first = await s.append(inbox.id, await s.put_blob(RAW), flags=["\\Seen"])
    reply = await s.append(inbox.id, await s.put_blob(REPLY))
    assert reply.thread_id == first.thread_id
    assert await s.copy(inbox.id, [1], archive.id) == [(1, 1)]
    copied = (await s.get_messages(archive.id, [1]))[0]
    assert copied.flags == frozenset({"\\Seen"}) and copied.internal_date == first.internal_date
    assert await s.move(inbox.id, [2], archive.id) == [(2, 2)]
    assert [m.uid for m in await s.list_messages(inbox.id)] == [1]
    assert (await s.changes_since(inbox.id, 0)).expunged == [2]
    assert await s.search_text(archive.id, "body", "noon") == {2}
    used = (await s.get_account_by_id(bob.id)).used
    assert used == 2 * len(RAW) + len(REPLY)


async def test_search_text(backend):
    s = backend
    bob = await _bob(s)
    inbox = await s.get_mailbox(bob.id, "INBOX")
    await s.append(inbox.id, await s.put_blob(RAW))
    await s.append(inbox.id, await s.put_blob(REPLY))
    assert await s.search_text(inbox.id, "subject", "lunch") == {1, 2}
    assert await s.search_text(inbox.id, "subject", "RE:") == {2}
    assert await s.search_text(inbox.id, "from", "alice") == {1}
    assert await s.search_text(inbox.id, "to", "alice") == {2}
    assert await s.search_text(inbox.id, "body", "crown") == {1}
    assert await s.search_text(inbox.id, "text", "Crown") == {1}
    assert await s.search_text(inbox.id, "body", "at") == {1, 2}  # short needle: substring scan
    assert await s.search_text(inbox.id, "header", "m2@nyu") == {2}
    assert await s.search_text(inbox.id, "body", "absent words") == set()
    with pytest.raises(ValueError):
        await s.search_text(inbox.id, "nonsense", "x")


async def test_mailbox_management(backend):
    s = backend
    bob = await _bob(s)
    work = await s.create_mailbox(bob.id, "Work")
    await s.create_mailbox(bob.id, "Work/2026")
    with pytest.raises(AlreadyExists):
        await s.create_mailbox(bob.id, "Work")
    for bad in ("", "/x", "a//b", "x/", "bad*", "a\x01"):
        with pytest.raises(InvalidName):
            await s.create_mailbox(bob.id, bad)
    await s.create_mailbox(bob.id, "Jobs/2026")            # only a child of the new name exists
    with pytest.raises(AlreadyExists):
        await s.rename_mailbox(work.id, "Jobs")
    assert {m.name for m in await s.list_mailboxes(bob.id)} >= {"Work", "Work/2026", "Jobs/2026"}
    await s.delete_mailbox((await s.get_mailbox(bob.id, "Jobs/2026")).id)
    renamed = await s.rename_mailbox(work.id, "Jobs")
    assert renamed.uidvalidity == work.uidvalidity
    names = [m.name for m in await s.list_mailboxes(bob.id)]
    assert "Jobs" in names and "Jobs/2026" in names and "Work" not in names
    listed = await s.list_mailboxes(bob.id)            # the names alone: the same, in the same order
    assert list((await s.mailbox_names(bob.id)).items()) == [(m.name, m.special_use) for m in listed]
    assert (await s.mailbox_names(bob.id))["Junk"] == "\\Junk" and await s.mailbox_names(0) == {}
    inbox = await s.get_mailbox(bob.id, "inbox")
    with pytest.raises(InvalidName):
        await s.delete_mailbox(inbox.id)
    await s.append(inbox.id, await s.put_blob(RAW))
    old = await s.rename_mailbox(inbox.id, "Old")
    assert [m.uid for m in await s.list_messages(old.id)] == [1]
    assert await s.list_messages(inbox.id) == []
    await s.delete_mailbox(old.id)
    with pytest.raises(NotFound):
        await s.get_mailbox(bob.id, "Old")
    recreated = await s.create_mailbox(bob.id, "Old")
    assert recreated.uidvalidity != old.uidvalidity
    await s.set_subscribed(bob.id, "Gone", True)
    assert "Gone" in await s.list_subscriptions(bob.id)
    assert (await s.get_account_by_id(bob.id)).used == 0


async def test_change_feed_after_commit(backend):
    s = backend
    bob = await _bob(s)
    inbox = await s.get_mailbox(bob.id, "INBOX")
    sub = s.subscribe(bob.id)
    everyone = s.subscribe(None)
    try:
        await s.deliver(await s.put_blob(RAW), [bob.id])
        change = await asyncio.wait_for(sub.get(), 5)
        assert change.kind == "exists" and change.mailbox_id == inbox.id
        # Reading after the event sees the committed message.
        assert len(await s.list_messages(inbox.id)) == 1
        await s.set_flags(inbox.id, [1], ["\\Seen"], FlagMode.ADD)
        assert (await asyncio.wait_for(sub.get(), 5)).kind == "flags"
        await s.expunge(inbox.id, [1])
        assert (await asyncio.wait_for(sub.get(), 5)).kind == "expunge"
        assert (await asyncio.wait_for(everyone.get(), 5)).kind == "exists"
        created, destroyed, state = await s.account_changes_since(bob.id, 0)
        assert destroyed and state == (await s.get_account_by_id(bob.id)).modseq
    finally:
        sub.close()
        everyone.close()


async def test_concurrent_deliveries_group_commit(backend):
    s = backend
    bob = await _bob(s)
    blobs = [await s.put_blob(RAW + str(i).encode()) for i in range(200)]
    await asyncio.gather(*(s.deliver(b, [bob.id]) for b in blobs))
    inbox = await s.get_mailbox(bob.id, "INBOX")
    msgs = await s.list_messages(inbox.id)
    assert [m.uid for m in msgs] == list(range(1, 201))
    assert {m.blob_id for m in msgs} == {b.id for b in blobs}


async def test_search_index_of_deliveries_grouped_with_copy_and_expunge(backend):
    s = backend
    bob = await _bob(s)
    inbox = await s.get_mailbox(bob.id, "INBOX")
    archive = await s.get_mailbox(bob.id, "Archive")
    blobs = [await s.put_blob(RAW.replace(b"Crown", f"Crown-{i:02d}-x".encode())) for i in range(20)]
    await s.deliver(blobs[0], [bob.id])
    # Queued together, so that they share group commits: the copy and the expunge must see
    # the index entries of the deliveries before them, and a failed delivery adds none.
    results = await asyncio.gather(
        *(s.deliver(b, [bob.id]) for b in blobs[1:10]),
        s.copy(inbox.id, [1, 2], archive.id), s.deliver(blobs[10], [9999]),
        *(s.deliver(b, [bob.id]) for b in blobs[10:]), s.expunge(inbox.id, [3]),
        return_exceptions=True)
    assert [type(r) for r in results if isinstance(r, Exception)] == [NotFound]
    copied = results[9]
    assert isinstance(copied, list) and copied
    held = {m.uid: m.blob_id for m in await s.list_messages(inbox.id)}
    assert await s.search_text(inbox.id, "body", "crown") == set(held)
    for i, blob in enumerate(blobs):
        found = await s.search_text(inbox.id, "body", f"Crown-{i:02d}-x")
        assert found == {uid for uid, blob_id in held.items() if blob_id == blob.id}
    assert await s.search_text(archive.id, "body", "crown") == {dst for _, dst in copied}


async def test_failing_job_rolls_back_alone(backend):
    s = backend
    bob = await _bob(s)
    blob = await s.put_blob(RAW)
    results = await asyncio.gather(
        s.deliver(blob, [bob.id]), s.deliver(blob, [9999]), s.deliver(blob, [bob.id]),
        return_exceptions=True,
    )
    assert isinstance(results[1], NotFound)
    inbox = await s.get_mailbox(bob.id, "INBOX")
    assert [m.uid for m in await s.list_messages(inbox.id)] == [1, 2]


async def test_integrity_and_gc(backend):
    s = backend
    bob = await _bob(s)
    inbox = await s.get_mailbox(bob.id, "INBOX")
    keep = await s.put_blob(RAW)
    await s.append(inbox.id, keep)
    orphan = await s.put_blob(b"orphan bytes")
    assert await s.integrity_check() == []
    assert await s.collect_garbage(grace=0) == 1
    assert await stored_blob_ids(s) == {keep.id}
    assert await s.read_blob(keep.id) == RAW
    if s.blob_path(keep.id) is not None:
        assert os.path.exists(s.blob_path(keep.id))
        assert not os.path.exists(s.blob_path(orphan.id))


@pytest.mark.parametrize("size", [0, 1, 4096, 128 * 1024 - 1, 128 * 1024, 128 * 1024 + 1, 3 * 128 * 1024 + 7])
async def test_streamed_blob_round_trip(backend, size):
    """Written in uneven chunks across the inline/file boundary (SQLite keeps blobs up to
    128 KiB in the database): the bytes read back are exactly the bytes written."""
    import hashlib

    s = backend
    data = bytes((i * 7 + i // 251) % 256 for i in range(size))
    w = s.blob_writer()
    pos, step = 0, 1
    while pos < len(data):
        w.write(data[pos:pos + step])
        pos += step
        step = step * 3 + 1
    ref = await w.finish()
    assert (ref.id, ref.size) == (hashlib.sha256(data).hexdigest(), size)
    assert await s.read_blob(ref.id) == data
    other = await s.put_blob(b"another blob")
    assert await s.read_blobs([ref.id, other.id, ref.id]) == [data, b"another blob", data]
    again = await s.put_blob(data)                      # content addressing: the same blob
    assert again == ref
    assert ref.id in await stored_blob_ids(s)
    aborted = s.blob_writer()
    aborted.write(b"never finished" * 10000)
    aborted.abort()
    assert len(await stored_blob_ids(s)) == 2


async def test_inline_orphans_are_collected(backend):
    s = backend
    bob = await _bob(s)
    kept = [await s.put_blob(RAW + b"%d\r\n" % i) for i in range(3)]
    for ref in kept:
        await s.deliver(ref, [bob.id])
    orphans = [await s.put_blob(b"orphan %d" % i) for i in range(5)]
    assert await s.collect_garbage(grace=3600) == 0     # too young: a row may be about to name it
    assert await s.collect_garbage(grace=0) == len(orphans)
    assert await stored_blob_ids(s) == {r.id for r in kept}
    for ref in kept:
        assert (await s.read_blob(ref.id)).startswith(RAW)
    with pytest.raises(NotFound):
        await s.read_blob(orphans[0].id)
    assert await s.integrity_check() == []


async def test_move_keeps_the_message_id(backend):
    s = backend
    bob = await _bob(s)
    inbox = await s.get_mailbox(bob.id, "INBOX")
    archive = await s.create_mailbox(bob.id, "Kept")
    first = (await s.deliver(await s.put_blob(RAW), [bob.id]))[0].message
    second = (await s.deliver(await s.put_blob(REPLY), [bob.id]))[0].message
    before = (await s.get_account_by_id(bob.id)).modseq
    pairs = await s.move(inbox.id, [first.uid], archive.id)
    assert pairs == [(first.uid, 1)]
    (moved,) = await s.list_messages(archive.id)
    assert (moved.id, moved.uid, moved.blob_id) == (first.id, 1, first.blob_id)   # same id, new UID
    assert [m.id for m in await s.list_messages(inbox.id)] == [second.id]
    assert (await s.changes_since(inbox.id, before)).expunged == [first.uid]       # QRESYNC VANISHED
    changed, gone, _ = await s.account_changes_since(bob.id, before)
    assert [m.id for m in changed] == [first.id] and gone == []                     # moved, not destroyed
    await s.expunge(archive.id, [1])
    _, gone, _ = await s.account_changes_since(bob.id, before)
    assert gone == [first.id]
    assert (await s.get_account_by_id(bob.id)).used == len(REPLY)
    assert [r.id for r in await s.get_messages_by_id([first.id, second.id])] == [second.id]


async def test_recent_claims_are_atomic_and_counted(backend):
    """\\Recent (RFC 3501 2.3.2): concurrent claims hand each UID to exactly one caller."""
    s = backend
    bob = await _bob(s)
    blob = await s.put_blob(RAW)
    for _ in range(5):
        await s.deliver(blob, [bob.id])
    inbox = await s.get_mailbox(bob.id, "INBOX")
    assert (inbox.recent_uid, inbox.recent, inbox.messages) == (1, 5, 5)
    assert await s.claim_recent(inbox.id, 6, claim=False) == 1          # a look takes nothing
    firsts = await asyncio.gather(*(s.claim_recent(inbox.id, 6) for _ in range(8)))
    assert sorted(firsts) == [1] + [6] * 7                               # one caller got 1..5
    inbox = await s.get_mailbox(bob.id, "INBOX")
    assert (inbox.recent_uid, inbox.recent) == (6, 0)
    await s.deliver(blob, [bob.id])
    assert (await s.get_mailbox(bob.id, "INBOX")).recent == 1
    assert await s.claim_recent(inbox.id, 3) == 6                        # never moves back
    with pytest.raises(NotFound):
        await s.claim_recent(10**9, 2)


async def test_concurrent_recent_claims_in_one_process_ask_the_store_once(backend):
    """A new message wakes every IDLE session of its mailbox and each claims it: within a
    process the first asks the store and the others take the floor it leaves."""
    s = backend
    bob = await _bob(s)
    await s.deliver(await s.put_blob(RAW), [bob.id])
    inbox = await s.get_mailbox(bob.id, "INBOX")
    asked: list[int] = []
    if hasattr(s, "db"):
        real = s.db.read

        async def counted(fn):
            asked.append(1)
            return await real(fn)

        s.db.read = counted
    firsts = await asyncio.gather(*(s.claim_recent(inbox.id, 2) for _ in range(50)))
    assert sorted(firsts) == [1] + [2] * 49
    if hasattr(s, "db"):
        assert len(asked) == 1


async def test_verified_passwords_are_cached_until_they_change(backend, monkeypatch):
    """A login that succeeded recently skips argon2 (as Dovecot's auth cache does), but a
    changed password or a removed account takes effect at once and failures always pay."""
    from mailhaven.store import passwords

    s = backend
    await _bob(s)
    calls = []
    real = passwords.verify_password
    monkeypatch.setattr(passwords, "verify_password", lambda h, p: calls.append(p) or real(h, p))
    for _ in range(3):
        assert await s.authenticate("bob@nyu.example", "s3cret") is not None
    assert calls == ["s3cret"]
    for _ in range(2):
        assert await s.authenticate("bob@nyu.example", "guess") is None
    assert calls == ["s3cret", "guess", "guess"]
    await s.set_password("bob@nyu.example", "n3w")
    assert await s.authenticate("bob@nyu.example", "s3cret") is None
    assert await s.authenticate("bob@nyu.example", "n3w") is not None
    await s.remove_account("bob@nyu.example")
    assert await s.authenticate("bob@nyu.example", "n3w") is None


async def test_messages_with_their_bytes_in_one_call(backend):
    """get_messages_raw: rows in UID order with each message's bytes, inline or file blobs."""
    s = backend
    bob = await _bob(s)
    big = RAW + b"x" * (200 * 1024) + b"\r\n"                # over SQLite's inline limit
    for raw in (RAW, big, REPLY):
        await s.deliver(await s.put_blob(raw), [bob.id])
    inbox = await s.get_mailbox(bob.id, "INBOX")
    got = await s.get_messages_raw(inbox.id, [3, 1, 2, 99], with_summary=True)
    assert [(m.uid, raw) for m, raw in got] == [(1, RAW), (2, big), (3, REPLY)]
    assert got[2][0].summary["subject"] == "Re: Lunch on Friday"
    plain = await s.get_messages_raw(inbox.id, [2], with_summary=False)
    assert plain[0][0].summary == {} and plain[0][1] == big


async def test_wire_forms_and_raw_as_plain_tuples(backend):
    """get_wire_forms / get_raw: (uid, ...) of the live messages asked for, in UID order,
    whether the UIDs are a dense run (read as one range) or a sparse set; expunged and
    unknown UIDs are left out, rows without stored forms give None."""
    s = backend
    bob = await _bob(s)
    big = RAW + b"x" * (200 * 1024) + b"\r\n"                # over SQLite's inline limit
    for i in range(12):
        await s.deliver(await s.put_blob(big if i == 5 else RAW.replace(b"Friday", b"day %d" % i)), [bob.id])
    inbox = await s.get_mailbox(bob.id, "INBOX")
    await s.expunge(inbox.id, [4, 9])
    wired = {m.uid: m.wire for m in await s.get_messages(inbox.id, range(1, 13), with_summary=False,
                                                           imap_wire=True)}
    for asked in ([3, 1, 2, 4, 5, 6, 7], [1, 12, 99], list(range(1, 14)), [4], []):
        live = sorted(u for u in set(asked) if u in wired)
        forms = await s.get_wire_forms(inbox.id, asked)
        assert forms == [(u, *wired[u]) for u in live], asked
        raws = await s.get_raw(inbox.id, asked)
        assert [u for u, _ in raws] == live
        for u, data in raws:
            assert data == (big if u == 6 else RAW.replace(b"Friday", b"day %d" % (u - 1)))
    await _forget_wire_forms(s)
    assert await s.get_wire_forms(inbox.id, [1, 2]) == [(1, None, None), (2, None, None)]


async def _header(s, box, uid: int) -> bytes | None:
    """The one-message form of get_headers (SQLite reads it on the loop), and the same
    answer from get_header_now where the backend answers at once (SQLite; PostgreSQL never)."""
    found = await s.get_headers(box.id, [uid])
    assert len(found) <= 1 and all(u == uid for u, _ in found)
    now = s.get_header_now(box.id, uid)
    assert now == (None if type(s).__name__ == "PostgresStore" else found)
    return found[0][1] if found else None


async def test_header_blocks_stored_copied_moved_and_gone_with_the_message(backend):
    """get_headers: the header block (through its blank line) of a delivered or appended
    message, a copy's and a moved one's, compressed or not, in UID order; left out once
    expunged, for unknown UIDs, and for a block over headerblock.MAX_BLOCK (not stored)."""
    from mailhaven.store.headerblock import MAX_BLOCK, PACK_MIN

    s = backend
    bob = await _bob(s)
    inbox = await s.get_mailbox(bob.id, "INBOX")
    archive = await s.get_mailbox(bob.id, "Archive")
    received = b"".join(b"Received: from relay%d.example by mx.nyu.example; Mon, 23 Nov 2026 10:00:%02d +0000\r\n"
                        % (i, i) for i in range(30))
    long = received + RAW                                   # a block over PACK_MIN: stored compressed
    huge = b"X-Big: " + b"y" * MAX_BLOCK + b"\r\n" + RAW
    lf = RAW.replace(b"\r\n", b"\n")
    assert len(long.split(b"\r\n\r\n")[0]) > PACK_MIN
    await s.deliver(await s.put_blob(RAW), [bob.id])
    await s.append(inbox.id, await s.put_blob(long))
    await s.append(inbox.id, await s.put_blob(huge))
    await s.append(inbox.id, await s.put_blob(lf))
    await s.append(inbox.id, await s.put_blob(b"Subject: no body at all\r\n"))
    head = RAW[:RAW.index(b"\r\n\r\n") + 4]
    blocks = await s.get_headers(inbox.id, [5, 99, 3, 1, 4, 2, 1])
    assert [uid for uid, _ in blocks] == [1, 2, 4, 5] and blocks[0][1] == head
    assert await _header(s, inbox, 1) == head
    assert await _header(s, inbox, 2) == long[:long.index(b"\r\n\r\n") + 4]
    assert await _header(s, inbox, 3) is None
    assert await _header(s, inbox, 4) == lf[:lf.index(b"\n\n") + 2]
    assert await _header(s, inbox, 5) == b"Subject: no body at all\r\n"
    assert await _header(s, inbox, 99) is None
    assert await s.copy(inbox.id, [1, 2], archive.id) == [(1, 1), (2, 2)]
    assert await s.move(inbox.id, [4], archive.id) == [(4, 3)]
    assert await _header(s, archive, 2) == await _header(s, inbox, 2)
    assert await _header(s, archive, 3) == lf[:lf.index(b"\n\n") + 2]
    assert await _header(s, inbox, 4) is None                # moved away
    await s.expunge(inbox.id, [1])
    assert await _header(s, inbox, 1) is None
    assert await _header(s, archive, 1) == head              # the copy keeps its own
    await s.delete_mailbox(archive.id)
    assert await _header(s, archive, 1) is None


async def test_header_blocks_absent_on_old_rows_until_reindex(backend):
    """Rows stored by a version without header blocks are left out (the FETCH reads the
    message); reindex stores them."""
    s = backend
    bob = await _bob(s)
    inbox = await s.get_mailbox(bob.id, "INBOX")
    await s.deliver(await s.put_blob(RAW), [bob.id])
    if hasattr(s, "pool"):
        await s.pool.execute("UPDATE messages SET header = NULL")
    else:
        await s.db.write(lambda c: c.execute("DELETE FROM message_headers"))
    assert await _header(s, inbox, 1) is None
    assert await s.get_raw(inbox.id, [1]) == [(1, RAW)]
    assert await s.reindex() == 1
    assert await _header(s, inbox, 1) == RAW[:RAW.index(b"\r\n\r\n") + 4]


async def _forget_wire_forms(s) -> None:
    """Make the stored rows look like an older version's: no ENVELOPE/BODYSTRUCTURE forms."""
    if hasattr(s, "pool"):
        await s.pool.execute("UPDATE messages SET imap_envelope = NULL, imap_body = NULL")
    else:
        await s.db.write(lambda c: c.execute("UPDATE message_data SET imap_envelope = NULL, imap_body = NULL"))


async def test_imap_wire_forms_stored_copied_and_absent_on_old_rows(backend):
    """Delivery stores ENVELOPE and BODYSTRUCTURE as IMAP sends them; imap_wire reads them
    without the summary, copies keep them, and rows without them come with their summary."""
    from mailhaven.imap.render import render_body, render_envelope

    s = backend
    bob = await _bob(s)
    multipart = (b"From: =?utf-8?q?Zo=C3=AB?= <zoe@example.org>\r\nTo: bob@nyu.example\r\n"
                 b"Subject: parts\r\nMIME-Version: 1.0\r\n"
                 b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\n'
                 b"Content-Type: text/plain\r\n\r\nhello\r\n--b\r\n"
                 b'Content-Type: application/pdf; name="a.pdf"\r\nContent-Transfer-Encoding: base64\r\n\r\n'
                 b"AAAA\r\n--b--\r\n")
    for raw in (RAW, multipart):
        await s.deliver(await s.put_blob(raw), [bob.id])
    inbox = await s.get_mailbox(bob.id, "INBOX")
    full = await s.get_messages(inbox.id, [1, 2], with_summary=True)
    wired = await s.get_messages(inbox.id, [1, 2], with_summary=False, imap_wire=True)
    for f, w in zip(full, wired, strict=True):
        imap = f.summary["imap"]
        assert w.wire == (render_envelope(imap["envelope"], False), render_body(imap["body"], True, False))
        assert w.summary == {}                           # not read where the forms serve
    assert wired[1].wire is not None and b"=?utf-8?q?Zo=C3=AB?=" in wired[1].wire[0]  # no raw UTF-8
    assert b'("application" "pdf" ("name" "a.pdf")' in wired[1].wire[1]
    raw_wired = await s.get_messages_raw(inbox.id, [2], with_summary=False, imap_wire=True)
    assert raw_wired[0][0].wire == wired[1].wire and raw_wired[0][1] == multipart

    archive = await s.create_mailbox(bob.id, "Kept")
    await s.copy(inbox.id, [2], archive.id)
    copied = await s.get_messages(archive.id, [1], with_summary=False, imap_wire=True)
    assert copied[0].wire == wired[1].wire

    await _forget_wire_forms(s)
    old = await s.get_messages(inbox.id, [1, 2], with_summary=False, imap_wire=True)
    assert [m.wire for m in old] == [None, None]
    assert [m.summary["imap"] for m in old] == [f.summary["imap"] for f in full]


async def test_reindex_recomputes_summaries_structures_and_search_text(backend, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Rows stored by an older summarizer get today's summary, ENVELOPE/BODYSTRUCTURE and
    search text back from the bytes; flags, UIDs and MODSEQs stay as they were."""
    from mailhaven.message.summary import summarize
    from mailhaven.store import pgmessages, sqliterows

    def stale(raw: bytes) -> dict:  # type: ignore[type-arg]
        s = summarize(raw)
        s.update(subject="stale", text="", preview="")
        s["imap"]["envelope"][1] = "stale"
        return s

    acct = await _bob(backend)
    inbox = await backend.get_mailbox(acct.id, "INBOX")
    for module in (sqliterows, pgmessages):
        monkeypatch.setattr(module, "summarize", stale)
    blob = await backend.put_blob(RAW)
    (first,) = await backend.deliver(blob, [acct.id])
    other = await backend.create_mailbox(acct.id, "Old mail")
    await backend.copy(inbox.id, [first.message.uid], other.id)
    await backend.set_flags(inbox.id, [first.message.uid], ["\\Seen"], FlagMode.ADD)
    monkeypatch.undo()
    before = await backend.get_messages(inbox.id, [first.message.uid])
    assert before[0].summary["subject"] == "stale"
    assert not await backend.search_text(inbox.id, "subject", "Lunch")
    assert await backend.reindex(batch=1) == 2
    for box in (inbox.id, other.id):
        (m,) = await backend.list_messages(box)
        (full,) = await backend.get_messages(box, [m.uid], with_summary=True, imap_wire=True)
        assert full.summary["subject"] == "Lunch on Friday" and "text" not in full.summary
        assert b'"Lunch on Friday"' in full.wire[0]
        assert await backend.search_text(box, "subject", "Lunch") == {m.uid}
        assert await backend.search_text(box, "body", "Crown") == {m.uid}
    (after,) = await backend.get_messages(inbox.id, [first.message.uid])
    assert after.flags == before[0].flags and after.modseq == before[0].modseq


async def test_reindex_of_a_large_message_reads_it_a_piece_at_a_time(backend) -> None:  # type: ignore[no-untyped-def]
    """A message over ``LARGE_MESSAGE`` is re-summarised as delivery summarised it, from its
    file or by range, never read whole (PostgreSQL's reindex read each blob whole)."""
    import tracemalloc

    size = 24 * 1024 * 1024
    acct = await _bob(backend)
    inbox = await backend.get_mailbox(acct.id, "INBOX")
    head = (b"From: a@b.example\r\nTo: bob@nyu.example\r\nSubject: Large minutes\r\n"
            b"Content-Type: text/plain\r\n\r\nQuarterly minutes follow.\r\n")
    raw = head + b"filler line of the minutes\r\n" * ((size - len(head)) // 28)
    blob = await backend.put_blob(raw)
    del raw
    (delivered,) = await backend.deliver(blob, [acct.id])
    tracemalloc.start()
    try:
        assert await backend.reindex() == 1
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 * 1024 * 1024, peak    # the 1 MiB prefix and its text ~10.5 MB; whole: over 24
    (m,) = await backend.get_messages(inbox.id, [delivered.message.uid], with_summary=True)
    assert m.summary["subject"] == "Large minutes"
    assert await backend.search_text(inbox.id, "body", "Quarterly minutes") == {m.uid}


# -- account-wide lookups (JMAP) ------------------------------------------------------------
async def _two_accounts_mail(s):  # type: ignore[no-untyped-def]
    """Bob: RAW and REPLY (one thread) in INBOX, RAW again in Sent; Carol: RAW in INBOX."""
    bob, carol = await _bob(s), await s.add_account("carol@nyu.example", "pw")
    first, reply = await s.put_blob(RAW), await s.put_blob(REPLY)
    (a,) = await s.deliver(first, [bob.id], internal_date=1000.0)
    (b,) = await s.deliver(reply, [bob.id], internal_date=3000.0)
    (c,) = await s.deliver(first, [bob.id], mailbox="Sent", internal_date=2000.0)
    (d,) = await s.deliver(first, [carol.id], internal_date=1500.0)
    return bob, carol, a.message, b.message, c.message, d.message, reply


async def test_account_has_blob(backend):
    bob, carol, *_, reply = await _two_accounts_mail(backend)
    assert await backend.account_has_blob(bob.id, reply.id)
    assert not await backend.account_has_blob(carol.id, reply.id)
    assert not await backend.account_has_blob(bob.id, "0" * 64)


async def test_thread_members(backend):
    bob, carol, a, b, c, d, _ = await _two_accounts_mail(backend)
    assert a.thread_id == b.thread_id
    members = await backend.thread_members(bob.id, [a.thread_id, 999_999])
    assert members[a.thread_id][0] == a.id and set(members[a.thread_id]) == {a.id, b.id, c.id}
    assert members[a.thread_id].index(c.id) < members[a.thread_id].index(b.id)   # by arrival
    assert members[999_999] == []
    assert d.id not in (await backend.thread_members(bob.id, [d.thread_id])).get(d.thread_id, [])
    assert await backend.thread_members(bob.id, []) == {}


async def test_message_index(backend):
    bob, carol, a, b, c, d, _ = await _two_accounts_mail(backend)
    inbox = await backend.get_mailbox(bob.id, "INBOX")
    await backend.set_flags(inbox.id, [a.uid], ["\\Seen", "$Important"], FlagMode.ADD)
    rows = {r[0]: r for r in await backend.message_index(bob.id)}
    assert set(rows) == {a.id, b.id, c.id}
    mid, mailbox_id, uid, size, date, thread, flags = rows[a.id]
    assert (mid, mailbox_id, uid, size, date, thread) == (a.id, inbox.id, a.uid, len(RAW), 1000.0, a.thread_id)
    assert set(flags.split()) == {"\\Seen", "$Important"} and rows[b.id][6] == ""
    assert {r[0] for r in await backend.message_index(bob.id, [inbox.id])} == {a.id, b.id}
    carol_inbox = await backend.get_mailbox(carol.id, "INBOX")
    assert await backend.message_index(bob.id, [carol_inbox.id]) == []        # not bob's mailbox
    assert await backend.message_index(bob.id, []) == []


async def test_ordered_message_ids(backend):
    bob, carol, a, b, c, d, _ = await _two_accounts_mail(backend)
    inbox = await backend.get_mailbox(bob.id, "INBOX")
    by_date = await backend.ordered_message_ids(bob.id, None, "internal_date", True)
    assert by_date == [(a.id, a.thread_id), (c.id, c.thread_id), (b.id, b.thread_id)]
    assert [i for i, _ in await backend.ordered_message_ids(bob.id, None, "internal_date", False)] == [b.id, c.id, a.id]
    # Equal sizes (a and c are the same bytes): ties by id, descending, either way.
    by_size = [i for i, _ in await backend.ordered_message_ids(bob.id, None, "size", True)]
    assert by_size[:2] == sorted([a.id, c.id], reverse=True)
    assert [i for i, _ in await backend.ordered_message_ids(bob.id, inbox.id, "size", False)][-1] == a.id
    assert [i for i, _ in await backend.ordered_message_ids(bob.id, inbox.id, "internal_date", True)] == [a.id, b.id]
    with pytest.raises(ValueError):
        await backend.ordered_message_ids(bob.id, None, "flags; DROP TABLE messages", True)


# -- bearer tokens --------------------------------------------------------------------------
async def test_add_token(backend):
    bob = await _bob(backend)
    await backend.add_token(bob.id, "ab" * 32, "phone", created=100.0)
    with pytest.raises(Exception):  # noqa: B017 - the digest is the key: a second one is refused
        await backend.add_token(bob.id, "ab" * 32, "again", created=101.0)
    assert [(t.digest, t.label, t.created) for t in await backend.list_tokens(bob.id)] == [("ab" * 32, "phone", 100.0)]


async def test_list_tokens(backend):
    bob, carol = await _bob(backend), await backend.add_account("carol@nyu.example", "pw")
    assert await backend.list_tokens(bob.id) == []
    await backend.add_token(bob.id, "cd" * 32, "laptop", created=200.0)
    await backend.add_token(bob.id, "ab" * 32, "phone", created=100.0)
    await backend.add_token(carol.id, "ef" * 32, "carol's", created=50.0)
    assert [t.label for t in await backend.list_tokens(bob.id)] == ["phone", "laptop"]   # oldest first


async def test_revoke_tokens(backend):
    bob, carol = await _bob(backend), await backend.add_account("carol@nyu.example", "pw")
    await backend.add_token(bob.id, "abc123" + "0" * 58, "phone", created=1.0)
    await backend.add_token(bob.id, "abd999" + "0" * 58, "laptop", created=2.0)
    await backend.add_token(carol.id, "abc124" + "0" * 58, "carol's", created=3.0)
    assert await backend.revoke_tokens(carol.id, "abc123") == 0              # not carol's
    assert await backend.revoke_tokens(bob.id, "ab%") == 0                   # no wildcards
    assert await backend.revoke_tokens(bob.id, "abc123") == 1
    assert [t.label for t in await backend.list_tokens(bob.id)] == ["laptop"]
    assert [t.label for t in await backend.list_tokens(carol.id)] == ["carol's"]


async def test_token_account(backend):
    bob = await _bob(backend)
    await backend.add_token(bob.id, "ab" * 32, "phone", created=1.0)
    assert await backend.token_account("ab" * 32) == bob.id
    assert await backend.token_account("ab" * 31) is None
    await backend.revoke_tokens(bob.id, "ababab")
    assert await backend.token_account("ab" * 32) is None


# -- JMAP identities ------------------------------------------------------------------------
async def test_identity_settings(backend):
    bob, carol = await _bob(backend), await backend.add_account("carol@nyu.example", "pw")
    assert await backend.identity_settings(bob.id) == {}
    await backend.save_identity_settings(carol.id, "carol@nyu.example", {"name": "Carol"})
    assert await backend.identity_settings(bob.id) == {}


async def test_save_identity_settings(backend):
    bob = await _bob(backend)
    await backend.save_identity_settings(bob.id, "bob@nyu.example", {"name": "Bob", "bcc": None})
    await backend.save_identity_settings(bob.id, "sales@nyu.example", {"name": "Sales", "textSignature": "—\nB"})
    await backend.save_identity_settings(bob.id, "bob@nyu.example", {"name": "Robert"})    # replaces
    assert await backend.identity_settings(bob.id) == {
        "bob@nyu.example": {"name": "Robert"}, "sales@nyu.example": {"name": "Sales", "textSignature": "—\nB"}}


# -- the outbound queue ---------------------------------------------------------------------
async def _outbound(s, *rcpts, notify=None):  # type: ignore[no-untyped-def]
    from mailhaven.queue.api import OutboundMessage, OutboundRecipient

    blob = await s.put_blob(RAW)
    return OutboundMessage(blob=blob, mail_from="bob@nyu.example", envid="E1", ret="HDRS", smtputf8=True,
                           tls_policy="requiretls", authenticated_as="bob@nyu.example",
                           recipients=tuple(OutboundRecipient(address=r, notify=notify, orcpt=f"rfc822;{r}")
                                            for r in rcpts))


async def test_queue_enqueue(backend):
    message = await _outbound(backend, "a@X.example", "b@y.example", notify=frozenset({"FAILURE", "DELAY"}))
    ids = await backend.queue_enqueue(message, now=1000.0)
    again = await backend.queue_enqueue(message, now=1000.0)
    assert len(ids) == 2 and len(set(ids + again)) == 4
    e = await backend.queue_get(ids[0])
    assert (e.rcpt, e.domain, e.state, e.attempts, e.next_attempt, e.created) == (
        "a@X.example", "x.example", "queued", 0, 1000.0, 1000.0)
    assert (e.blob_id, e.size, e.mail_from, e.notify, e.orcpt, e.envid, e.ret, e.smtputf8, e.submitted_by,
            e.tls_policy) == (
        message.blob.id, len(RAW), "bob@nyu.example", frozenset({"FAILURE", "DELAY"}), "rfc822;a@X.example",
        "E1", "HDRS", True, "bob@nyu.example", "requiretls")
    assert (await backend.queue_get(ids[1])).msg == e.msg != (await backend.queue_get(again[0])).msg
    await backend.collect_garbage(grace=0)
    assert await backend.read_blob(message.blob.id) == RAW                  # the queue keeps its blob


async def test_queue_claim(backend):
    ids = await backend.queue_enqueue(await _outbound(backend, "a@x.example", "b@y.example"), now=1000.0)
    assert await backend.queue_claim("r1", now=999.0, lease=60, limit=10) == []            # not due
    (first,) = await backend.queue_claim("r1", now=1000.0, lease=60, limit=1)
    assert first.id == ids[0] and (first.lease_owner, first.lease_until) == ("r1", 1060.0)
    (second,) = await backend.queue_claim("r2", now=1010.0, lease=60, limit=10)            # ids[0] is r1's
    assert second.id == ids[1]
    again = await backend.queue_claim("r3", now=1061.0, lease=60, limit=10)                # r1's lease ran out
    assert [e.id for e in again] == [ids[0]] and again[0].lease_owner == "r3"
    results = await asyncio.gather(*(backend.queue_claim(f"c{i}", now=9999.0, lease=60, limit=10) for i in range(4)))
    assert sorted(e.id for r in results for e in r) == ids                  # each row to one claimer only


async def test_queue_release_leases(backend):
    ids = await backend.queue_enqueue(await _outbound(backend, "a@x.example", "b@y.example"), now=1000.0)
    await backend.queue_claim("r1", now=1000.0, lease=60, limit=1)
    await backend.queue_claim("r2", now=1000.0, lease=60, limit=1)
    await backend.queue_release_leases("r1")
    assert [(e.id, e.lease_owner, e.lease_until) for e in await backend.queue_list()] == [
        (ids[0], None, None), (ids[1], "r2", 1060.0)]
    assert [e.id for e in await backend.queue_claim("r3", now=1001.0, lease=60, limit=10)] == [ids[0]]


async def test_queue_finish(backend):
    ids = await backend.queue_enqueue(await _outbound(backend, "a@x.example", "b@y.example"), now=1000.0)
    await backend.queue_finish(ids[1])
    assert [e.id for e in await backend.queue_list()] == [ids[0]]
    await backend.queue_finish(ids[1])                                      # already gone: no error
    await backend.queue_finish(ids[0])
    again = await backend.queue_enqueue(await _outbound(backend, "c@x.example"), now=1000.0)
    assert not set(again) & set(ids)                # an emptied queue never gives an id out again


async def test_queue_defer(backend):
    (qid,) = await backend.queue_enqueue(await _outbound(backend, "a@x.example"), now=1000.0)
    await backend.queue_claim("r1", now=1000.0, lease=60, limit=10)
    await backend.queue_defer(qid, next_attempt=2000.0, reply="451 4.3.0 later", warned=True)
    e = await backend.queue_get(qid)
    assert (e.attempts, e.next_attempt, e.last_reply, e.warned, e.lease_owner, e.lease_until) == (
        1, 2000.0, "451 4.3.0 later", True, None, None)
    assert await backend.queue_claim("r1", now=1999.0, lease=60, limit=10) == []
    await backend.queue_defer(qid, next_attempt=3000.0, reply="452", warned=True)
    assert (await backend.queue_get(qid)).attempts == 2


async def test_queue_list(backend):
    assert await backend.queue_list() == []
    first = await backend.queue_enqueue(await _outbound(backend, "a@x.example"), now=2000.0)
    second = await backend.queue_enqueue(await _outbound(backend, "b@x.example", "c@x.example"), now=1000.0)
    assert [e.id for e in await backend.queue_list()] == first + second       # by id, not by due time


async def test_queue_get(backend):
    (qid,) = await backend.queue_enqueue(await _outbound(backend, "a@x.example"), now=1000.0)
    assert (await backend.queue_get(qid)).rcpt == "a@x.example"
    assert await backend.queue_get(qid + 1000) is None


async def test_queue_set_state(backend):
    ids = await backend.queue_enqueue(await _outbound(backend, "a@x.example", "b@x.example"), now=1000.0)
    assert await backend.queue_set_state(ids[0], "held") == 1
    assert [e.id for e in await backend.queue_claim("r1", now=5000.0, lease=60, limit=10)] == [ids[1]]
    await backend.queue_defer(ids[1], next_attempt=9000.0, reply="451", warned=False)
    assert await backend.queue_set_state(None, "queued", now=100.0) == 2    # retry everything now
    assert [(e.state, e.next_attempt) for e in await backend.queue_list()] == [("queued", 100.0)] * 2
    assert await backend.queue_set_state(ids[0] + 1000, "held") == 0


async def test_queue_delete(backend):
    ids = await backend.queue_enqueue(await _outbound(backend, "a@x.example", "b@x.example"), now=1000.0)
    assert await backend.queue_delete(ids[0]) is True
    assert await backend.queue_delete(ids[0]) is False
    assert [e.id for e in await backend.queue_list()] == [ids[1]]


async def test_login_failures_count_block_and_forget(backend):
    s = backend
    kw = dict(window=60.0, address_limit=4, account_limit=2, block=300.0)
    assert await s.login_records("192.0.2.1", "bob@nyu.example") == []
    first = await s.login_failed("192.0.2.1", "bob@nyu.example", now=1000.0, **kw)
    assert [(r.account, r.failures, r.blocked_until) for r in first] == [("", 1, 0.0), ("bob@nyu.example", 1, 0.0)]
    second = await s.login_failed("192.0.2.1", "bob@nyu.example", now=1001.0, **kw)
    assert [(r.failures, r.blocked_until) for r in second] == [(2, 0.0), (2, 1301.0)]   # the pair's limit
    assert await s.login_blocks(1002.0) == [r for r in second if r.account]
    await s.login_succeeded("192.0.2.1", "bob@nyu.example")        # forgets the pair, not the address
    records = await s.login_records("192.0.2.1", "bob@nyu.example")
    assert [(r.account, r.failures) for r in records] == [("", 2)]
    # Failures of other names from the same address add up to the address's limit.
    await s.login_failed("192.0.2.1", "carol@nyu.example", now=1002.0, **kw)
    last = await s.login_failed("192.0.2.1", "", now=1003.0, **kw)
    assert [(r.account, r.failures, r.blocked_until) for r in last] == [("", 4, 1303.0)]
    assert [r.address for r in await s.login_blocks(1004.0)] == ["192.0.2.1"]
    assert await s.login_blocks(1304.0) == []                      # blocks end
    # After a quiet window the count starts again, and quiet records are deleted.
    again = await s.login_failed("192.0.2.1", "", now=1400.0, **kw)
    assert again[0].failures == 1 and again[0].blocked_until == 0.0
    assert await s.login_records("192.0.2.1", "carol@nyu.example") == again
    await s.login_failed("192.0.2.1", "carol@nyu.example", now=1401.0, **kw)
    await s.login_failed("2001:db8::/64", "bob@nyu.example", now=1401.0, **kw)
    assert await s.login_unblock("192.0.2.1") == 2                 # the address and carol's pair
    assert await s.login_records("192.0.2.1", "carol@nyu.example") == []
    assert len(await s.login_records("2001:db8::/64", "bob@nyu.example")) == 2


async def test_login_failures_from_many_tasks_all_count(backend):
    s = backend
    kw = dict(window=60.0, address_limit=0, account_limit=0, block=300.0)
    await asyncio.gather(*(s.login_failed("192.0.2.9", "", now=1000.0 + i, **kw) for i in range(20)))
    assert (await s.login_records("192.0.2.9", ""))[0].failures == 20


async def test_leases_are_exclusive_renewable_and_expire(backend):
    s = backend
    assert await s.acquire_lease("pop3:1", "a", ttl=30.0, now=1000.0)
    assert not await s.acquire_lease("pop3:1", "b", ttl=30.0, now=1010.0)     # held by a
    assert await s.acquire_lease("pop3:1", "a", ttl=30.0, now=1020.0)         # a renews to 1050
    assert not await s.acquire_lease("pop3:1", "b", ttl=30.0, now=1040.0)
    assert await s.acquire_lease("pop3:2", "b", ttl=30.0, now=1040.0)         # another name
    assert await s.acquire_lease("pop3:1", "b", ttl=30.0, now=1050.0)         # a's expired: b takes it
    await s.release_lease("pop3:1", "a")                                      # not a's any more
    assert not await s.acquire_lease("pop3:1", "c", ttl=30.0, now=1051.0)
    await s.release_lease("pop3:1", "b")
    assert await s.acquire_lease("pop3:1", "c", ttl=30.0, now=1052.0)


async def test_sieve_duplicate_keys_expire(backend):
    s = backend
    bob = await _bob(s)
    carol = await s.add_account("carol@nyu.example", "pw")
    assert await s.duplicate_keys(bob.id, now=1000.0) == frozenset()
    await s.remember_duplicates(bob.id, {"k1": 1100.0, "k2": 2000.0}, now=1000.0)     # RFC 7352
    assert await s.duplicate_keys(bob.id, now=1000.0) == {"k1", "k2"}
    assert await s.duplicate_keys(carol.id, now=1000.0) == frozenset()              # per account
    assert await s.duplicate_keys(bob.id, now=1100.0) == {"k2"}                     # k1's time is up
    await s.remember_duplicates(bob.id, {"k1": 1300.0, "k2": 1150.0}, now=1200.0)   # new times replace
    assert await s.duplicate_keys(bob.id, now=1200.0) == {"k1"}
    assert await s.duplicate_keys(bob.id, now=1000.0) == {"k1", "k2"}


async def test_sieve_script_rename_keeps_text_and_active(backend):
    s = backend
    bob = await _bob(s)
    await s.put_sieve_script(bob.id, "a", "keep;")
    await s.put_sieve_script(bob.id, "b", "discard;")
    await s.activate_sieve_script(bob.id, "a")
    await s.rename_sieve_script(bob.id, "a", "c")                     # RFC 5804 2.11.1
    assert [(i.name, i.active) for i in await s.list_sieve_scripts(bob.id)] == [("b", False), ("c", True)]
    assert await s.get_active_sieve_script(bob.id) == ("c", "keep;")
    with pytest.raises(AlreadyExists):
        await s.rename_sieve_script(bob.id, "c", "b")
    with pytest.raises(NotFound):
        await s.rename_sieve_script(bob.id, "a", "d")
    assert [(i.name, i.active) for i in await s.list_sieve_scripts(bob.id)] == [("b", False), ("c", True)]
    await s.rename_sieve_script(bob.id, "c", "c")                     # onto itself: nothing changes
    assert await s.get_sieve_script(bob.id, "c") == "keep;"


async def test_sieve_writes_are_compare_and_set_on_the_accounts_sieve_version(backend):
    s = backend
    bob = await _bob(s)
    carol = await s.add_account("carol@nyu.example", "pw")
    sub = s.subscribe(bob.id)
    try:
        assert await s.sieve_version(bob.id) == 0
        v1 = await s.put_sieve_script(bob.id, "a", "keep;")
        assert v1 == await s.sieve_version(bob.id) == 1
        await s.put_sieve_script(bob.id, "b", "discard;")
        await s.activate_sieve_script(bob.id, "b")
        await s.rename_sieve_script(bob.id, "b", "c")
        await s.delete_sieve_script(bob.id, "a")
        assert await s.sieve_version(bob.id) == 5 and await s.sieve_version(carol.id) == 0
        seen = [await asyncio.wait_for(sub.get(), 5) for _ in range(5)]     # each published
        assert [(c.kind, c.modseq, c.mailbox_id) for c in seen] == [("sieve", v, None) for v in range(1, 6)]
        with pytest.raises(SieveConflict):                                  # a stale read: nothing written
            await s.put_sieve_script(bob.id, "c", "stop;", activate=False, if_version=4)
        assert await s.get_sieve_script(bob.id, "c") == "discard;" and await s.sieve_version(bob.id) == 5
        assert await s.put_sieve_script(bob.id, "m", "keep;", activate=True, if_version=5) == 6
        assert await s.get_active_sieve_script(bob.id) == ("m", "keep;")
        # Two read-edit-writes from the same version at once: exactly one gets through.
        results = await asyncio.gather(*(s.put_sieve_script(bob.id, "m", text, if_version=6)
                                         for text in ("stop;", "discard;")), return_exceptions=True)
        assert sorted(type(r).__name__ for r in results) == ["SieveConflict", "int"]
        won = "stop;" if isinstance(results[0], int) else "discard;"
        assert await s.get_sieve_script(bob.id, "m") == won and await s.sieve_version(bob.id) == 7
    finally:
        sub.close()


async def test_sieve_script_ids_outlive_renames_and_are_never_reused(backend):
    s = backend
    bob = await _bob(s)
    carol = await s.add_account("carol@nyu.example", "pw")
    await s.put_sieve_script(bob.id, "a", "keep;")
    await s.put_sieve_script(bob.id, "b", "discard;")
    await s.put_sieve_script(carol.id, "a", "keep;")
    first = {i.name: i.id for i in await s.list_sieve_scripts(bob.id)}
    carol_id = (await s.list_sieve_scripts(carol.id))[0].id
    assert len({*first.values(), carol_id}) == 3                      # RFC 9661 ids: distinct
    await s.put_sieve_script(bob.id, "a", "stop;")                       # replaced: same script
    await s.rename_sieve_script(bob.id, "a", "z")
    assert {i.name: i.id for i in await s.list_sieve_scripts(bob.id)} == {"b": first["b"], "z": first["a"]}
    await s.delete_sieve_script(bob.id, "z")
    await s.put_sieve_script(bob.id, "a", "keep;")                       # a new script: a new id
    again = {i.name: i.id for i in await s.list_sieve_scripts(bob.id)}
    assert again["a"] not in (first["a"], first["b"], carol_id)


async def test_sieve_scripts_one_active_per_account(backend):
    s = backend
    bob = await _bob(s)
    carol = await s.add_account("carol@nyu.example", "pw")
    assert await s.list_sieve_scripts(bob.id) == []
    assert await s.get_active_sieve_script(bob.id) is None
    await s.put_sieve_script(bob.id, "main", "keep;")
    await s.put_sieve_script(bob.id, "other", "discard;")
    await s.put_sieve_script(carol.id, "main", "stop;")
    assert await s.get_sieve_script(bob.id, "main") == "keep;"
    assert await s.get_active_sieve_script(bob.id) is None             # stored, not yet active
    await s.activate_sieve_script(bob.id, "main")
    assert await s.get_active_sieve_script(bob.id) == ("main", "keep;")
    await s.put_sieve_script(bob.id, "main", 'require "fileinto";\nfileinto "A";')   # replace, stays active
    assert await s.get_active_sieve_script(bob.id) == ("main", 'require "fileinto";\nfileinto "A";')
    await s.activate_sieve_script(bob.id, "other")
    assert [(i.name, i.active) for i in await s.list_sieve_scripts(bob.id)] == [("main", False), ("other", True)]
    assert await s.get_active_sieve_script(carol.id) is None           # accounts do not mix
    with pytest.raises(NotFound):
        await s.activate_sieve_script(bob.id, "nosuch")
    assert (await s.get_active_sieve_script(bob.id))[0] == "other"     # unchanged by the failure
    await s.activate_sieve_script(bob.id, None)
    assert await s.get_active_sieve_script(bob.id) is None
    await s.activate_sieve_script(bob.id, "other")
    await s.delete_sieve_script(bob.id, "other")
    assert await s.get_active_sieve_script(bob.id) is None
    with pytest.raises(NotFound):
        await s.delete_sieve_script(bob.id, "other")
    with pytest.raises(NotFound):
        await s.get_sieve_script(bob.id, "other")
    await s.remove_account("carol@nyu.example")                        # scripts go with the account
    again = await s.add_account("carol@nyu.example", "pw")
    assert await s.list_sieve_scripts(again.id) == []


async def test_sieve_redirect_counter_vacation_memory_and_srs_key(backend):
    s = backend
    bob = await _bob(s)
    carol = await s.add_account("carol@nyu.example", "pw")
    assert await s.count_redirect(bob.id, now=1000.0, window=3600.0, limit=2)
    assert await s.count_redirect(bob.id, now=1001.0, window=3600.0, limit=2)
    assert not await s.count_redirect(bob.id, now=1002.0, window=3600.0, limit=2)   # limit reached
    assert await s.count_redirect(carol.id, now=1002.0, window=3600.0, limit=2)     # per account
    assert await s.count_redirect(bob.id, now=4600.5, window=3600.0, limit=2)       # the first aged out
    assert not await s.count_redirect(bob.id, now=4600.6, window=3600.0, limit=2)

    assert await s.vacation_reply_due(bob.id, "Alice@Lancs.example", "", now=1000.0, period=60.0)
    assert not await s.vacation_reply_due(bob.id, "alice@lancs.example", "", now=1059.0, period=60.0)
    assert await s.vacation_reply_due(bob.id, "alice@lancs.example", "other", now=1059.0, period=60.0)
    assert await s.vacation_reply_due(carol.id, "alice@lancs.example", "", now=1059.0, period=60.0)
    assert await s.vacation_reply_due(bob.id, "alice@lancs.example", "", now=1060.0, period=60.0)
    assert not await s.vacation_reply_due(bob.id, "alice@lancs.example", "", now=1119.0, period=60.0)

    key = await s.srs_key()
    assert len(key) == 32 and await s.srs_key() == key


async def test_dmarc_events_and_reports(backend):
    from mailhaven.store.api import DmarcEvent, DmarcReport

    s = backend
    ok = DmarcEvent(day=20000, header_from="good.example", source_ip="192.0.2.1", disposition="none",
                    dkim="pass", spf="pass", dkim_domain="good.example", dkim_result="pass")
    bad = DmarcEvent(day=20000, header_from="good.example", source_ip="192.0.2.9", disposition="reject",
                     dkim="fail", spf="fail")
    for event in (ok, ok, bad, DmarcEvent(**{**ok.__dict__, "day": 20001})):
        await s.record_dmarc_event(event)
    taken = await s.take_dmarc_events(20001)
    assert [(e.source_ip, e.count, e.disposition) for e in taken] == [("192.0.2.1", 2, "none"),
                                                                       ("192.0.2.9", 1, "reject")]
    assert taken[0].dkim_domain == "good.example" and taken[0].dkim_result == "pass"
    assert await s.take_dmarc_events(20001) == []                      # taken once
    assert [e.day for e in await s.take_dmarc_events(20002)] == [20001]

    report = DmarcReport(domain="NYU.example", org_name="google.com", report_id="r1", begin=100, end=200,
                         received=300.0, records='[{"source_ip": "192.0.2.1", "count": 3}]')
    assert await s.add_dmarc_report(report)
    assert not await s.add_dmarc_report(report)                        # the same report twice
    assert await s.add_dmarc_report(DmarcReport(**{**report.__dict__, "report_id": "r0", "begin": 50}))
    got = await s.list_dmarc_reports("nyu.example")
    assert [r.report_id for r in got] == ["r0", "r1"] and got[1].records == report.records
    assert got[1].domain == "nyu.example" and got[1].end == 200
    assert await s.list_dmarc_reports("other.example") == []


async def test_mta_sts_policy_cache(backend):
    from mailhaven.store.api import CachedPolicy

    s = backend
    assert await s.get_mta_sts_policy("lancs.example") is None
    first = CachedPolicy(domain="Lancs.Example", policy_id="20261201", text="version: STSv1\r\nmode: testing\r\n",
                         fetched=1000.0, expires=87400.0)
    await s.put_mta_sts_policy(first)
    got = await s.get_mta_sts_policy("lancs.example")
    assert got == CachedPolicy(domain="lancs.example", policy_id="20261201", text=first.text,
                               fetched=1000.0, expires=87400.0)
    await s.put_mta_sts_policy(CachedPolicy(domain="lancs.example", policy_id="2", text="x",
                                            fetched=2000.0, expires=3000.0))     # replaced, not added
    got = await s.get_mta_sts_policy("LANCS.example")
    assert got is not None and (got.policy_id, got.text, got.expires) == ("2", "x", 3000.0)
    assert await s.get_mta_sts_policy("nyu.example") is None


async def test_tls_session_counts(backend):
    s = backend
    kw = {"policy_type": "sts", "policy": "version: STSv1\nmode: enforce", "ip": "192.0.2.1"}
    for _ in range(3):
        await s.count_tls_session(day="2026-12-01", domain="Nyu.example", mx="MX.nyu.example", result="", **kw)
    await s.count_tls_session(day="2026-12-01", domain="nyu.example", mx="mx.nyu.example",
                              result="certificate-expired", **kw)
    await s.count_tls_session(day="2026-12-02", domain="nyu.example", mx="mx.nyu.example", result="", **kw)
    got = await s.tls_sessions("2026-12-02")
    assert [(r.day, r.domain, r.mx, r.result, r.count) for r in got] == [
        ("2026-12-01", "nyu.example", "mx.nyu.example", "", 3),
        ("2026-12-01", "nyu.example", "mx.nyu.example", "certificate-expired", 1)]
    assert got[0].policy == kw["policy"] and got[0].ip == "192.0.2.1" and got[0].policy_type == "sts"
    assert len(await s.tls_sessions("2026-12-03")) == 3
    await s.forget_tls_sessions("2026-12-01")
    assert [r.day for r in await s.tls_sessions("2026-12-03")] == ["2026-12-02"]


async def test_spam_classifier_counts_per_account_and_global(backend):
    s = backend
    bob = await _bob(s)
    carol = await s.add_account("carol@nyu.example", "pw")
    assert await s.spam_token_counts(bob.id, ["viagra"]) == (0, 0, {})
    await s.spam_train(bob.id, ["viagra", "cheap", "viagra"], spam=True)
    await s.spam_train(bob.id, ["viagra", "lunch"], spam=True)
    await s.spam_train(carol.id, ["lunch", "friday"], spam=False)
    assert await s.spam_token_counts(bob.id, ["viagra", "cheap", "lunch", "unseen"]) == (
        2, 0, {"viagra": (2, 0), "cheap": (1, 0), "lunch": (1, 0)})
    assert await s.spam_token_counts(carol.id, ["viagra", "lunch"]) == (0, 1, {"lunch": (0, 1)})
    assert await s.spam_token_counts(0, []) == (2, 1, {})                # the totals alone
    assert await s.spam_token_counts(0, ["viagra", "lunch", "friday"]) == (
        2, 1, {"viagra": (2, 0), "lunch": (1, 1), "friday": (0, 1)})
    many = [f"t{i}" for i in range(1200)]                    # past SQLite's 999 bound parameters
    await s.spam_train(carol.id, many, spam=True)
    nspam, nham, counts = await s.spam_token_counts(carol.id, many)
    assert (nspam, nham, len(counts)) == (1, 1, 1200)


async def test_spam_allow_and_block_lists(backend):
    s = backend
    bob = await _bob(s)
    carol = await s.add_account("carol@nyu.example", "pw")
    await s.set_spam_list(bob.id, "Friend@Lancs.example", "allow")
    await s.set_spam_list(bob.id, "spammy.example", "block")
    await s.set_spam_list(carol.id, "spammy.example", "allow")
    assert await s.spam_lists(bob.id) == {"friend@lancs.example": "allow", "spammy.example": "block"}
    await s.set_spam_list(bob.id, "spammy.example", "allow")
    await s.set_spam_list(bob.id, "FRIEND@lancs.example", None)
    assert await s.spam_lists(bob.id) == {"spammy.example": "allow"}
    assert await s.spam_lists(carol.id) == {"spammy.example": "allow"}


async def test_spam_state_reads_lists_and_totals_at_once(backend):
    s = backend
    bob = await _bob(s)
    carol = await s.add_account("carol@nyu.example", "pw")
    dave = await s.add_account("dave@nyu.example", "pw")
    empty = await s.spam_state([bob.id])
    assert (empty.lists, empty.totals) == ({}, {})
    await s.set_spam_list(bob.id, "Friend@Lancs.example", "allow")
    await s.set_spam_list(bob.id, "spammy.example", "block")
    await s.set_spam_list(carol.id, "spammy.example", "allow")
    await s.set_spam_list(dave.id, "other.example", "block")
    await s.spam_train(bob.id, ["viagra"], spam=True)
    await s.spam_train(bob.id, ["lunch"], spam=False)
    await s.spam_train(bob.id, ["cheap"], spam=True)
    await s.spam_train(dave.id, ["friday"], spam=False)
    state = await s.spam_state([bob.id, carol.id])
    assert state.lists == {bob.id: {"friend@lancs.example": "allow", "spammy.example": "block"},
                           carol.id: {"spammy.example": "allow"}}
    assert state.totals == {0: (2, 2), bob.id: (2, 1)}          # carol learnt nothing; dave not asked
    one = await s.spam_state([carol.id])
    assert (one.lists, one.totals) == ({carol.id: {"spammy.example": "allow"}}, {0: (2, 2)})


async def test_greylist_passes_after_the_delay_and_forgets_after_expiry(backend):
    s = backend
    key = "192.0.2.0/24 a@x.example bob@nyu.example"
    assert await s.greylist_pass(key, now=1000.0, delay=300.0, expire=86400.0) is False
    assert await s.greylist_pass(key, now=1100.0, delay=300.0, expire=86400.0) is False   # too soon, still pending
    assert await s.greylist_pass(key, now=1300.0, delay=300.0, expire=86400.0) is True    # 300 s after the first
    assert await s.greylist_pass(key, now=500000.0, delay=300.0, expire=86400.0) is True  # passed: stays
    other = "198.51.100.0/24 b@y.example bob@nyu.example"
    assert await s.greylist_pass(other, now=0.0, delay=300.0, expire=600.0) is False
    assert await s.greylist_pass(other, now=1000.0, delay=300.0, expire=600.0) is False   # retried too late
    assert await s.greylist_pass(other, now=1300.0, delay=300.0, expire=600.0) is True


async def test_large_blob_stored_without_reading_it_whole(backend):
    """An 8 MiB message through the blob writer: stored without holding it (the PostgreSQL
    backend read its spool whole into one bytea; it now writes 1 MiB rows one at a time),
    read back the same by every reader, stored once, and sound to the integrity check
    and the garbage collector."""
    import tracemalloc

    s = backend
    bob = await _bob(s)
    pieces = [RAW] + [bytes([65 + i]) * (1024 * 1024 - 1) + b"\n" for i in range(8)]
    whole = b"".join(pieces)
    writer = s.blob_writer()
    for piece in pieces:
        writer.write(piece)
    tracemalloc.start()
    try:
        ref = await writer.finish()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert ref.size == len(whole) and peak < 4 * 1024 * 1024, peak
    assert await s.read_blob(ref.id) == whole
    assert (await s.put_blob(whole)).id == ref.id                  # the same bytes: stored once
    await s.deliver(ref, [bob.id])
    inbox = await s.get_mailbox(bob.id, "INBOX")
    assert await s.get_raw(inbox.id, [1]) == [(1, whole)]
    assert await s.integrity_check() == []
    assert ref.id in await stored_blob_ids(s)
    again = await s.put_blob(whole[:-1] + b"!")                    # put_blob of a large one too
    assert await s.read_blob(again.id) == whole[:-1] + b"!"


@pytest.mark.parametrize("size", [0, 5, 128 * 1024 + 1, 9 * 1024 * 1024 + 17])
async def test_blob_read_by_range_and_in_pieces(backend, size):
    """A blob read a range at a time and as bounded pieces (inline, file, PostgreSQL chunk
    rows; ranges across row edges, past the end, empty): the same bytes as ``read_blob``,
    and for a large blob without ever holding much more than a piece."""
    import tracemalloc

    from mailhaven.store.api import BLOB_PIECE

    s = backend
    data = bytes((i * 13 + i // 509) % 256 for i in range(size))
    w = s.blob_writer()
    for at in range(0, size, 300_000):
        w.write(data[at:at + 300_000])
    ref = await w.finish()
    if hasattr(s, "blobs") and hasattr(s.blobs, "forget"):
        s.blobs.forget([ref.id])                    # read from where it is stored, not a cache
    assert await s.blob_size(ref.id) == size
    mib = 1024 * 1024
    for start, length in [(0, size), (0, 1), (size // 2, 10), (mib - 3, 7), (2 * mib - 1, mib + 2),
                          (size - 1, 5), (size, 3), (size + 10, 3), (3, 0)]:
        assert await s.read_blob_range(ref.id, start, length) == data[start:start + length], (start, length)
    for start, end in [(0, None), (0, size), (1, size - 1), (mib - 1, mib + 1), (size, None), (7, 7)]:
        pieces = [p async for p in s.blob_chunks(ref.id, start, end)]
        assert b"".join(pieces) == data[start:end], (start, end)
        assert all(0 < len(p) <= BLOB_PIECE for p in pieces)
    if size > mib:
        tracemalloc.start()
        try:
            total = 0
            async for piece in s.blob_chunks(ref.id):
                total += len(piece)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert total == size and peak < 4 * BLOB_PIECE, peak       # a few pieces, not the blob
    missing = "0" * 64
    with pytest.raises(NotFound):
        await s.blob_size(missing)
    with pytest.raises(NotFound):
        await s.read_blob_range(missing, 0, 10)
    with pytest.raises(NotFound):
        async for _ in s.blob_chunks(missing):
            pass


async def test_blob_view_reads_ranges_from_a_worker_thread(backend):
    """store/blobview.py: a FileView over read_blob_range, used off the loop by code
    written for files (the structure parser, a DSN's header section), as the bytes would be."""
    from mailhaven.message.structure import structure_summary
    from mailhaven.queue.dsn import original_of
    from mailhaven.store.blobview import BlobView

    s = backend
    data = RAW.replace(b"\r\n\r\n", b"\r\nX-Pad: " + b"p" * 300_000 + b"\r\n\r\n", 1) + b"body\r\n" * 200_000
    ref = await s.put_blob(data)
    view = BlobView(s.read_blob_range, ref.id, await s.blob_size(ref.id))

    def use() -> tuple:
        return (view[5:70_000], view.find(b"\r\n\r\n"), view.count(b"\n"), structure_summary(view)["imap"]["body"],
                original_of(view))

    part, blank, lines, body, original = await asyncio.to_thread(use)
    assert part == data[5:70_000] and blank == data.find(b"\r\n\r\n") and lines == data.count(b"\n")
    assert body == structure_summary(data)["imap"]["body"]
    assert original == (data[:blank + 4], len(data))
    with pytest.raises(RuntimeError):
        view[100_000:110_000]                       # on the loop's own thread it would wait on itself


async def test_rate_counters_take_refuse_and_restart(backend):
    s = backend
    kw = dict(window=3600.0, limit=5)
    assert await s.rate_take("ip:192.0.2.1", 2, now=7200.0, **kw) == 2
    assert await s.rate_take("ip:192.0.2.1", 3, now=7300.0, **kw) == 5
    assert await s.rate_take("ip:192.0.2.1", 1, now=7400.0, **kw) is None      # over: nothing counted
    assert await s.rate_take("ip:192.0.2.2", 5, now=7400.0, **kw) == 5         # keys do not mix
    assert await s.rate_take("ip:192.0.2.3", 6, now=7400.0, **kw) is None      # more than the limit at once
    assert await s.rate_take("ip:192.0.2.1", 1, now=10800.0, **kw) == 1        # a new window starts again
    # A key with a longer window is not forgotten when shorter windows turn over.
    assert await s.rate_take("day:x", 1, now=86400.0, window=86400.0, limit=9) == 1
    assert await s.rate_take("ip:192.0.2.1", 1, now=90000.0, **kw) == 1
    assert await s.rate_take("day:x", 1, now=100000.0, window=86400.0, limit=9) == 2


async def test_rate_counters_from_many_tasks_never_pass_the_limit(backend):
    s = backend
    taken = await asyncio.gather(*(s.rate_take("acct:7", 1, now=5000.0, window=3600.0, limit=12)
                                   for _ in range(20)))
    assert sorted(t for t in taken if t is not None) == list(range(1, 13))
    assert taken.count(None) == 8


async def test_rate_counters_are_shared_by_two_store_instances(backend, tmp_path):
    """Two processes on one data directory, or two PostgreSQL nodes on one schema."""
    s = backend
    if type(s).__name__ == "SQLiteStore":
        other = type(s)(tmp_path / "store")
    else:
        other = type(s)(os.environ["MAILHAVEN_TEST_PG_DSN"], tmp_path / "other", schema=s.schema)
    await other.open()
    try:
        taken = await asyncio.gather(*(store.rate_take("ip:198.51.100.7", 1, now=5000.0, window=3600.0, limit=7)
                                       for store in [s, other] * 6))
    finally:
        await other.close()
    assert sorted(t for t in taken if t is not None) == list(range(1, 8)) and taken.count(None) == 5
