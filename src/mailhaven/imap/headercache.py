"""Message headers kept in memory per process, for FETCHes that want only headers.

Header fields are what clients ask for most: ``UID FETCH n (FLAGS BODY.PEEK[HEADER.FIELDS
(From Subject Date ...)])`` for each new message, on every device that syncs the mailbox.
Dovecot answers these from the header fields in its cache file. Here the header block of
each message this process has stored (APPEND) or read (FETCH) stays in memory, least
recently used out first, within a byte budget, so such a FETCH makes no trip to the store.

A message's bytes never change, and (mailbox id, UIDVALIDITY, UID) names one message for
ever (UIDVALIDITY is store-wide and only grows), so an entry never goes stale and nothing
needs invalidating; an expunged message's entry simply ages out.

The first time a header-only FETCH of one message misses in a mailbox, the stored header
blocks of that mailbox's messages are read into the cache in the background, newest first,
up to :data:`WARM_BYTES` (:func:`warm`): Dovecot's cache file likewise holds the header
fields of every message once a client has asked for them, so its one-message FETCH reads
no message, and a client that asked for one old message's header fields asks for more.
"""

from __future__ import annotations

import weakref
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence

from ..message.structure import header_end

DEFAULT_BUDGET = 32 * 1024 * 1024
"""Bytes of header text kept per process: about 10,000 messages of real-world mail."""
MAX_HEADER = 64 * 1024
"""Bigger header blocks are not kept (they would push out dozens of ordinary ones)."""
WARM_BYTES = 4 * 1024 * 1024
"""Header text one mailbox's warm-up reads at most: all of a 10,000-message mailbox of
short headers, the newest ~1,500 of real mail's (a selected 100,000-message mailbox stays
within its memory target with this much beside it)."""
WARM_BATCH = 1000
"""Messages per store read of a warm-up (one reader-thread hop each)."""

Key = tuple[int, int, int]


class HeaderCache:
    def __init__(self, budget: int = DEFAULT_BUDGET) -> None:
        self.budget = budget
        self.size = 0
        self._entries: OrderedDict[Key, bytes] = OrderedDict()
        self._warmed: set[tuple[int, int]] = set()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: Key) -> bytes | None:
        header = self._entries.get(key)
        if header is not None:
            self._entries.move_to_end(key)
        return header

    def lookup(self, mailbox_id: int, uidvalidity: int, uids: list[int], found: dict[int, bytes]) -> list[int]:
        """Each of ``uids`` whose header block is kept goes into ``found``; returns the rest."""
        missing = []
        for uid in uids:
            header = self.get((mailbox_id, uidvalidity, uid))
            if header is None:
                missing.append(uid)
            else:
                found[uid] = header
        return missing

    def first_miss(self, mailbox_id: int, uidvalidity: int) -> bool:
        """True the first time this is asked for a mailbox (its warm-up is then due)."""
        box = (mailbox_id, uidvalidity)
        if box in self._warmed:
            return False
        self._warmed.add(box)
        return True

    def put_header(self, key: Key, header: bytes) -> None:
        """Keep ``header``, a header block already cut (as the store keeps it)."""
        if len(header) > MAX_HEADER or key in self._entries:
            return
        self._entries[key] = header
        self.size += len(header)
        while self.size > self.budget and self._entries:
            _, old = self._entries.popitem(last=False)
            self.size -= len(old)

    def put_message(self, key: Key, raw: bytes) -> bytes:
        """Keep the header block of ``raw`` (through the blank line that ends it); returns it."""
        kept = self._entries.get(key)
        if kept is not None:            # a re-fetch: skip the scan for the blank line
            return kept
        header = raw[:header_end(raw, 0, len(raw))]
        self.put_header(key, header)
        return header


async def warm(cache: HeaderCache, mailbox_id: int, uidvalidity: int, uids: Sequence[int],
               read: Callable[[list[int]], Awaitable[list[tuple[int, bytes]]]],
               limit: int = WARM_BYTES) -> int:
    """Read the stored header blocks of ``uids`` (ascending; the newest first, in batches of
    :data:`WARM_BATCH` through ``read``, the store's ``get_headers``) into ``cache``, until
    ``limit`` bytes are read or the cache is three quarters full (a warm-up never pushes
    out what clients asked for). Skips what is kept already. Returns the bytes read."""
    read_bytes = 0
    end = len(uids)
    while end > 0 and read_bytes < limit and cache.size < cache.budget * 3 // 4:
        batch = uids[max(0, end - WARM_BATCH):end]
        end -= len(batch)
        missing = [u for u in batch if (mailbox_id, uidvalidity, u) not in cache._entries]
        if not missing:
            continue
        for uid, header in await read(missing):
            cache.put_header((mailbox_id, uidvalidity, uid), header)
            read_bytes += len(header)
    return read_bytes


_caches: weakref.WeakKeyDictionary[object, HeaderCache] = weakref.WeakKeyDictionary()


def header_cache(store: object) -> HeaderCache:
    """The cache of this process for ``store`` (one per store object)."""
    cache = _caches.get(store)
    if cache is None:
        cache = _caches[store] = HeaderCache()
    return cache
