"""Blob ids the API hands out (RFC 8620 6): ``B<sha256>`` for whole stored blobs (uploads
and messages) ``P<message id>-<part id>`` for one MIME part of a stored message,
decoded, and ``K<script id>-<sha256>`` for a Sieve script's text (RFC 9661 2). A blob is
readable by an account that owns a message holding it, uploaded it, or owns the script."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import AsyncIterator
from typing import Any

from ...store.api import BlobRef, NotFound
from .parts import find_part, parse_message
from .registry import ids

UPLOAD_TTL = 24 * 3600.0
_uploads: dict[tuple[int, str], float] = {}


def remember_upload(account_id: int, digest: str) -> None:
    now = time.time()
    if len(_uploads) > 100_000:
        for key in [k for k, t in _uploads.items() if now - t > UPLOAD_TTL]:
            del _uploads[key]
    _uploads[(account_id, digest)] = now


def uploaded_by(account_id: int, digest: str) -> bool:
    when = _uploads.get((account_id, digest))
    return when is not None and time.time() - when < UPLOAD_TTL


class UploadTooLarge(Exception):
    """The upload passed the size limit; nothing was kept."""


async def stream_upload(store: Any, chunks: AsyncIterator[bytes], account_id: int, limit: int) -> tuple[str, int]:
    """An upload (RFC 8620 6.1) written to a blob as its chunks arrive, never held whole:
    (blob id, size). Raises :class:`UploadTooLarge` past ``limit`` bytes, and
    ``StorageFull`` on a full disk; either way the temporary file is gone."""
    writer = store.blob_writer()
    try:
        async for chunk in chunks:
            if writer.size + len(chunk) > limit:
                raise UploadTooLarge
            writer.write(chunk)
        ref = await writer.finish()
    except BaseException:
        writer.abort()
        raise
    remember_upload(account_id, ref.id)
    return ids.blob(ref.id), ref.size


async def blob_ref_for(store: Any, account_id: int, blob_id: str) -> BlobRef | None:
    """A whole stored blob ``account_id`` may read, by reference (its bytes not read when
    it is a file): Email/import of an upload stores no second copy."""
    digest = ids.parse_blob(blob_id)
    if digest is None or not await owns_blob(store, account_id, digest):
        return None
    path = store.blob_path(digest)
    if path is not None:
        try:
            os.utime(path)      # the collector's grace period covers it until the row commits
            return BlobRef(id=digest, size=os.path.getsize(path))
        except OSError:
            return None
    try:
        return BlobRef(id=digest, size=await store.blob_size(digest))
    except Exception:  # noqa: BLE001 - gone
        return None


def blob_file(store: Any, blob_id: str) -> str | None:
    """The file behind a whole-blob id (``B<sha256>``), for a download sent from disk."""
    digest = ids.parse_blob(blob_id)
    return store.blob_path(digest) if digest is not None else None


def script_blob_id(script_id: int, text: str) -> str:
    """A Sieve script's content as a blob: a new text is a new blob id (RFC 8620 6)."""
    return f"K{script_id}-{hashlib.sha256(text.encode('utf-8')).hexdigest()}"


async def _script_text(store: Any, account_id: int, blob_id: str) -> bytes | None:
    head, _, digest = blob_id[1:].partition("-")
    if not head.isdigit():
        return None
    for info in await store.list_sieve_scripts(account_id):
        if info.id == int(head):
            try:
                text = await store.get_sieve_script(account_id, info.name)
            except NotFound:                    # deleted meanwhile
                return None
            return text.encode("utf-8") if script_blob_id(info.id, text) == blob_id else None
    return None
STREAM_MIN = 1024 * 1024
"""A whole blob larger than this, not in a file, is downloaded a piece at a time."""


async def stored_blob(store: Any, account_id: int, blob_id: str) -> tuple[str, int] | None:
    """(digest, size) of a large whole blob (``B<sha256>``) that ``account_id`` may read,
    to be sent from ``store.blob_chunks``; None for anything else (read the usual way)."""
    digest = ids.parse_blob(blob_id)
    if digest is None or not await owns_blob(store, account_id, digest):
        return None
    try:
        size = await store.blob_size(digest)
    except Exception:  # noqa: BLE001 - gone: not found the usual way
        return None
    return (digest, size) if size > STREAM_MIN else None


def part_blob_id(message_id: int, part_id: str) -> str:
    return f"P{message_id}-{part_id}"


async def owns_blob(store: Any, account_id: int, digest: str) -> bool:
    if uploaded_by(account_id, digest):
        return True
    return bool(await store.account_has_blob(account_id, digest))


async def read_blob_for(store: Any, account_id: int, blob_id: str) -> bytes | None:
    """The bytes behind ``blob_id`` if ``account_id`` may read them, else None."""
    digest = ids.parse_blob(blob_id)
    if digest is not None:
        if not await owns_blob(store, account_id, digest):
            return None
        try:
            return bytes(await store.read_blob(digest))
        except Exception:  # noqa: BLE001 - gone
            return None
    if blob_id.startswith("K") and "-" in blob_id:
        return await _script_text(store, account_id, blob_id)
    if blob_id.startswith("P") and "-" in blob_id:
        head, _, part_id = blob_id[1:].partition("-")
        if not head.isdigit():
            return None
        found = await store.get_messages_by_id([int(head)], with_summary=False)
        if not found:
            return None
        message = found[0]
        box = await store.get_mailbox_by_id(message.mailbox_id)
        if box.account_id != account_id:
            return None
        part = find_part(parse_message(bytes(await store.read_blob(message.blob_id))), part_id)
        if part is None:
            return None
        payload = part.get_payload(decode=True)
        return payload if isinstance(payload, bytes) else part.as_bytes()
    return None
