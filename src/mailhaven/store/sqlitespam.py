"""SQLite store: the spam classifier's token counts, allow/block lists and greylisting.
Mixed into :class:`mailhaven.store.sqlite.SQLiteStore`."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import TYPE_CHECKING

from .api import SpamState

if TYPE_CHECKING:
    from .db import Database

SCHEMA = """
CREATE TABLE IF NOT EXISTS spam_tokens (
    scope INTEGER NOT NULL,
    token TEXT NOT NULL,
    spam INTEGER NOT NULL DEFAULT 0,
    ham INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (scope, token)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS spam_totals (
    scope INTEGER PRIMARY KEY,
    spam INTEGER NOT NULL DEFAULT 0,
    ham INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS spam_lists (
    account_id INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    entry TEXT NOT NULL,
    kind TEXT NOT NULL,
    PRIMARY KEY (account_id, entry)
);
CREATE TABLE IF NOT EXISTS greylist (
    key TEXT PRIMARY KEY,
    first REAL NOT NULL,
    passed INTEGER NOT NULL DEFAULT 0
);
"""

BATCH = 500
"""Tokens per SELECT (SQLite's bound-parameter limit is 999 in older builds)."""


_TOTALS = "SELECT spam, ham FROM spam_totals WHERE scope=?"


class SpamMethods:
    if TYPE_CHECKING:
        db: Database

    async def spam_token_counts(self, scope: int, tokens: Sequence[str]) -> tuple[int, int, dict[str, tuple[int, int]]]:
        wanted = list(dict.fromkeys(tokens))

        def read(conn: sqlite3.Connection) -> tuple[int, int, dict[str, tuple[int, int]]]:
            totals = conn.execute(_TOTALS, (scope,)).fetchone()
            counts: dict[str, tuple[int, int]] = {}
            for i in range(0, len(wanted), BATCH):
                part = wanted[i:i + BATCH]
                for token, spam, ham in conn.execute(
                        f"SELECT token, spam, ham FROM spam_tokens WHERE scope=? AND token IN "
                        f"({','.join('?' * len(part))})", (scope, *part)):
                    counts[token] = (int(spam), int(ham))
            return (int(totals[0]), int(totals[1]), counts) if totals else (0, 0, counts)

        if not wanted:          # the totals alone (is Bayes ready?), asked for every message:
            # one row, read on the loop, as one statement (no BEGIN/COMMIT: db.query_sync)
            totals = self.db.query_sync(_TOTALS, (scope,))
            return (int(totals[0][0]), int(totals[0][1]), {}) if totals else (0, 0, {})
        return await self.db.read(read)

    async def spam_train(self, account_id: int, tokens: Sequence[str], *, spam: bool) -> None:
        column = "spam" if spam else "ham"
        distinct = list(dict.fromkeys(tokens))

        def train(conn: sqlite3.Connection) -> None:
            for scope in (account_id, 0):
                conn.execute(f"INSERT INTO spam_totals (scope, {column}) VALUES (?, 1) "
                             f"ON CONFLICT (scope) DO UPDATE SET {column}={column}+1", (scope,))
                conn.executemany(f"INSERT INTO spam_tokens (scope, token, {column}) VALUES (?,?,1) "
                                 f"ON CONFLICT (scope, token) DO UPDATE SET {column}={column}+1",
                                 [(scope, t) for t in distinct])

        await self.db.write(train)

    async def spam_lists(self, account_id: int) -> dict[str, str]:
        # Every inbound message asks, for each recipient account: a few indexed rows, read
        # on the loop as one statement (a thread hop, or a BEGIN and COMMIT around it, cost
        # more than the read; db.query_sync).
        rows = self.db.query_sync("SELECT entry, kind FROM spam_lists WHERE account_id=?", (account_id,))
        return {str(r[0]): str(r[1]) for r in rows}

    async def spam_state(self, account_ids: Sequence[int]) -> SpamState:
        # Every inbound message asks: the lists and totals as one statement on the loop
        # (as spam_lists: db.query_sync), not one per table and account.
        ids = list(dict.fromkeys(account_ids))
        rows = self.db.query_sync(
            f"SELECT account_id, entry, kind, 0, 0 FROM spam_lists WHERE account_id IN ({','.join('?' * len(ids))}) "
            f"UNION ALL SELECT scope, NULL, NULL, spam, ham FROM spam_totals "
            f"WHERE scope IN ({','.join('?' * (len(ids) + 1))})", (*ids, 0, *ids))
        return spam_state_from_rows(rows)

    async def set_spam_list(self, account_id: int, entry: str, kind: str | None) -> None:
        def put(conn: sqlite3.Connection) -> None:
            if kind is None:
                conn.execute("DELETE FROM spam_lists WHERE account_id=? AND entry=?", (account_id, entry.lower()))
            else:
                conn.execute("INSERT INTO spam_lists (account_id, entry, kind) VALUES (?,?,?) "
                             "ON CONFLICT (account_id, entry) DO UPDATE SET kind=excluded.kind",
                             (account_id, entry.lower(), kind))

        await self.db.write(put)

    async def greylist_pass(self, key: str, *, now: float, delay: float, expire: float) -> bool:
        def check(conn: sqlite3.Connection) -> bool:
            row = conn.execute("SELECT first, passed FROM greylist WHERE key=?", (key,)).fetchone()
            if row is not None and (row[1] or delay <= now - row[0] <= expire):
                conn.execute("UPDATE greylist SET passed=1 WHERE key=?", (key,))
                return True
            if row is None or now - row[0] > expire:
                conn.execute("INSERT INTO greylist (key, first) VALUES (?,?) "
                             "ON CONFLICT (key) DO UPDATE SET first=excluded.first", (key, now))
            return False

        return await self.db.write(check)


def spam_state_from_rows(rows: Sequence[Sequence[object]]) -> SpamState:
    """:class:`SpamState` from rows (account or scope, entry, kind, spam, ham): a totals row
    has no entry (spam_lists.entry is NOT NULL)."""
    lists: dict[int, dict[str, str]] = {}
    totals: dict[int, tuple[int, int]] = {}
    for owner, entry, kind, spam, ham in rows:
        if entry is None:
            totals[int(owner)] = (int(spam), int(ham))  # type: ignore[call-overload]
        else:
            lists.setdefault(int(owner), {})[str(entry)] = str(kind)  # type: ignore[call-overload]
    return SpamState(lists=lists, totals=totals)
