"""The parsed summary of a message, computed once at delivery and stored beside it.

Protocols serve lists, envelopes, previews and search from the summary instead of
re-parsing the bytes. ``summarize`` never raises: real-world mail is malformed in every
way the corpus shows, and a field that cannot be parsed is simply left empty.
"""

from __future__ import annotations

import email.utils
import os
from email import policy
from email.header import Header, decode_header
from email.message import Message
from email.parser import BytesParser
from functools import lru_cache
from typing import Any

from .encodedblocks import drop_encoded_blocks
from .encodedwords import decoded_words
from .headerfields import plain_fields
from .structure import parse_tree, stdlib_bounded, structure_summary

PREVIEW_CHARS = 256
INDEX_TEXT_LIMIT = 16 * 1024
"""Characters of a message's readable text the search index keeps. The trigram index costs
about 45 us of CPU per KB of text (bench/index_cost.py), so a 100 KB message's whole text
cost 5-9 ms after its 250; the first 16 KB (all of the text of 99% of the corpus) cost under
1 ms."""

_compat = policy.compat32


def field_text(value: object) -> str:
    """A field's value as the parser gives it, raw 8-bit bytes (compat32 hands them back
    as an ``unknown-8bit`` Header) read as UTF-8 (RFC 6532 3.2); encoded words left as they are."""
    if isinstance(value, Header):
        return "".join(b.decode("utf-8", "replace") if isinstance(b, bytes) else b for b, _ in decode_header(value))
    return str(value)


def decode_header_value(value: object) -> str:
    """RFC 2047 encoded-words to text, tolerant of every breakage."""
    if value is None:
        return ""
    raw = field_text(value)
    if "=?" not in raw:
        return raw.strip()                  # no encoded word: what the decoding would return
    decoded = decoded_words(raw)            # a Sieve script's header test may have decoded it
    if decoded.parts is None:               # malformed encoded words: keep the raw text
        return raw.strip()
    if decoded.text is None:                # raw UTF-8 beside encoded words, an unknown charset
        return "".join(_part_text(b, charset) for b, charset in decoded.parts).strip()
    return decoded.text.strip()


def _part_text(data: bytes | str, charset: str | None) -> str:
    """One piece of ``decode_header``: text outside encoded words comes back as
    raw-unicode-escape bytes, an encoded word's in its charset."""
    if isinstance(data, str):
        return data
    if charset is None:
        return data.decode("raw-unicode-escape", "replace")
    try:
        return data.decode(charset, "replace")
    except LookupError:
        return data.decode("utf-8", "replace")


def parse_addresses(values: list[str]) -> list[dict[str, str]]:
    """The addresses of address fields' raw values, display names decoded.

    RFC 2047 section 5: an encoded word may stand for a display name (a ``phrase``), never
    for an address or a part of one, so the list is parsed first and only the names are
    decoded: ``=?utf-8?q?bob=40a=2Eexample_=28?= <alice@a.example>`` is alice@a.example
    named "bob@a.example (", not bob@a.example."""
    if not values:
        return []                           # an absent field (most are)
    texts = tuple(str(v) for v in values)
    # The same From: and To: come in message after message: short ones are remembered.
    pairs = _remembered_pairs(texts) if sum(map(len, texts)) <= MEMO_ADDRESSES else _address_pairs(texts)
    return [{"name": name, "email": addr} for name, addr in pairs]


MEMO_ADDRESSES = 512
"""Address fields up to this many characters are remembered (:func:`parse_addresses`)."""


