"""The in-process change feed: committed changes fanned out to live sessions.

Publication happens on the event loop after the commit (see ``Database.write_ctx``),
so a subscriber that reacts by reading the store always sees the change. A subscriber
that falls more than ``MAX_BACKLOG`` events behind gets a single ``resync`` change
instead of an unbounded queue: it must then re-read everything it shows.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable

from .api import Change, MailboxChanges, Store

MAX_BACKLOG = 1000


def encode_change(origin: str, change: Change) -> str:
    """One change as a line of JSON, for another process or node (``origin``: the sender)."""
    return json.dumps({"o": origin, "a": change.account_id, "m": change.mailbox_id,
                       "k": change.kind, "s": change.modseq}, separators=(",", ":"))


def decode_change(payload: str) -> tuple[str, Change] | None:
    try:
        d = json.loads(payload)
        change = Change(account_id=int(d["a"]), mailbox_id=None if d["m"] is None else int(d["m"]),
                        kind=str(d["k"]), modseq=int(d["s"]))
        return str(d["o"]), change
    except (ValueError, KeyError, TypeError):
        return None


class Subscription:
    def __init__(self, hub: ChangeHub, account_id: int | None) -> None:
        self._hub = hub
        self.account_id = account_id
        self._queue: asyncio.Queue[Change] = asyncio.Queue()
        self._overflowed = False
        self._callback: Callable[[Change], None] | None = None

    def on_change(self, callback: Callable[[Change], None]) -> None:
        """From now on, hand each change to ``callback`` when it is published (on the loop)
        instead of queueing it: for a consumer that only takes note, such as an IMAP
        session, this saves a task and a wake-up per change and subscriber."""
        self._callback = callback
        while (change := self.get_nowait()) is not None:
            callback(change)

    def _push(self, change: Change) -> None:
        if self._callback is not None:
            self._callback(change)
            return
        if self._queue.qsize() >= MAX_BACKLOG:
            if not self._overflowed:
                self._overflowed = True
                self._queue.put_nowait(
                    Change(account_id=change.account_id, mailbox_id=None, kind="resync",
                           modseq=change.modseq)
                )
            return
        self._overflowed = False
        self._queue.put_nowait(change)

    async def get(self) -> Change:
        return await self._queue.get()

    def get_nowait(self) -> Change | None:
        try:
            return self._queue.get_nowait()
        except asyncio.QueueEmpty:
            return None

    def pending(self) -> bool:
        return not self._queue.empty()

    def __aiter__(self) -> AsyncIterator[Change]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Change]:
        while True:
            yield await self._queue.get()

    def close(self) -> None:
        self._hub._remove(self)


class ChangeHub:
    def __init__(self, on_publish: Callable[[], None] | None = None) -> None:
        self._by_account: dict[int | None, set[Subscription]] = {}
        self._on_publish = on_publish
        """Called before each change reaches a subscriber (SQLite: the event loop's held
        snapshot must not be read again, ``Database.changed``)."""

    def subscribe(self, account_id: int | None) -> Subscription:
        sub = Subscription(self, account_id)
        self._by_account.setdefault(account_id, set()).add(sub)
        return sub

    def _remove(self, sub: Subscription) -> None:
        subs = self._by_account.get(sub.account_id)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self._by_account[sub.account_id]

    def subscribed_accounts(self) -> list[int]:
        """Accounts with at least one live subscription (for whole-feed resyncs)."""
        return [a for a in self._by_account if a is not None]

    def publish(self, change: Change) -> None:
        if self._on_publish is not None:
            self._on_publish()
        for key in (change.account_id, None):
            for sub in list(self._by_account.get(key, ())):
                try:
                    sub._push(change)
                except Exception:  # noqa: BLE001 - one subscriber's callback must not starve the rest
                    asyncio.get_running_loop().call_exception_handler(
                        {"message": "change subscriber failed", "subscription": sub})


_inflight: dict[tuple[int, int, int], asyncio.Future[MailboxChanges]] = {}


async def shared_changes_since(store: Store, mailbox_id: int, modseq: int, wanted: int) -> MailboxChanges:
    """``store.changes_since``, shared: when many sessions on one mailbox wake for the same
    change (thousands in IDLE), one query answers all of them. A session joins a query
    already running only if its answer is recent enough for the change that woke it."""
    key = (id(store), mailbox_id, modseq)
    running = _inflight.get(key)
    if running is not None:
        try:
            shared = await asyncio.shield(running)
        except Exception:  # noqa: BLE001 - that query failed; ask on our own below
            pass
        else:
            if shared.highestmodseq >= wanted:
                return shared
        return await store.changes_since(mailbox_id, modseq)
    future: asyncio.Future[MailboxChanges] = asyncio.get_running_loop().create_future()
    _inflight[key] = future
    try:
        result = await store.changes_since(mailbox_id, modseq)
    except BaseException as exc:
        if isinstance(exc, Exception):
            future.set_exception(exc)
            future.exception()          # retrieved: no "never retrieved" warning when nobody joined
        else:
            future.cancel()
        raise
    finally:
        if _inflight.get(key) is future:
            del _inflight[key]
    future.set_result(result)
    return result
