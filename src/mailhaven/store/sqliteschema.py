"""SQLite store: the tables of ``DATA/mailhaven.db`` and the upgrade of older databases."""

from __future__ import annotations

import logging
import sqlite3

from .searchdb import unpack_text

_log = logging.getLogger("mailhaven.store")

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS domains (name TEXT PRIMARY KEY);
CREATE TABLE IF NOT EXISTS accounts (
    id INTEGER PRIMARY KEY,
    address TEXT NOT NULL UNIQUE,
    domain TEXT NOT NULL REFERENCES domains(name),
    password TEXT NOT NULL,
    scram TEXT NOT NULL DEFAULT '',
    quota INTEGER,
    used INTEGER NOT NULL DEFAULT 0,
    modseq INTEGER NOT NULL DEFAULT 1,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS aliases (
    address TEXT NOT NULL,
    target TEXT NOT NULL,
    PRIMARY KEY (address, target)
);
CREATE TABLE IF NOT EXISTS mailboxes (
    id INTEGER PRIMARY KEY,
    account_id INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    special_use TEXT,
    uidvalidity INTEGER NOT NULL,
    uidnext INTEGER NOT NULL DEFAULT 1,
    highestmodseq INTEGER NOT NULL DEFAULT 1,
    recent_uid INTEGER NOT NULL DEFAULT 1,
    UNIQUE (account_id, name)
);
CREATE TABLE IF NOT EXISTS subscriptions (
    account_id INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    PRIMARY KEY (account_id, name)
);
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY,
    mailbox_id INTEGER NOT NULL REFERENCES mailboxes(id) ON DELETE CASCADE,
    account_id INTEGER NOT NULL,
    uid INTEGER NOT NULL,
    blob_id TEXT NOT NULL,
    size INTEGER NOT NULL,
    internal_date REAL NOT NULL,
    flags TEXT NOT NULL DEFAULT '',
    modseq INTEGER NOT NULL,
    thread_id INTEGER NOT NULL,
    message_id TEXT NOT NULL DEFAULT '',
    UNIQUE (mailbox_id, uid)
);
-- What a message row would otherwise carry in kilobytes: the parsed summary and the
-- ENVELOPE/BODYSTRUCTURE rendered at delivery. Apart, messages rows stay narrow (about 100
-- bytes), so a STORE rewrites dozens of them per page instead of two or three, as Dovecot
-- keeps flags in its index and the rest in its cache file.
CREATE TABLE IF NOT EXISTS message_data (
    id INTEGER PRIMARY KEY,                 -- messages.id
    summary TEXT NOT NULL,
    imap_envelope BLOB,
    imap_body BLOB
);
-- The header block of each message (store/headerblock.py: the one-message header FETCH
-- reads this small row, not the message). Rows stored by older versions have none: FETCH
-- reads their bytes, and `mailhaven store reindex` writes it.
CREATE TABLE IF NOT EXISTS message_headers (
    id INTEGER PRIMARY KEY,                 -- messages.id
    header BLOB NOT NULL                    -- headerblock.pack of the block
);
CREATE INDEX IF NOT EXISTS messages_mailbox_modseq ON messages (mailbox_id, modseq);
CREATE INDEX IF NOT EXISTS messages_message_id ON messages (account_id, message_id);
-- Each index is a B-tree page more that a delivery writes to the WAL (and the checkpoint
-- copies again), so there are no others (issue 18; _upgrade drops the two there were):
-- * messages (blob_id): a sha256 key lands on a random leaf (1.1-1.2 of a delivery's 9-17
--   frames at 4 KB) and no hot read used it: the JMAP ownership check (account_has_blob)
--   was planned on the account's index either way, and the hourly garbage collection
--   reads every blob_id once.
-- * messages (account_id, modseq): an account's messages are those of its mailboxes, so its
--   changes (account_changes_since) are read through messages_mailbox_modseq, mailbox by
--   mailbox; the other account-wide reads take messages_message_id's first column.
-- Message-IDs each message refers to (References, In-Reply-To), so that a parent that
-- arrives after its replies finds their thread by index instead of scanning summaries.
CREATE TABLE IF NOT EXISTS message_refs (
    account_id INTEGER NOT NULL,
    ref TEXT NOT NULL,
    thread_id INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS message_refs_ref ON message_refs (account_id, ref);
CREATE TABLE IF NOT EXISTS expunged (
    mailbox_id INTEGER NOT NULL,
    account_id INTEGER NOT NULL,
    message_id INTEGER NOT NULL,
    uid INTEGER NOT NULL,
    modseq INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS expunged_mailbox ON expunged (mailbox_id, modseq);
CREATE INDEX IF NOT EXISTS expunged_account ON expunged (account_id, modseq);
-- Search text of messages not in the search index (search.db, searchdb.py) yet: written
-- with the message (cheap), moved into the trigram index in slices beside deliveries, and
-- always before a search.
CREATE TABLE IF NOT EXISTS fts_pending (
    id INTEGER PRIMARY KEY,
    subject TEXT, sender TEXT, recipients TEXT, cc TEXT, bcc TEXT, body TEXT, headers TEXT
);
"""


def _upgrade(conn: sqlite3.Connection) -> bool:
    """Bring a database made by an older version up to this schema. True: the search index
    was in it, and its text is pending again (the index database is to start empty)."""
    columns = {r[1] for r in conn.execute("PRAGMA table_info(mailboxes)")}
    if "recent_uid" not in columns:
        conn.execute("ALTER TABLE mailboxes ADD COLUMN recent_uid INTEGER NOT NULL DEFAULT 1")
        conn.execute("UPDATE mailboxes SET recent_uid = uidnext")   # mail already there is not new
    columns = {r[1] for r in conn.execute("PRAGMA table_info(messages)")}
    if "summary" in columns:
        # Summaries lived in the messages rows: move them out (once; the table is rewritten).
        # Rows from before ENVELOPE/BODYSTRUCTURE were stored keep NULL: FETCH renders them.
        wire = "imap_envelope, imap_body" if "imap_envelope" in columns else "NULL, NULL"
        _log.info("moving message summaries to message_data (once, after an upgrade)")
        conn.execute(f"INSERT OR IGNORE INTO message_data SELECT id, summary, {wire} FROM messages")
        for column in ("summary", "imap_envelope", "imap_body"):
            if column in columns:
                conn.execute(f"ALTER TABLE messages DROP COLUMN {column}")
    conn.execute("DROP INDEX IF EXISTS messages_blob")         # see SCHEMA
    conn.execute("DROP INDEX IF EXISTS messages_account_modseq")
    moved = False
    if conn.execute("SELECT 1 FROM sqlite_master WHERE name='messages_fts'").fetchone() is not None:
        # The index kept its own copy of the text (and all positions): its text
        # goes back to the backlog, which the indexer moves into search.db (searches flush).
        _log.info("moving the search index to a contentless table (once, after an upgrade)")
        conn.execute("INSERT OR IGNORE INTO fts_pending SELECT rowid, subject, sender, recipients, cc, bcc, "
                     "body, headers FROM messages_fts WHERE rowid IN (SELECT id FROM messages)")
        conn.execute("DROP TABLE messages_fts")
        moved = True
    if conn.execute("SELECT 1 FROM sqlite_master WHERE name='search_text'").fetchone() is not None:
        # The index lived in this database, where its slices held the deliveries' write lock:
        # its kept text goes back to the backlog, which the indexer moves into search.db.
        _log.info("moving the search index to search.db (once, after an upgrade)")
        for message_id, stored in conn.execute("SELECT id, text FROM search_text").fetchall():
            conn.execute("INSERT OR IGNORE INTO fts_pending (id, subject, sender, recipients, cc, bcc, body, "
                         "headers) VALUES (?,?,?,?,?,?,?,?)", (message_id, *unpack_text(stored)))
        conn.execute("DROP TABLE search_text")
        moved = True
    if conn.execute("SELECT 1 FROM sqlite_master WHERE name='search_index'").fetchone() is not None:
        conn.execute("DROP TABLE search_index")
    # A mailbox created under the id of a deleted one by an older version started at
    # HIGHESTMODSEQ 1, below the deleted mailbox's expunges: lift it above them.
    conn.execute("UPDATE mailboxes SET highestmodseq = (SELECT MAX(modseq) FROM expunged e "
                 "WHERE e.mailbox_id = mailboxes.id) WHERE highestmodseq < (SELECT MAX(modseq) "
                 "FROM expunged e WHERE e.mailbox_id = mailboxes.id)")
    return moved
