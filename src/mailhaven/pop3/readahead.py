"""RETR read-ahead: a client that RETRs its messages in order gets the next few read in the
same store trip as the one it asked for.

Invariants:
- A message is read ahead only while the client RETRs consecutive numbers, at most
  :data:`READ_AHEAD_MESSAGES` messages and :data:`READ_AHEAD_BYTES` octets at a time, and
  never one that is streamed from its file.
- What was read ahead is dropped as soon as the change feed reports any change in the
  maildrop's mailbox (or a resync), so a message expunged elsewhere still answers -ERR,
  as when every RETR asked the store (RFC 1939 5 numbers, Maildrop's invariants).
- Each message is handed out at most once; the buffer never holds more than one batch.
"""

from __future__ import annotations

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
        self._feed = store.subscribe(account_id)
        self._feed.on_change(self._changed)

    def _changed(self, change: Change) -> None:
        if change.mailbox_id is None or change.mailbox_id == self._mailbox_id:
            self._held.clear()

    async def read(self, drop: Maildrop, msg: int) -> bytes | None:
        """Message ``msg``'s bytes, or None when it is no longer in the mailbox."""
        sequential, self._last = msg == self._last + 1, msg
        raw = self._held.pop(msg, None)
        if raw is not None:
            return raw
        self._held.clear()
        numbers = [msg]
        if sequential:
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
        by_uid = {n: drop.messages[n - 1].uid for n in numbers}
        found = dict(await self._store.get_raw(self._mailbox_id, by_uid.values()))
        for n in numbers[1:]:
            if by_uid[n] in found:
                self._held[n] = found[by_uid[n]]
        return found.get(by_uid[msg])

    def close(self) -> None:
        self._held.clear()
        self._feed.close()
