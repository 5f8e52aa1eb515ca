"""Message bytes on disk, content-addressed by sha256.

Layout: ``DATA/blobs/ab/cd/abcd...`` with the full hex digest as file name. A blob is
streamed into ``DATA/tmp``, fsynced, renamed into place and its directory fsynced before
the reference is handed out, so a row that names a blob can never point at missing or
partial bytes, whatever the moment of a crash. Orphans (bytes whose rows never
committed) are harmless and removed by :meth:`FileBlobStore.collect`.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import tempfile
from concurrent.futures import Executor
from pathlib import Path

from .api import BlobRef


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class FileBlobWriter:
    """Streams one blob to a temporary file; :meth:`finish` makes it durable."""

    def __init__(self, store: FileBlobStore) -> None:
        self._store = store
        fd, name = tempfile.mkstemp(dir=store.tmp_dir, prefix="blob-")
        self._file = os.fdopen(fd, "wb", buffering=256 * 1024)
        self._tmp_path = Path(name)
        self._hash = hashlib.sha256()
        self.size = 0
        self._done = False

    def write(self, data: bytes) -> None:
        self._hash.update(data)
        self._file.write(data)
        self.size += len(data)

    async def finish(self) -> BlobRef:
        if self._done:
            raise RuntimeError("blob writer already finished")
        self._done = True
        digest = self._hash.hexdigest()
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._store.executor, self._store._commit_file, self._file, self._tmp_path, digest)
        return BlobRef(id=digest, size=self.size)

    def abort(self) -> None:
        if self._done:
            return
        self._done = True
        self._file.close()
        self._tmp_path.unlink(missing_ok=True)


class FileBlobStore:
    def __init__(self, root: Path, executor: Executor | None = None) -> None:
        self.root = root / "blobs"
        self.tmp_dir = root / "tmp"
        self.executor = executor  # None: the loop's default executor

    def prepare(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        for leftover in self.tmp_dir.glob("blob-*"):
            leftover.unlink(missing_ok=True)

    def path(self, blob_id: str) -> Path:
        return self.root / blob_id[:2] / blob_id[2:4] / blob_id

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

    def read_sync(self, blob_id: str) -> bytes:
        return self.path(blob_id).read_bytes()

    async def read(self, blob_id: str) -> bytes:
        return await asyncio.get_running_loop().run_in_executor(self.executor, self.read_sync, blob_id)

    def _commit_file(self, f: object, tmp_path: Path, digest: str) -> None:
        """Runs off the event loop: fsync, rename into place, fsync the directory."""
        import io

        assert isinstance(f, io.BufferedWriter)
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
            parent.mkdir(parents=True, exist_ok=True)
            _fsync_dir(parent.parent)
            _fsync_dir(parent.parent.parent)
        os.replace(tmp_path, final)
        _fsync_dir(parent)

    def delete_sync(self, blob_id: str) -> None:
        self.path(blob_id).unlink(missing_ok=True)

    def collect(self, referenced: set[str], grace: float = 3600.0) -> int:
        """Delete blob files no row names, older than ``grace`` seconds; returns the count.

        The grace period covers the window between a blob's ``finish()`` and the commit
        of the row that names it (content addressing can hand out an existing file)."""
        import time

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

    def all_ids(self) -> list[str]:
        return [p.name for p in self.root.glob("*/*/*") if p.is_file()]
