"""SQLite off the event loop, with group commit.

One writer thread owns the write connection. Write jobs queued while it is busy are
run together in one transaction, each inside its own SAVEPOINT (so one failing job
rolls back alone), and committed with a single fsync; then every job's future is
resolved. Under concurrent load this turns N commits into one, which is where the
durable inbound rate comes from. Reads run on a small pool of reader threads with
their own connections (WAL lets them run beside the writer), fed by ``SimpleQueue``s
(a primary thread's, and an overflow one for the others): a read costs about half the
CPU of ``run_in_executor`` (no concurrent.futures Future chained to an asyncio one),
which is most of what a single-message IMAP command costs.

Invariant: a write job's future resolves only after COMMIT returned and the WAL holding
it was fsynced, and callbacks registered with ``after_commit`` (change-feed publication,
blob clean-up) run only then.

The fsync happens after the write lock is released (:meth:`Database._sync_wal`): the
transaction commits with ``synchronous=NORMAL`` (its frames written to the WAL, no sync)
while this process holds ``DATA/mailhaven.db.writelock``, and the WAL is fsynced outside it.
Processes sharing the database (SMTP workers) then hold the lock for their SQL only: with
the fsync inside it, two workers' commits took turns at 2-3 ms of fsync each and the lock
was busy 80% of the time while the cores idled. The fsync covers every frame written
before it, whoever wrote them, so a commit is durable once any fsync that began after it
returns; frames are not overwritten before a checkpoint has copied them into the
database file and synced it.

Deliveries commit on the event loop (``write_ctx(..., on_loop=True)``), and only their
fsync goes to the writer thread. A job on the writer thread runs a dozen statements, and
the stdlib driver releases the GIL around each one: with the loop busy running Python,
every statement's return waited for the GIL and handed it back, two thread switches a
statement (issue 18: at 10 sessions the writer thread took 0.55 ms of CPU a 4 KB message,
a third of the server's, its SQL ~0.15 ms of that). The jobs that become ready in one
loop pass run as one transaction there (a short one: ``synchronous=NORMAL``, no fsync),
the writer thread fsyncs the WAL, and only then are their futures resolved and their
after-commit callbacks run, as for any write. When the writer thread holds the
connection (its own batch) or another process holds the write lock, the
jobs go to the writer thread's queue instead: the loop never waits for a lock.

Reads on the event loop (``query_sync``, ``read_sync``: a few rows, no thread hop) share
one read transaction, held on the loop thread's reader connection for at most
``LOOP_SNAPSHOT_S``: a statement in a transaction of its own takes and drops a WAL read
mark (two ``fcntl`` calls) and walks the WAL index to begin, half of a one-row read's cost
(issue 18). The snapshot ends, at the next read, once :attr:`Database.generation` moved:
after every commit this process makes (before the job's future resolves, so code after
``await write(...)`` reads what it wrote) and every change another process tells it of
(:meth:`Database.changed`, from the change feed, before any subscriber hears of it). So a
session never reads a snapshot older than a change it was told of; a writer that tells
nobody (the ``sqlite3`` shell, an admin command) is seen within ``LOOP_SNAPSHOT_S``. A
timer ends an idle snapshot then too, so it never holds a checkpoint back for longer.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import queue
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from ..datadir import FILE_MODE, private_file
from .space import as_full, is_full

T = TypeVar("T")

_STOP = object()


@dataclass
class _Job:
    fn: Callable[[Any], Any]
    """Called with the connection, or with a :class:`WriteContext` when ``context``."""
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any]
    after_commit: list[Callable[[], None]] = field(default_factory=list)
    durable: bool = True
    """False: the commit need not be fsynced when no durable job shares it (see write)."""
    context: bool = False
    """``fn`` takes a :class:`WriteContext` (``write_ctx``). A flag, not a closure naming
    the job: such a closure made every write a reference cycle (job, closure, future,
    result) left to the cyclic collector, ~80 objects a delivery and one ~75 ms gen-0
    pause every few hundred deliveries, where reference counting now frees them at once."""


class WriteContext:
    """Handed to write jobs that need to run something after their commit."""

    def __init__(self, conn: sqlite3.Connection, job: _Job) -> None:
        self.conn = conn
        self._job = job

    def after_commit(self, callback: Callable[[], None]) -> None:
        """``callback`` runs on the job's event loop after the transaction committed."""
        self._job.after_commit.append(callback)


