"""The PostgreSQL schema: tables, indexes, and how a node creates them safely.

Every node runs :func:`ensure_schema` at start-up; an advisory lock keyed on the schema
name makes concurrent start-ups take turns, so ``CREATE ... IF NOT EXISTS`` never races.
All objects live in one schema (``search_path`` = that schema, then ``public``), so one
database can hold several independent installations (and the test suite's throwaway
schemas).
"""

from __future__ import annotations

import re

import asyncpg

from .pg_security import TABLES as SECURITY_TABLES

SCHEMA_VERSION = 1

_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,50}$")

TABLES = """
CREATE TABLE IF NOT EXISTS counters (name text PRIMARY KEY, value bigint NOT NULL);
CREATE TABLE IF NOT EXISTS domains (name text PRIMARY KEY);
CREATE TABLE IF NOT EXISTS accounts (
    id bigserial PRIMARY KEY,
    address text NOT NULL UNIQUE,
    domain text NOT NULL REFERENCES domains(name),
    password text NOT NULL,
    scram text NOT NULL DEFAULT '',
    quota bigint,
    used bigint NOT NULL DEFAULT 0,
    modseq bigint NOT NULL DEFAULT 1,
    created double precision NOT NULL
);
CREATE TABLE IF NOT EXISTS aliases (
    address text NOT NULL,
    target text NOT NULL,
    PRIMARY KEY (address, target)
);
CREATE INDEX IF NOT EXISTS aliases_target ON aliases (target);
CREATE TABLE IF NOT EXISTS mailboxes (
    id bigserial PRIMARY KEY,
    account_id bigint NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    name text NOT NULL,
    special_use text,
    uidvalidity bigint NOT NULL,
    uidnext bigint NOT NULL DEFAULT 1,
    highestmodseq bigint NOT NULL DEFAULT 1,
    recent_uid bigint NOT NULL DEFAULT 1,
    UNIQUE (account_id, name)
);
CREATE TABLE IF NOT EXISTS subscriptions (
    account_id bigint NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    name text NOT NULL,
    PRIMARY KEY (account_id, name)
);
-- Message bytes, content-addressed: one row per distinct message, shared by every
-- mailbox that holds it. Committed (WAL-fsynced) before any row names it.
CREATE TABLE IF NOT EXISTS blobs (
    id text PRIMARY KEY,
    size bigint NOT NULL,
    data bytea NOT NULL,
    created timestamptz NOT NULL DEFAULT now()
);
-- A blob over 1 MiB keeps an empty data and its bytes in 1 MiB rows here, written and
-- read a row at a time (pgblobs.py); removed with its blob.
CREATE TABLE IF NOT EXISTS blob_chunks (
    blob_id text NOT NULL REFERENCES blobs(id) ON DELETE CASCADE,
    seq integer NOT NULL,
    data bytea NOT NULL,
    PRIMARY KEY (blob_id, seq)
);
-- Search text, once per blob (a copy or a delivery to 100 users shares it).
CREATE TABLE IF NOT EXISTS blob_text (
    blob_id text PRIMARY KEY REFERENCES blobs(id) ON DELETE CASCADE,
    subject text NOT NULL DEFAULT '',
    sender text NOT NULL DEFAULT '',
    recipients text NOT NULL DEFAULT '',
    cc text NOT NULL DEFAULT '',
    bcc text NOT NULL DEFAULT '',
    body text NOT NULL DEFAULT '',
    headers text NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS messages (
    id bigserial PRIMARY KEY,
    mailbox_id bigint NOT NULL REFERENCES mailboxes(id) ON DELETE CASCADE,
    account_id bigint NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    uid bigint NOT NULL,
    blob_id text NOT NULL REFERENCES blobs(id),
    size bigint NOT NULL,
    internal_date double precision NOT NULL,
    flags text[] NOT NULL DEFAULT '{}',
    modseq bigint NOT NULL,
    thread_id bigint NOT NULL,
    message_id text NOT NULL DEFAULT '',
    parent_ids text[] NOT NULL DEFAULT '{}',
    summary text NOT NULL,
    imap_envelope bytea,
    imap_body bytea,
    header bytea,                           -- headerblock.pack of the header block (NULL: older rows)
    UNIQUE (mailbox_id, uid)
);
CREATE INDEX IF NOT EXISTS messages_account_modseq ON messages (account_id, modseq);
CREATE INDEX IF NOT EXISTS messages_mailbox_modseq ON messages (mailbox_id, modseq);
CREATE INDEX IF NOT EXISTS messages_message_id ON messages (account_id, message_id);
CREATE INDEX IF NOT EXISTS messages_blob ON messages (blob_id);
-- Message-IDs a message refers to (References, In-Reply-To): finds a parent's replies
-- that arrived first without scanning the account.
CREATE INDEX IF NOT EXISTS messages_parent_ids ON messages USING gin (parent_ids);
CREATE TABLE IF NOT EXISTS expunged (
    mailbox_id bigint NOT NULL,
    account_id bigint NOT NULL,
    message_id bigint NOT NULL,
    uid bigint NOT NULL,
    modseq bigint NOT NULL
);
CREATE INDEX IF NOT EXISTS expunged_mailbox ON expunged (mailbox_id, modseq);
CREATE INDEX IF NOT EXISTS expunged_account ON expunged (account_id, modseq);
"""

