"""APPEND ... CATENATE (RFC 4469): a message put together from literal text and parts of
messages already on the server, named by IMAP URLs (RFC 5092).

A client forwarding a message with attachments sends only its new text and URLs for the
parts it keeps, instead of downloading and uploading them again. A URL names a message of
this session's own account (``/INBOX;UIDVALIDITY=7/;UID=20/;SECTION=2``, or the same after
``imap://user@host``); anything else, a message that is not there, or a URL with URLAUTH
is refused with ``NO [BADURL "..."]`` and nothing is appended.
"""

from __future__ import annotations

import dataclasses
import os
import re
from typing import Any
from urllib.parse import unquote_to_bytes

from ..message.fileview import FileView
from ..message.lineends import normalize_line_ends
from ..store.api import BlobRef, BlobWriter, NotFound
from ..store.blobview import BlobView
from .grammar import decode_mailbox, mutf7_decode
from .parser import Atom, String
from .responses import TOOBIG, Bad, No
from .session import Session

COPY_CHUNK = 256 * 1024

_URL = re.compile(
    r"^(?:imap://(?:(?P<user>[^@/;]*)(?:;[^@/]*)?@)?(?P<host>[^/]+))?"
    r"/(?P<mailbox>[^;/]+)(?:;UIDVALIDITY=(?P<uidvalidity>[1-9][0-9]{0,9}))?"
    r"/;UID=(?P<uid>[1-9][0-9]{0,9})"
    r"(?:/;SECTION=(?P<section>[^/;]+))?"
    r"(?:/;PARTIAL=(?P<start>[0-9]{1,10})(?:\.(?P<length>[1-9][0-9]{0,9}))?)?$",
    re.I)


async def catenate(s: Session, tokens: list[Any]) -> BlobRef:
    """The message that ``CATENATE (TEXT {n} ... URL "..." ...)`` describes, written to a
    blob piece by piece: a spooled TEXT literal and a part of a large message are copied
    from their files a chunk at a time, never held whole."""
    if not tokens or len(tokens) % 2:
        raise Bad("CATENATE takes pairs: TEXT literal or URL url")
    writer = s.store.blob_writer()
    try:
        for kind, value in zip(tokens[::2], tokens[1::2], strict=True):
            name = kind.value.upper() if isinstance(kind, Atom) else ""
            if name == "TEXT":
                if not isinstance(value, String) or not value.literal:
                    raise Bad("CATENATE TEXT needs a literal")
                spool = getattr(value.value, "sink", None)
                if spool is not None:           # a large TEXT literal spooled as it arrived
                    await _copy_blob(s, (await spool.finish()).id, writer)
                else:
                    writer.write(value.value if value.binary else normalize_line_ends(value.value))
            elif name == "URL":
                if isinstance(value, Atom):
                    url = value.value
                elif isinstance(value, String):
                    url = value.value.decode("utf-8", "replace")
                else:
                    raise Bad("CATENATE URL needs a URL")
                await _url_into(s, url, writer)
            else:
                raise Bad("CATENATE takes TEXT and URL parts")
            if writer.size > s.config.limits.message_size:
                raise No("Message too big", code=TOOBIG)
        return await writer.finish()
    except BaseException:
        writer.abort()
        raise


async def _copy_blob(s: Session, blob_id: str, writer: BlobWriter, start: int = 0, end: int | None = None) -> None:
    """``blob[start:end]`` into ``writer``, from the file a chunk at a time when there is one."""
    path = s.store.blob_path(blob_id)
    if path is None:                            # no file (PostgreSQL): the store's pieces
        async for data in s.store.blob_chunks(blob_id, start, end):
            writer.write(data)
        return
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        stop = size if end is None else min(end, size)
        pos = start
        while pos < stop:
            data = await s.blocking(os.pread, f.fileno(), min(COPY_CHUNK, stop - pos), pos)
            if not data:
                break
            writer.write(data)
            pos += len(data)