WRITER_CACHE_KB = 32 * 1024
"""Page cache of the writer connection (SQLite's default is 2 MB). A flag change on a big
mailbox (``STORE 1:*``) rewrites a row per message, about 4,000 pages for 10,000 messages;
with them in cache the next one need not read them again. Fills only as writes touch pages."""
WAL_AUTOCHECKPOINT = 16_384
"""Pages of WAL (64 MB) past which a commit copies the WAL into the database itself: a
backstop. Checkpoints run beside the writer (:meth:`Database.checkpoint`, called by the
search indexer's loop), so a delivery's commit does not pay for one: at SQLite's default
(1,000 pages) the commit that crossed it took 300-500 ms under load (issue 18's bursts)."""


LOOP_SNAPSHOT_S = 0.02
"""Longest a read transaction on the event loop's reader connection is kept for the loop's
next reads (see the module's docstring): about 70 one-message FETCHes at the rate the
bench drives, and the longest a change nobody announced goes unseen by them."""


def connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, timeout=30.0, isolation_level=None, check_same_thread=False)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA journal_mode=WAL")
    # FULL: the WAL is fsynced at every commit, so a committed row survives power loss.
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute("PRAGMA busy_timeout=30000")
    return conn


def fsync_file(path: str) -> None:
    """fdatasync ``path`` (the WAL: everything written to it so far reaches the disk)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fdatasync(fd)
    finally:
        os.close(fd)


@dataclass
class _Sync:
    """Transactions committed on the event loop, waiting for the writer thread's fsync."""

    outcomes: list[tuple[_Job, bool, Any]]
    committed: list[Callable[[], None]]
    """The batch hooks' callbacks (run once the commit is durable)."""
    loop: asyncio.AbstractEventLoop | None = None
    """The loop that committed it, told when the fsync is done (:meth:`Database._synced`)."""

    def failed(self, exc: Exception) -> _Sync:
        """Committed but not known to be on disk (the fsync failed): every job fails, no
        after-commit callback runs."""
        return _Sync([(job, False, exc) for job, _, _ in self.outcomes], [], self.loop)


def _settle(outcomes: list[tuple[_Job, bool, Any]]) -> None:
    """On the event loop: run each job's after-commit callbacks and resolve its future."""
    for job, ok, value in outcomes:
        if job.future.done():
            continue                                    # the caller was cancelled
        if ok:
            for cb in job.after_commit:
                try:
                    cb()
                except Exception as exc:  # noqa: BLE001 - the others must still run
                    job.loop.call_exception_handler(
                        {"message": "after-commit callback failed", "exception": exc})
            job.future.set_result(value)
        else:
            job.future.set_exception(value)


async def _full_as_storage_full(future: asyncio.Future[Any]) -> Any:
    """A write that failed for want of disk space (SQLITE_FULL) raises :class:`StorageFull`,
    the temporary failure every protocol answers the same way."""
    try:
        return await future
    except sqlite3.Error as exc:
        if is_full(exc):
            raise as_full(exc) from exc
        raise


def _deliver(future: asyncio.Future[Any], ok: bool, value: Any) -> None:
    if future.done():
        return                                          # the caller was cancelled
    if ok:
        future.set_result(value)
    else:
        future.set_exception(value)