TEXT_COLUMNS = ("subject", "sender", "recipients", "cc", "bcc", "body", "headers")


def check_schema_name(name: str) -> str:
    if not _NAME.match(name):
        raise ValueError(f"invalid PostgreSQL schema name {name!r}: use [a-z_][a-z0-9_]*")
    return name


async def _trigram_schema(conn: asyncpg.Connection) -> str | None:
    """The schema pg_trgm lives in, installing it when allowed; None when unavailable."""
    found = await conn.fetchval(
        "SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace "
        "WHERE e.extname = 'pg_trgm'")
    if found is not None:
        return str(found)
    try:
        async with conn.transaction():  # a savepoint: failure leaves the outer work intact
            await conn.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm SCHEMA public")
    except asyncpg.PostgresError:
        return None
    return "public"


async def _upgrade(conn: asyncpg.Connection) -> None:
    """Bring a schema made by an older version up to this one (under the advisory lock)."""
    has_recent = await conn.fetchval(
        "SELECT 1 FROM information_schema.columns WHERE table_schema = current_schema() "
        "AND table_name = 'mailboxes' AND column_name = 'recent_uid'")
    if not has_recent:
        await conn.execute("ALTER TABLE mailboxes ADD COLUMN recent_uid bigint NOT NULL DEFAULT 1")
        await conn.execute("UPDATE mailboxes SET recent_uid = uidnext")   # mail already there is not new
    has_wire = await conn.fetchval(
        "SELECT 1 FROM information_schema.columns WHERE table_schema = current_schema() "
        "AND table_name = 'messages' AND column_name = 'imap_envelope'")
    if not has_wire:    # ENVELOPE/BODYSTRUCTURE rendered at delivery; older rows keep NULL
        await conn.execute("ALTER TABLE messages ADD COLUMN imap_envelope bytea, ADD COLUMN imap_body bytea")
    # The header block for the one-message header FETCH (store/headerblock.py); older rows
    # keep NULL (FETCH reads their bytes) until `mailhaven store reindex`.
    await conn.execute("ALTER TABLE messages ADD COLUMN IF NOT EXISTS header bytea")


async def ensure_schema(conn: asyncpg.Connection, schema: str, *, fresh: bool) -> bool:
    """Create (or with ``fresh``, drop and re-create) the schema; True when trigram
    indexes are in place."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", "mailhaven:" + schema)
        if fresh:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
        await conn.execute(f'SET LOCAL search_path = "{schema}", public')
        await conn.execute(TABLES)
        await _upgrade(conn)
        await conn.execute(SECURITY_TABLES)     # login throttle and leases (store/pg_security.py)
        await conn.execute(
            "INSERT INTO counters VALUES ('schema_version', $1) ON CONFLICT (name) DO NOTHING",
            SCHEMA_VERSION)
        trgm = await _trigram_schema(conn)
        if trgm is not None:
            # pg_trgm GIN indexes let ILIKE '%needle%' (3+ characters) use the index.
            for column in TEXT_COLUMNS:
                await conn.execute(
                    f"CREATE INDEX IF NOT EXISTS blob_text_{column}_trgm ON blob_text "
                    f'USING gin ({column} "{trgm}".gin_trgm_ops)')
        return trgm is not None


async def drop_schema(conn: asyncpg.Connection, schema: str) -> None:
    await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
