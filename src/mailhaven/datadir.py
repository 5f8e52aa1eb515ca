"""The data directory is private to the user the server runs as (issue 14, item 9).

Everything Mailhaven makes there (the database, its WAL and shared memory, blobs, spool
files, the TLS key, DKIM keys) holds mail or secrets: directories are 0700 and files 0600,
whichever process makes them (the server, an SMTP worker, any CLI command). Each process
sets a umask of 077 first (:func:`restrict_umask`), and the places that create files or
directories ask for those modes explicitly (:func:`private_dir`, :func:`private_file`),
so a umask changed by someone else does not open them up.

A data directory made by an older version (``mailhaven.db`` 0644, directories 0755) is
tightened when a store opens it (:func:`tighten`): the directory itself at once, and
everything below when the directory was open to others. Symbolic links are not followed.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

PRIVATE_UMASK = 0o077
DIR_MODE = 0o700
FILE_MODE = 0o600
_OPEN_BITS = 0o077
"""Group and other permission bits: none may be set below the data directory."""

_log = logging.getLogger("mailhaven.datadir")


def restrict_umask() -> None:
    """Files and directories this process (and its children) create are the owner's only."""
    os.umask(PRIVATE_UMASK)


def private_dir(path: Path | str) -> Path:
    """Create ``path`` and any missing parents as 0700 (existing ones are left alone)."""
    path = Path(path)
    missing = []
    p = path
    while not p.exists():
        missing.append(p)
        if p.parent == p:
            break
        p = p.parent
    for d in reversed(missing):
        try:
            d.mkdir(mode=DIR_MODE)
        except FileExistsError:         # another process made it meanwhile
            continue
        os.chmod(d, DIR_MODE)           # mkdir's mode passes through the umask
    return path


def private_file(path: Path | str) -> Path:
    """Create ``path`` empty as 0600 if it does not exist; make it 0600 if it does."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)
    finally:
        os.close(fd)
    return Path(path)


def _restrict(path: str, st: os.stat_result) -> bool:
    if not st.st_mode & _OPEN_BITS:
        return False
    try:
        os.chmod(path, stat.S_IMODE(st.st_mode) & ~_OPEN_BITS, follow_symlinks=False)
    except (PermissionError, NotImplementedError):   # not ours: say so, do not stop
        _log.warning("cannot restrict the mode of %s (owned by another user)", path)
        return False
    return True


def tighten(data_dir: Path | str) -> int:
    """Take group and other permissions off the data directory and, when they were set on
    it (a directory made by an older version), off everything below it; how many modes
    changed. Nothing is created: a missing directory stays missing."""
    top = os.fspath(data_dir)
    try:
        st = os.lstat(top)
    except FileNotFoundError:
        return 0
    if not stat.S_ISDIR(st.st_mode):
        return 0
    was_open = bool(st.st_mode & _OPEN_BITS)
    changed = int(_restrict(top, st))
    for root, dirs, files in os.walk(top):
        if not was_open and root == top:
            # Already private: look at what lies directly in it (the database files, tls/,
            # dkim/...), not into the blob tree, which nobody else can reach anyway.
            dirs[:] = [d for d in dirs if d not in ("blobs",)]
        for name in dirs + files:
            path = os.path.join(root, name)
            try:
                entry = os.lstat(path)
            except FileNotFoundError:
                continue
            if stat.S_ISLNK(entry.st_mode):
                continue
            changed += _restrict(path, entry)
    if changed:
        _log.warning("restricted the modes of %d files and directories in %s to the owner", changed, top)
    return changed