class _ReaderPool:
    """Threads that run read jobs and hand each result straight to its event loop.

    Reads go to one primary thread while it is free and to the others only when it is
    busy: waking the same warm thread each time costs about half the CPU of spreading
    reads round-robin over the pool, and a long read (a big SEARCH) still does not hold
    up the short ones behind it."""

    def __init__(self, size: int, run: Callable[[Callable[[sqlite3.Connection], Any]], Any]) -> None:
        self._size = max(1, size)
        self._run = run
        self._primary: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._overflow: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._primary_busy = False
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    def submit(self, fn: Callable[[sqlite3.Connection], Any]) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        job = (fn, loop, future)
        if not self._threads:
            self._start(self._primary, primary=True)
        if (self._primary_busy or not self._primary.empty()) and self._size > 1:
            if len(self._threads) < self._size and self._overflow.qsize() >= len(self._threads) - 1:
                self._start(self._overflow, primary=False)
            self._overflow.put(job)
        else:
            self._primary.put(job)
        return future

    def _start(self, jobs: queue.SimpleQueue[Any], *, primary: bool) -> None:
        with self._lock:
            if len(self._threads) < self._size:
                t = threading.Thread(target=self._work, args=(jobs, primary), daemon=True,
                                     name=f"sqlite-read_{len(self._threads)}")
                self._threads.append(t)
                t.start()

    def _work(self, jobs: queue.SimpleQueue[Any], primary: bool) -> None:
        while True:
            job = jobs.get()
            if job is _STOP:
                return
            fn, loop, future = job
            if primary:
                self._primary_busy = True
            try:
                result: tuple[bool, Any] = (True, self._run(fn))
            except BaseException as exc:  # noqa: BLE001 - handed to the caller
                result = (False, exc)
            if primary:
                self._primary_busy = False
            try:
                loop.call_soon_threadsafe(_deliver, future, *result)
            except RuntimeError:
                pass                                    # loop closed: the caller is gone
            del job, fn, loop, future, result

    def shutdown(self) -> None:
        with self._lock:
            threads, self._threads = self._threads, []
        if threads:
            self._primary.put(_STOP)
            for _ in threads[1:]:
                self._overflow.put(_STOP)
        for t in threads:
            t.join()


