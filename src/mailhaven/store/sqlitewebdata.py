"""SQLite store: what the web layer keeps (bearer tokens, JMAP identity settings) and the
account-wide message lookups JMAP makes. Mixed into :class:`mailhaven.store.sqlite.SQLiteStore`."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .api import IndexRow, TokenInfo

if TYPE_CHECKING:
    from .db import Database

SCHEMA = """
CREATE TABLE IF NOT EXISTS web_tokens (
    hash TEXT PRIMARY KEY,
    account_id INTEGER NOT NULL,
    label TEXT NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS jmap_identities (
    account_id INTEGER NOT NULL, email TEXT NOT NULL, data TEXT NOT NULL, PRIMARY KEY (account_id, email));
"""
_INDEX_COLUMNS = "id, mailbox_id, uid, size, internal_date, thread_id, flags"


def _marks(values: Sequence[Any]) -> str:
    return ",".join("?" * len(values)) or "NULL"


class WebDataMethods:
    if TYPE_CHECKING:
        db: Database

    # -- account-wide message lookups (JMAP) ---------------------------------
    async def account_has_blob(self, account_id: int, blob_id: str) -> bool:
        row = await self.db.read(lambda conn: conn.execute(
            "SELECT 1 FROM messages WHERE blob_id=? AND account_id=? LIMIT 1", (blob_id, account_id)).fetchone())
        return row is not None

    async def thread_members(self, account_id: int, thread_ids: Sequence[int]) -> dict[int, list[int]]:
        ids = list(thread_ids)
        if not ids:
            return {}
        found = await self.db.read(lambda conn: conn.execute(
            f"SELECT thread_id, id FROM messages WHERE account_id=? AND thread_id IN ({_marks(ids)}) "
            "ORDER BY internal_date, id", (account_id, *ids)).fetchall())
        out: dict[int, list[int]] = {t: [] for t in ids}
        for thread_id, message_id in found:
            out.setdefault(int(thread_id), []).append(int(message_id))
        return out

    async def message_index(self, account_id: int, mailbox_ids: Sequence[int] | None = None) -> list[IndexRow]:
        sql = f"SELECT {_INDEX_COLUMNS} FROM messages WHERE account_id=?"
        params: tuple[Any, ...] = (account_id,)
        if mailbox_ids is not None:
            sql += f" AND mailbox_id IN ({_marks(mailbox_ids)})"
            params += tuple(mailbox_ids)

        def fetch(conn: sqlite3.Connection) -> list[IndexRow]:
            return [tuple(r) for r in conn.execute(sql, params)]      # flags are stored as the text

        return await self.db.read(fetch)  # type: ignore[no-any-return]

    async def ordered_message_ids(self, account_id: int, mailbox_id: int | None, column: str,
                                  ascending: bool) -> list[tuple[int, int]]:
        if column not in ("internal_date", "size"):
            raise ValueError(f"cannot order by {column!r}")
        order = f"ORDER BY {column} {'ASC' if ascending else 'DESC'}, id DESC"
        params: tuple[int, ...] = (account_id,)
        sql = "SELECT id, thread_id FROM messages WHERE account_id=?"
        if mailbox_id is not None:
            sql += " AND mailbox_id=?"
            params += (mailbox_id,)
        sql += " " + order
        found = await self.db.read(lambda conn: conn.execute(sql, params).fetchall())
        return [(r[0], r[1]) for r in found]

    # -- bearer tokens --------------------------------------------------------
    async def add_token(self, account_id: int, digest: str, label: str, *, created: float) -> None:
        await self.db.write(lambda conn: conn.execute("INSERT INTO web_tokens VALUES (?,?,?,?)",
                                                      (digest, account_id, label, created)))

    async def list_tokens(self, account_id: int) -> list[TokenInfo]:
        found = await self.db.read(lambda conn: conn.execute(
            "SELECT hash, label, created FROM web_tokens WHERE account_id=? ORDER BY created", (account_id,)).fetchall())
        return [TokenInfo(digest=r[0], label=r[1], created=float(r[2])) for r in found]

    async def revoke_tokens(self, account_id: int, digest_prefix: str) -> int:
        pattern = digest_prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        return await self.db.write(lambda conn: conn.execute(  # type: ignore[no-any-return]
            "DELETE FROM web_tokens WHERE account_id=? AND hash LIKE ? ESCAPE '\\'", (account_id, pattern)).rowcount)

    async def token_account(self, digest: str) -> int | None:
        row = await self.db.read(lambda conn: conn.execute(
            "SELECT account_id FROM web_tokens WHERE hash=?", (digest,)).fetchone())
        return int(row[0]) if row is not None else None

    # -- JMAP identities ----------------------------------------------------
    async def identity_settings(self, account_id: int) -> dict[str, dict[str, Any]]:
        found = await self.db.read(lambda conn: conn.execute(
            "SELECT email, data FROM jmap_identities WHERE account_id=?", (account_id,)).fetchall())
        return {r[0]: json.loads(r[1]) for r in found}

    async def save_identity_settings(self, account_id: int, address: str, settings: dict[str, Any]) -> None:
        text = json.dumps(settings)
        await self.db.write(lambda conn: conn.execute(
            "INSERT INTO jmap_identities VALUES (?,?,?) ON CONFLICT (account_id, email) DO UPDATE SET data=excluded.data",
            (account_id, address, text)))
