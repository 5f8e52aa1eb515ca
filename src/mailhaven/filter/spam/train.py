"""Training the classifiers from what users do: a message moved (or copied) into Junk is
spam, one moved out of Junk into any folder but Trash is ham. Called by IMAP COPY/MOVE,
JMAP Email/set (the webmail's Junk and Not junk buttons) and ``mailhaven spam train``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

from ...store.api import Mailbox, Store
from .tokens import MAX_INPUT, tokenize

BATCH = 20
"""Messages read at a time (a MOVE of thousands must not hold them all in memory)."""

log = logging.getLogger("mailhaven.spam")


def is_junk(mailbox: Mailbox) -> bool:
    return mailbox.special_use == "\\Junk" or mailbox.name.lower() == "junk"   # RFC 6154 2


def is_trash(mailbox: Mailbox) -> bool:
    return mailbox.special_use == "\\Trash" or mailbox.name.lower() == "trash"


def direction(source: Mailbox, target: Mailbox) -> bool | None:
    """True: the user says spam; False: ham; None: nothing learnt from this move."""
    if is_junk(target) and not is_junk(source):
        return True
    if is_junk(source) and not is_junk(target) and not is_trash(target):
        return False
    return None


async def train_raw(store: Store, account_id: int, raw: bytes, *, spam: bool) -> None:
    tokens = await asyncio.to_thread(tokenize, raw[:MAX_INPUT])
    await store.spam_train(account_id, tokens, spam=spam)


async def train_uids(store: Store, account_id: int, mailbox_id: int, uids: Iterable[int], *, spam: bool) -> int:
    """Learn the messages ``uids`` of one mailbox; how many."""
    wanted, count = list(uids), 0
    for i in range(0, len(wanted), BATCH):
        for _, raw in await store.get_raw(mailbox_id, wanted[i:i + BATCH]):
            await train_raw(store, account_id, raw, spam=spam)
            count += 1
    return count


async def train_move(store: Store, account_id: int, source: Mailbox, target: Mailbox, uids: Iterable[int]) -> None:
    """Before a COPY/MOVE from ``source`` to ``target``: learn what it says, if anything.
    A failure to learn is logged, never turned into a failed move."""
    spam = direction(source, target)
    if spam is None:
        return
    try:
        count = await train_uids(store, account_id, source.id, uids, spam=spam)
        log.info("account %d: learnt %d message(s) as %s", account_id, count, "spam" if spam else "ham")
    except Exception:                       # noqa: BLE001 - learning is best effort
        log.exception("account %d: learning from a move failed", account_id)
