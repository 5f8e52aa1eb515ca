"""A full disk, recognised in one place: ENOSPC / EDQUOT from a file write, SQLITE_FULL
from the database on the same filesystem."""

from __future__ import annotations

import errno
import sqlite3

from .api import StorageFull

_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


def is_full(exc: BaseException) -> bool:
    if isinstance(exc, StorageFull):
        return True
    if isinstance(exc, OSError):
        return exc.errno in _FULL_ERRNOS
    if isinstance(exc, sqlite3.Error):
        return getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL   # "database or disk is full"
    return False


def as_full(exc: BaseException) -> StorageFull:
    """The :class:`StorageFull` to raise ``from exc``."""
    return exc if isinstance(exc, StorageFull) else StorageFull(f"not enough disk space ({exc})")
