"""The SQLite reader pool: results, errors, cancellation, and a long read beside short ones;
the writer's fsync of the WAL, after the commit and outside the cross-process write lock."""

from __future__ import annotations

import asyncio
import fcntl
import os
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from mailhaven.store import db as dbmodule
from mailhaven.store.db import Database


@pytest.fixture
def db(tmp_path: Path):  # type: ignore[no-untyped-def]
    d = Database(tmp_path / "t.db", readers=3)
    d.open("CREATE TABLE t(a INTEGER)")
    yield d
    d.close()


def test_a_write_returns_after_its_wal_was_fsynced_outside_the_write_lock(
        db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    """Processes sharing the database (SMTP workers) take turns at ``.writelock``; the fsync
    that makes a commit durable runs after it is released, and before the write returns."""
    seen: list[tuple[str, bool, int]] = []
    fdatasync = os.fdatasync

    def spy(fd: int) -> None:
        probe = os.open(str(db.path) + ".writelock", os.O_RDWR)   # another process's view
        try:
            fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
            free = True
        except BlockingIOError:
            free = False
        finally:
            os.close(probe)
        with sqlite3.connect(db.path) as other:
            rows = other.execute("SELECT count(*) FROM t").fetchone()[0]
        seen.append((os.readlink(f"/proc/self/fd/{fd}"), free, rows))
        fdatasync(fd)

    monkeypatch.setattr(os, "fdatasync", spy)

    async def main() -> None:
        await db.write(lambda c: c.execute("INSERT INTO t VALUES (1)"))
        assert seen == [(str(db.path) + "-wal", True, 1)]       # committed, lock free, synced
        def index_like(c: sqlite3.Connection) -> None:
            c.execute("INSERT INTO t VALUES (2)")

        await db.write(index_like, durable=False)
        assert len(seen) == 1                                   # search indexing: not synced

    asyncio.run(main())


def test_read_returns_result_and_raises_errors(db: Database) -> None:
    async def main() -> None:
        await db.write(lambda c: c.execute("INSERT INTO t VALUES (7)"))
        assert await db.read(lambda c: c.execute("SELECT a FROM t").fetchone()[0]) == 7
        with pytest.raises(ZeroDivisionError):
            await db.read(lambda c: 1 // 0)
        assert await db.read(lambda c: 5) == 5          # the pool survives the error

    asyncio.run(main())


def test_long_read_does_not_hold_up_short_ones(db: Database) -> None:
    release = threading.Event()

    def slow(c: object) -> str:
        assert release.wait(10)
        return "slow"

    async def main() -> None:
        long = asyncio.ensure_future(db.read(slow))
        await asyncio.sleep(0.05)
        # The primary thread is busy: these must be served by the others meanwhile.
        assert await asyncio.wait_for(asyncio.gather(*(db.read(lambda c, i=i: i) for i in range(20))), 5) == \
            list(range(20))
        release.set()
        assert await long == "slow"

    asyncio.run(main())


def test_cancelled_read_is_dropped(db: Database) -> None:
    release = threading.Event()

    async def main() -> None:
        task = asyncio.ensure_future(db.read(lambda c: release.wait(10)))
        await asyncio.sleep(0.05)
        task.cancel()
        release.set()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await db.read(lambda c: "next") == "next"

    asyncio.run(main())


def test_reads_from_several_event_loops(db: Database) -> None:
    out: list[int] = []

    def run(i: int) -> None:
        out.append(asyncio.run(db.read(lambda c: i)))

    threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(out) == [0, 1, 2, 3]


async def test_opening_the_store_keeps_spool_files_of_live_transfers(tmp_path) -> None:
    """An admin command opens the store while the server receives a message: the message's
    spool file in DATA/tmp must survive; a crashed process's stale ones are removed."""
    import os
    import time

    from mailhaven.store.sqlite import SQLiteStore

    first = SQLiteStore(tmp_path / "data")
    await first.open()
    tmp = tmp_path / "data" / "tmp"
    live, stale = tmp / "blob-live", tmp / "blob-stale"
    live.write_bytes(b"arriving now")
    stale.write_bytes(b"left by a crash")
    old = time.time() - 2 * 3600
    os.utime(stale, (old, old))
    second = SQLiteStore(tmp_path / "data")          # e.g. `mailhaven user add` meanwhile
    await second.open()
    try:
        assert live.exists() and not stale.exists()
    finally:
        await second.close()
        await first.close()


async def test_an_older_sieve_scripts_table_gets_ids_and_keeps_its_scripts(tmp_path) -> None:
    """A database made before JMAP Sieve (RFC 9661) ids: opening it rebuilds the table."""
    import sqlite3

    from mailhaven.store.sqlite import SQLiteStore

    s = SQLiteStore(tmp_path / "data")
    await s.open()
    await s.add_domain("nyu.example")
    bob = await s.add_account("bob@nyu.example", "pw")
    await s.put_sieve_script(bob.id, "b", "keep;")
    await s.put_sieve_script(bob.id, "a", "discard;")
    await s.activate_sieve_script(bob.id, "b")
    await s.close()
    conn = sqlite3.connect(tmp_path / "data" / "mailhaven.db")
    conn.executescript("""
        CREATE TABLE old_scripts (account_id INTEGER NOT NULL, name TEXT NOT NULL, script TEXT NOT NULL,
                                  active INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (account_id, name));
        INSERT INTO old_scripts SELECT account_id, name, script, active FROM sieve_scripts;
        DROP TABLE sieve_scripts;
        ALTER TABLE old_scripts RENAME TO sieve_scripts;
    """)
    conn.close()
    s = SQLiteStore(tmp_path / "data")
    await s.open()
    try:
        listed = await s.list_sieve_scripts(bob.id)
        assert [(i.name, i.active) for i in listed] == [("a", False), ("b", True)]
        assert len({i.id for i in listed}) == 2
        assert await s.get_active_sieve_script(bob.id) == ("b", "keep;")
        await s.put_sieve_script(bob.id, "c", "stop;")
        assert len({i.id for i in await s.list_sieve_scripts(bob.id)}) == 3
    finally:
        await s.close()


def test_write_jobs_leave_no_reference_cycles(db: Database) -> None:
    """A finished write (plain or with a WriteContext) is freed by reference counting: a
    job that names itself would leave its future, closure and result to the cyclic
    collector, whose pauses then land on some unlucky delivery."""
    import gc
    import weakref

    from mailhaven.store.db import WriteContext

    class Result:
        pass

    async def main() -> list[weakref.ref[Result]]:
        refs = []
        for i in range(20):
            def plain(c: sqlite3.Connection, i: int = i) -> Result:
                c.execute("INSERT INTO t VALUES (?)", (i,))
                return Result()

            def with_ctx(ctx: WriteContext, i: int = i) -> Result:
                ctx.conn.execute("INSERT INTO t VALUES (?)", (i,))
                ctx.after_commit(lambda: None)
                return Result()

            refs.append(weakref.ref(await db.write(plain)))
            refs.append(weakref.ref(await db.write_ctx(with_ctx)))
        await db.write(lambda c: None)       # the writer thread's locals name the last job
        return refs

    gc.collect()
    gc.disable()
    try:
        refs = asyncio.run(main())
        alive = sum(r() is not None for r in refs)
    finally:
        gc.enable()
    assert alive == 0


async def test_rate_counters_are_not_fsynced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A rate counter (every MAIL FROM and RCPT from an address the limits count) commits
    without its own fsync: losing the last moments of a window in a crash is harmless,
    an fsync per command was not."""
    from mailhaven.store.sqlite import SQLiteStore

    s = SQLiteStore(tmp_path / "data")
    await s.open()
    syncs: list[int] = []
    fdatasync = os.fdatasync

    def spy(fd: int) -> None:
        syncs.append(fd)
        fdatasync(fd)

    monkeypatch.setattr(os, "fdatasync", spy)
    try:
        kw = {"window": 3600.0, "limit": 10}
        assert await s.rate_take("ip:192.0.2.1", 2, now=7200.0, **kw) == 2
        assert await s.rate_take("ip:192.0.2.1", 3, now=7300.0, **kw) == 5
        assert syncs == []
        await s.add_domain("nyu.example")               # a durable write still syncs
        assert syncs
    finally:
        await s.close()


@pytest.fixture
def other(db: Database) -> Iterator[sqlite3.Connection]:
    """Another process's connection to ``db``'s file, in autocommit mode."""
    conn = sqlite3.connect(db.path, isolation_level=None)
    yield conn
    conn.close()


def count(db: Database) -> int:
    """The rows of ``t``, read as the event loop reads (``query_sync``: in its snapshot)."""
    return int(db.query_sync("SELECT count(*) FROM t", ())[0][0])


def test_loop_reads_share_a_snapshot_until_the_database_changes(db: Database, other: sqlite3.Connection,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """On the event loop, reads with no change between them run in one read transaction
    (no WAL read mark taken and dropped per statement), from the second on; it ends at a
    commit of this process (a read after ``await write`` sees it) and at a change another
    process told of (``changed``, which the change feed calls before any session hears of
    it)."""
    # The timer that ends a snapshot is the next test's: here a loaded machine's fsync of
    # ``other``'s insert must not outlast it before the ``sleep(0)``.
    monkeypatch.setattr(dbmodule, "LOOP_SNAPSHOT_S", 60.0)

    async def main() -> None:
        assert count(db) == 0
        assert count(db) == 0                                   # begins the snapshot
        other.execute("INSERT INTO t VALUES (1)")
        assert count(db) == 0                                   # the same snapshot
        assert db.read_sync(lambda c: c.execute("SELECT count(*) FROM t").fetchone()[0]) == 0
        db.changed()                                            # told of it
        assert count(db) == 1
        await db.write(lambda c: c.execute("INSERT INTO t VALUES (2)"))
        assert count(db) == 2                                   # its own write, at once
        assert count(db) == 2
        other.execute("INSERT INTO t VALUES (3)")
        await asyncio.sleep(0)
        assert count(db) == 2
        # a reader thread's read is a transaction of its own
        assert await db.read(lambda c: c.execute("SELECT count(*) FROM t").fetchone()[0]) == 3

    asyncio.run(main())


def test_a_held_loop_snapshot_ends_by_itself_and_holds_no_checkpoint_back(db: Database,
                                                                          other: sqlite3.Connection) -> None:
    """Nothing reads after a change nobody announced: the loop's snapshot still ends within
    LOOP_SNAPSHOT_S, and a checkpoint then copies the whole WAL (a reader's mark holds back
    every frame after it)."""
    async def main() -> None:
        assert count(db) == 0
        assert count(db) == 0
        other.execute("INSERT INTO t VALUES (1)")
        assert count(db) == 0                                   # held
        busy, log, copied = other.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        assert copied < log                                     # the insert's frames wait
        await asyncio.sleep(2 * dbmodule.LOOP_SNAPSHOT_S)
        busy, log, copied = other.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        assert (busy, copied) == (0, log)
        assert count(db) == 1

    asyncio.run(main())


def test_the_loop_ends_its_snapshot_before_it_commits(db: Database, other: sqlite3.Connection) -> None:
    """Deliveries commit on the loop between its reads: a snapshot held across that commit
    kept a checkpoint from copying what came after its mark (SMTP ran ~10% slower)."""
    async def main() -> None:
        assert count(db) == 0
        assert count(db) == 0                                   # held
        other.execute("INSERT INTO t VALUES (1)")
        await db.write_ctx(lambda ctx: ctx.conn.execute("INSERT INTO t VALUES (2)"), on_loop=True)
        busy, log, copied = other.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        assert (busy, copied) == (0, log)
        assert count(db) == 2

    asyncio.run(main())


def test_a_snapshot_timer_firing_after_close_is_let_go(tmp_path: Path) -> None:
    """The timer that ends a held snapshot may fire after the database closed its reader
    connections: it ends nothing and raises nothing on the loop."""
    d = Database(tmp_path / "t.db", readers=1)
    d.open("CREATE TABLE t(a INTEGER)")
    errors: list[dict[str, object]] = []

    async def main() -> None:
        asyncio.get_running_loop().set_exception_handler(lambda loop, ctx: errors.append(ctx))
        assert count(d) == 0
        assert count(d) == 0                                    # begins the snapshot, and its timer
        d.close()
        await asyncio.sleep(2 * dbmodule.LOOP_SNAPSHOT_S)

    asyncio.run(main())
    assert errors == []
