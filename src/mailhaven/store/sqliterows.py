"""SQLite store: rows to API objects, the SELECTs of message rows, and what a delivery
computes before its transaction."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import zlib
from collections.abc import Callable, Generator, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from ..imap.render import wire_forms
from ..message.headerfields import crlf_ascii
from ..message.summary import LARGE_MESSAGE, search_fields, summarize, summarize_file
from .api import Account, Mailbox, Message
from .headerblock import header_block, pack

T = TypeVar("T")

SUMMARY_ON_LOOP_MAX = 64 * 1024
"""A message at most this big whose bytes are still in memory (just written) is summarised
on the event loop. The work is pure Python, so in a worker thread it would hold the GIL
all the same; the hop to the thread and back (GIL hand-offs, wake-ups) cost more than it."""
PLAIN_ON_LOOP_MAX = 128 * 1024
"""Up to this size (the largest inline blob) a message still in memory is summarised on the
event loop too when it is one text/plain part with a plain header section
(:func:`plain_text_message`): its summary is linear C-speed work (0.4 ms at 100 KB), less
than the hop to a thread and back. Other types stay at :data:`SUMMARY_ON_LOOP_MAX`: an
HTML part's text or a deep MIME tree took 16-45 ms for some corpus messages of 36-116 KB."""

_CONTENT_TYPE = re.compile(rb"(?im)^content-type[ \t]*:[ \t\r\n]*([^;\s]*)")


def plain_text_message(raw: bytes) -> bool:
    """``raw`` is a single text/plain part (no Content-Type field, or one saying text/plain)
    whose header section is ASCII, CRLF-ended and not empty: the case whose summary is
    quick at any size (no HTML to render, no MIME tree)."""
    end = raw.find(b"\r\n\r\n")
    if end <= 0:
        return False
    head = raw[:end + 2]
    if not crlf_ascii(head):
        return False
    types = _CONTENT_TYPE.findall(head)
    return not types or (len(types) == 1 and types[0].lower() == b"text/plain")


_INSERT_DATA = "INSERT OR REPLACE INTO message_data (id, summary, imap_envelope, imap_body) VALUES (?,?,?,?)"
_INSERT_HEADER = "INSERT OR REPLACE INTO message_headers (id, header) VALUES (?,?)"
_INSERT_PENDING = ("INSERT INTO fts_pending (id, subject, sender, recipients, cc, bcc, body, headers) "
                   "VALUES (?,?,?,?,?,?,?,?)")
_SUMMARY_COLUMNS = "id, mailbox_id, uid, blob_id, size, internal_date, flags, modseq, thread_id"


SUMMARY_LEVEL = 6
"""zlib level of stored summaries: about a third of the JSON's size, ~40 us a message."""


def encode_summary(summary: dict[str, Any]) -> bytes:
    """A summary as message_data keeps it: compact JSON, zlib-compressed (about 3.7 KB of
    pages a message as text, 1.2 KB compressed, for the corpus mix; bench/storage.py)."""
    text = json.dumps(summary, separators=(",", ":"))   # ASCII: survives any odd character
    return zlib.compress(text.encode(), SUMMARY_LEVEL)


def decode_summary(stored: str | bytes | None) -> dict[str, Any]:
    """:func:`encode_summary` undone; rows written before it hold the JSON text."""
    if not stored:
        return {}
    if isinstance(stored, bytes):
        stored = zlib.decompress(stored)
    return json.loads(stored)  # type: ignore[no-any-return]


def _flags_text(flags: Iterable[str]) -> str:
    return " ".join(sorted(set(flags)))


def _account(row: sqlite3.Row) -> Account:
    return Account(id=row["id"], address=row["address"], quota=row["quota"], used=row["used"],
                   modseq=row["modseq"])


