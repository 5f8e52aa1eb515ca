"""Moving messages between the store and mbox/Maildir: the store half of import and export.

Invariants:
- Import writes each message with ``store.put_blob`` then ``store.append`` (flags and
  internal date kept); appends run strictly in source order, so the new UIDs keep the
  source's order. Blob writes (the fsync-heavy part) run ahead concurrently, a bounded
  window of them.
- A message that is not acceptable (empty, no header, over the size limit, the store
  refuses it) is reported through :class:`Progress` and skipped; the run goes on.
- Export reads each folder's messages in UID order and writes the bytes unchanged.
"""

from __future__ import annotations

import asyncio
import collections
import os
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..store.api import Account, BlobRef, Mailbox, NotFound, QuotaExceeded, Store, StoreError
from . import maildir as md
from . import mbox as mb
from .progress import Progress

WINDOW = 32
"""Blob writes in flight ahead of the (ordered) appends."""


@dataclass(frozen=True, kw_only=True)
class Item:
    """One message to import."""

    folder: str
    raw: bytes
    flags: frozenset[str]
    internal_date: float | None
    where: str
    """For reports: file and position."""


class Importer:
    def __init__(self, store: Store, account: Account, progress: Progress, *,
                 max_size: int = 50 * 1024 * 1024) -> None:
        self.store = store
        self.account = account
        self.progress = progress
        self.max_size = max_size
        self._boxes: dict[str, Mailbox] = {}
        self._pending: collections.deque[tuple[Item, asyncio.Task[BlobRef]]] = collections.deque()

    async def mailbox(self, name: str) -> Mailbox:
        key = "INBOX" if name.upper() == "INBOX" else name
        box = self._boxes.get(key)
        if box is None:
            try:
                box = await self.store.get_mailbox(self.account.id, key)
            except NotFound:
                box = await self.store.create_mailbox(self.account.id, key)
            self._boxes[key] = box
        return box

    def _check(self, item: Item) -> str | None:
        if len(item.raw) > self.max_size:
            return f"larger than the {self.max_size} byte limit"
        return mb.looks_like_message(item.raw)

    async def add(self, item: Item) -> None:
        """Queue one message; it is stored once earlier ones are (call :meth:`flush` at the end)."""
        problem = self._check(item)
        if problem:
            self.progress.problem(item.where, problem)
            return
        self._pending.append((item, asyncio.ensure_future(self.store.put_blob(item.raw))))
        if len(self._pending) >= WINDOW:
            await self._append_oldest()

    async def _append_oldest(self) -> None:
        item, blob_task = self._pending.popleft()
        try:
            blob = await blob_task
            box = await self.mailbox(item.folder)
            await self.store.append(box.id, blob, flags=item.flags, internal_date=item.internal_date)
        except QuotaExceeded:
            self.progress.problem(item.where, "over the account's quota")
            return
        except (StoreError, ValueError, UnicodeError, LookupError, TypeError) as exc:
            self.progress.problem(item.where, f"refused by the store: {exc}")
            return
        self.progress.ok(len(item.raw))

    async def flush(self) -> None:
        while self._pending:
            await self._append_oldest()

    async def close(self) -> None:
        """Abandon queued work (after an interrupt): nothing half-written is left visible."""
        for _, task in self._pending:
            task.cancel()
        self._pending.clear()


# -- sources -------------------------------------------------------------------------------------


def mbox_files(path: Path, folder: str | None) -> list[tuple[str, Path]]:
    """(folder, file) pairs: one file -> ``folder`` (default INBOX); a directory -> every
    ``*.mbox`` below it, named by its relative path (our export layout), under ``folder``."""
    if path.is_file():
        return [(folder or "INBOX", path)]
    out = []
    for file in sorted(path.rglob("*.mbox")):
        name = str(file.relative_to(path).with_suffix("")).replace(os.sep, "/")
        out.append(((f"{folder}/{name}" if folder and name.upper() != "INBOX" else folder or name), file))
    return out


async def import_mbox(importer: Importer, path: Path, folder: str | None, fmt: str = "mboxrd") -> None:
    for name, file in mbox_files(path, folder):
        importer.progress.enter(name)
        with open(file, "rb") as stream:
            for entry in mb.read_mbox(stream, fmt):
                if isinstance(entry, tuple):
                    importer.progress.problem(f"{file} #{entry[0]}", entry[1])
                    continue
                await importer.add(Item(folder=name, raw=entry.raw, flags=entry.flags,
                                        internal_date=entry.internal_date, where=f"{file} #{entry.index}"))
                await asyncio.sleep(0)
    await importer.flush()


async def import_maildir(importer: Importer, root: Path, folder: str | None) -> None:
    folders = md.list_folders(root)
    if not folders:
        raise FileNotFoundError(f"{root}: no Maildir here (no cur/ and new/, no .Sub folders)")
    for name, directory in folders:
        target = name if not folder else (folder if name == "INBOX" else f"{folder}/{name}")
        importer.progress.enter(target)
        for message in md.read_folder(directory):
            try:
                raw = await asyncio.to_thread(message.read)
            except OSError as exc:
                importer.progress.problem(str(message.path), f"cannot read: {exc}")
                continue
            await importer.add(Item(folder=target, raw=raw, flags=message.flags,
                                    internal_date=message.internal_date, where=str(message.path)))
    await importer.flush()


# -- export --------------------------------------------------------------------------------------


async def _messages(store: Store, box: Mailbox) -> AsyncIterator[tuple[Any, bytes]]:
    messages = await store.list_messages(box.id)
    reads: collections.deque[tuple[Any, Awaitable[bytes]]] = collections.deque()
    for m in messages:
        reads.append((m, asyncio.ensure_future(store.read_blob(m.blob_id))))
        if len(reads) >= WINDOW:
            m0, task = reads.popleft()
            yield m0, await task
    while reads:
        m0, task = reads.popleft()
        yield m0, await task


async def export_account(store: Store, account: Account, fmt: str, target: Path, progress: Progress,
                         mbox_format: str = "mboxrd") -> None:
    target.mkdir(parents=True, exist_ok=True)
    for box in await store.list_mailboxes(account.id):
        progress.enter(box.name)
        if any(part in ("", ".", "..") for part in box.name.split("/")):
            progress.problem(box.name, "folder name cannot be a file name; folder not exported")
            continue
        if fmt == "maildir":
            writer = md.MaildirWriter(target, box.name)
            async for m, raw in _messages(store, box):
                await asyncio.to_thread(writer.write, raw, m.flags, m.internal_date, m.uid)
                progress.ok(len(raw))
            writer.close()
            for word in sorted(writer.dropped_keywords):
                progress.problem(box.name, f"keyword {word!r} not kept: Maildir has room for 26 keywords")
                progress.skipped -= 1
        else:
            path = target / (box.name + ".mbox")
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "wb") as out:
                mwriter = mb.MboxWriter(out, mbox_format)
                async for m, raw in _messages(store, box):
                    mwriter.write(raw, m.flags, m.internal_date)
                    progress.ok(len(raw))