async def _url_into(s: Session, url: str, writer: BlobWriter) -> None:
    """The bytes a URL names, into ``writer``: a large message's part straight from its file."""
    from .fetch import STREAM_MIN, parse_item
    from .fetch_large import _partial, _range

    box_id, uid, section, partial = await _resolve_url(s, url)
    found = await s.store.get_messages(box_id, [uid], with_summary=True)
    if not found:
        raise _bad(url, "no such message")
    msg = found[0]
    path = s.store.blob_path(msg.blob_id) if msg.size > STREAM_MIN else None
    if msg.size > STREAM_MIN:
        item = _url_item(url, section, partial, parse_item)
        if path is None:            # its view reads through the event loop: used from a worker thread
            view = BlobView(s.store.read_blob_range, msg.blob_id, await s.store.blob_size(msg.blob_id))
            span = await s.blocking(_range, view, msg, item)
        else:
            fd = os.open(path, os.O_RDONLY)
            try:
                span = _range(FileView(fd, os.fstat(fd).st_size), msg, item)
            finally:
                os.close(fd)
        if span is not None:
            start, end = _partial(span, item)
            await _copy_blob(s, msg.blob_id, writer, start, end)
            return
    writer.write(await _url_bytes(s, url))


def _url_item(url: str, section: str | None, partial: tuple[int, int | None] | None, parse_item: Any) -> Any:
    try:
        item = parse_item(f"BODY.PEEK[{section or ''}]")
    except Bad:
        raise _bad(url, "invalid section") from None
    return dataclasses.replace(item, partial=partial)


def _bad(url: str, why: str) -> No:
    return No(f"Bad URL: {why}", code=f'BADURL "{url[:200]}"')


async def _resolve_url(s: Session, url: str) -> tuple[int, int, str | None, tuple[int, int | None] | None]:
    """(mailbox id, uid, section, partial) of a URL naming a message of this account."""
    m = _URL.match(url)
    if m is None:
        raise _bad(url, "not an IMAP URL of a message on this server") if ";URLAUTH=" not in url.upper() \
            else _bad(url, "URLAUTH is not supported")
    if m.group("host") is not None:
        host = m.group("host").rsplit(":", 1)[0].lower()
        user = unquote_to_bytes(m.group("user") or "").decode("utf-8", "replace")
        if host != s.ctx.hostname.lower() or (user and user.lower() != (s.username or "").lower()):
            raise _bad(url, "another server or user")
    name = decode_mailbox(unquote_to_bytes(m.group("mailbox")), utf8=True)
    assert s.account_id is not None
    try:
        box = await s.store.get_mailbox(s.account_id, name, counts=False)
    except NotFound:
        try:                                # RFC 2192's modified UTF-7 names, still in use
            box = await s.store.get_mailbox(s.account_id, mutf7_decode(name), counts=False)
        except (NotFound, ValueError, UnicodeDecodeError):
            raise _bad(url, "no such mailbox") from None
    if m.group("uidvalidity") and int(m.group("uidvalidity")) != box.uidvalidity:
        raise _bad(url, "UIDVALIDITY differs")
    section = unquote_to_bytes(m.group("section")).decode("ascii", "replace") if m.group("section") else None
    partial = None
    if m.group("start") is not None:
        length = m.group("length")
        partial = (int(m.group("start")), None if length is None else int(length))
    return box.id, int(m.group("uid")), section, partial


async def _url_bytes(s: Session, url: str) -> bytes:
    from .fetch import parse_item, section_bytes

    box_id, uid, section, partial = await _resolve_url(s, url)
    found = await s.store.get_raw(box_id, [uid])
    if not found:
        raise _bad(url, "no such message")
    data = found[0][1]
    if section:
        try:
            item = parse_item(f"BODY.PEEK[{section}]")
        except Bad:
            raise _bad(url, "invalid section") from None
        data = section_bytes(data, None, item)
    if partial is not None:
        start, length = partial
        data = data[start:] if length is None else data[start:start + length]
    return data