def _mailbox(row: sqlite3.Row, conn: sqlite3.Connection | None = None, counts: bool = False) -> Mailbox:
    subscribed = False
    messages = unseen = size = recent = 0
    if conn is not None:
        subscribed = conn.execute(
            "SELECT 1 FROM subscriptions WHERE account_id=? AND name=?", (row["account_id"], row["name"])
        ).fetchone() is not None
        if counts:
            c = conn.execute(
                "SELECT COUNT(*), COALESCE(SUM(size),0), "
                "SUM(CASE WHEN (' ' || flags || ' ') LIKE '% \\Seen %' THEN 0 ELSE 1 END), "
                "SUM(CASE WHEN uid >= ? THEN 1 ELSE 0 END) "
                "FROM messages WHERE mailbox_id=?", (row["recent_uid"], row["id"])
            ).fetchone()
            messages, size, unseen, recent = c[0], c[1], c[2] or 0, c[3] or 0
    return Mailbox(id=row["id"], account_id=row["account_id"], name=row["name"],
                   special_use=row["special_use"], uidvalidity=row["uidvalidity"],
                   uidnext=row["uidnext"], highestmodseq=row["highestmodseq"], recent_uid=row["recent_uid"],
                   subscribed=subscribed, messages=messages, unseen=unseen, size=size, recent=recent)


def _message(row: sqlite3.Row, with_summary: bool, imap_wire: bool = False,
             summary: dict[str, Any] | None = None) -> Message:
    """``summary``: the one just stored (then ``row`` need not hold it), given instead of
    decoding the row's: :func:`decode_summary` of :func:`encode_summary` gives it back."""
    flags = frozenset(row["flags"].split()) if row["flags"] else frozenset()
    wire = None
    if imap_wire:
        envelope = row["imap_envelope"]
        wire = (envelope, row["imap_body"]) if envelope is not None else None
    if summary is None:
        # NULL where the wire forms serve instead (or no data row)
        summary = decode_summary(row["summary"]) if with_summary or imap_wire else {}
    return Message(id=row["id"], mailbox_id=row["mailbox_id"], uid=row["uid"], blob_id=row["blob_id"],
                   size=row["size"], internal_date=row["internal_date"], flags=flags,
                   modseq=row["modseq"], thread_id=row["thread_id"], summary=summary, wire=wire)


def _select(with_summary: bool, imap_wire: bool = False) -> str:
    """``SELECT <message columns> FROM messages m``, joined to message_data when the summary
    or the wire forms are wanted (conditions then name columns as ``m.<column>``)."""
    columns = ", ".join("m." + c for c in _SUMMARY_COLUMNS.split(", "))
    if imap_wire:
        columns += ", d.imap_envelope, d.imap_body, " + (
            "d.summary" if with_summary else "CASE WHEN d.imap_envelope IS NULL THEN d.summary END AS summary")
    elif with_summary:
        columns += ", d.summary"
    else:
        return f"SELECT {columns} FROM messages m"
    return f"SELECT {columns} FROM messages m LEFT JOIN message_data d ON d.id = m.id"


def _message_rows(conn: sqlite3.Connection, mailbox_id: int, uids: list[int],
                  with_summary: bool, imap_wire: bool = False) -> list[sqlite3.Row]:
    out: list[sqlite3.Row] = []
    for i in range(0, len(uids), 500):
        chunk = uids[i:i + 500]
        out += conn.execute(
            f"{_select(with_summary, imap_wire)} WHERE m.mailbox_id=? AND m.uid IN "
            f"({','.join('?' * len(chunk))}) ORDER BY m.uid", (mailbox_id, *chunk)).fetchall()
    return out


def _uid_queries(select: str, mailbox_id: int, uids: list[int]) -> tuple[list[tuple[str, tuple[Any, ...]]], set[int] | None]:
    """The statements that read ``select`` (over ``messages m``) of the rows of ``uids``
    (ascending, not empty) in UID order, and the UIDs to keep of what they return (None:
    every row). A dense run of UIDs (a whole mailbox, a range) is one BETWEEN on the
    (mailbox_id, uid) index, filtered unless the run has no gaps; a sparse set is IN lists."""
    first, last = uids[0], uids[-1]
    if len(uids) * 2 >= last - first + 1:
        return ([(f"{select} WHERE m.mailbox_id=? AND m.uid BETWEEN ? AND ? ORDER BY m.uid", (mailbox_id, first, last))],
                None if len(uids) == last - first + 1 else set(uids))
    return [(f"{select} WHERE m.mailbox_id=? AND m.uid IN ({','.join('?' * len(chunk))}) ORDER BY m.uid",
             (mailbox_id, *chunk)) for chunk in (uids[i:i + 500] for i in range(0, len(uids), 500))], None


