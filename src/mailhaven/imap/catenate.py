"""APPEND ... CATENATE (RFC 4469): a message put together from literal text and parts of
messages already on the server, named by IMAP URLs (RFC 5092).

A client forwarding a message with attachments sends only its new text and URLs for the
parts it keeps, instead of downloading and uploading them again. A URL names a message of
this session's own account (``/INBOX;UIDVALIDITY=7/;UID=20/;SECTION=2``, or the same after
``imap://user@host``); anything else, a message that is not there, or a URL with URLAUTH
is refused with ``NO [BADURL "..."]`` and nothing is appended.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote_to_bytes

from ..message.lineends import normalize_line_ends
from ..store.api import NotFound
from .grammar import decode_mailbox, mutf7_decode
from .parser import Atom, String
from .responses import Bad, No

if TYPE_CHECKING:
    from .session import Session

_URL = re.compile(
    r"^(?:imap://(?:(?P<user>[^@/;]*)(?:;[^@/]*)?@)?(?P<host>[^/]+))?"
    r"/(?P<mailbox>[^;/]+)(?:;UIDVALIDITY=(?P<uidvalidity>[1-9][0-9]{0,9}))?"
    r"/;UID=(?P<uid>[1-9][0-9]{0,9})"
    r"(?:/;SECTION=(?P<section>[^/;]+))?"
    r"(?:/;PARTIAL=(?P<start>[0-9]{1,10})(?:\.(?P<length>[1-9][0-9]{0,9}))?)?$",
    re.I)


async def catenate(s: Session, tokens: list[Any]) -> bytes:
    """The message that ``CATENATE (TEXT {n} ... URL "..." ...)`` describes."""
    if not tokens or len(tokens) % 2:
        raise Bad("CATENATE takes pairs: TEXT literal or URL url")
    out: list[bytes] = []
    for kind, value in zip(tokens[::2], tokens[1::2], strict=True):
        name = kind.value.upper() if isinstance(kind, Atom) else ""
        if name == "TEXT":
            if not isinstance(value, String) or not value.literal:
                raise Bad("CATENATE TEXT needs a literal")
            spool = getattr(value.value, "sink", None)
            if spool is not None:               # a large TEXT literal spooled as it arrived
                out.append(bytes(await s.store.read_blob((await spool.finish()).id)))
            else:
                out.append(value.value if value.binary else normalize_line_ends(value.value))
        elif name == "URL":
            if isinstance(value, Atom):
                url = value.value
            elif isinstance(value, String):
                url = value.value.decode("utf-8", "replace")
            else:
                raise Bad("CATENATE URL needs a URL")
            out.append(await _url_bytes(s, url))
        else:
            raise Bad("CATENATE takes TEXT and URL parts")
    return b"".join(out)


async def _url_bytes(s: Session, url: str) -> bytes:
    from .fetch import parse_item, section_bytes

    def bad(why: str) -> No:
        return No(f"Bad URL: {why}", code=f'BADURL "{url[:200]}"')

    m = _URL.match(url)
    if m is None:
        raise bad("not an IMAP URL of a message on this server") if ";URLAUTH=" not in url.upper() \
            else bad("URLAUTH is not supported")
    if m.group("host") is not None:
        host = m.group("host").rsplit(":", 1)[0].lower()
        user = unquote_to_bytes(m.group("user") or "").decode("utf-8", "replace")
        if host != s.ctx.hostname.lower() or (user and user.lower() != (s.username or "").lower()):
            raise bad("another server or user")
    name = decode_mailbox(unquote_to_bytes(m.group("mailbox")), utf8=True)
    assert s.account_id is not None
    try:
        box = await s.store.get_mailbox(s.account_id, name, counts=False)
    except NotFound:
        try:                                # RFC 2192's modified UTF-7 names, still in use
            box = await s.store.get_mailbox(s.account_id, mutf7_decode(name), counts=False)
        except (NotFound, ValueError, UnicodeDecodeError):
            raise bad("no such mailbox") from None
    if m.group("uidvalidity") and int(m.group("uidvalidity")) != box.uidvalidity:
        raise bad("UIDVALIDITY differs")
    uid = int(m.group("uid"))
    found = await s.store.get_raw(box.id, [uid])
    if not found:
        raise bad("no such message")
    data = found[0][1]
    if m.group("section"):
        section = unquote_to_bytes(m.group("section")).decode("ascii", "replace")
        try:
            item = parse_item(f"BODY.PEEK[{section}]")
        except Bad:
            raise bad("invalid section") from None
        data = section_bytes(data, None, item)
    if m.group("start") is not None:
        start = int(m.group("start"))
        length = m.group("length")
        data = data[start:] if length is None else data[start:start + int(length)]
    return data
