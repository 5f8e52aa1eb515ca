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
What a warm-up reads is kept packed (:class:`Pack`: a few bytes a message beside its text,
where an entry of the recently-used order costs ~250), and goes first when the budget is
exceeded: it is a bet, what clients asked for is not.
"""

from __future__ import annotations

import bisect
import weakref
from array import array
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Sequence

from ..message.structure import header_end

DEFAULT_BUDGET = 32 * 1024 * 1024
"""Bytes of header text kept per process: about 10,000 messages of real-world mail."""
MAX_HEADER = 64 * 1024
"""Bigger header blocks are not kept (they would push out dozens of ordinary ones)."""
WARM_BYTES = 4 * 1024 * 1024
"""Header text one mailbox's warm-up reads at most: all of a 10,000-message mailbox of
short headers; of a mailbox that would not fit, only the newest :data:`WARM_BATCH`."""
WARM_BATCH = 1000
"""Messages per store read of a warm-up (one reader-thread hop each)."""

Key = tuple[int, int, int]
Box = tuple[int, int]
"""(mailbox id, UIDVALIDITY)."""


class Pack:
    """The header blocks of a run of one mailbox's messages, as a warm-up read them: the
    UIDs ascending, where each block ends, and the blocks one after another."""

    __slots__ = ("uids", "ends", "data")

    def __init__(self, rows: list[tuple[int, bytes]]) -> None:
        rows = sorted(rows)
        self.uids = array("I", [uid for uid, _ in rows])
        self.ends = array("I")
        end = 0
        for _, header in rows:
            end += len(header)
            self.ends.append(end)
        self.data = b"".join(header for _, header in rows)

    def get(self, uid: int) -> bytes | None:
        uids = self.uids
        i = bisect.bisect_left(uids, uid)
        if i == len(uids) or uids[i] != uid:
            return None
        return self.data[self.ends[i - 1] if i else 0:self.ends[i]]


class HeaderCache:
    def __init__(self, budget: int = DEFAULT_BUDGET) -> None:
        self.budget = budget
        self.size = 0
        self._entries: OrderedDict[Key, bytes] = OrderedDict()
        self._packs: dict[Box, list[Pack]] = {}
        self._pack_order: deque[tuple[Box, Pack]] = deque()
        """Every pack, the oldest first (the first to go when the budget is exceeded)."""
        self._warmed: set[Box] = set()

    def __len__(self) -> int:
        return len(self._entries) + sum(len(p.uids) for _, p in self._pack_order)

    def get(self, key: Key) -> bytes | None:
        header = self._entries.get(key)
        if header is not None:
            self._entries.move_to_end(key)
            return header
        if self._packs:
            return self._packed(key)
        return None

    def _packed(self, key: Key) -> bytes | None:
        mailbox_id, uidvalidity, uid = key
        for pack in self._packs.get((mailbox_id, uidvalidity), ()):
            if pack.uids[0] <= uid <= pack.uids[-1] and (header := pack.get(uid)) is not None:
                return header
        return None

    def has(self, key: Key) -> bool:
        """Whether ``key``'s block is kept (its place in the order unchanged)."""
        return key in self._entries or bool(self._packs) and self._packed(key) is not None

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
        if len(header) > MAX_HEADER or self.has(key):
            return
        self._entries[key] = header
        self.size += len(header)
        self._shrink()

    def put_pack(self, box: Box, rows: list[tuple[int, bytes]]) -> None:
        """Keep the header blocks a warm-up read, ``(uid, block)`` pairs of one mailbox (not
        those a FETCH kept meanwhile)."""
        entries = self._entries
        rows = [(uid, header) for uid, header in rows
                if len(header) <= MAX_HEADER and (*box, uid) not in entries]
        if not rows:
            return
        pack = Pack(rows)
        self._packs.setdefault(box, []).append(pack)
        self._pack_order.append((box, pack))
        self.size += len(pack.data)
        self._shrink()

    def _shrink(self) -> None:
        """Within the budget again: the warm-ups' packs go first, then the least recently used."""
        while self.size > self.budget and self._pack_order:
            box, pack = self._pack_order.popleft()
            self._packs[box].remove(pack)
            if not self._packs[box]:
                del self._packs[box]
            self.size -= len(pack.data)
        while self.size > self.budget and self._entries:
            _, old = self._entries.popitem(last=False)
            self.size -= len(old)

    def put_message(self, key: Key, raw: bytes) -> bytes:
        """Keep the header block of ``raw`` (through the blank line that ends it); returns it."""
        kept = self.get(key)
        if kept is not None:            # a re-fetch: skip the scan for the blank line
            return kept
        header = raw[:header_end(raw, 0, len(raw))]
        self.put_header(key, header)
        return header


async def warm(cache: HeaderCache, mailbox_id: int, uidvalidity: int, uids: Sequence[int],
               read: Callable[[list[int]], Awaitable[list[tuple[int, bytes]]]],
               limit: int = WARM_BYTES) -> int:
    """Read the stored header blocks of ``uids`` (ascending; the newest first, in batches of
    :data:`WARM_BATCH` through ``read``, the store's ``get_headers``) into ``cache``, a
    :class:`Pack` a batch, until ``limit`` bytes are read or the cache is three quarters
    full (a warm-up never pushes out what clients asked for), or, judged by the blocks read
    so far, the rest of the mailbox would not fit in ``limit``: a mailbox too big to cover
    gets its newest batch only, not seconds of reading for a part of it. Skips what is
    kept already. Returns the bytes read."""
    read_bytes = read_rows = 0
    end = len(uids)
    entries = cache._entries
    while end > 0 and read_bytes < limit and cache.size < cache.budget * 3 // 4:
        batch = uids[max(0, end - WARM_BATCH):end]
        end -= len(batch)
        # Not what the recently-used order holds (one warm-up a mailbox: no pack holds these).
        missing = [u for u in batch if (mailbox_id, uidvalidity, u) not in entries]
        if not missing:
            continue
        rows = await read(missing)
        cache.put_pack((mailbox_id, uidvalidity), rows)
        read_bytes += sum(len(header) for _, header in rows)
        read_rows += len(rows)
        if read_rows and read_bytes + read_bytes * end // read_rows > limit:
            break           # the rest would not fit: the newest are what clients ask for most
    return read_bytes


_caches: weakref.WeakKeyDictionary[object, HeaderCache] = weakref.WeakKeyDictionary()


def header_cache(store: object) -> HeaderCache:
    """The cache of this process for ``store`` (one per store object)."""
    cache = _caches.get(store)
    if cache is None:
        cache = _caches[store] = HeaderCache()
    return cache
