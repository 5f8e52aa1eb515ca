"""Message bytes in PostgreSQL: a ``blobs`` table (bytea), content-addressed by sha256.

A writer spools the incoming message to a temporary file (small ones stay in memory),
hashing as it goes; :meth:`PgBlobWriter.finish` inserts the row in its own transaction,
so the bytes are committed (WAL-fsynced) on the database before any message row that
names them, and every node sharing the database can read them. Inserting bytes that are
already stored refreshes ``created``, which is what protects a blob from the garbage
collector's grace period until the row naming it commits (as a file's mtime does in
blobs.py). A small cache keeps the newest blobs, so the delivery that follows a
``finish()`` parses the message without reading it back.

A blob over :data:`CHUNK` is stored as a ``blobs`` row with empty ``data`` and its bytes
in ``blob_chunks`` rows of :data:`CHUNK` bytes, inserted one at a time from the spool in
the same transaction (the message is never read whole to store it) and read back a row
at a time.
"""

from __future__ import annotations

import asyncio
import hashlib
import tempfile
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import asyncpg

from .api import BlobRef, NotFound

SPOOL_IN_MEMORY = 1024 * 1024
CHUNK = 1024 * 1024
"""Blobs larger than this are stored in rows of this size (``blob_chunks``)."""
BLOB_BYTES = ("(SELECT b.data || COALESCE((SELECT string_agg(c.data, ''::bytea ORDER BY c.seq) "
              "FROM blob_chunks c WHERE c.blob_id = b.id), ''::bytea) FROM blobs b WHERE b.id = {})")
"""SQL for the bytes of the blob named by the expression put in ``{}`` (NULL: no such blob)."""
RECENT_CACHE_BYTES = 16 * 1024 * 1024
RECENT_CACHE_LARGEST = 4 * 1024 * 1024


class BlobNotFound(NotFound, FileNotFoundError):
    """No such blob (a FileNotFoundError too, as the file backend raises)."""


