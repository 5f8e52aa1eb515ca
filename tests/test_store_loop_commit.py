"""SQLite: deliveries commit on the event loop, their fsync on the writer thread.

A delivery's SQL runs on the loop thread (the writer thread's statement-by-statement GIL
hand-offs cost more than the SQL, issue 18), deliveries ready in one loop pass share one
transaction, and ``deliver`` still returns only after an fsync of the WAL that began after
the commit. The loop never waits for a lock: while the writer thread holds the connection,
another process holds the write lock, or a foreign writer holds SQLite's, the delivery
goes to the writer thread and the loop goes on."""

from __future__ import annotations

import asyncio
import fcntl
import os
import sqlite3
import threading
from pathlib import Path

import pytest

from conftest import sqlite_store_with_bob
from mailhaven.store.sqlite import SQLiteStore

RAW = b"From: alice@lancs.example\r\nTo: bob@nyu.example\r\nSubject: loop\r\n\r\nThe heron waits.\r\n"



async def _blob(store: SQLiteStore, n: int):  # type: ignore[no-untyped-def]
    writer = store.blob_writer()
    writer.write(RAW.replace(b"loop", b"loop %d" % n))
    return await writer.finish(deferred=True)


async def test_deliveries_commit_on_the_loop_together_and_return_after_the_wal_fsync(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store, bob = await sqlite_store_with_bob(tmp_path)
    try:
        threads: list[str] = []
        insert = store._insert_message

        def spy_insert(*args, **kwargs):  # type: ignore[no-untyped-def]
            threads.append(threading.current_thread().name)
            return insert(*args, **kwargs)

        monkeypatch.setattr(store, "_insert_message", spy_insert)
        synced: list[int] = []
        fdatasync = os.fdatasync

        def spy_sync(fd: int) -> None:
            with sqlite3.connect(store.db.path) as other:          # what another reader sees
                synced.append(other.execute("SELECT count(*) FROM messages").fetchone()[0])
            fdatasync(fd)

        monkeypatch.setattr(os, "fdatasync", spy_sync)
        refs = [await _blob(store, i) for i in range(5)]
        commits = store.db.commits
        results = await asyncio.gather(*(store.deliver(ref, [bob]) for ref in refs))
        assert all(r[0].message is not None for r in results)
        assert threads == [threading.current_thread().name] * 5    # the loop ran the SQL
        assert store.db.commits == commits + 1                     # one transaction
        assert synced and synced[-1] == 5                          # synced after it committed
    finally:
        await store.close()
    store = SQLiteStore(tmp_path)                                  # what a restart finds
    await store.open()
    try:
        inbox = await store.get_mailbox(bob, "INBOX")
        assert len(await store.get_raw(inbox.id, [1, 2, 3, 4, 5])) == 5
    finally:
        await store.close()


async def _loop_keeps_running(work: asyncio.Future, release) -> int:  # type: ignore[no-untyped-def, type-arg]
    """Ticks the loop makes while ``work`` waits; ``release()`` after a few of them."""
    ticks = 0
    while not work.done():
        await asyncio.sleep(0.01)
        ticks += 1
        if ticks == 5:
            release()
        assert ticks < 1000, "the delivery never finished"
    return ticks


async def test_a_delivery_waits_off_the_loop_while_another_process_holds_the_write_lock(tmp_path: Path) -> None:
    store, bob = await sqlite_store_with_bob(tmp_path)
    try:
        ref = await _blob(store, 1)
        other = os.open(str(store.db.path) + ".writelock", os.O_RDWR)   # another process's lock
        fcntl.flock(other, fcntl.LOCK_EX)
        work = asyncio.ensure_future(store.deliver(ref, [bob]))
        ticks = await _loop_keeps_running(work, lambda: (fcntl.flock(other, fcntl.LOCK_UN), os.close(other)))
        assert ticks >= 5
        assert (await work)[0].message is not None
    finally:
        await store.close()


async def test_a_delivery_waits_off_the_loop_while_a_foreign_writer_holds_sqlite(tmp_path: Path) -> None:
    store, bob = await sqlite_store_with_bob(tmp_path)
    try:
        ref = await _blob(store, 1)
        foreign = sqlite3.connect(store.db.path, isolation_level=None, check_same_thread=False)
        foreign.execute("BEGIN IMMEDIATE")                         # no flock: the sqlite3 shell
        work = asyncio.ensure_future(store.deliver(ref, [bob]))
        ticks = await _loop_keeps_running(work, lambda: foreign.execute("COMMIT"))
        assert ticks >= 5
        assert (await work)[0].message is not None
        foreign.close()
    finally:
        await store.close()


async def test_a_delivery_goes_to_the_writer_thread_while_it_holds_the_connection(tmp_path: Path) -> None:
    store, bob = await sqlite_store_with_bob(tmp_path)
    try:
        ref = await _blob(store, 1)
        started, release = threading.Event(), threading.Event()

        def long_job(conn: sqlite3.Connection) -> None:             # a big STORE, an index slice
            started.set()
            release.wait(10)

        held = asyncio.ensure_future(store.db.write(long_job))
        await asyncio.to_thread(started.wait, 10)
        work = asyncio.ensure_future(store.deliver(ref, [bob]))
        ticks = await _loop_keeps_running(work, release.set)
        assert ticks >= 5
        assert (await work)[0].message is not None
        await held
    finally:
        await store.close()


async def test_deliveries_arriving_during_an_fsync_commit_together_after_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """As the writer thread's group commit: what arrives while a commit is being synced
    waits for that fsync, then all of it commits in one transaction with one more fsync."""
    store, bob = await sqlite_store_with_bob(tmp_path)
    try:
        refs = [await _blob(store, i) for i in range(4)]
        entered, release = threading.Event(), threading.Event()
        fdatasync = os.fdatasync
        inserted: list[tuple[int, bool]] = []                      # (transaction, after the fsync)
        insert = store._insert_message

        def spy_insert(*args, **kwargs):  # type: ignore[no-untyped-def]
            inserted.append((store.db.commits, release.is_set()))
            return insert(*args, **kwargs)

        def slow_sync(fd: int) -> None:
            entered.set()
            release.wait(10)
            fdatasync(fd)

        monkeypatch.setattr(store, "_insert_message", spy_insert)
        monkeypatch.setattr(os, "fdatasync", slow_sync)
        first = asyncio.ensure_future(store.deliver(refs[0], [bob]))
        await asyncio.to_thread(entered.wait, 10)                  # its fsync is under way
        later = []
        for ref in refs[1:]:                                       # one a loop pass
            later.append(asyncio.ensure_future(store.deliver(ref, [bob])))
            await asyncio.sleep(0.01)
        assert len(inserted) == 1                                  # they wait for that fsync
        monkeypatch.setattr(os, "fdatasync", fdatasync)
        release.set()
        await first
        for work in later:
            assert (await work)[0].message is not None
        assert len(inserted) == 4
        assert len(set(inserted[1:])) == 1 and inserted[1][1]      # then one transaction
    finally:
        await store.close()
