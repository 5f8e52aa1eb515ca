"""What a process knows of \\Recent claims (RFC 3501 2.3.2), shared by the backends."""

from __future__ import annotations


class RecentFloors:
    """Per mailbox, a UID below which every message is known to be claimed as \\Recent.

    A mailbox's first unclaimed UID only moves forward, so a floor once seen stays true
    in every process: a claim up to it needs no query."""

    def __init__(self, limit: int = 100_000) -> None:
        self._floor: dict[int, int] = {}
        self._limit = limit

    def covering(self, mailbox_id: int, upto: int) -> int | None:
        """The floor when it reaches ``upto`` (nothing left to claim below it), else None."""
        floor = self._floor.get(mailbox_id, 0)
        return floor if floor >= upto else None

    def note(self, mailbox_id: int, floor: int) -> None:
        if len(self._floor) > self._limit:
            self._floor.clear()
        if floor > self._floor.get(mailbox_id, 0):
            self._floor[mailbox_id] = floor

    def forget(self, mailbox_id: int) -> None:
        self._floor.pop(mailbox_id, None)
