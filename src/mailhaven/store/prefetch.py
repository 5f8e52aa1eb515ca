"""A store read started now and taken later: IMAP FETCH reads the next chunk's bytes
while it renders this one. The task lives here so the protocol cores stay free of
asyncio (STYLE.md habit 1)."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Generator
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class Prefetch(Generic[T]):
    def __init__(self, read: Coroutine[Any, Any, T]) -> None:
        self._task: asyncio.Future[T] = asyncio.ensure_future(read)

    def __await__(self) -> Generator[Any, None, T]:
        return self._task.__await__()

    def cancel(self) -> None:
        """Not wanted any more (the FETCH failed): cancelled, and an error it ended with
        is retrieved so none is logged as never retrieved."""
        self._task.cancel()
        self._task.add_done_callback(lambda f: f.cancelled() or f.exception())
