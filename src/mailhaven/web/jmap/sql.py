"""The few account-wide lookups JMAP needs that the Store protocol does not offer, in SQL
for either backend (the tables are the store's own; read-only)."""

from __future__ import annotations

from typing import Any


def _is_sqlite(store: Any) -> bool:
    from ...store.sqlite import SQLiteStore

    return isinstance(store, SQLiteStore)


async def account_has_blob(store: Any, account_id: int, digest: str) -> bool:
    if _is_sqlite(store):
        row = await store.db.read(lambda conn: conn.execute(
            "SELECT 1 FROM messages WHERE blob_id=? AND account_id=? LIMIT 1", (digest, account_id)).fetchone())
        return row is not None

    async def fetch(conn: Any) -> Any:
        return await conn.fetchval("SELECT 1 FROM messages WHERE blob_id=$1 AND account_id=$2 LIMIT 1",
                                   digest, account_id)

    return await store.read(fetch) is not None


async def thread_members(store: Any, account_id: int, thread_ids: list[int]) -> dict[int, list[int]]:
    """thread id -> message ids in arrival order."""
    if not thread_ids:
        return {}
    if _is_sqlite(store):
        marks = ",".join("?" * len(thread_ids))
        rows = await store.db.read(lambda conn: conn.execute(
            f"SELECT thread_id, id FROM messages WHERE account_id=? AND thread_id IN ({marks}) "
            "ORDER BY internal_date, id", (account_id, *thread_ids)).fetchall())
    else:
        async def fetch(conn: Any) -> list[Any]:
            return list(await conn.fetch(
                "SELECT thread_id, id FROM messages WHERE account_id=$1 AND thread_id = ANY($2::bigint[]) "
                "ORDER BY internal_date, id", account_id, thread_ids))

        rows = await store.read(fetch)
    out: dict[int, list[int]] = {t: [] for t in thread_ids}
    for thread_id, message_id in rows:
        out.setdefault(int(thread_id), []).append(int(message_id))
    return out


async def account_message_rows(store: Any, account_id: int, mailbox_ids: list[int] | None) -> list[tuple[Any, ...]]:
    """(id, mailbox_id, uid, size, internal_date, thread_id, flags as space-separated text) of every
    message (in the mailboxes)."""
    cols = "id, mailbox_id, uid, size, internal_date, thread_id, flags"
    if _is_sqlite(store):
        params: tuple[Any, ...]
        if mailbox_ids is None:
            sql, params = f"SELECT {cols} FROM messages WHERE account_id=?", (account_id,)
        else:
            marks = ",".join("?" * len(mailbox_ids)) or "NULL"
            sql, params = f"SELECT {cols} FROM messages WHERE mailbox_id IN ({marks})", tuple(mailbox_ids)
        conn_rows = await store.db.read(lambda conn: conn.execute(sql, params).fetchall())
        return [tuple(r) for r in conn_rows]                    # flags as the stored text

    async def fetch(conn: Any) -> list[Any]:
        if mailbox_ids is None:
            return list(await conn.fetch(f"SELECT {cols} FROM messages WHERE account_id=$1", account_id))
        return list(await conn.fetch(f"SELECT {cols} FROM messages WHERE mailbox_id = ANY($1::bigint[])",
                                     mailbox_ids))

    rows = await store.read(fetch)
    return [(*tuple(r)[:6], " ".join(r[6] or [])) for r in rows]


async def ordered_ids(store: Any, account_id: int, mailbox_id: int | None, column: str,
                      ascending: bool) -> list[tuple[int, int]]:
    """(id, thread id) of the mailbox's (or account's) messages, sorted in SQL by
    ``internal_date`` or ``size`` (ties by id, the same way), for the common Email/query."""
    assert column in ("internal_date", "size")
    direction = "ASC" if ascending else "DESC"
    order = f"ORDER BY {column} {direction}, id DESC"
    if _is_sqlite(store):
        if mailbox_id is None:
            sql, params = f"SELECT id, thread_id FROM messages WHERE account_id=? {order}", (account_id,)
        else:
            sql, params = f"SELECT id, thread_id FROM messages WHERE mailbox_id=? {order}", (mailbox_id,)
        rows = await store.db.read(lambda conn: conn.execute(sql, params).fetchall())
        return [(r[0], r[1]) for r in rows]

    async def fetch(conn: Any) -> list[Any]:
        if mailbox_id is None:
            return list(await conn.fetch(f"SELECT id, thread_id FROM messages WHERE account_id=$1 {order}",
                                         account_id))
        return list(await conn.fetch(f"SELECT id, thread_id FROM messages WHERE mailbox_id=$1 {order}", mailbox_id))

    return [(r[0], r[1]) for r in await store.read(fetch)]
