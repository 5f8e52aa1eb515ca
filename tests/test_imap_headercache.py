"""The per-process header cache: header-only FETCHes served from memory, correctly."""

from __future__ import annotations

from typing import Any

from imap_harness import Client, make_account
from mailhaven.imap.headercache import MAX_HEADER, HeaderCache, header_cache


def _message(n: int, subject: str = "hello") -> bytes:
    return (f"From: a{n}@example.org\r\nTo: alice@example.com\r\nSubject: {subject} {n}\r\n"
            f"X-Pad: {'p' * 40}\r\n\r\nbody {n}\r\n").encode()


def test_budget_evicts_least_recently_used_first() -> None:
    cache = HeaderCache(budget=350)
    for uid in (1, 2, 3):
        cache.put_message((1, 7, uid), _message(uid))
    size = len(_message(1)) - len(b"body 1\r\n")
    assert cache.size == 3 * size <= 350 and len(cache) == 3
    assert cache.get((1, 7, 1)) is not None               # 1 is now the most recent
    cache.put_message((1, 7, 4), _message(4))              # over budget: 2 goes
    assert cache.get((1, 7, 2)) is None and cache.get((1, 7, 1)) is not None
    assert cache.size == 3 * size
    assert cache.get((1, 8, 1)) is None                    # another UIDVALIDITY is another message
    cache.put_message((1, 7, 9), b"X: " + b"y" * MAX_HEADER + b"\r\n\r\nbody")
    assert cache.get((1, 7, 9)) is None                    # too big to keep


def _count_raw_reads(store: Any) -> list[list[int]]:
    """The UIDs of each read of message bytes from the store (either call)."""
    calls: list[list[int]] = []

    def counted(real: Any) -> Any:
        async def counting(mailbox_id: int, uids: Any, **kw: Any) -> Any:
            calls.append(sorted(uids))
            return await real(mailbox_id, uids, **kw)
        return counting

    store.get_messages_raw = counted(store.get_messages_raw)
    store.get_raw = counted(store.get_raw)
    return calls


async def test_header_fetches_after_append_and_after_a_first_read(store) -> None:  # type: ignore[no-untyped-def]
    await make_account(store)
    c = Client(store)
    await c.login()
    for n in (1, 2, 3):
        raw = _message(n).decode()
        await c.cmd(f"APPEND INBOX {{{len(raw)}+}}\r\n{raw}")
    header_cache(store)._entries.pop(next(k for k in header_cache(store)._entries if k[2] == 3))
    calls = _count_raw_reads(store)
    await c.cmd("SELECT INBOX")
    out = await c.cmd("UID FETCH 1:3 (FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    for n in (1, 2, 3):
        assert f"Subject: hello {n}\r\n\r\n".encode() in out
    assert calls == [[3]]                                  # 1 and 2 came from the APPEND
    out = await c.cmd("FETCH 3 (RFC822.HEADER BODY.PEEK[HEADER.FIELDS.NOT (SUBJECT X-PAD)])")
    assert b"RFC822.HEADER {" in out and b"From: a3@example.org\r\nTo: alice@example.com\r\n\r\n" in out
    assert calls == [[3]]                                  # cached by the first read
    out = await c.cmd("FETCH 2 (BODY.PEEK[HEADER] BODY.PEEK[TEXT])")
    assert b"body 2" in out and calls == [[3], [2]]        # TEXT needs the store
    out = await c.cmd("FETCH 1 (BODY[HEADER.FIELDS (FROM)])")   # not PEEK: sets \\Seen as ever
    assert b"\\Seen" in out and b"From: a1@example.org" in out


async def test_a_recreated_mailbox_never_sees_the_old_headers(store) -> None:  # type: ignore[no-untyped-def]
    """SQLite may give a new mailbox the id of a deleted one; its UIDVALIDITY differs."""
    await make_account(store)
    c = Client(store)
    await c.login()
    for subject in ("first", "second"):
        await c.cmd("CREATE Box")
        raw = _message(1, subject).decode()
        await c.cmd(f"APPEND Box {{{len(raw)}+}}\r\n{raw}")
        await c.cmd("SELECT Box")
        out = await c.cmd("UID FETCH 1 (BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        assert f"Subject: {subject} 1".encode() in out
        await c.cmd("UNSELECT")
        await c.cmd("DELETE Box")


async def test_expunged_by_another_session_is_not_served_once_announced(store) -> None:  # type: ignore[no-untyped-def]
    await make_account(store)
    a, b = Client(store), Client(store)
    for c in (a, b):
        await c.login()
    raw = _message(1).decode()
    await a.cmd(f"APPEND INBOX {{{len(raw)}+}}\r\n{raw}")
    for c in (a, b):
        await c.cmd("SELECT INBOX")
    await b.cmd("UID FETCH 1 (BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    await a.cmd("STORE 1 +FLAGS (\\Deleted)")
    await a.cmd("EXPUNGE")
    out = await b.cmd("NOOP")
    assert b"* 1 EXPUNGE" in out
    out = await b.cmd("UID FETCH 1 (BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    assert b"FETCH (" not in out


async def test_one_message_header_fetch_reads_the_stored_block_not_the_message(store) -> None:  # type: ignore[no-untyped-def]
    """A process that did not append the message (nothing in its header cache) answers the
    one-message header FETCH from the block stored beside the message, without reading the
    message; rows with no stored block (older versions) still read the message, and give
    the same answer."""
    await make_account(store)
    c = Client(store)
    await c.login()
    for n in (1, 2):
        raw = _message(n).decode()
        await c.cmd(f"APPEND INBOX {{{len(raw)}+}}\r\n{raw}")
    header_cache(store)._entries.clear()
    header_cache(store).size = 0
    calls = _count_raw_reads(store)
    await c.cmd("SELECT INBOX")
    out = await c.cmd("UID FETCH 1 (BODY.PEEK[HEADER.FIELDS (SUBJECT FROM)] FLAGS)")
    assert b"From: a1@example.org\r\nSubject: hello 1\r\n\r\n FLAGS (\\Recent))" in out
    assert calls == []
    if hasattr(store, "pool"):
        await store.pool.execute("UPDATE messages SET header = NULL")
    else:
        await store.db.write(lambda conn: conn.execute("DELETE FROM message_headers"))
    out2 = await c.cmd("UID FETCH 2 (BODY.PEEK[HEADER.FIELDS (SUBJECT FROM)] FLAGS)")
    assert b"From: a2@example.org\r\nSubject: hello 2\r\n\r\n FLAGS (\\Recent))" in out2
    assert calls == [[2]]
    assert out2.split(b"\r\n", 1)[0] == b"* 2 FETCH (UID 2 BODY[HEADER.FIELDS (SUBJECT FROM)] {42}"
    assert out.split(b"\r\n", 1)[0] == b"* 1 FETCH (UID 1 BODY[HEADER.FIELDS (SUBJECT FROM)] {42}"