def getaddresses(texts: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    """``email.utils.getaddresses`` of these field values, the answer remembered, and so
    is the exception the parse raised (raised again, a new one of its type: the readers
    only look at the type). A delivery through a Sieve script reads its address fields
    twice, first for the script's address tests (sieve/message.py), then for the summary:
    the stdlib's parse costs some 0.1 ms per KB (a corpus To: of 130 KB ran 12 ms into a
    RecursionError, twice; issue 16), hashing the values a thousandth of that. Fields up
    to :data:`MEMO_ADDRESSES` characters are remembered by the thousand (the same From:
    and To: come in message after message: a script's address tests found most of a
    delivery's short fields parsed, ~30 us of its run, bench/sieve_rules.py), longer
    ones the last few."""
    short = sum(map(len, texts)) <= MEMO_ADDRESSES
    pairs, raised = (_remembered_short_getaddresses if short else _remembered_getaddresses)(texts)
    if raised is not None:
        raise raised[0](*raised[1])
    return pairs


def _parsed_addresses(texts: tuple[str, ...]) -> tuple[tuple[tuple[str, str], ...],
                                                       tuple[type[Exception], tuple[Any, ...]] | None]:
    try:
        return tuple(email.utils.getaddresses(list(texts))), None
    except Exception as e:  # noqa: BLE001 - remembered, raised again by getaddresses
        return (), (type(e), e.args)


_remembered_getaddresses = lru_cache(maxsize=8)(_parsed_addresses)
_remembered_short_getaddresses = lru_cache(maxsize=1024)(_parsed_addresses)


def _address_pairs(texts: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    try:
        pairs = getaddresses(texts)
    except Exception:  # noqa: BLE001
        return ()
    return tuple((decode_header_value(name) if "=?" in name else name, addr)
                 for name, addr in pairs if name or addr)


_remembered_pairs = lru_cache(maxsize=1024)(_address_pairs)


def _decoded_text(part: Message) -> str:
    try:
        payload = part.get_payload(decode=True)
    except Exception:  # noqa: BLE001
        return ""
    if not isinstance(payload, bytes) or b"\x00" in payload:
        return ""                           # NUL: a binary file labelled as text, not readable
    charset = part.get_content_charset() or "utf-8"
    try:
        return payload.decode(charset, errors="replace")
    except LookupError:
        return payload.decode("utf-8", errors="replace")


def html_to_text(html: str) -> str:
    from .html import html_to_text as convert

    return convert(html)


def body_text(msg: Message) -> tuple[str, bool, list[dict[str, Any]]]:
    """(readable text of the message, has attachments, attachment list)."""
    plain: list[str] = []
    html: list[str] = []
    attachments: list[dict[str, Any]] = []
    try:
        parts = list(msg.walk())
    except Exception:  # noqa: BLE001
        parts = [msg]
    for part in parts:
        try:
            if part.is_multipart():
                continue
            ctype = part.get_content_type()
            disposition = (part.get("Content-Disposition") or "").split(";")[0].strip().lower()
            filename = part.get_filename()
        except Exception:  # noqa: BLE001
            continue
        if disposition == "attachment" or (filename and not ctype.startswith("text/")):
            attachments.append({"filename": decode_header_value(filename) if filename else "",
                                "type": ctype})
            continue
        if ctype == "text/plain":
            plain.append(_decoded_text(part))
        elif ctype == "text/html":
            html.append(_decoded_text(part))
    if plain:
        text = "\n".join(plain)
    elif html:
        text = "\n".join(html_to_text(h) for h in html)
    else:
        text = ""
    return text, bool(attachments), attachments


def embedded_headers(msg: Message) -> str:
    """The header fields of messages forwarded inside ``msg`` (message/rfc822 parts): part
    of its body, so SEARCH BODY and TEXT find a forwarded message's sender and subject."""
    out: list[str] = []
    try:
        for part in msg.walk():
            if part.get_content_type() in ("message/rfc822", "message/global") and part.is_multipart():
                inner = part.get_payload(0)
                if isinstance(inner, Message):
                    out += [f"{k}: {decode_header_value(v)}" for k, v in inner.items()]
    except Exception:  # noqa: BLE001 - a broken part: what was found so far
        pass
    return "\n".join(out)


INDEX_HEADER_BYTES = 64 * 1024
"""Of a header block, what the search index keeps."""
LARGE_MESSAGE = 2 * 1024 * 1024
"""Messages above this size are summarised from their file by :func:`summarize_file`."""
TEXT_PREFIX = 1024 * 1024
"""What of a large message the text, preview and header fields are read from."""


def summarize_file(path: str) -> tuple[dict[str, Any], bytes]:
    """:func:`summarize` of a large message in bounded memory: (summary, the prefix read).

    Header fields, preview and index text come from the first :data:`TEXT_PREFIX` bytes
    (headers plus a bounded prefix of the text, which is all the index keeps anyway); the
    MIME structure with its offsets and line counts is read from the whole file a chunk at
    a time (:class:`~mailhaven.message.fileview.FileView`), and the attachment list from
    that structure, so parts past the prefix are listed too."""
    from .fileview import FileView

    with open(path, "rb") as f:
        return summarize_view(FileView(f.fileno(), os.fstat(f.fileno()).st_size))


def summarize_view(view: Any) -> tuple[dict[str, Any], bytes]:
    """:func:`summarize_file` of a message seen through a :class:`~mailhaven.message.fileview.FileView`
    (a file, or a blob the store reads a range at a time)."""
    prefix = view[0:TEXT_PREFIX]
    summary = summarize(prefix, structure_of=view)
    body = summary.get("imap", {}).get("body")
    if body is not None:
        attachments = _structure_attachments(body)
        summary["attachments"] = attachments
        summary["has_attachment"] = bool(attachments)
    return summary, prefix


def _structure_attachments(node: dict[str, Any]) -> list[dict[str, Any]]:
    """The attachments :func:`body_text` would list, from a structure node (bounded by
    the structure parser's own part limit)."""
    out: list[dict[str, Any]] = []
    stack = [node]
    while stack:
        n = stack.pop()
        if n.get("parts"):
            stack += reversed(n["parts"])
            continue
        if n.get("msg"):                    # message/rfc822: its parts, as Message.walk() goes
            stack.append(n["msg"])
            continue
        if str(n.get("t", "")).lower() == "message":
            continue                        # the stdlib parses every message/* as a container
        ctype = f"{n.get('t', 'text')}/{n.get('s', 'plain')}".lower()
        disp = n.get("disp") or [None, []]
        params = {str(k).lower(): v for k, v in (disp[1] or [])}
        params_ct = {str(k).lower(): v for k, v in (n.get("p") or [])}
        filename = params.get("filename") or params_ct.get("name")
        if (str(disp[0] or "").lower() == "attachment") or (filename and not ctype.startswith("text/")):
            out.append({"filename": decode_header_value(filename) if filename else "", "type": ctype})
    return out


def stdlib_parse(raw: bytes) -> Message:
    """``BytesParser(policy=compat32).parsebytes(raw)``, the same message at less cost when
    it is neither multipart nor message/*: with every line of the header section ending in
    CRLF, only that section goes through the feed parser and the body is set whole (the
    parser walked the body a line at a time to join it back: 1.1 -> 0.43 ms of a 100 KB
    message's summary, issue 18); a plain ASCII header section (headerfields.py) skips the
    feed parser too. An empty header section, a bare CR or LF in it, a header defect or a
    container type takes the full parse."""
    end = raw.find(b"\r\n\r\n")
    if end > 0 and not raw.startswith(b"\r\n"):                # not an empty header section
        head = raw[:end + 2]
        if head.count(b"\n") == head.count(b"\r") == head.count(b"\r\n"):
            # crlf_ascii (headerfields.py) with its CRLF half checked just above.
            plain = head.isascii() and not head.startswith(b"From ")
            fields = plain_fields(head.decode("ascii")) if plain else None
            if fields is not None:
                # A plain header section: the parser's fields without the parser (headerfields.py).
                msg = Message(policy=_compat)
                for name, value in fields:
                    msg.set_raw(name, value)
            else:
                msg = BytesParser(policy=_compat).parsebytes(head, headersonly=True)
                if msg.get_payload():            # the parser ended the header early ("From " last)
                    return BytesParser(policy=_compat).parsebytes(raw)
            if not msg.defects and msg.get_content_maintype() not in ("multipart", "message"):
                msg.set_payload(raw[end + 4:].decode("ascii", "surrogateescape"))
                return msg
    return BytesParser(policy=_compat).parsebytes(raw)


def summarize(raw: bytes, structure_of: bytes | None = None) -> dict[str, Any]:
    """Headers, addresses, preview and index text of one message; the MIME structure is
    read from ``structure_of`` when given (the whole message, where ``raw`` is a prefix)."""
    tree = None
    if structure_of is None:
        try:
            tree = parse_tree(raw)          # once, for the stdlib's input and the structure
        except Exception:  # noqa: BLE001 - as structure_summary failing below
            tree = None
    try:
        msg = stdlib_parse(stdlib_bounded(raw, tree))
    except Exception:  # noqa: BLE001
        return {"subject": "", "from": [], "to": [], "cc": [], "preview": "", "text": ""}

    # One pass over the fields, as msg.get and msg.get_all would find them (each of those
    # walks every field: 20 walks a message were a tenth of its summary, issue 18).
    fields: dict[str, list[Any]] = {}
    try:
        for name, value in msg.items():
            fields.setdefault(name.lower(), []).append(value)
    except Exception:  # noqa: BLE001 - as every lookup failing
        fields = {}

    def header(name: str) -> str:
        try:
            return decode_header_value(fields[name][0] if name in fields else None)
        except Exception:  # noqa: BLE001
            return ""

    def all_values(name: str) -> list[str]:
        try:
            return [field_text(v) for v in fields.get(name, ())]
        except Exception:  # noqa: BLE001
            return []

    date_ts: float | None = None
    try:
        parsed = email.utils.parsedate_to_datetime(str(fields["date"][0] if "date" in fields else ""))
        date_ts = parsed.timestamp() if parsed else None
    except Exception:  # noqa: BLE001
        date_ts = None
    text, has_attachment, attachments = body_text(msg)
    preview = _preview(text)
    forwarded = embedded_headers(msg)
    if forwarded:
        text = f"{text}\n{forwarded}" if text else forwarded
    summary: dict[str, Any] = {
        "subject": header("subject"),
        "from": parse_addresses(all_values("from")),
        "sender": parse_addresses(all_values("sender")),
        "reply_to": parse_addresses(all_values("reply-to")),
        "to": parse_addresses(all_values("to")),
        "cc": parse_addresses(all_values("cc")),
        "bcc": parse_addresses(all_values("bcc")),
        "date": date_ts,
        "date_header": header("date"),
        "message_id": header("message-id"),
        "in_reply_to": header("in-reply-to"),
        "references": header("references"),
        "content_type": _safe(lambda: msg.get_content_type(), "text/plain"),
        "has_attachment": has_attachment,
        "attachments": attachments,
        "preview": preview,
        "text": index_text(text),
    }
    try:
        summary.update(structure_summary(structure_of) if structure_of is not None
                       else structure_summary(raw, tree))
    except Exception:  # noqa: BLE001 - structure is best effort; IMAP falls back to a re-parse
        pass
    return summary


def _preview(text: str) -> str:
    """The first PREVIEW_CHARS of ``text`` with its whitespace runs made single spaces.
    Collapsing a prefix gives a prefix of the whole text's collapsed form, so a prefix
    whose collapsed form is long enough will do: twice PREVIEW_CHARS for prose, then eight
    times (splitting all of a long text was 3% of an inbound message's CPU; 2 KB of prose
    split into words ~16 us, 512 characters ~5 us: issue 18)."""
    for take in (2 * PREVIEW_CHARS, 8 * PREVIEW_CHARS):
        head = " ".join(text[:take].split())
        if len(head) >= PREVIEW_CHARS or len(text) <= take:
            return head[:PREVIEW_CHARS]
    return " ".join(text.split())[:PREVIEW_CHARS]


def index_text(text: str) -> str:
    """The part of a message's readable text the search index keeps: base64 blocks left
    out, at most :data:`INDEX_TEXT_LIMIT` characters."""
    text = text[:4 * INDEX_TEXT_LIMIT]
    if len(text) >= 120:                    # room for two encoded lines
        # Two or more lines of nothing but base64 (an attachment pasted into the text, or a
        # part without MIME headers): encoded bytes, never searched for, so never indexed.
        text = drop_encoded_blocks(text)
    return text[:INDEX_TEXT_LIMIT]


def _safe(fn: Any, default: Any) -> Any:
    try:
        return fn()
    except Exception:  # noqa: BLE001
        return default


def message_ids(value: str) -> list[str]:
    """``<a@b> <c@d>`` -> ['<a@b>', '<c@d>']."""
    out = []
    for token in value.replace(",", " ").split():
        token = token.strip()
        if token.startswith("<") and token.endswith(">") and len(token) > 2:
            out.append(token)
    return out


_ENVELOPE_FIELD = {"from": 2, "to": 5, "cc": 6, "bcc": 7}


def search_fields(raw: bytes, summary: dict[str, Any]) -> tuple[str, ...]:
    """What the stores' full-text index holds of a message: (subject, from, to, cc, bcc,
    body, headers), the addresses as ``name <address>``, the body text taken out of
    ``summary`` (which keeps no copy), the header block raw. Both backends index this."""
    text = summary.pop("text", "")
    # Attachments are indexed by their names, never their (encoded) bytes: SEARCH BODY finds
    # the name as it stands in the part's header inside the body (RFC 9051 6.4.4).
    names = " ".join(str(a.get("filename") or "") for a in summary.get("attachments") or ())
    if names.strip():
        text = f"{text}\n{names}" if text else names

    envelope = (summary.get("imap") or {}).get("envelope") or [None] * 10

    def addresses(key: str) -> str:
        text = " ".join(f"{a.get('name', '')} <{a.get('email', '')}>" for a in summary.get(key, []))
        # Group names (RFC 5322 3.4) are searchable too, as Dovecot's SEARCH TO finds them: in
        # the ENVELOPE a group starts with (NIL NIL name NIL) (RFC 9051 7.5.2).
        field = envelope[_ENVELOPE_FIELD[key]] if key in _ENVELOPE_FIELD else None
        groups = [a[2] for a in field or () if a[3] is None and a[2]]
        return " ".join([text, *groups]) if groups else text

    end = raw.find(b"\r\n\r\n")
    if end < 0:
        end = raw.find(b"\n\n")
    # The header block indexed is bounded (a million header lines must not put megabytes
    # into the index of every message).
    end = min(end if end >= 0 else len(raw), INDEX_HEADER_BYTES)
    headers = raw[:end].decode("utf-8", "replace")
    return (str(summary.get("subject", "") or ""), addresses("from"), addresses("to"), addresses("cc"),
            addresses("bcc"), str(text or ""), headers)
