"""JMAP state strings: the account's MODSEQ counter (store ``Account.modseq``), which every
change to the account's mail, mailboxes and flags moves forward (IMAP's HIGHESTMODSEQ
comes from the same counter, so IMAP and JMAP see one history)."""

from __future__ import annotations

from typing import Any

from .registry import MethodError


async def account_state(store: Any, account_id: int) -> str:
    account = await store.get_account_by_id(account_id)
    return str(account.modseq)


def parse_state(value: Any) -> int:
    if not isinstance(value, str) or not value.isdigit() or len(value) > 18:
        raise MethodError("cannotCalculateChanges", "unknown state")
    return int(value)
