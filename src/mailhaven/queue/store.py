"""The outbound queue as the runner and the CLI see it: one row per recipient, kept by
the store (``Store.queue_*`` in store/api.py; the table and its leases are described in
store/queuerows.py). :class:`QueueStore` is what the runner takes, so tests can give it
another queue."""

from __future__ import annotations

from typing import Any, Protocol

from ..store.api import QueueEntry
from .api import OutboundMessage

Entry = QueueEntry


class QueueStore(Protocol):
    async def open(self) -> None: ...
    async def enqueue(self, message: OutboundMessage, *, now: float | None = None) -> list[int]: ...
    async def claim(self, owner: str, *, now: float, lease: float, limit: int) -> list[Entry]: ...
    async def release_leases(self, owner: str) -> None: ...
    async def finish(self, entry_id: int) -> None: ...
    async def defer(self, entry_id: int, *, next_attempt: float, reply: str, warned: bool) -> None: ...
    async def list(self) -> list[Entry]: ...
    async def get(self, entry_id: int) -> Entry | None: ...
    async def set_state(self, entry_id: int | None, state: str, *, now: float | None = None) -> int: ...
    async def delete(self, entry_id: int) -> bool: ...


class StoreQueue:
    """:class:`QueueStore` over any backend's ``queue_*`` methods."""

    def __init__(self, store: Any) -> None:
        self.store = store

    async def open(self) -> None:
        """Nothing to do: the store creates the table when it opens."""

    async def enqueue(self, message: OutboundMessage, *, now: float | None = None) -> list[int]:
        return await self.store.queue_enqueue(message, now=now)  # type: ignore[no-any-return]

    async def claim(self, owner: str, *, now: float, lease: float, limit: int) -> list[Entry]:
        return await self.store.queue_claim(owner, now=now, lease=lease, limit=limit)  # type: ignore[no-any-return]

    async def release_leases(self, owner: str) -> None:
        await self.store.queue_release_leases(owner)

    async def finish(self, entry_id: int) -> None:
        await self.store.queue_finish(entry_id)

    async def defer(self, entry_id: int, *, next_attempt: float, reply: str, warned: bool) -> None:
        await self.store.queue_defer(entry_id, next_attempt=next_attempt, reply=reply, warned=warned)

    async def list(self) -> list[Entry]:
        return await self.store.queue_list()  # type: ignore[no-any-return]

    async def get(self, entry_id: int) -> Entry | None:
        return await self.store.queue_get(entry_id)  # type: ignore[no-any-return]

    async def set_state(self, entry_id: int | None, state: str, *, now: float | None = None) -> int:
        return await self.store.queue_set_state(entry_id, state, now=now)  # type: ignore[no-any-return]

    async def delete(self, entry_id: int) -> bool:
        return await self.store.queue_delete(entry_id)  # type: ignore[no-any-return]


def queue_store(store: Any) -> QueueStore:
    """The outbound queue kept by ``store``."""
    return StoreQueue(store)
