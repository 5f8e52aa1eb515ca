"""``mailhaven import imap``: copy every folder of an account on another IMAP server, with
flags and internal dates, resumable and idempotent.

How "nothing twice" works: every message is keyed by (Message-ID, internal date in whole
seconds, size). Before copying a folder we count the keys already in the target folder
and fetch only the source messages whose key is not yet there (a multiset, so two
identical copies in the source give two copies here). An interrupted run simply runs
again; nothing is recorded outside the messages themselves, so the key survives a
changed UIDVALIDITY on either side and needs no table in either store backend.

The client is Python's imaplib (a client we do not maintain, so it doubles as a check
of what real servers send); the source is opened read-only (EXAMINE, BODY.PEEK).
Blocking imaplib calls run in a worker thread, never on the event loop.
"""

from __future__ import annotations

import asyncio
import collections
import datetime
import imaplib
import re
import ssl
import urllib.parse
from collections.abc import Iterable
from dataclasses import dataclass

from ..imap.grammar import mutf7_decode
from .progress import Progress
from .store_io import Importer, Item

BATCH = 50
"""Messages per UID FETCH of bodies."""

_LIST_RE = re.compile(rb'^\((?P<attrs>[^)]*)\) (?:"(?P<delim>(?:[^"\\]|\\.)*)"|NIL) (?P<name>.*)$', re.IGNORECASE)
_UID_RE = re.compile(rb"\bUID (\d+)")
_FLAGS_RE = re.compile(rb"\bFLAGS \(([^)]*)\)")
_DATE_RE = re.compile(rb'\bINTERNALDATE "([^"]+)"')
_SIZE_RE = re.compile(rb"\bRFC822\.SIZE (\d+)")
_MSGID_RE = re.compile(rb"^Message-ID:[ \t]*((?:[^\r\n]|\r?\n[ \t])*)", re.IGNORECASE | re.MULTILINE)


class ImapSourceError(Exception):
    """The source server refused us or sent what we cannot read."""


@dataclass(frozen=True, kw_only=True)
class Source:
    host: str
    port: int
    user: str
    implicit_tls: bool


def parse_source(url: str) -> Source:
    """``imaps://user@host[:port]`` (implicit TLS, 993) or ``imap://user@host[:port]`` (STARTTLS, 143).

    The user may be a full address: ``imaps://bob@example.org@host`` or ``bob%40example.org``."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("imap", "imaps"):
        raise ValueError(f"--from: expected imaps://user@host[:port], got {url!r}")
    userinfo, at, hostport = parts.netloc.rpartition("@")
    if not at or not userinfo:
        raise ValueError("--from: give the user name, as in imaps://user@host")
    host, port = hostport, None
    if hostport.startswith("["):
        host, _, rest = hostport[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else None
    elif ":" in hostport:
        host, _, port = hostport.rpartition(":")
    if port is not None and not port.isdigit():
        raise ValueError(f"--from: bad port in {url!r}")
    implicit = parts.scheme == "imaps"
    return Source(host=host, port=int(port) if port else (993 if implicit else 143),
                  user=urllib.parse.unquote(userinfo.split(":", 1)[0]), implicit_tls=implicit)


def normalize_message_id(value: str) -> str:
    value = " ".join(value.split())
    m = re.search(r"<[^<>]*>", value)
    return (m.group(0) if m else value).lower()


def parse_internaldate(value: bytes) -> float | None:
    try:
        return datetime.datetime.strptime(value.decode().strip(), "%d-%b-%Y %H:%M:%S %z").timestamp()
    except ValueError:
        return None


@dataclass(frozen=True, kw_only=True)
class SourceMessage:
    uid: int
    flags: frozenset[str]
    internal_date: float | None
    size: int
    message_id: str

    def key(self) -> tuple[str, int, int]:
        return message_key(self.message_id, self.internal_date or 0, self.size)


def message_key(message_id: str, internal_date: float, size: int) -> tuple[str, int, int]:
    """Message-ID and date identify a message; the size only where there is no Message-ID
    (servers disagree on sizes: RFC822.SIZE counts CRLF, some stores keep LF)."""
    return (message_id, int(internal_date), -1 if message_id else size)


def _fetch_items(data: list[object]) -> list[tuple[bytes, bytes | None]]:
    """imaplib's FETCH data -> (response text, literal or None) per message."""
    out: list[tuple[bytes, bytes | None]] = []
    for item in data:
        if isinstance(item, tuple):
            out.append((item[0], item[1]))
        elif isinstance(item, bytes) and item not in (b")",) and _UID_RE.search(item):
            out.append((item, None))
    return out


def _flags(text: bytes) -> frozenset[str]:
    m = _FLAGS_RE.search(text)
    if not m:
        return frozenset()
    return frozenset(f for f in m.group(1).decode("utf-8", "replace").split() if f.lower() != "\\recent")