class PgBlobStore:
    def __init__(self, tmp_dir: Path) -> None:
        self.tmp_dir = tmp_dir
        self.pool: asyncpg.Pool | None = None
        self._recent: OrderedDict[str, bytes] = OrderedDict()
        self._recent_bytes = 0

    def _pool(self) -> asyncpg.Pool:
        if self.pool is None:
            raise RuntimeError("store is not open")
        return self.pool

    def writer(self) -> PgBlobWriter:
        return PgBlobWriter(self)

    async def put(self, data: bytes) -> BlobRef:
        digest = hashlib.sha256(data).hexdigest()
        if len(data) > CHUNK:
            view = memoryview(data)

            async def piece(at: int) -> bytes:
                return bytes(view[at:at + CHUNK])

            await self._insert_chunked(digest, len(data), piece)
            self.remember(digest, data)
        else:
            await self._insert(digest, data)
        return BlobRef(id=digest, size=len(data))

    async def _insert_chunked(self, digest: str, size: int,
                              piece: Callable[[int], Awaitable[bytes]]) -> None:
        """One transaction: the ``blobs`` row (empty data), then each chunk as ``piece(at)``
        gives it. Bytes already stored (the same digest) only refresh ``created``."""
        async with self._pool().acquire() as conn, conn.transaction():
            new = await conn.fetchval(
                "INSERT INTO blobs (id, size, data) VALUES ($1, $2, ''::bytea) "
                "ON CONFLICT (id) DO UPDATE SET created = now() RETURNING (xmax = 0)", digest, size)
            if not new:
                return
            for seq, at in enumerate(range(0, size, CHUNK)):
                await conn.execute("INSERT INTO blob_chunks (blob_id, seq, data) VALUES ($1, $2, $3)",
                                   digest, seq, await piece(at))

    async def _chunks(self, conn: asyncpg.Connection, blob_id: str) -> bytes:
        """The chunk rows of a blob, fetched one at a time."""
        out = bytearray()
        seq = 0
        while (data := await conn.fetchval(
                "SELECT data FROM blob_chunks WHERE blob_id=$1 AND seq=$2", blob_id, seq)) is not None:
            out += data
            seq += 1
        return bytes(out)

    async def _insert(self, digest: str, data: bytes) -> None:
        await self._pool().execute(
            "INSERT INTO blobs (id, size, data) VALUES ($1, $2, $3) "
            "ON CONFLICT (id) DO UPDATE SET created = now()", digest, len(data), data)
        self.remember(digest, data)

    def remember(self, digest: str, data: bytes) -> None:
        if len(data) > RECENT_CACHE_LARGEST or digest in self._recent:
            return
        self._recent[digest] = data
        self._recent_bytes += len(data)
        while self._recent_bytes > RECENT_CACHE_BYTES:
            _, old = self._recent.popitem(last=False)
            self._recent_bytes -= len(old)

    def forget(self, digests: list[str]) -> None:
        for d in digests:
            old = self._recent.pop(d, None)
            if old is not None:
                self._recent_bytes -= len(old)

    async def read(self, blob_id: str) -> bytes:
        cached = self._recent.get(blob_id)
        if cached is not None:
            return cached
        async with self._pool().acquire() as conn:
            row = await conn.fetchrow("SELECT data, size FROM blobs WHERE id=$1", blob_id)
            if row is None:
                raise BlobNotFound(f"no blob {blob_id}")
            if len(row["data"]) < row["size"]:
                return await self._chunks(conn, blob_id)
        return bytes(row["data"])

    # -- reading a range (large messages, never whole) ------------------------------------
    async def _layout(self, conn: asyncpg.Connection, blob_id: str) -> tuple[int, bool]:
        """(size, stored in chunk rows)."""
        row = await conn.fetchrow("SELECT size, length(data) AS inline FROM blobs WHERE id=$1", blob_id)
        if row is None:
            raise BlobNotFound(f"no blob {blob_id}")
        return row["size"], row["inline"] < row["size"]

    async def size(self, blob_id: str) -> int:
        cached = self._recent.get(blob_id)
        if cached is not None:
            return len(cached)
        size = await self._pool().fetchval("SELECT size FROM blobs WHERE id=$1", blob_id)
        if size is None:
            raise BlobNotFound(f"no blob {blob_id}")
        return int(size)

    async def _range_in(self, conn: asyncpg.Connection, blob_id: str, chunked: bool,
                        start: int, end: int) -> bytes:
        """Bytes ``[start, end)`` (within the blob): a substring of the inline row, or of
        the (at most a few) chunk rows the range crosses."""
        if end <= start:
            return b""
        if not chunked:                                  # SQL substring is 1-based
            return bytes(await conn.fetchval(
                "SELECT substring(data FROM $2 FOR $3) FROM blobs WHERE id=$1", blob_id, start + 1, end - start))
        first, last = start // CHUNK, (end - 1) // CHUNK
        rows = await conn.fetch("SELECT data FROM blob_chunks WHERE blob_id=$1 AND seq BETWEEN $2 AND $3 "
                                "ORDER BY seq", blob_id, first, last)
        joined = b"".join(r["data"] for r in rows) if len(rows) > 1 else bytes(rows[0]["data"]) if rows else b""
        offset = start - first * CHUNK
        return joined[offset:offset + end - start]

    async def read_range(self, blob_id: str, start: int, length: int) -> bytes:
        start, length = max(0, start), max(0, length)
        cached = self._recent.get(blob_id)
        if cached is not None:
            return cached[start:start + length]
        async with self._pool().acquire() as conn:
            size, chunked = await self._layout(conn, blob_id)
            return await self._range_in(conn, blob_id, chunked, min(start, size), min(size, start + length))

    async def chunks(self, blob_id: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        """The bytes ``[start, end)`` a chunk row (at most :data:`CHUNK`) at a time; the
        pool connection is taken for one row at a time, never across a ``yield`` (a slow
        reader must not hold a connection)."""
        cached = self._recent.get(blob_id)
        if cached is not None:
            stop = len(cached) if end is None else min(end, len(cached))
            for at in range(max(0, start), stop, CHUNK):
                yield cached[at:min(at + CHUNK, stop)]
            return
        async with self._pool().acquire() as conn:
            size, chunked = await self._layout(conn, blob_id)
        end = size if end is None else min(end, size)
        pos = max(0, start)
        while pos < end:
            stop = min(end, (pos // CHUNK + 1) * CHUNK)      # to the end of this chunk row
            async with self._pool().acquire() as conn:
                piece = await self._range_in(conn, blob_id, chunked, pos, stop)
            if not piece:
                raise BlobNotFound(f"blob {blob_id} ended early at {pos}")
            pos += len(piece)
            yield piece

    async def read_many(self, blob_ids: list[str]) -> list[bytes]:
        """Several blobs in one query, in the order asked (IMAP FETCH of many messages)."""
        missing = list(dict.fromkeys(b for b in blob_ids if b not in self._recent))
        found: dict[str, bytes] = {}
        if missing:
            rows = await self._pool().fetch("SELECT id, data, size FROM blobs WHERE id = ANY($1::text[])", missing)
            found = {r["id"]: bytes(r["data"]) for r in rows if len(r["data"]) == r["size"]}
            for r in rows:
                if r["id"] not in found:                    # stored in chunks
                    found[r["id"]] = await self.read(r["id"])
        out = []
        for b in blob_ids:
            data = self._recent.get(b, found.get(b))
            if data is None:
                raise BlobNotFound(f"no blob {b}")
            out.append(data)
        return out

    async def all_ids(self) -> list[str]:
        return [r[0] for r in await self._pool().fetch("SELECT id FROM blobs ORDER BY id")]


class PgBlobWriter:
    """Streams one message to a spool file; nothing is stored until :meth:`finish`."""

    def __init__(self, store: PgBlobStore) -> None:
        self._store = store
        self._spool = tempfile.SpooledTemporaryFile(  # noqa: SIM115 - closed in finish/abort
            max_size=SPOOL_IN_MEMORY, dir=str(store.tmp_dir), prefix="blob-")
        self._hash = hashlib.sha256()
        self.size = 0
        self._done = False

    def write(self, data: bytes) -> None:
        self._hash.update(data)
        self._spool.write(data)
        self.size += len(data)

    def _read_all(self) -> bytes:
        self._spool.seek(0)
        return self._spool.read()

    def _read_at(self, at: int) -> bytes:
        self._spool.seek(at)
        return self._spool.read(CHUNK)

    async def finish(self, *, deferred: bool = False) -> BlobRef:
        """Durable on return (``deferred`` changes nothing here: the row commits now)."""
        if self._done:
            raise RuntimeError("blob writer already finished")
        self._done = True
        digest = self._hash.hexdigest()
        try:
            if self.size > CHUNK:                           # rolled over to disk: a row at a time

                async def piece(at: int) -> bytes:
                    return await asyncio.to_thread(self._read_at, at)

                await self._store._insert_chunked(digest, self.size, piece)
                return BlobRef(id=digest, size=self.size)
            data = self._read_all()
        finally:
            self._spool.close()
        await self._store._insert(digest, data)
        return BlobRef(id=digest, size=self.size)

    def abort(self) -> None:
        if self._done:
            return
        self._done = True
        self._spool.close()
