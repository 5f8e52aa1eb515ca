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


async def _forget_stored_blocks(store: Any, where: str) -> None:
    """Make the rows ``where`` holds look like an older version's: no stored header block."""
    if hasattr(store, "pool"):
        await store.pool.execute(f"UPDATE messages SET header = NULL WHERE {where}")
    else:
        await store.db.write(lambda conn: conn.execute(
            f"DELETE FROM message_headers WHERE id IN (SELECT id FROM messages WHERE {where})"))


async def test_header_fetches_after_append_and_after_a_first_read(store) -> None:  # type: ignore[no-untyped-def]
    await make_account(store)
    c = Client(store)
    await c.login()
    for n in (1, 2, 3):
        raw = _message(n).decode()
        await c.cmd(f"APPEND INBOX {{{len(raw)}+}}\r\n{raw}")
    header_cache(store)._entries.pop(next(k for k in header_cache(store)._entries if k[2] == 3))
    await _forget_stored_blocks(store, "uid = 3")          # as an older version stored it
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


async def test_header_fetches_read_the_stored_blocks_not_the_messages(store) -> None:  # type: ignore[no-untyped-def]
    """A process that did not append the messages (nothing in its header cache) answers
    header FETCHes (one message, many, and the general path's \\Seen-setting form) from
    the blocks stored beside the messages, without reading them; rows with no stored block
    (older versions) still read the message, and give the same answer."""
    await make_account(store)
    c = Client(store)
    await c.login()
    for n in (1, 2, 3, 4, 5):
        raw = _message(n).decode()
        await c.cmd(f"APPEND INBOX {{{len(raw)}+}}\r\n{raw}")

    def forget() -> None:
        header_cache(store)._entries.clear()
        header_cache(store).size = 0

    forget()
    calls = _count_raw_reads(store)
    await c.cmd("SELECT INBOX")
    out = await c.cmd("UID FETCH 1 (BODY.PEEK[HEADER.FIELDS (SUBJECT FROM)] FLAGS)")
    assert out.split(b"\r\n", 1)[0] == b"* 1 FETCH (UID 1 BODY[HEADER.FIELDS (SUBJECT FROM)] {42}"
    assert b"From: a1@example.org\r\nSubject: hello 1\r\n\r\n FLAGS (\\Recent))" in out
    many = await c.cmd("FETCH 1:3 (BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    forget()
    again = await c.cmd("FETCH 1:3 (BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    assert many.rsplit(b"\r\n", 2)[0] == again.rsplit(b"\r\n", 2)[0]     # all but the tagged line
    assert b"Subject: hello 3\r\n\r\n" in many
    forget()
    seen = await c.cmd("FETCH 2:3 (BODY[HEADER.FIELDS (FROM)])")       # sets \\Seen: the general path
    assert b"From: a3@example.org\r\n\r\n" in seen and b"\\Seen" in seen
    assert calls == []
    await _forget_stored_blocks(store, "uid >= 4")
    forget()
    out = await c.cmd("UID FETCH 4 (BODY.PEEK[HEADER.FIELDS (SUBJECT FROM)] FLAGS)")
    assert b"From: a4@example.org\r\nSubject: hello 4\r\n\r\n FLAGS (\\Recent))" in out
    assert calls == [[4]]
    forget()
    mixed = await c.cmd("FETCH 3:5 (BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    assert calls == [[4], [4, 5]]                          # 3 from its stored block
    assert [f"Subject: hello {n}\r\n\r\n".encode() in mixed for n in (3, 4, 5)] == [True] * 3


async def test_a_database_from_before_the_header_blocks_opens_and_serves(tmp_path: Any) -> None:
    """SQLite: a database without ``message_headers`` (an older version's) gets the table at
    open; its messages have no block, so header FETCHes, COPY and EXPUNGE of them read or
    carry nothing new and still work, and new mail gets its block."""
    import sqlite3

    from mailhaven.store.sqlite import SQLiteStore

    store = SQLiteStore(tmp_path)
    await store.open()
    await make_account(store)
    account = await store.get_account("alice@example.com")
    for n in (1, 2):
        await store.deliver(await store.put_blob(_message(n)), [account.id])
    await store.close()
    conn = sqlite3.connect(tmp_path / "mailhaven.db")        # as the older version left it
    with conn:
        conn.execute("DROP TABLE message_headers")
    conn.close()
    store = SQLiteStore(tmp_path)
    await store.open()
    try:
        inbox = await store.get_mailbox(account.id, "INBOX")
        assert await store.get_headers(inbox.id, [1, 2]) == []
        c = Client(store)
        await c.login()
        await c.cmd("SELECT INBOX")
        out = await c.cmd("UID FETCH 2 (BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        assert b"Subject: hello 2\r\n\r\n" in out
        assert b"Subject: hello 1\r\n\r\n" in await c.cmd("FETCH 1:2 (BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        await c.cmd("COPY 1 INBOX")
        await c.cmd("STORE 2 +FLAGS (\\Deleted)")
        await c.cmd("EXPUNGE")
        await store.deliver(await store.put_blob(_message(4)), [account.id])
        assert [u for u, _ in await store.get_headers(inbox.id, [1, 3, 4])] == [4]
        assert b"* 3 EXISTS" in await c.cmd("NOOP")
        out = await c.cmd("FETCH 1:* (BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        assert out.count(b"Subject: hello 1\r\n\r\n") == 2 and b"Subject: hello 4\r\n\r\n" in out
    finally:
        await store.close()


async def test_a_first_miss_warms_the_cache_with_the_mailboxs_stored_blocks(store) -> None:  # type: ignore[no-untyped-def]
    """The first one-message header FETCH that misses in a mailbox starts reading the
    mailbox's stored header blocks into the cache in the background (once per mailbox and
    process): the next such FETCHes, on any message, read nothing from the store and
    answer as before."""
    import asyncio

    await make_account(store)
    c = Client(store)
    await c.login()
    for n in range(1, 13):
        raw = _message(n).decode()
        await c.cmd(f"APPEND INBOX {{{len(raw)}+}}\r\n{raw}")
    cache = header_cache(store)
    cache._entries.clear()                                 # as a process that did not append them
    cache.size = 0
    tasks: list[asyncio.Task[Any]] = []
    c.session.ctx.spawn = lambda work: tasks.append(asyncio.ensure_future(work))
    reads: list[list[int]] = []

    def counted(real: Any) -> Any:
        def counting(mailbox_id: int, *args: Any) -> Any:
            reads.append(sorted(args[0]) if isinstance(args[0], list) else [args[0]])
            return real(mailbox_id, *args)
        return counting

    store.get_headers = counted(store.get_headers)
    store.get_header_now = counted(store.get_header_now)
    raws = _count_raw_reads(store)
    await c.cmd("SELECT INBOX")
    out = await c.cmd("UID FETCH 5 (BODY.PEEK[HEADER.FIELDS (SUBJECT FROM)] FLAGS)")
    assert b"From: a5@example.org\r\nSubject: hello 5\r\n\r\n" in out
    assert len(tasks) == 1
    await asyncio.gather(*tasks)
    batches = [r for r in reads if len(r) > 1]              # (PostgreSQL's read of 5 lets the task start first)
    assert len(batches) == 1 and set(batches[0]) >= set(range(1, 13)) - {5}   # the rest in one batch
    first = len(reads)
    assert len(cache) == 12
    for n in range(1, 13):
        out = await c.cmd(f"UID FETCH {n} (BODY.PEEK[HEADER.FIELDS (SUBJECT FROM)] FLAGS)")
        assert f"From: a{n}@example.org\r\nSubject: hello {n}\r\n\r\n".encode() in out
    assert len(reads) == first                             # all twelve from the cache
    assert len(cache._entries) == 1 and len(cache._pack_order) == 1     # 5 read, the rest packed
    cache.budget = cache.size + 10
    cache.put_pack((1 << 30, 1), [(1, b"X" * 20)])                        # over budget:
    assert len(cache._pack_order) == 1 and len(cache._entries) == 1      # the oldest pack went first
    assert cache.get((c.session.selected.id, c.session.selected.uidvalidity, 7)) is None
    out = await c.cmd("UID FETCH 7 (BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    assert b"Subject: hello 7\r\n\r\n" in out
    assert len(tasks) == 1 and raws == []                # a later miss: no second warm-up
    assert reads[first:] and all(r == [7] for r in reads[first:])


async def test_a_warm_up_reads_the_newest_first_and_stops_at_its_limit() -> None:
    from mailhaven.imap import headercache

    cache = HeaderCache(budget=1 << 20)
    asked: list[list[int]] = []

    async def read(uids: list[int]) -> list[tuple[int, bytes]]:
        asked.append(uids)
        return [(u, b"S: %06d\r\n\r\n" % u) for u in uids if u != 1999]   # 1999: no stored block
    cache.put_header((1, 7, 2500), b"kept\r\n\r\n")
    n = await headercache.warm(cache, 1, 7, list(range(1, 2501)), read, limit=40_000)    # all of it fits
    assert [(a[0], a[-1], len(a)) for a in asked] == [(1501, 2499, 999), (501, 1500, 1000), (1, 500, 500)]
    assert n == 2498 * 13 and cache.get((1, 7, 2500)) == b"kept\r\n\r\n" and len(cache) == 2499
    assert cache.get((1, 7, 1999)) is None and cache.get((1, 7, 1)) == b"S: 000001\r\n\r\n"
    asked.clear()
    big = HeaderCache(budget=1 << 20)                        # the rest would not fit: the newest only
    assert await headercache.warm(big, 1, 7, list(range(1, 2501)), read, limit=26_000) == 999 * 13
    assert [(a[0], a[-1]) for a in asked] == [(1501, 2500)] and big.get((1, 7, 1501)) and len(big) == 999
    asked.clear()
    full = HeaderCache(budget=100)
    full.put_header((2, 7, 1), b"x" * 76)                   # three quarters full: nothing read
    assert await headercache.warm(full, 1, 7, [1, 2], read) == 0 and asked == []


def test_packed_blocks_are_found_by_uid_and_never_duplicated() -> None:
    from mailhaven.imap.headercache import Pack

    pack = Pack([(9, b"c\r\n\r\n"), (2, b"a\r\n\r\n"), (5, b"bb\r\n\r\n")])
    assert [pack.get(u) for u in (1, 2, 5, 7, 9, 10)] == [None, b"a\r\n\r\n", b"bb\r\n\r\n", None, b"c\r\n\r\n", None]
    cache = HeaderCache(budget=1000)
    cache.put_pack((1, 7), [(2, b"a\r\n\r\n"), (5, b"bb\r\n\r\n")])
    cache.put_pack((1, 7), [(8, b"d\r\n\r\n")])
    assert cache.size == 16 and len(cache) == 3
    assert cache.get((1, 7, 5)) == b"bb\r\n\r\n" and cache.get((1, 7, 8)) == b"d\r\n\r\n"
    assert cache.get((1, 8, 5)) is None and cache.get((2, 7, 5)) is None and cache.get((1, 7, 6)) is None
    cache.put_header((1, 7, 5), b"bb\r\n\r\n")                 # packed already: not kept twice
    assert cache.put_message((1, 7, 2), b"a\r\n\r\nbody") == b"a\r\n\r\n"
    assert cache.size == 16 and len(cache._entries) == 0
    cache.put_header((1, 7, 20), b"e\r\n\r\n")                     # kept by a FETCH: not packed again
    cache.put_pack((1, 7), [(20, b"e\r\n\r\n"), (21, b"f\r\n\r\n")])
    assert cache.size == 26 and len(cache) == 5 and cache.get((1, 7, 21)) == b"f\r\n\r\n"
