"""Maildir, read and written: ``cur/ new/ tmp/``, ``:2,FLAGS`` info suffixes, Maildir++
subfolders (``.Parent.Child`` beside ``cur/`` of the INBOX), Dovecot keyword letters.

- Flags (https://cr.yp.to/proto/maildir.html): ``D`` draft, ``F`` flagged, ``P`` passed
  (``$Forwarded``), ``R`` replied (``\\Answered``), ``S`` seen, ``T`` trashed (``\\Deleted``);
  lower-case letters are keywords listed in the folder's ``dovecot-keywords`` file
  (``N name`` lines, ``a`` = 0), as Dovecot writes them. Letters in ASCII order.
- The internal date is the file's modification time (Dovecot's received date).
- Folder names: our ``/`` hierarchy becomes Maildir++ ``.``; each component is modified
  UTF-7 (RFC 3501 5.1.3, as Dovecot's Maildir++ layout stores it) with ``.`` written as
  ``&AC4-`` so that it cannot be read as a separator.
- Messages are written to ``tmp/`` and renamed into ``cur/`` (the Maildir delivery rule);
  files are named so that sorting by name gives the mailbox order back.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from ..imap.grammar import mutf7_decode, mutf7_encode

FLAG_LETTERS = (("D", "\\Draft"), ("F", "\\Flagged"), ("P", "$Forwarded"), ("R", "\\Answered"),
                ("S", "\\Seen"), ("T", "\\Deleted"))
LETTER_TO_FLAG = dict(FLAG_LETTERS)
FLAG_TO_LETTER = {flag: letter for letter, flag in FLAG_LETTERS}
KEYWORDS_FILE = "dovecot-keywords"
MAX_KEYWORDS = 26


@dataclass(frozen=True, kw_only=True)
class MaildirMessage:
    path: Path
    flags: frozenset[str]
    internal_date: float

    def read(self) -> bytes:
        return self.path.read_bytes()


# -- folder names ----------------------------------------------------------------------------


def folder_to_dirname(name: str) -> str:
    """``Archive/2024`` -> ``.Archive.2024``; ``INBOX`` is the root (``""``)."""
    if name.upper() == "INBOX":
        return ""
    return "." + ".".join(mutf7_encode(part).replace(".", "&AC4-") for part in name.split("/"))


def dirname_to_folder(dirname: str) -> str:
    parts = dirname.lstrip(".").split(".")
    return "/".join(mutf7_decode(part) for part in parts)


# -- flags -----------------------------------------------------------------------------------


def read_keywords(folder: Path) -> dict[str, str]:
    """letter -> keyword from ``dovecot-keywords``."""
    out: dict[str, str] = {}
    try:
        text = (folder / KEYWORDS_FILE).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return out
    for line in text.splitlines():
        num, _, word = line.strip().partition(" ")
        if num.isdigit() and int(num) < MAX_KEYWORDS and word:
            out[chr(ord("a") + int(num))] = word
    return out


def parse_info(filename: str, keywords: dict[str, str]) -> frozenset[str]:
    """Flags of a file name's ``:2,`` part (``!`` or ``;`` stand for ``:`` on some systems)."""
    m = re.search(r"[:;!]2,([A-Za-z]*)$", filename)
    if not m:
        return frozenset()
    flags = set()
    for letter in m.group(1):
        if letter in LETTER_TO_FLAG:
            flags.add(LETTER_TO_FLAG[letter])
        elif letter in keywords:
            flags.add(keywords[letter])
    return frozenset(flags)


def info_suffix(flags: Iterable[str], keyword_letters: dict[str, str]) -> str:
    letters = {FLAG_TO_LETTER[f] for f in flags if f in FLAG_TO_LETTER}
    letters |= {keyword_letters[f] for f in flags if f in keyword_letters}
    return ":2," + "".join(sorted(letters))


def _name_key(name: str) -> tuple[object, ...]:
    """Sort key: numbers compared as numbers (``9.M1`` before ``10.M1``)."""
    return tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name.split(":")[0]))


# -- reading ---------------------------------------------------------------------------------


def is_maildir(path: Path) -> bool:
    return (path / "cur").is_dir() and (path / "new").is_dir()


def list_folders(root: Path) -> list[tuple[str, Path]]:
    """(folder name, directory) for the INBOX (the root) and every Maildir++ subfolder."""
    folders: list[tuple[str, Path]] = []
    if is_maildir(root):
        folders.append(("INBOX", root))
    for child in sorted(root.iterdir()):
        if child.name.startswith(".") and child.name not in (".", "..") and child.is_dir() and is_maildir(child):
            folders.append((dirname_to_folder(child.name), child))
    return folders


def read_folder(folder: Path) -> Iterator[MaildirMessage]:
    """Messages of one Maildir (``new/`` and ``cur/``), in file-name order."""
    keywords = read_keywords(folder)
    entries: list[tuple[tuple[object, ...], Path]] = []
    for sub in ("new", "cur"):
        directory = folder / sub
        for entry in os.scandir(directory):
            # Dangling links are listed too: reading them fails and is reported, not lost.
            if (entry.is_file() or entry.is_symlink()) and not entry.name.startswith("."):
                entries.append((_name_key(entry.name), Path(entry.path)))
    entries.sort()
    for _, path in entries:
        try:
            mtime = path.stat().st_mtime
        except OSError:
            mtime = 0.0
        flags = parse_info(path.name, keywords) if path.parent.name == "cur" else frozenset()
        yield MaildirMessage(path=path, flags=flags, internal_date=mtime)


# -- writing ---------------------------------------------------------------------------------


class MaildirWriter:
    """Writes one folder; call :meth:`close` to write its ``dovecot-keywords``."""

    def __init__(self, root: Path, folder: str) -> None:
        self.path = root / folder_to_dirname(folder) if folder.upper() != "INBOX" else root
        for sub in ("cur", "new", "tmp"):
            (self.path / sub).mkdir(parents=True, exist_ok=True)
        if self.path != root:
            (self.path / "maildirfolder").touch()       # Maildir++: marks a subfolder
        self.keyword_letters: dict[str, str] = {}
        self.count = 0
        self.dropped_keywords: set[str] = set()

    def _letters_for(self, flags: Iterable[str]) -> None:
        for f in sorted(flags):
            if f.startswith("\\") or f in FLAG_TO_LETTER or f in self.keyword_letters:
                continue
            if len(self.keyword_letters) >= MAX_KEYWORDS:
                self.dropped_keywords.add(f)
                continue
            self.keyword_letters[f] = chr(ord("a") + len(self.keyword_letters))

    def write(self, raw: bytes, flags: Iterable[str], internal_date: float, uid: int) -> Path:
        flags = list(flags)
        self._letters_for(flags)
        self.count += 1
        base = f"{self.count:09d}.U{uid}.mailhaven,S={len(raw)}"
        tmp = self.path / "tmp" / base
        with open(tmp, "wb") as f:
            f.write(raw)
        os.utime(tmp, (internal_date, internal_date))
        final = self.path / "cur" / (base + info_suffix(flags, self.keyword_letters))
        os.rename(tmp, final)
        return final

    def close(self) -> None:
        if self.keyword_letters:
            lines = [f"{ord(letter) - ord('a')} {word}\n" for word, letter in self.keyword_letters.items()]
            (self.path / KEYWORDS_FILE).write_text("".join(lines), encoding="utf-8")