def _uid_row_iter(conn: sqlite3.Connection, select: str, mailbox_id: int, uids: list[int]) -> Generator[Any, None, None]:
    """:func:`_uid_rows` a row at a time (each row stepped when asked for), so that a reader
    may stop part way and leave the rest; close it when stopping early."""
    if not uids:
        return
    queries, wanted = _uid_queries(select, mailbox_id, uids)
    cur = conn.cursor()
    cur.row_factory = None
    try:
        for sql, params in queries:
            for row in cur.execute(sql, params):
                if wanted is None or row[0] in wanted:
                    yield row
    finally:
        cur.close()


def _uid_rows(conn: sqlite3.Connection, select: str, mailbox_id: int, uids: list[int]) -> list[Any]:
    """``select`` (over ``messages m``) of the rows of ``uids`` (ascending), as plain tuples in
    UID order (:func:`_uid_queries`)."""
    if not uids:
        return []
    queries, wanted = _uid_queries(select, mailbox_id, uids)
    cur = conn.cursor()
    cur.row_factory = None
    out: list[Any] = []
    for sql, params in queries:
        out += cur.execute(sql, params).fetchall()
    return out if wanted is None else [r for r in out if r[0] in wanted]


@dataclass(frozen=True, slots=True)
class _Prepared:
    """What a delivery stores beside the blob reference, computed before the transaction."""

    summary: dict[str, Any]
    stored_summary: bytes
    """:func:`encode_summary` of ``summary``."""
    fts: tuple[str, ...]
    wire: tuple[bytes, bytes] | None
    header: bytes | None
    """The header block as ``message_headers`` keeps it (:func:`headerblock.pack`); None:
    not kept (over :data:`headerblock.MAX_BLOCK`)."""


def _prepare(raw: bytes, summary: dict[str, Any] | None = None, *, whole: bool = True) -> _Prepared:
    """The summary (``summary``, else computed), as stored, search text, IMAP wire forms and
    header block (``whole``: ``raw`` is the whole message, not its start)."""
    s = summary if summary is not None else summarize(raw)
    fts = search_fields(raw, s)     # takes the body text out of the summary before it is stored
    block = header_block(raw, whole=whole)
    return _Prepared(s, encode_summary(s), fts, wire_forms(s), None if block is None else pack(block))


def _prepare_file(path: str) -> _Prepared:
    """:func:`_prepare` of a large message in bounded memory (never the whole file)."""
    s, prefix = summarize_file(path)
    return _prepare(prefix, s, whole=False)


def from_stored(blobs: Any, blob_id: str, whole: Callable[[bytes], T], large: Callable[[str], T]) -> T:
    """``whole`` of a message's bytes, or ``large`` of its file when it is a file over
    :data:`LARGE_MESSAGE` (read in bounded memory), as a delivery made it: for reindex and
    the refill of a lost index, on a thread. OSError or NotFound when the bytes are missing."""
    path = blobs.file_path(blob_id)
    if path is not None and os.path.getsize(path) > LARGE_MESSAGE:
        return large(path)
    return whole(blobs.read_sync(blob_id))


def _search_fields_of(raw: bytes) -> tuple[str, ...]:
    """``_prepare(raw).fts`` alone: the search text a delivery pends, without the stored
    summary, wire forms and header block (a refill of a lost index, sqliterefill.py)."""
    return search_fields(raw, summarize(raw))


def _search_fields_of_file(path: str) -> tuple[str, ...]:
    """``_prepare_file(path).fts`` alone (:func:`_search_fields_of` of a large message)."""
    s, prefix = summarize_file(path)
    return search_fields(prefix, s)
