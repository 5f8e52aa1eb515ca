"""RETR read-ahead: a client that RETRs its messages in order gets the next few read in the
same store trip as the one it asked for.

Invariants:
- A message is read ahead only while the client RETRs consecutive numbers, at most
  :data:`READ_AHEAD_MESSAGES` messages and :data:`READ_AHEAD_BYTES` octets at a time, and
  never one that is streamed from its file.
- What was read ahead is dropped as soon as the change feed reports any change in the
  maildrop's mailbox (or a resync), so a message expunged elsewhere still answers -ERR,
  as when every RETR asked the store (RFC 1939 5 numbers, Maildrop's invariants).
- Each message is handed out at most once; the buffer never holds more than one batch,
  and one more batch is being read at most (asked for once half the held one is out).
"""

from __future__ import annotations

import asyncio
from typing import Any

from ..store.api import Change, Store
from .maildrop import Maildrop

READ_AHEAD_MESSAGES = 32
READ_AHEAD_BYTES = 1 << 20


class ReadAhead:
    def __init__(self, store: Store, account_id: int, mailbox_id: int, largest: int) -> None:
        self._store = store
        self._mailbox_id = mailbox_id
        self._largest = largest
        """Messages above this size are not read ahead (they are streamed)."""
        self._held: dict[int, bytes] = {}
        self._last = 0
        self._next: tuple[list[int], asyncio.Future[list[tuple[int, bytes]]]] | None = None
        """The batch after the held one (message numbers, its read), asked for while the client
        RETRs the held one, so a client going in order does not wait for a store trip."""
        self._changes = 0
        """Changes to the mailbox seen so far: a read that a change overtook is not kept."""
        self._feed = store.subscribe(account_id)
        self._feed.on_change(self._changed)

    def _changed(self, change: Change) -> None:
        if change.mailbox_id is None or change.mailbox_id == self._mailbox_id:
            self._changes += 1
            self._held.clear()
            self._drop_next()

    def _drop_next(self) -> None:
        if self._next is not None:
            self._next[1].cancel()
            self._next = None

    def _batch(self, drop: Maildrop, msg: int) -> list[int]:
        """``msg`` and the consecutive live messages after it that are read with it."""
        numbers = [msg]
        total = drop.sizes[msg - 1]
        n = msg + 1
        while n <= len(drop.messages) and len(numbers) < READ_AHEAD_MESSAGES:
            size = drop.sizes[n - 1]
            if size > self._largest or total + size > READ_AHEAD_BYTES:
                break
            if n not in drop.deleted:
                numbers.append(n)
                total += size
            n += 1
        return numbers

    def _hold(self, drop: Maildrop, numbers: list[int], found: dict[int, bytes]) -> None:
        for n in numbers:
            uid = drop.messages[n - 1].uid
            if uid in found:
                self._held[n] = found[uid]

    def take(self, drop: Maildrop, msg: int) -> bytes | None:
        """Message ``msg``'s bytes when they were read ahead (no store trip, no await), else
        None: then :meth:`read` answers as if this had not been asked. The next batch
        counts once its read has finished (a change in the mailbox would have dropped it)."""
        if msg not in self._held and self._next is not None and msg == self._next[0][0] and msg == self._last + 1:
            numbers, future = self._next
            if not future.done() or future.cancelled() or future.exception() is not None:
                return None                     # read() waits for it, or raises its error
            self._next = None
            self._held.clear()
            self._hold(drop, numbers, dict(future.result()))
        raw = self._held.pop(msg, None)
        if raw is not None:
            sequential, self._last = msg == self._last + 1, msg
            if sequential and self._next is None and len(self._held) <= READ_AHEAD_MESSAGES // 2:
                self._start_next(drop, max(self._held, default=msg) + 1)
        return raw

    async def read(self, drop: Maildrop, msg: int) -> bytes | None:
        """Message ``msg``'s bytes, or None when it is no longer in the mailbox."""
        sequential, self._last = msg == self._last + 1, msg
        if msg not in self._held and self._next is not None and sequential and msg == self._next[0][0]:
            numbers, future = self._next
            self._next = None
            self._held.clear()
            changes = self._changes
            found = dict(await future)
            if changes == self._changes:        # else a change came while it was read: ask again
                self._hold(drop, numbers, found)
        raw = self._held.pop(msg, None)
        if raw is not None:
            if sequential and self._next is None and len(self._held) <= READ_AHEAD_MESSAGES // 2:
                self._start_next(drop, max(self._held, default=msg) + 1)
            return raw
        self._held.clear()
        self._drop_next()
        numbers = self._batch(drop, msg) if sequential else [msg]
        by_uid = {n: drop.messages[n - 1].uid for n in numbers}
        changes = self._changes
        found = dict(await self._store.get_raw(self._mailbox_id, by_uid.values()))
        if changes == self._changes:
            self._hold(drop, numbers[1:], found)
        return found.get(by_uid[msg])

    def _start_next(self, drop: Maildrop, first: int) -> None:
        while first <= len(drop.messages) and first in drop.deleted:
            first += 1
        if first > len(drop.messages) or drop.sizes[first - 1] > self._largest:
            return
        numbers = self._batch(drop, first)
        future = asyncio.ensure_future(
            self._store.get_raw(self._mailbox_id, [drop.messages[n - 1].uid for n in numbers]))
        future.add_done_callback(_consume)
        self._next = (numbers, future)

    def close(self) -> None:
        self._held.clear()
        self._drop_next()
        self._feed.close()


def _consume(future: asyncio.Future[Any]) -> None:
    """A read nobody awaits any more (dropped on a change): its error is not logged."""
    if not future.cancelled():
        future.exception()
