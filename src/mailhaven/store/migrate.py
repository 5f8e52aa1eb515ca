"""Move an installation from the SQLite store to PostgreSQL, keeping every identity.

Copies domains, accounts (password hashes and SCRAM secrets as they are, so nobody
needs a new password), aliases, mailboxes with their UIDVALIDITY/UIDNEXT/HIGHESTMODSEQ,
subscriptions, messages with their UIDs, ids, flags, MODSEQs and threads, the expunge
log (so IMAP QRESYNC and JMAP clients sync on without a full reload), and message bytes
(blob files into the ``blobs`` table) and search text. Clients see the same mailboxes,
the same UIDs and the same state strings afterwards.

The target schema must be empty (a fresh database or a new ``[store] schema``). Stop the
server first: the copy reads one consistent SQLite snapshot, but mail arriving later
would not follow. Everything is written in one PostgreSQL transaction: an interrupted
migration leaves the target empty.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg

from ..message.summary import message_ids
from .pgqueue import SCHEMA as QUEUE_SCHEMA
from .pgschema import check_schema_name, ensure_schema
from .pgwebdata import SCHEMA as WEB_SCHEMA
from .queuerows import COLUMNS as QUEUE_COLUMNS
from .searchdb import INDEX_FILE, SEARCH_COLUMNS, unpack_text
from .sqliterows import decode_summary

BATCH = 500

_TABLES = ("domains", "accounts", "aliases", "mailboxes", "subscriptions", "blobs", "blob_text",
           "messages", "expunged", "queue", "web_tokens", "jmap_identities")


class MigrationError(Exception):
    pass


def _refill_listed(lite: sqlite3.Connection) -> bool:
    """A refill of the search index is listed (sqliterefill.py): text is missing from both
    ``fts_pending`` and search.db for some messages."""
    if lite.execute("SELECT 1 FROM sqlite_master WHERE name='search_refill'").fetchone() is None:
        return False
    return lite.execute("SELECT 1 FROM search_refill").fetchone() is not None


async def sqlite_to_postgres(data_dir: Path, dsn: str, schema: str,
                             progress: Callable[[str], None] = lambda _: None) -> dict[str, int]:
    """Copy ``DATA/mailhaven.db`` and ``DATA/blobs`` into ``schema``; returns row counts."""
    check_schema_name(schema)
    db_path = data_dir / "mailhaven.db"
    if not db_path.is_file():
        raise MigrationError(f"no SQLite store at {db_path}")
    lite = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, check_same_thread=False)
    lite.row_factory = sqlite3.Row
    index_path = data_dir / INDEX_FILE          # the search index's own database, if any
    index_attached = index_path.is_file()
    if index_attached:                          # (before the snapshot's BEGIN: ATTACH is not allowed in one)
        lite.execute("ATTACH DATABASE ? AS idx", (f"file:{index_path}?mode=ro",))
    if _refill_listed(lite):
        lite.close()
        raise MigrationError("the search index is being refilled (search.db was lost, or did not match "
                             "mailhaven.db): the messages not refilled yet would have no search text. Let "
                             "`mailhaven serve` end the refill (its log says \"search index refilled\"), or run "
                             "`mailhaven store reindex`, then migrate again")
    conn = await asyncpg.connect(dsn, server_settings={"search_path": f'"{schema}", public'})
    counts: dict[str, int] = {}
    try:
        await ensure_schema(conn, schema, fresh=False)
        await conn.execute(QUEUE_SCHEMA + WEB_SCHEMA)
        for table in _TABLES:
            if await conn.fetchval(f"SELECT EXISTS (SELECT 1 FROM {table})"):
                raise MigrationError(f"schema {schema!r} is not empty (table {table} has rows)")
        await asyncio.to_thread(lite.execute, "BEGIN")  # one snapshot of the source
        async with conn.transaction():

            async def copy(table: str, sql: str, columns: tuple[str, ...],
                           convert: Callable[[sqlite3.Row], tuple[Any, ...]]) -> None:
                cur = await asyncio.to_thread(lite.execute, sql)
                n = 0
                while batch := await asyncio.to_thread(cur.fetchmany, BATCH):
                    records = [convert(r) for r in batch]
                    await conn.copy_records_to_table(table, records=records, columns=columns)
                    n += len(records)
                counts[table] = n
                progress(f"{table}: {n}")

            await copy("domains", "SELECT name FROM domains", ("name",), lambda r: (r[0],))
            await copy("accounts", "SELECT * FROM accounts ORDER BY id",
                       ("id", "address", "domain", "password", "scram", "quota", "used", "modseq", "created"),
                       lambda r: (r["id"], r["address"], r["domain"], r["password"], r["scram"], r["quota"],
                                  r["used"], r["modseq"], float(r["created"])))
            await copy("aliases", "SELECT address, target FROM aliases", ("address", "target"),
                       lambda r: (r[0], r[1]))
            await copy("mailboxes", "SELECT * FROM mailboxes ORDER BY id",
                       ("id", "account_id", "name", "special_use", "uidvalidity", "uidnext", "highestmodseq",
                        "recent_uid"),
                       lambda r: (r["id"], r["account_id"], r["name"], r["special_use"], r["uidvalidity"],
                                  r["uidnext"], r["highestmodseq"],
                                  r["recent_uid"] if "recent_uid" in r.keys() else r["uidnext"]))
            await copy("subscriptions", "SELECT account_id, name FROM subscriptions", ("account_id", "name"),
                       lambda r: (r[0], r[1]))
            await _copy_blobs(conn, lite, data_dir, counts, progress)
            # Search text not yet indexed waits in fts_pending (where the source has that table).
            # Indexed text is kept in search_text: in search.db (searchdb.py), in mailhaven.db
            # before that, in messages_fts before that. Text in the index for an id with pending
            # text or a drop listed is not that message's (searchdb.py's invariant).
            tables = {r[0] for r in lite.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            kept = "search_text" if "search_text" in tables else None
            if kept is None and index_attached and lite.execute(
                    "SELECT 1 FROM idx.sqlite_master WHERE name='search_text'").fetchone():
                kept = "idx.search_text"
            lite.create_function("search_field", 2, lambda stored, i: unpack_text(stored)[i], deterministic=True)
            stale = " WHERE id NOT IN (SELECT id FROM fts_pending)" if "fts_pending" in tables else ""
            if "search_drops" in tables:
                stale += (" AND" if stale else " WHERE") + " id NOT IN (SELECT id FROM search_drops)"
            indexed = ("SELECT id, " + ", ".join(f"search_field(text, {i}) AS {c}" for i, c in enumerate(SEARCH_COLUMNS))
                       + f" FROM {kept}{stale}" if kept is not None
                       else "SELECT rowid AS id, * FROM messages_fts" if "messages_fts" in tables
                       else "SELECT NULL AS id" + ", NULL" * len(SEARCH_COLUMNS) + " WHERE 0")
            text_source = f"({indexed}" + (" UNION ALL SELECT * FROM fts_pending)" if "fts_pending" in tables else ")")
            await copy("blob_text",
                       "SELECT m.blob_id, f.subject, f.sender, f.recipients, f.cc, f.bcc, f.body, f.headers "
                       f"FROM messages m JOIN {text_source} f ON f.id = m.id "
                       "WHERE m.id IN (SELECT min(id) FROM messages GROUP BY blob_id)",
                       ("blob_id", "subject", "sender", "recipients", "cc", "bcc", "body", "headers"),
                       lambda r: (r[0], *(_clean(r[i] or "") for i in range(1, 8))))
            # Summaries live in message_data (a source from an older version has them in messages).
            split = lite.execute("SELECT 1 FROM sqlite_master WHERE name='message_data'").fetchone()
            headers = lite.execute("SELECT 1 FROM sqlite_master WHERE name='message_headers'").fetchone()
            await copy("messages", "SELECT m.*, d.summary, d.imap_envelope, d.imap_body"
                       + (", h.header FROM messages m LEFT JOIN message_headers h ON h.id = m.id"
                          if headers else " FROM messages m")
                       + " LEFT JOIN message_data d ON d.id = m.id ORDER BY m.id" if split
                       else "SELECT * FROM messages ORDER BY id",
                       ("id", "mailbox_id", "account_id", "uid", "blob_id", "size", "internal_date", "flags",
                        "modseq", "thread_id", "message_id", "parent_ids", "summary", "imap_envelope",
                        "imap_body", "header"),
                       _message_record)
            await copy("expunged", "SELECT * FROM expunged",
                       ("mailbox_id", "account_id", "message_id", "uid", "modseq"),
                       lambda r: (r["mailbox_id"], r["account_id"], r["message_id"], r["uid"], r["modseq"]))
            # What the store keeps for the queue and the web layer (absent from old sources).
            source = {r[0] for r in lite.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            if "queue" in source:
                have = {r[1] for r in lite.execute("PRAGMA table_info(queue)")}
                select = ", ".join(c if c in have else f"'' AS {c}" for c in QUEUE_COLUMNS.split(", "))
                await copy("queue", f"SELECT {select} FROM queue ORDER BY id",
                           tuple(QUEUE_COLUMNS.split(", ")),
                           _queue_record)
            if "web_tokens" in source:
                await copy("web_tokens", "SELECT hash, account_id, label, created FROM web_tokens",
                           ("hash", "account_id", "label", "created"), lambda r: (r[0], r[1], r[2], float(r[3])))
            if "jmap_identities" in source:
                await copy("jmap_identities", "SELECT account_id, email, data FROM jmap_identities",
                           ("account_id", "email", "data"), lambda r: (r[0], r[1], r[2]))
            uidvalidity = await asyncio.to_thread(
                lambda: lite.execute("SELECT value FROM meta WHERE key='uidvalidity'").fetchone())
            if uidvalidity is not None:
                await conn.execute("INSERT INTO counters VALUES ('uidvalidity', $1) ON CONFLICT (name) "
                                   "DO UPDATE SET value = GREATEST(counters.value, EXCLUDED.value)",
                                   int(uidvalidity[0]))
            # New rows continue after the copied ids (message ids are JMAP Email ids).
            for table in ("accounts", "mailboxes", "messages", "queue"):
                await conn.execute(f"SELECT setval('{table}_id_seq', GREATEST((SELECT max(id) FROM {table}), 1))")
    finally:
        await conn.close()
        lite.close()
    return counts


def _queue_record(row: sqlite3.Row) -> tuple[Any, ...]:
    r = tuple(row)      # smtputf8 and warned are booleans in PostgreSQL
    return (*r[:12], bool(r[12]), *r[13:19], bool(r[19]), *r[20:])


async def _copy_blobs(conn: asyncpg.Connection, lite: sqlite3.Connection, data_dir: Path,
                      counts: dict[str, int], progress: Callable[[str], None]) -> None:
    """Every blob a message or queue entry names, from its file or the ``blob_data`` table
    (small blobs); a missing blob stops the copy."""
    tables = {r[0] for r in lite.execute("SELECT name FROM sqlite_master WHERE type='table'")}

    def referenced() -> list[str]:
        sql = "SELECT DISTINCT blob_id FROM messages"
        if "queue" in tables and "blob_id" in {r[1] for r in lite.execute("PRAGMA table_info(queue)")}:
            sql += " UNION SELECT blob_id FROM queue"
        return [r[0] for r in lite.execute(sql)]

    ids = await asyncio.to_thread(referenced)
    n = 0
    for i in range(0, len(ids), 100):
        chunk = ids[i:i + 100]

        def read(chunk: list[str] = chunk) -> list[tuple[str, int, bytes]]:
            out = []
            for blob_id in chunk:
                path = data_dir / "blobs" / blob_id[:2] / blob_id[2:4] / blob_id
                try:
                    data = path.read_bytes()
                except FileNotFoundError:
                    row = (lite.execute("SELECT data FROM blob_data WHERE id=?", (blob_id,)).fetchone()
                           if "blob_data" in tables else None)
                    if row is None:
                        raise MigrationError(f"blob {blob_id} is named by a row but is missing") from None
                    data = bytes(row[0])
                out.append((blob_id, len(data), data))
            return out

        records = await asyncio.to_thread(read)
        await conn.copy_records_to_table("blobs", records=records, columns=("id", "size", "data"))
        n += len(records)
    counts["blobs"] = n
    progress(f"blobs: {n}")


def _clean(text: str) -> str:
    return text.replace("\x00", "").encode("utf-8", "replace").decode("utf-8")


def _message_record(r: sqlite3.Row) -> tuple[Any, ...]:
    summary = decode_summary(r["summary"])
    parents = list(dict.fromkeys(message_ids(_clean(str(summary.get("references", "") or "")))
                                 + message_ids(_clean(str(summary.get("in_reply_to", "") or "")))))
    flags = sorted(set(r["flags"].split())) if r["flags"] else []
    return (r["id"], r["mailbox_id"], r["account_id"], r["uid"], r["blob_id"], r["size"],
            float(r["internal_date"]), flags, r["modseq"], r["thread_id"], _clean(r["message_id"] or ""),
            parents, json.dumps(summary),
            *((r["imap_envelope"], r["imap_body"]) if "imap_envelope" in r.keys() else (None, None)),
            r["header"] if "header" in r.keys() else None)
