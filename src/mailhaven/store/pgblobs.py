"""Message bytes in PostgreSQL: a ``blobs`` table (bytea), content-addressed by sha256.

A writer spools the incoming message to a temporary file (small ones stay in memory),
hashing as it goes; :meth:`PgBlobWriter.finish` inserts the row in its own transaction,
so the bytes are committed (WAL-fsynced) on the database before any message row that
names them, and every node sharing the database can read them. Inserting bytes that are
already stored refreshes ``created``, which is what protects a blob from the garbage
collector's grace period until the row naming it commits (as a file's mtime does in
blobs.py). A small cache keeps the newest blobs, so the delivery that follows a
``finish()`` parses the message without reading it back.
"""

from __future__ import annotations

import asyncio
import hashlib
import tempfile
from collections import OrderedDict
from pathlib import Path

import asyncpg

from .api import BlobRef, NotFound

SPOOL_IN_MEMORY = 1024 * 1024
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
        await self._insert(digest, data)
        return BlobRef(id=digest, size=len(data))

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
        data = await self._pool().fetchval("SELECT data FROM blobs WHERE id=$1", blob_id)
        if data is None:
            raise BlobNotFound(f"no blob {blob_id}")
        return bytes(data)

    async def read_many(self, blob_ids: list[str]) -> list[bytes]:
        """Several blobs in one query, in the order asked (IMAP FETCH of many messages)."""
        missing = list(dict.fromkeys(b for b in blob_ids if b not in self._recent))
        found: dict[str, bytes] = {}
        if missing:
            rows = await self._pool().fetch("SELECT id, data FROM blobs WHERE id = ANY($1::text[])", missing)
            found = {r["id"]: bytes(r["data"]) for r in rows}
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

    async def finish(self, *, deferred: bool = False) -> BlobRef:
        """Durable on return (``deferred`` changes nothing here: the row commits now)."""
        if self._done:
            raise RuntimeError("blob writer already finished")
        self._done = True
        try:
            if self.size > SPOOL_IN_MEMORY:
                data = await asyncio.to_thread(self._read_all)  # rolled over to disk
            else:
                data = self._read_all()
        finally:
            self._spool.close()
        digest = self._hash.hexdigest()
        await self._store._insert(digest, data)
        return BlobRef(id=digest, size=self.size)

    def abort(self) -> None:
        if self._done:
            return
        self._done = True
        self._spool.close()
