"""Several sessions on one mailbox: untagged updates only at the moments RFC 9051 7.5.1 allows."""

from __future__ import annotations

import re

from imap_harness import Client, deliver, make_account, untagged

MSG = b"From: a@example.org\r\nSubject: n%d\r\n\r\nbody %d\r\n"


async def two_sessions(store, n: int = 3):  # type: ignore[no-untyped-def]
    acct = await make_account(store)
    for i in range(n):
        await deliver(store, acct.id, MSG % (i, i))
    a, b = Client(store), Client(store)
    for c in (a, b):
        await c.login()
        await c.cmd("SELECT INBOX")
    return acct, a, b


async def test_new_mail_announced_at_next_command(store) -> None:  # type: ignore[no-untyped-def]
    acct, a, b = await two_sessions(store)
    await deliver(store, acct.id, MSG % (9, 9))
    out = await b.cmd("NOOP")
    assert b"* 4 EXISTS" in out
    out = await b.cmd("NOOP")
    assert b"EXISTS" not in out  # told once
    await a.cmd("APPEND INBOX {5+}\r\nx: y\n")
    out = await b.cmd("FETCH 1:* (UID)")   # EXISTS may come with FETCH, before the tagged reply
    assert b"* 5 EXISTS" in out and b"* 4 FETCH (UID 4)" in out


async def test_expunge_deferred_during_fetch_store_search(store) -> None:  # type: ignore[no-untyped-def]
    _, a, b = await two_sessions(store)
    await a.cmd("STORE 2 +FLAGS.SILENT (\\Deleted)")
    await a.cmd("EXPUNGE")
    # B still numbers 3 messages: FETCH/STORE/SEARCH must not announce the EXPUNGE.
    out = await b.cmd("FETCH 1:3 (UID)")
    assert b"EXPUNGE" not in out
    assert b"* 1 FETCH (UID 1)" in out and b"* 3 FETCH (UID 3)" in out
    out = await b.cmd("STORE 3 +FLAGS (\\Flagged)")
    assert b"EXPUNGE" not in out and b"* 3 FETCH (FLAGS (\\Flagged))" in out
    out = await b.cmd("SEARCH ALL")
    assert b"EXPUNGE" not in out and untagged(out, "SEARCH") == [b"* SEARCH 1 3"]
    # The UID forms may carry it, and NOOP does.
    out = await b.cmd("UID FETCH 1:* (FLAGS)")
    assert b"* 2 EXPUNGE" in out
    out = await b.cmd("NOOP")
    assert b"EXPUNGE" not in out
    out = await b.cmd("FETCH 2 (UID)")
    assert b"* 2 FETCH (UID 3)" in out


async def test_flag_changes_reach_the_other_session(store) -> None:  # type: ignore[no-untyped-def]
    _, a, b = await two_sessions(store)
    await a.cmd("STORE 1 +FLAGS (\\Answered)")
    out = await b.cmd("NOOP")
    assert b"* 1 FETCH (FLAGS (\\Answered))" in out
    await b.cmd("ENABLE CONDSTORE")
    await a.cmd("STORE 2 +FLAGS (\\Seen)")
    out = await b.cmd("NOOP")
    assert re.search(rb"\* 2 FETCH \(UID 2 FLAGS \(\\Seen\) MODSEQ \(\d+\)\)", out), out


async def test_idle_sees_delivery_expunge_and_flags(store) -> None:  # type: ignore[no-untyped-def]
    acct, a, b = await two_sessions(store)
    assert await b.send(b"i IDLE\r\n") == b"+ idling\r\n"
    await deliver(store, acct.id, MSG % (7, 7))
    assert await b.poll() == b"* 4 EXISTS\r\n* 1 RECENT\r\n"
    await a.cmd("STORE 1 +FLAGS.SILENT (\\Deleted)")
    await a.cmd("EXPUNGE")
    out = await b.poll()
    assert b"* 1 EXPUNGE" in out
    await a.cmd("STORE 1 +FLAGS (\\Flagged)")
    out = await b.poll()
    assert b"* 1 FETCH (FLAGS (\\Flagged))" in out
    assert await b.send(b"DONE\r\n") == b"i OK IDLE terminated\r\n"