class ImapSource:
    """A blocking imaplib connection to the source (used from a worker thread)."""

    def __init__(self, source: Source, password: str, *, insecure: bool = False, timeout: float = 60) -> None:
        context = ssl.create_default_context()
        if insecure:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        try:
            if source.implicit_tls:
                self.conn: imaplib.IMAP4 = imaplib.IMAP4_SSL(source.host, source.port, ssl_context=context,
                                                             timeout=timeout)
            else:
                self.conn = imaplib.IMAP4(source.host, source.port, timeout=timeout)
                if "STARTTLS" in self.conn.capabilities:
                    self.conn.starttls(context)
                elif not insecure:
                    raise ImapSourceError("the server offers no STARTTLS; use imaps:// or --insecure")
            self.conn.login(source.user, password)
        except imaplib.IMAP4.error as exc:
            raise ImapSourceError(f"login to {source.host} failed: {exc}") from None
        except (OSError, ssl.SSLError) as exc:
            raise ImapSourceError(f"cannot connect to {source.host}:{source.port}: {exc}") from None

    def folders(self) -> list[tuple[str, str]]:
        """(our name, the server's name) of each selectable folder: ours has ``/`` as the
        separator and is decoded from modified UTF-7."""
        typ, data = self.conn.list('""', "*")
        if typ != "OK":
            raise ImapSourceError("LIST failed")
        names: list[tuple[str, str]] = []
        for item in data:
            if isinstance(item, tuple):                   # the name came as a literal
                head, literal = item[0], item[1]
                m = _LIST_RE.match(head.rstrip() + b" X")
                raw_name = literal
            elif isinstance(item, bytes):
                m = _LIST_RE.match(item)
                raw_name = m.group("name") if m else b""
            else:
                continue
            if not m:
                continue
            attrs = m.group("attrs").lower()
            if b"\\noselect" in attrs or b"\\nonexistent" in attrs:
                continue
            name = raw_name.decode("utf-8", "replace")
            if name.startswith('"') and name.endswith('"'):
                name = re.sub(r"\\(.)", r"\1", name[1:-1])
            wire = name
            name = mutf7_decode(name) if "&" in name else name
            delim = (m.group("delim") or b"").decode()
            if delim and delim != "/":
                name = name.replace(delim, "/")
            names.append(("INBOX" if name.upper() == "INBOX" else name, wire))
        return names

    def examine(self, wire_name: str) -> int:
        quoted = '"' + wire_name.replace("\\", "\\\\").replace('"', '\\"') + '"'
        typ, data = self.conn.select(quoted, readonly=True)
        if typ != "OK":
            raise ImapSourceError(f"cannot open {wire_name}: {data}")
        return int(data[0] or 0)

    def metadata(self, count: int) -> list[SourceMessage]:
        if count == 0:
            return []
        typ, data = self.conn.uid("FETCH", "1:*",
                                  "(UID FLAGS INTERNALDATE RFC822.SIZE BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])")
        if typ != "OK":
            raise ImapSourceError("FETCH failed")
        out = []
        for text, literal in _fetch_items(data):
            uid, size, date = _UID_RE.search(text), _SIZE_RE.search(text), _DATE_RE.search(text)
            if not uid or not size:
                continue
            mid = _MSGID_RE.search(literal or b"")
            out.append(SourceMessage(
                uid=int(uid.group(1)), flags=_flags(text), size=int(size.group(1)),
                internal_date=parse_internaldate(date.group(1)) if date else None,
                message_id=normalize_message_id(mid.group(1).decode("utf-8", "replace")) if mid else ""))
        return out

    def bodies(self, uids: Iterable[int]) -> dict[int, bytes]:
        uid_set = ",".join(str(u) for u in uids)
        typ, data = self.conn.uid("FETCH", uid_set, "(UID BODY.PEEK[])")
        if typ != "OK":
            raise ImapSourceError("FETCH of message bodies failed")
        out: dict[int, bytes] = {}
        for text, literal in _fetch_items(data):
            uid = _UID_RE.search(text)
            if uid and literal is not None:
                out[int(uid.group(1))] = literal
        return out

    def close(self) -> None:
        try:
            self.conn.logout()
        except (imaplib.IMAP4.error, OSError):
            pass


def map_folder(name: str, mapping: dict[str, str]) -> str:
    """Apply ``--folder-map SRC=DST``: exact names and their children."""
    for src, dst in sorted(mapping.items(), key=lambda kv: -len(kv[0])):
        if name == src or (src.upper() == "INBOX" and name.upper() == "INBOX"):
            return dst
        if name.startswith(src + "/"):
            return dst + name[len(src):]
    return name


async def existing_keys(importer: Importer, folder: str) -> collections.Counter[tuple[str, int, int]]:
    box = await importer.mailbox(folder)
    keys: collections.Counter[tuple[str, int, int]] = collections.Counter()
    for m in await importer.store.list_messages(box.id, with_summary=True):
        keys[message_key(normalize_message_id(str(m.summary.get("message_id") or "")), m.internal_date, m.size)] += 1
    return keys


async def import_imap(importer: Importer, client: ImapSource, mapping: dict[str, str]) -> None:
    progress: Progress = importer.progress
    for src, wire in await asyncio.to_thread(client.folders):
        dst = map_folder(src, mapping)
        progress.enter(dst)
        count = await asyncio.to_thread(client.examine, wire)
        metas = await asyncio.to_thread(client.metadata, count)
        have = await existing_keys(importer, dst)
        wanted: list[SourceMessage] = []
        for meta in metas:
            if have[meta.key()] > 0:
                have[meta.key()] -= 1
                progress.duplicate()
            else:
                wanted.append(meta)
        for i in range(0, len(wanted), BATCH):
            batch = wanted[i:i + BATCH]
            bodies = await asyncio.to_thread(client.bodies, [m.uid for m in batch])
            for meta in batch:
                raw = bodies.get(meta.uid)
                where = f"{src} UID {meta.uid}"
                if raw is None:
                    progress.problem(where, "the server sent no body (expunged meanwhile?)")
                    continue
                await importer.add(Item(folder=dst, raw=raw, flags=meta.flags,
                                        internal_date=meta.internal_date, where=where))
        await importer.flush()
