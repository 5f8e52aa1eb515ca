"""Message bytes, content-addressed by sha256: small ones in the database, large ones in files.

- A blob of at most :data:`INLINE_MAX` bytes is a row of ``blob_data`` in the SQLite
  database, written through the group-committing writer thread: many messages arriving at
  once share one fsync (the WAL commit), instead of paying for a file, its fsync, a rename
  and a directory fsync each.
- A larger blob is streamed into ``DATA/tmp``, fsynced, renamed to
  ``DATA/blobs/ab/cd/abcd...`` (the full hex digest as file name) and its directory
  fsynced.

Either way :meth:`BlobWriter.finish` returns only once the bytes are durable, so a row that
names a blob can never point at missing or partial bytes, whatever the moment of a crash.
``finish(deferred=True)`` stages a small blob instead: its row is inserted at the start of
the database's next write transaction (``Database.before_each_transaction``), so the SMTP
delivery that names it commits both with one fsync, not one each; any write queued after
``finish`` returned, and so any row naming the blob, commits with or after it.
Orphans (bytes whose rows never committed) are harmless and removed by the collector after
a grace period. Readers look in the files first, then in the table: a data directory from
before inline blobs existed reads unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import os
import sqlite3
import tempfile
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Executor
from pathlib import Path
from threading import Lock
from typing import TYPE_CHECKING, Any

from ..datadir import private_dir
from ..pieces import Pieces
from .api import BlobRef, NotFound
from .space import as_full, is_full

if TYPE_CHECKING:
    from .db import Database

INLINE_MAX = 128 * 1024
"""Largest blob kept in the database (most mail is smaller; attachments usually are not)."""

RECENT_BYTES = 8 * 1024 * 1024
"""Recently written inline blobs kept in memory: delivery reads a blob back right after
writing it (to summarise it), and should not need a database read for that."""

INLINE_JOIN = "LEFT JOIN blob_data b ON b.id = m.blob_id"
"""Joined to ``messages m``, ``b.data`` is a message's inline bytes (NULL: in a file, or
written and not yet inserted): see :meth:`FileBlobStore.complete_rows`."""

SCHEMA = """
CREATE TABLE IF NOT EXISTS blob_data (
    id TEXT PRIMARY KEY,
    data BLOB NOT NULL,
    created REAL NOT NULL
);
"""


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class FileBlobWriter:
    """Streams one blob: into memory while it is small, then into a temporary file.

    In memory it keeps the pieces written and joins them once at the end (a bytearray
    grown by each piece, then copied into ``bytes``, copied a 100 KB message two or three
    times: issue 18)."""

    def __init__(self, store: FileBlobStore) -> None:
        self._store = store
        self._pieces: Pieces | None = Pieces()
        self._file: io.BufferedWriter | None = None
        self._tmp_path: Path | None = None
        self._hash = hashlib.sha256()
        self.size = 0
        self._done = False

    def write(self, data: bytes) -> None:
        """Raises :class:`StorageFull` on a full disk, the temporary file already removed."""
        self._hash.update(data)
        self.size += len(data)
        try:
            if self._pieces is not None:
                if self._pieces.size + len(data) <= self._store.inline_max:
                    self._pieces.append(data)
                    return
                self._spill()                  # the pieces so far (never a copy of a big ``data``)
            assert self._file is not None
            self._file.write(data)
        except OSError as exc:
            self.abort()
            if is_full(exc):
                raise as_full(exc) from exc
            raise

    def _spill(self) -> None:
        assert self._pieces is not None
        fd, name = tempfile.mkstemp(dir=self._store.tmp_dir, prefix="blob-")
        f = open(fd, "wb", buffering=256 * 1024)  # noqa: SIM115 - closed by finish()/abort()
        assert isinstance(f, io.BufferedWriter)
        self._file, self._tmp_path = f, Path(name)
        f.writelines(self._pieces.parts())
        self._pieces = None

    async def finish(self, *, deferred: bool = False) -> BlobRef:
        """Durable on return. On a full disk raises :class:`StorageFull` (from the file
        or from the database) with nothing left behind in ``DATA/tmp``. ``deferred``: an
        inline blob is durable once the next write transaction committed instead."""
        if self._done:
            raise RuntimeError("blob writer already finished")
        digest = self._hash.hexdigest()
        try:
            if self._pieces is not None:
                data, self._pieces = self._pieces.join(), None
                self._done = True
                if deferred:
                    self._store.stage_inline(digest, data)
                else:
                    await self._store.put_inline(digest, data)
            else:
                assert self._file is not None and self._tmp_path is not None
                loop = asyncio.get_running_loop()
                await loop.run_in_executor(self._store.executor, self._store._commit_file, self._file,
                                           self._tmp_path, digest)
                self._done = True
        except BaseException as exc:
            self.abort()
            if is_full(exc):
                raise as_full(exc) from exc
            raise
        return BlobRef(id=digest, size=self.size)

    def abort(self) -> None:
        """Drop what was written. Never raises (it runs in clean-up paths): the file is
        closed without flushing what a full disk refused, and always removed."""
        if self._done:
            return
        self._done = True
        self._pieces = None
        f, self._file = self._file, None
        if f is not None:
            with contextlib.suppress(OSError, ValueError):
                f.close()
        if self._tmp_path is not None:
            with contextlib.suppress(OSError):
                self._tmp_path.unlink(missing_ok=True)
            self._tmp_path = None


FILE_PIECE = 256 * 1024
"""Piece size of :meth:`FileBlobStore.chunks` (a file read is cheap; keep them small)."""

STALE_TMP = 3600.0
"""A spool file untouched this long belongs to no live transfer."""


class FileBlobStore:
    def __init__(self, root: Path, executor: Executor | None = None, db: Database | None = None,
                 inline_max: int = INLINE_MAX) -> None:
        self.root = root / "blobs"
        self.tmp_dir = root / "tmp"
        self.executor = executor  # None: the loop's default executor
        self.db = db
        """The database holding small blobs; None keeps every blob in a file."""
        self.inline_max = inline_max if db is not None else -1
        self._recent: OrderedDict[str, bytes] = OrderedDict()
        self._recent_size = 0
        self._recent_lock = Lock()
        self._staged: dict[str, bytes] = {}
        """Inline blobs whose row the next write transaction inserts (``finish(deferred=True)``)."""
        if db is not None:
            db.before_each_transaction(self._insert_staged)

    def prepare(self) -> None:
        """Create the directories and remove what a crashed process left in ``DATA/tmp``.
        Admin commands open the store while the server runs, so a file written to in the
        last :data:`STALE_TMP` seconds may be a message arriving now and is left alone
        (every transfer writes at least once a minute or is cut off, see [limits])."""
        private_dir(self.root)
        private_dir(self.tmp_dir)
        cutoff = time.time() - STALE_TMP
        for leftover in self.tmp_dir.glob("blob-*"):
            with contextlib.suppress(OSError):
                if leftover.stat().st_mtime < cutoff:
                    leftover.unlink(missing_ok=True)

    def path(self, blob_id: str) -> Path:
        return self.root / blob_id[:2] / blob_id[2:4] / blob_id

    def file_path(self, blob_id: str) -> str | None:
        """The file holding the blob, or None when it is not a file (an inline blob)."""
        path = os.path.join(self.root, blob_id[:2], blob_id[2:4], blob_id)
        return path if os.path.isfile(path) else None

    def writer(self) -> FileBlobWriter:
        return FileBlobWriter(self)

    async def put(self, data: bytes) -> BlobRef:
        w = self.writer()
        try:
            w.write(data)
            return await w.finish()
        except BaseException:
            w.abort()
            raise

    # -- inline blobs ---------------------------------------------------------------------
    async def put_inline(self, digest: str, data: bytes) -> None:
        """Durable on return: the row is in a committed transaction (group commit)."""
        assert self.db is not None
        now = time.time()

        def insert(conn: sqlite3.Connection) -> None:
            # An existing row (same bytes) gets a fresh ``created``, so the collector's
            # grace period protects it until the row about to name it has committed.
            conn.execute("INSERT INTO blob_data (id, data, created) VALUES (?,?,?) "
                         "ON CONFLICT(id) DO UPDATE SET created=excluded.created", (digest, data, now))

        await self.db.write(insert)
        self._remember(digest, data)

    def stage_inline(self, digest: str, data: bytes) -> None:
        """Have the next write transaction insert the row (durable once it committed)."""
        with self._recent_lock:
            self._staged[digest] = data

    def _insert_staged(self, conn: sqlite3.Connection) -> Callable[[], None] | None:
        """On the writer thread, first in every write transaction. A failure fails the
        transaction and keeps the blobs staged for the next one: a row naming one of them
        may be queued already and must never commit without it."""
        with self._recent_lock:
            if not self._staged:
                return None
            staged = list(self._staged.items())
        now = time.time()
        conn.executemany("INSERT INTO blob_data (id, data, created) VALUES (?,?,?) "
                         "ON CONFLICT(id) DO UPDATE SET created=excluded.created",
                         [(digest, data, now) for digest, data in staged])

        def committed() -> None:
            with self._recent_lock:
                for digest, data in staged:
                    if self._staged.get(digest) is data:
                        del self._staged[digest]
            for digest, data in staged:
                self._remember(digest, data)
        return committed

    def _remember(self, digest: str, data: bytes) -> None:
        with self._recent_lock:
            if digest in self._recent:
                self._recent.move_to_end(digest)
                return
            self._recent[digest] = data
            self._recent_size += len(data)
            while self._recent_size > RECENT_BYTES:
                _, old = self._recent.popitem(last=False)
                self._recent_size -= len(old)

    def recent(self, blob_id: str) -> bytes | None:
        """The bytes of a recently written (or staged) inline blob, from memory (no I/O), else None."""
        with self._recent_lock:
            return self._recent.get(blob_id) or self._staged.get(blob_id)

    def _in_memory(self, blob_ids: list[str]) -> dict[str, bytes]:
        """:meth:`recent` of several blobs under one hold of the lock: those it has."""
        found: dict[str, bytes] = {}
        with self._recent_lock:
            for blob_id in blob_ids:
                data = self._recent.get(blob_id) or self._staged.get(blob_id)
                if data is not None:
                    found[blob_id] = data
        return found

    def _inline(self, blob_id: str) -> bytes | None:
        data = self.recent(blob_id)
        if data is not None or self.db is None:
            return data
        row = self.db.read_sync(
            lambda conn: conn.execute("SELECT data FROM blob_data WHERE id=?", (blob_id,)).fetchone())
        return bytes(row[0]) if row is not None else None

    # -- reading ----------------------------------------------------------------------------
    def read_sync(self, blob_id: str) -> bytes:
        """Off the event loop only (a file read or a database read)."""
        try:
            with open(self.path(blob_id), "rb") as f:
                return f.read()
        except FileNotFoundError:
            pass
        data = self._inline(blob_id)
        if data is None:
            raise NotFound(f"no blob {blob_id}")
        return data

    async def read(self, blob_id: str) -> bytes:
        data = self.recent(blob_id)          # just written (a delivery's own message): no trip off the loop
        if data is not None:
            return data
        return await asyncio.get_running_loop().run_in_executor(self.executor, self.read_sync, blob_id)

    def read_many_sync(self, blob_ids: list[str]) -> list[bytes]:
        """Several blobs in one trip off the event loop: recent ones from memory, inline
        ones with one query per 500, the rest from their files."""
        if self.db is None:
            return self.read_many_in(None, blob_ids)
        return self.db.read_sync(lambda conn: self.read_many_in(conn, blob_ids))

    def read_many_in(self, conn: sqlite3.Connection | None, blob_ids: list[str]) -> list[bytes]:
        """:meth:`read_many_sync` inside a read transaction the caller holds on ``conn``."""
        found = self._in_memory(blob_ids)
        wanted = [b for b in dict.fromkeys(blob_ids) if b not in found]
        if wanted and conn is not None:
            found.update(self._inline_many(conn, wanted))
        return self._assemble(blob_ids, found)

    def read_inline_in(self, conn: sqlite3.Connection, blob_ids: list[str]) -> list[bytes] | None:
        """:meth:`read_many_in` when every blob is in memory or a ``blob_data`` row (no
        file to open: the caller may be the event loop); None when one is a file."""
        if self.inline_max < 0:
            return None
        found = self._in_memory(blob_ids)
        wanted = [b for b in dict.fromkeys(blob_ids) if b not in found]
        if wanted:
            found.update(self._inline_many(conn, wanted))
        if len(found) < len(set(blob_ids)):
            return None
        return [found[b] for b in blob_ids]

    def complete_rows(self, rows: list[Any], *, files: bool) -> list[tuple[Any, bytes]] | None:
        """``(key, bytes)`` for rows ``(key, blob id, inline data or None)`` read with
        :data:`INLINE_JOIN` (the inline bytes come with the row: one B-tree walk per blob
        instead of a second ``IN`` query, 4.9 -> 3.0 µs a message): a row without inline
        data from memory (written, not yet inserted) or, with ``files``, from its file;
        None when one needs a file and ``files`` is False (the caller is the event loop)."""
        out: list[tuple[Any, bytes]] = []
        for key, blob_id, data in rows:
            if data is None:
                data = self.recent(blob_id)
                if data is None:
                    if not files:
                        return None
                    data = self._assemble([blob_id], {})[0]
            out.append((key, data))
        return out

    @staticmethod
    def _inline_many(conn: sqlite3.Connection, blob_ids: list[str]) -> dict[str, bytes]:
        found: dict[str, bytes] = {}
        for i in range(0, len(blob_ids), 500):
            chunk = blob_ids[i:i + 500]
            rows = conn.execute(
                f"SELECT id, data FROM blob_data WHERE id IN ({','.join('?' * len(chunk))})", chunk).fetchall()
            found.update((r[0], bytes(r[1])) for r in rows)
        return found

    def _assemble(self, blob_ids: list[str], found: dict[str, bytes]) -> list[bytes]:
        """In the order asked; what is not in ``found`` comes from its file."""
        out = []
        for blob_id in blob_ids:
            data = found.get(blob_id)
            if data is None:
                try:
                    with open(self.path(blob_id), "rb") as f:
                        data = f.read()
                except FileNotFoundError:
                    raise NotFound(f"no blob {blob_id}") from None
                found[blob_id] = data
            out.append(data)
        return out

    async def read_many(self, blob_ids: list[str]) -> list[bytes]:
        return await asyncio.get_running_loop().run_in_executor(self.executor, self.read_many_sync, blob_ids)

    # -- reading a range (large messages, never whole) ------------------------------------
    def size_sync(self, blob_id: str) -> int:
        try:
            return os.stat(self.path(blob_id)).st_size
        except FileNotFoundError:
            pass
        data = self._inline(blob_id)
        if data is None:
            raise NotFound(f"no blob {blob_id}")
        return len(data)

    def read_range_sync(self, blob_id: str, start: int, length: int) -> bytes:
        """Off the event loop only: ``pread`` of the file, or a slice of an inline blob."""
        start, length = max(0, start), max(0, length)
        try:
            fd = os.open(self.path(blob_id), os.O_RDONLY)
        except FileNotFoundError:
            data = self._inline(blob_id)
            if data is None:
                raise NotFound(f"no blob {blob_id}") from None
            return bytes(data[start:start + length])
        try:
            return os.pread(fd, length, start)
        finally:
            os.close(fd)

    async def read_range(self, blob_id: str, start: int, length: int) -> bytes:
        return await asyncio.get_running_loop().run_in_executor(
            self.executor, self.read_range_sync, blob_id, start, length)

    async def chunks(self, blob_id: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        """The bytes ``[start, end)`` in pieces of at most :data:`FILE_PIECE`, each read off
        the event loop from the open file (an inline blob is small: one slice)."""
        loop = asyncio.get_running_loop()
        try:
            f = await loop.run_in_executor(self.executor, open, self.path(blob_id), "rb")
        except FileNotFoundError:
            data = await loop.run_in_executor(self.executor, self._inline, blob_id)
            if data is None:
                raise NotFound(f"no blob {blob_id}") from None
            piece = bytes(data[start:end])
            if piece:
                yield piece
            return
        try:
            pos = max(0, start)
            while end is None or pos < end:
                want = FILE_PIECE if end is None else min(FILE_PIECE, end - pos)
                piece = await loop.run_in_executor(self.executor, os.pread, f.fileno(), want, pos)
                if not piece:
                    return
                pos += len(piece)
                yield piece
        finally:
            f.close()

    def exists_sync(self, blob_id: str) -> bool:
        if self.file_path(blob_id) is not None:
            return True
        return self._inline(blob_id) is not None

    # -- files ------------------------------------------------------------------------------
    def _commit_file(self, f: io.BufferedWriter, tmp_path: Path, digest: str) -> None:
        """Runs off the event loop: fsync, rename into place, fsync the directory."""
        try:
            f.flush()
            os.fsync(f.fileno())
        finally:
            f.close()
        final = self.path(digest)
        if final.exists():
            # Same bytes already durable (content addressing): keep the old file, and
            # refresh its mtime so the garbage collector's grace period protects it
            # until the row that is about to name it has committed.
            tmp_path.unlink(missing_ok=True)
            os.utime(final)
            return
        parent = final.parent
        if not parent.exists():
            private_dir(parent)
            _fsync_dir(parent.parent)
            _fsync_dir(parent.parent.parent)
        os.replace(tmp_path, final)
        _fsync_dir(parent)

    def delete_sync(self, blob_id: str) -> None:
        self.path(blob_id).unlink(missing_ok=True)

    def collect(self, referenced: set[str], grace: float = 3600.0) -> int:
        """Delete blob files no row names, older than ``grace`` seconds; returns the count.

        The grace period covers the window between a blob's ``finish()`` and the commit
        of the row that names it (content addressing can hand out an existing file).
        Inline blobs are collected in SQL by the store (``collect_inline``)."""
        cutoff = time.time() - grace
        removed = 0
        for path in self.root.glob("*/*/*"):
            if path.name in referenced:
                continue
            try:
                if path.stat().st_mtime < cutoff:
                    path.unlink()
                    removed += 1
            except FileNotFoundError:
                continue
        return removed

    def forget(self, blob_ids: list[str]) -> None:
        with self._recent_lock:
            for blob_id in blob_ids:
                data = self._recent.pop(blob_id, None)
                if data is not None:
                    self._recent_size -= len(data)

    def file_ids(self) -> list[str]:
        return [p.name for p in self.root.glob("*/*/*") if p.is_file()]

    def all_ids(self) -> list[str]:
        """Every blob held, in files and in the table (off the event loop)."""
        ids = set(self.file_ids())
        if self.db is not None:
            ids |= set(self.db.read_sync(lambda conn: [r[0] for r in conn.execute("SELECT id FROM blob_data")]))
        return sorted(ids)