async def test_msn_map_stays_in_step_under_interleaving(store) -> None:  # type: ignore[no-untyped-def]
    acct, a, b = await two_sessions(store, n=10)
    # B's model of the mailbox, updated only from what B is told.
    model = list(range(1, 11))

    def apply(out: bytes) -> None:
        for line in out.split(b"\r\n"):
            m = re.match(rb"^\* (\d+) EXPUNGE$", line)
            if m:
                del model[int(m.group(1)) - 1]
            m = re.match(rb"^\* (\d+) EXISTS$", line)
            if m:
                while len(model) < int(m.group(1)):
                    model.append(None)  # type: ignore[arg-type]

    for step in range(6):
        await deliver(store, acct.id, MSG % (step, step))
        await a.cmd("STORE 1:2 +FLAGS.SILENT (\\Deleted)")
        await a.cmd("EXPUNGE")
        out = await b.cmd("FETCH 1:* (UID)")
        apply(out)
        out = await b.cmd("NOOP")
        apply(out)
        out = await b.cmd("FETCH 1:* (UID)")
        pairs = re.findall(rb"\* (\d+) FETCH \(UID (\d+)\)", out)
        for n, uid in pairs:
            slot = int(n) - 1
            if model[slot] is None:
                model[slot] = int(uid)
            assert model[slot] == int(uid), (step, model, pairs)
        assert len(pairs) == len(model)


async def test_deleting_the_selected_mailbox_elsewhere(store) -> None:  # type: ignore[no-untyped-def]
    await make_account(store)
    a, b = Client(store), Client(store)
    await a.login()
    await b.login()
    await a.cmd("CREATE Temp")
    await b.cmd("SELECT Temp")
    await a.cmd("DELETE Temp")
    out = await b.send(b"n NOOP\r\n")
    assert b"* BYE" in out


async def test_new_keyword_announced_in_flags_before_use(store) -> None:  # type: ignore[no-untyped-def]
    _, a, b = await two_sessions(store)
    await a.cmd("STORE 1 +FLAGS ($Important)")
    out = await b.cmd("NOOP")
    flags_at = out.find(b"* FLAGS (")
    fetch_at = out.find(b"* 1 FETCH (FLAGS ($Important))")
    assert 0 <= flags_at < fetch_at, out
    assert b"$Important" in out[flags_at:fetch_at]
    out = await b.cmd("STORE 2 +FLAGS ($Important)")
    assert b"* FLAGS" not in out   # already known