class Database:
    def __init__(self, path: Path, readers: int = 3) -> None:
        self.path = path
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._writer: threading.Thread | None = None
        self._write_conn: sqlite3.Connection | None = None
        self._reader_local = threading.local()
        self._readers = _ReaderPool(readers, self._read_in_transaction)
        self._schema: list[str] = []
        self._attached: list[tuple[str, Path]] = []
        self._reader_conns: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._lock_fd: int | None = None
        """``DATA/mailhaven.db.writelock``, flocked around each write transaction."""
        self._batch_hooks: list[Callable[[sqlite3.Connection], Callable[[], None] | None]] = []
        self._jobs_after = 0
        """Jobs of the running write transaction after the one running now."""
        self.commits = 0
        """Write transactions run (by this process), so a checkpoint is run only after some."""
        self._checkpoint_conn: sqlite3.Connection | None = None
        self._conn_lock = threading.Lock()
        """Held by whoever runs a transaction on the write connection: the writer thread,
        or the event loop (``on_loop`` jobs), which never waits for it."""
        self._loop_jobs: dict[asyncio.AbstractEventLoop, list[_Job]] = {}
        """``on_loop`` jobs waiting for their loop's pass that runs them (:meth:`_run_on_loop`)."""
        self.generation = 0
        """Moved after every commit of this process and every change another process told
        it of: a snapshot the loop holds from before it is not read again."""
        self._generation_lock = threading.Lock()
        self._loop_syncing: set[asyncio.AbstractEventLoop] = set()
        """Loops whose last commit waits for its fsync: their next jobs wait for it too and
        then commit together (one transaction and one fsync for all that arrived meanwhile,
        as the writer thread's group commit does; a transaction a loop pass wrote the same
        hot pages into the WAL once per pass)."""

    def before_each_transaction(self, hook: Callable[[sqlite3.Connection], Callable[[], None] | None]) -> None:
        """``hook(conn)`` runs on the writer thread at the start of every write transaction,
        before its jobs; it may return a callable that runs there once that transaction has
        committed. If the hook fails, the whole transaction fails (every job in it)."""
        self._batch_hooks.append(hook)

    def attach(self, alias: str, path: Path) -> None:
        """Reader connections (made from now on) attach the database at ``path`` as ``alias``
        (the search index's, searchdb.py). Never the write connection: its BEGIN IMMEDIATE
        would take the write lock of every attached database too."""
        self._attached.append((alias, path))

    def add_schema(self, sql: str) -> None:
        """Extra ``CREATE TABLE IF NOT EXISTS`` statements, run by :meth:`open`."""
        self._schema.append(sql)

    def open(self, schema: str) -> None:
        self._lock_fd = os.open(str(self.path) + ".writelock", os.O_RDWR | os.O_CREAT, FILE_MODE)
        private_file(self.path)     # SQLite gives the WAL and shared-memory files its mode
        self._write_conn = connect(self.path)
        # Commits write the WAL; _run_batch fsyncs it once the write lock is released.
        self._write_conn.execute("PRAGMA synchronous=NORMAL")
        self._write_conn.execute(f"PRAGMA cache_size=-{WRITER_CACHE_KB}")
        self._write_conn.execute(f"PRAGMA wal_autocheckpoint={WAL_AUTOCHECKPOINT}")
        self._write_conn.executescript(schema)
        for extra in self._schema:
            self._write_conn.executescript(extra)
        self._writer = threading.Thread(target=self._write_loop, name="sqlite-write", daemon=True)
        self._writer.start()

    def ensure_schema(self, sql: str) -> None:
        """Run more idempotent schema after open (for extension modules), on its own
        connection; SQLite's busy timeout serialises it with the writer thread."""
        self._schema.append(sql)
        if self._write_conn is not None:
            conn = connect(self.path)
            try:
                conn.executescript(sql)
            finally:
                conn.close()
            self.changed()

    def changed(self) -> None:
        """The database changed (this process committed, or another process said so): the
        loop's reads from now on take a new snapshot. Any thread."""
        with self._generation_lock:
            self.generation += 1

    def checkpoint(self) -> None:
        """Copy committed WAL frames into the database (blocking: run it in a thread). PASSIVE,
        on a connection of its own: it takes no write lock, so deliveries commit meanwhile."""
        with self._lock:
            if self._checkpoint_conn is None:
                self._checkpoint_conn = connect(self.path)
            conn = self._checkpoint_conn
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)")

    def close(self) -> None:
        if self._writer is not None:
            self._queue.put(_STOP)
            self._writer.join()
            self._writer = None
        self._readers.shutdown()
        with self._lock:
            for c in self._reader_conns:
                c.close()
            self._reader_conns.clear()
            if self._checkpoint_conn is not None:
                self._checkpoint_conn.close()
                self._checkpoint_conn = None
        if self._write_conn is not None:
            self._write_conn.close()
            self._write_conn = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    # -- writes -------------------------------------------------------------
    async def write(self, fn: Callable[[sqlite3.Connection], T], *, durable: bool = True) -> T:
        """Run ``fn(conn)`` in a (group-)committed transaction; returns after COMMIT.

        ``durable=False`` (work a crash may lose: rate-limit counts) lets a transaction
        of such jobs alone commit with ``synchronous=NORMAL``: no fsync, so it holds the
        write lock for its work only. WAL order still holds: the next durable commit's
        fsync covers it, and a crash before that rolls it back whole."""
        loop = asyncio.get_running_loop()
        job = _Job(fn=fn, loop=loop, future=loop.create_future(), durable=durable)
        self._queue.put(job)
        return await _full_as_storage_full(job.future)

    def writes_waiting(self) -> bool:
        """Write jobs are queued for the writer thread (it is busy or about to be), or wait
        in the running transaction after the current job (a job may end early for them)."""
        return self._jobs_after > 0 or not self._queue.empty()

    async def write_ctx(self, fn: Callable[[WriteContext], T], *, on_loop: bool = False) -> T:
        """Like :meth:`write`, but ``fn`` receives a :class:`WriteContext`.

        ``on_loop``: a short job (a delivery: a few rows) run on the event loop with the
        others of this loop pass, its fsync on the writer thread (see the module's
        docstring). Never for a job whose work grows with a mailbox."""
        loop = asyncio.get_running_loop()
        job = _Job(fn=fn, loop=loop, future=loop.create_future(), context=True)
        if on_loop and self._write_conn is not None:
            waiting = self._loop_jobs.get(loop)
            if waiting is None:
                waiting = self._loop_jobs[loop] = []
                if loop not in self._loop_syncing:        # else _synced runs them
                    loop.call_soon(self._run_on_loop, loop)
            waiting.append(job)
        else:
            self._queue.put(job)
        return await _full_as_storage_full(job.future)

    def _run_on_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        """On the event loop: this pass's ``on_loop`` jobs in one transaction, handed to the
        writer thread for the fsync; to its queue instead when the connection or the
        write lock is busy (the loop never waits for either)."""
        batch = self._loop_jobs.pop(loop, None)
        if not batch:
            return
        self._end_held()
        conn = self._write_conn
        if conn is None or not self._conn_lock.acquire(blocking=False):
            self._to_writer(batch)
            return
        try:
            if self._lock_fd is not None:
                try:
                    fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    self._to_writer(batch)
                    return
            try:
                # A writer outside our lock (the sqlite3 shell) makes BEGIN fail at once
                # instead of making the loop wait for it.
                conn.execute("PRAGMA busy_timeout=0")
                try:
                    conn.execute("BEGIN IMMEDIATE")
                except sqlite3.OperationalError:
                    self._to_writer(batch)
                    return
                finally:
                    conn.execute("PRAGMA busy_timeout=30000")
                outcomes, committed = self._run_transaction(conn, batch, begun=True)
                self.commits += 1
            finally:
                if self._lock_fd is not None:
                    fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
        finally:
            self._conn_lock.release()
        if committed is None:                    # failed as a whole: nothing to make durable
            self._resolve_all(outcomes)
            return
        self._loop_syncing.add(loop)
        self._queue.put(_Sync(outcomes, committed, loop))

    def _synced(self, loop: asyncio.AbstractEventLoop) -> None:
        """On the loop: its last commit is durable; the jobs that arrived meanwhile run now."""
        self._loop_syncing.discard(loop)
        if loop in self._loop_jobs:
            self._run_on_loop(loop)

    def _to_writer(self, batch: list[_Job]) -> None:
        for job in batch:
            self._queue.put(job)

    def _write_loop(self) -> None:
        conn = self._write_conn
        assert conn is not None
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            batch: list[_Job] = []
            syncs: list[_Sync] = []
            (syncs if isinstance(item, _Sync) else batch).append(item)
            stop = False
            while len(batch) < 512:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is _STOP:
                    stop = True
                    break
                (syncs if isinstance(nxt, _Sync) else batch).append(nxt)
            if batch:
                # Its fsync, after its commit, covers the loop's commits queued before it.
                self._run_batch(conn, batch, syncs)
            elif syncs:
                self._sync_loop_commits(syncs)
            if stop:
                return

    def _run_batch(self, conn: sqlite3.Connection, batch: list[_Job], syncs: list[_Sync] | None = None) -> None:
        # Processes sharing the database (SMTP workers, admin commands) take turns at the
        # write lock through flock: the next in line wakes the moment it is released,
        # where SQLite's own busy handler would sleep and poll.
        with self._conn_lock:
            if self._lock_fd is not None:
                fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
            try:
                outcomes, committed = self._run_transaction(conn, batch)
                self.commits += 1
            finally:
                if self._lock_fd is not None:
                    fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
        # Durable: the fsync, outside the lock (see the module's docstring). A batch of
        # non-durable jobs alone is not synced; the next durable commit's fsync covers it.
        syncs = syncs or []
        if (committed is not None and any(job.durable for job in batch)) or syncs:
            try:
                self._sync_wal()
            except OSError as exc:       # committed, but not known to be on disk: no 250
                outcomes = [(job, False, exc) for job in batch]
                committed = []
                syncs = [s.failed(exc) for s in syncs]
        for done in committed or ():
            done()
        self._settle_syncs(syncs)
        self._resolve_all(outcomes)

    def _sync_loop_commits(self, syncs: list[_Sync]) -> None:
        """On the writer thread: one fsync for the transactions the loop committed."""
        try:
            self._sync_wal()
        except OSError as exc:           # committed, but not known to be on disk: no 250
            syncs = [s.failed(exc) for s in syncs]
        self._settle_syncs(syncs)

    def _settle_syncs(self, syncs: list[_Sync]) -> None:
        for sync in syncs:
            for done in sync.committed:
                done()
            self._resolve_all(sync.outcomes)
            if sync.loop is not None:
                try:
                    sync.loop.call_soon_threadsafe(self._synced, sync.loop)
                except RuntimeError:
                    pass                                # loop closed: the callers are gone

    def _sync_wal(self) -> None:
        fsync_file(str(self.path) + "-wal")

    def _run_transaction(self, conn: sqlite3.Connection, batch: list[_Job], *, begun: bool = False) -> tuple[
            list[tuple[_Job, bool, Any]], list[Callable[[], None]] | None]:
        """Run ``batch`` in one transaction (``begun``: BEGIN ran already); its outcomes
        and, when it committed, the batch hooks' callbacks to run once it is durable (None:
        it failed as a whole)."""
        results: list[tuple[bool, Any]] = []
        try:
            if not begun:
                conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            return [(job, False, exc) for job in batch], None
        committed: list[Callable[[], None]] = []
        try:
            for hook in self._batch_hooks:
                done = hook(conn)
                if done is not None:
                    committed.append(done)
            for i, job in enumerate(batch):
                self._jobs_after = len(batch) - i - 1
                try:
                    conn.execute("SAVEPOINT job")
                    value = job.fn(WriteContext(conn, job) if job.context else conn)
                    conn.execute("RELEASE job")
                    results.append((True, value))
                except BaseException as exc:  # noqa: BLE001 - handed to the caller
                    try:
                        conn.execute("ROLLBACK TO job")
                        conn.execute("RELEASE job")
                    except sqlite3.Error:
                        pass
                    job.after_commit.clear()
                    results.append((False, exc))
            self._jobs_after = 0
            conn.execute("COMMIT")
            self.changed()
        except sqlite3.Error as exc:
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            return [(job, False, exc) for job in batch], None
        return [(job, ok, value) for job, (ok, value) in zip(batch, results, strict=True)], committed

    @staticmethod
    def _resolve_all(outcomes: list[tuple[_Job, bool, Any]]) -> None:
        """Hand the outcomes to their event loops: one wake-up per loop, not one per job
        (each ``call_soon_threadsafe`` writes to the loop's self-pipe)."""
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[_Job, bool, Any]]] = {}
        for outcome in outcomes:
            by_loop.setdefault(outcome[0].loop, []).append(outcome)
        for loop, items in by_loop.items():
            try:
                loop.call_soon_threadsafe(_settle, items)
            except RuntimeError:
                pass  # loop closed: the callers are gone

    # -- reads --------------------------------------------------------------
    def _reader(self) -> sqlite3.Connection:
        conn = getattr(self._reader_local, "conn", None)
        if conn is None:
            conn = connect(self.path)
            conn.execute("PRAGMA query_only=ON")
            for alias, path in self._attached:
                conn.execute("ATTACH DATABASE ? AS " + alias, (str(path),))
            self._reader_local.conn = conn
            with self._lock:
                self._reader_conns.append(conn)
        return conn

    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(conn)`` on a reader thread inside one read transaction (a snapshot)."""
        return await self._readers.submit(fn)  # type: ignore[no-any-return]

    def query_sync(self, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        """One SELECT as plain tuples, like :meth:`read_sync` (same connection, same uses)
        but without a BEGIN and COMMIT of its own: on the event loop inside the snapshot
        the loop holds, elsewhere a single statement is its own read transaction."""
        loop = _running_loop()
        cur = (self._reader_alone() if loop is None else self._loop_snapshot(loop)).cursor()
        cur.row_factory = None
        return cur.execute(sql, params).fetchall()

    def read_sync(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """:meth:`read` for code already running off the event loop (on the calling
        thread, with that thread's own reader connection); also, on the event loop, for
        a read of a few rows from pages SQLite has cached (see ``SMALL_READ`` in
        sqlitemessages.py): a WAL reader takes no lock a writer holds, and a thread hop
        there costs more than the read, most of all on a busy machine. On the loop, ``fn``
        runs in the snapshot the loop holds (see the module's docstring)."""
        loop = _running_loop()
        if loop is None:
            return self._read_in_transaction(fn)
        return fn(self._loop_snapshot(loop))

    def _read_in_transaction(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        conn = self._reader_alone()
        conn.execute("BEGIN")
        try:
            return fn(conn)
        finally:
            conn.execute("COMMIT")

    def _reader_alone(self) -> sqlite3.Connection:
        """The calling thread's reader connection, in no transaction (a snapshot an event
        loop that has since stopped held on this thread ends)."""
        conn = self._reader()
        _end_read(conn)
        return conn

    def _loop_snapshot(self, loop: asyncio.AbstractEventLoop) -> sqlite3.Connection:
        """The reader connection of ``loop``'s thread, inside the read transaction held for
        the loop's reads. The first read after a change runs alone (a statement is its own
        transaction, as off the loop); a read with no change since the one before begins a
        snapshot, which the next ones share until the database changes, the loop commits
        (:meth:`_end_held`) or ``LOOP_SNAPSHOT_S`` passes. So a snapshot is held only while
        reads come without writes between them: never across this process's commits, where
        its WAL read mark would keep a checkpoint from finishing (SMTP deliveries ran ~10%
        slower when it was)."""
        conn = self._reader()
        local = self._reader_local
        now = (loop, self.generation)
        if conn.in_transaction:
            if getattr(local, "held", None) == now:
                return conn
            conn.execute("COMMIT")
        if getattr(local, "seen", None) != now:
            local.seen = now
            return conn                     # the first read since a change: alone
        local.held = now                    # taken before BEGIN: a commit after it moves it
        conn.execute("BEGIN")
        local.snapshots = number = getattr(local, "snapshots", 0) + 1
        loop.call_later(LOOP_SNAPSHOT_S, self._end_snapshot, conn, number)
        return conn

    def _end_held(self) -> None:
        """On the event loop, before it commits: the snapshot its reads hold ends."""
        conn = getattr(self._reader_local, "conn", None)
        if conn is not None:
            _end_read(conn, quiet=True)

    def _end_snapshot(self, conn: sqlite3.Connection, number: int) -> None:
        """On the loop, ``LOOP_SNAPSHOT_S`` after snapshot ``number`` began: it ends if it
        is still held, so its WAL read mark holds no checkpoint back for longer."""
        local = self._reader_local
        if getattr(local, "snapshots", None) != number:
            return
        with contextlib.suppress(sqlite3.Error):        # closed with the database meanwhile
            _end_read(conn)


def _end_read(conn: sqlite3.Connection, *, quiet: bool = False) -> None:
    """``conn``'s read transaction, if it is in one, ends (a COMMIT: it wrote nothing).
    ``quiet``: a COMMIT that fails is let go. Either way a closed connection raises
    (``sqlite3.ProgrammingError``, at ``in_transaction``)."""
    if conn.in_transaction:
        if not quiet:
            conn.execute("COMMIT")
            return
        with contextlib.suppress(sqlite3.Error):
            conn.execute("COMMIT")


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None