async def test_idle_sessions_share_one_changes_query(store, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Thousands of IDLE sessions woken by one delivery ask the store once, not each."""
    import asyncio

    acct = await make_account(store)
    await deliver(store, acct.id, MSG % (1, 1))
    clients = [Client(store) for _ in range(20)]
    for c in clients:
        await c.login()
        await c.cmd("SELECT INBOX")
        assert await c.send(b"i IDLE\r\n") == b"+ idling\r\n"
    calls = []
    real = store.changes_since

    async def counting(mailbox_id: int, modseq: int):  # type: ignore[no-untyped-def]
        calls.append(modseq)
        return await real(mailbox_id, modseq)

    monkeypatch.setattr(store, "changes_since", counting)
    await deliver(store, acct.id, MSG % (2, 2))
    outs = await asyncio.gather(*(c.poll() for c in clients))
    assert all(b"* 2 EXISTS" in out for out in outs)
    assert len(calls) == 1


async def test_a_shared_answer_too_old_for_the_change_is_not_used() -> None:
    """A session woken by a newer change than a running query can see asks on its own."""
    import asyncio

    from mailhaven.store.api import MailboxChanges
    from mailhaven.store.changes import shared_changes_since as _changes_since

    release = asyncio.Event()
    asked: list[int] = []

    class Slow:
        async def changes_since(self, mailbox_id: int, modseq: int) -> MailboxChanges:
            asked.append(modseq)
            if len(asked) == 1:
                await release.wait()
                return MailboxChanges(changed=[], expunged=[], highestmodseq=7)
            return MailboxChanges(changed=[], expunged=[], highestmodseq=9)

    store = Slow()
    first = asyncio.ensure_future(_changes_since(store, 1, 5, 7))  # type: ignore[arg-type]
    await asyncio.sleep(0)
    fine = asyncio.ensure_future(_changes_since(store, 1, 5, 6))  # type: ignore[arg-type]
    newer = asyncio.ensure_future(_changes_since(store, 1, 5, 9))  # type: ignore[arg-type]
    await asyncio.sleep(0)
    release.set()
    results = await asyncio.gather(first, fine, newer)
    assert [r.highestmodseq for r in results] == [7, 7, 9]
    assert asked == [5, 5]


async def test_own_store_is_not_read_back_but_others_changes_are(store, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """After its own STORE a session skips re-reading the rows it wrote only when no other
    write can lie between: a change another session made just before is still announced."""
    acct, a, b = await two_sessions(store)
    asked: list[int] = []
    real = store.changes_since

    async def recording(mailbox_id: int, modseq: int):  # type: ignore[no-untyped-def]
        asked.append(modseq)
        return await real(mailbox_id, modseq)

    monkeypatch.setattr(store, "changes_since", recording)
    out = await a.cmd("STORE 1:* +FLAGS.SILENT (\\Seen)")
    ours = (await store.get_mailbox(acct.id, "INBOX")).highestmodseq
    await a.cmd("NOOP")
    assert asked == [ours]                      # nothing between: only what came after ours
    await b.cmd("STORE 2 +FLAGS.SILENT (\\Flagged)")
    asked.clear()
    out = await a.cmd("STORE 3 +FLAGS.SILENT (\\Answered)")
    assert asked == [ours]                      # B's write lies between: read from before it
    assert b"* 2 FETCH (FLAGS (\\Flagged \\Recent \\Seen))" in out
    out = await a.cmd("FETCH 1:3 (FLAGS)")
    assert b"* 1 FETCH (FLAGS (\\Recent \\Seen))" in out
    assert b"* 3 FETCH (FLAGS (\\Answered \\Recent \\Seen))" in out


async def test_search_of_cached_keys_agrees_with_each_message(store) -> None:  # type: ignore[no-untyped-def]
    """Flag, size, UID and sequence keys, nested in AND/OR/NOT, against a per-message check,
    while a message expunged by another session still holds its sequence number."""
    from mailhaven.store.api import FlagMode

    acct, a, b = await two_sessions(store, n=12)
    box = await store.get_mailbox(acct.id, "INBOX")
    await store.set_flags(box.id, [1, 2, 3, 7, 8], ["\\Seen"], FlagMode.ADD)
    await store.set_flags(box.id, [2, 5, 8, 11], ["\\Flagged"], FlagMode.ADD)
    await store.set_flags(box.id, [3, 5, 9], ["$Work"], FlagMode.ADD)
    await a.cmd("NOOP")
    await b.cmd("STORE 5 +FLAGS.SILENT (\\Deleted)")
    await b.cmd("EXPUNGE")
    messages = {m.uid: m for m in await store.list_messages(box.id)}
    assert 5 not in messages
    limit = sorted(m.size for m in messages.values())[5]
    cases = {
        f"UNSEEN LARGER {limit}": lambda m: "\\Seen" not in m.flags and m.size > limit,
        "OR FLAGGED KEYWORD $WORK": lambda m: "\\Flagged" in m.flags or "$Work" in m.flags,
        f"NOT (OR SEEN SMALLER {limit})": lambda m: not ("\\Seen" in m.flags or m.size < limit),
        "UID 3:*": lambda m: m.uid >= 3,
        "2:4 UNFLAGGED": lambda m: 2 <= m.uid <= 4 and "\\Flagged" not in m.flags,
        "KEYWORD $work NOT SEEN": lambda m: "$Work" in m.flags and "\\Seen" not in m.flags,
        "UNKEYWORD $work SEEN": lambda m: "$Work" not in m.flags and "\\Seen" in m.flags,
    }
    for prefix in ("", "UID "):              # UID SEARCH may announce the EXPUNGE: run those last
        for criteria, wanted in cases.items():
            out = await a.cmd(f"{prefix}SEARCH {criteria}")
            expected = [u for u, m in sorted(messages.items()) if wanted(m)]   # UID n is still number n
            line = " ".join(["* SEARCH", *map(str, expected)]).encode()
            assert untagged(out, "SEARCH") == [line], (prefix, criteria)
