"""The message as Sieve sees it: decoded header fields, the envelope, the size, the body."""

from __future__ import annotations

import email.header
import email.utils
import re
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import Message

from mailhaven.message.addresses import parse_address_list
from mailhaven.message.encodedwords import decoded_words
from mailhaven.message.headerfields import plain_fields
from mailhaven.message.structure import (
    MAX_HEADER_BYTES,
    MAX_HEADER_FIELDS,
    header_end,
    stdlib_readable,
)
from mailhaven.message.summary import MEMO_ADDRESSES, getaddresses


def _utf8(value: str) -> str:
    """Raw 8-bit header bytes (surrogate-escaped by compat32) read as UTF-8 (RFC 6532)."""
    if value.isascii():                 # nearly every field: the round below hands it back as is
        return value
    try:
        return value.encode("ascii", "surrogateescape").decode("utf-8", "replace")
    except UnicodeEncodeError:
        return value


def _text(value: object) -> str:
    """A field value as text: compat32 hands 8-bit fields over as Header objects."""
    if isinstance(value, email.header.Header):
        parts = []
        for chunk, charset in email.header.decode_header(value):
            if isinstance(chunk, bytes):
                try:
                    parts.append(chunk.decode(charset if charset not in (None, "unknown-8bit") else "utf-8",
                                              "replace"))
                except LookupError:
                    parts.append(chunk.decode("utf-8", "replace"))
            else:
                parts.append(chunk)
        return "".join(parts)
    return _utf8(str(value))


def _decode(value: str) -> str:
    """RFC 5228 2.7.2: header values are compared after RFC 2047 decoding."""
    value = _utf8(value)
    if "=?" not in value:               # no encoded word: make_header would hand it back as is
        return value
    decoded = decoded_words(value)      # remembered for the summary, which decodes it too
    if decoded.text is not None:
        return decoded.text
    assert decoded.error is not None
    if issubclass(decoded.error[0], (ValueError, LookupError, UnicodeError)):
        return value
    decoded.raise_again()
    return value


def _addresses(values: list[str]) -> list[str]:
    """The addresses in these field values (groups flattened). The stdlib parser recurses
    once per ``:`` of a group; a field with thousands of them (corpus: mimekit's
    stack-overflow.txt) is read by the iterative Dovecot-style parser instead."""
    try:
        return [addr for _display, addr in getaddresses(tuple(values)) if addr]
    except RecursionError:
        return [f"{a[2]}@{a[3]}" if a[3] else str(a[2])
                for v in values for a in parse_address_list(v) if a[2]]


_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+"
_SIMPLE_ADDRESS = re.compile(                   # addr-spec, or a phrase and <addr-spec> (RFC 5322 3.4)
    rf"[ \t\r\n]*(?:({_ATEXT}@{_ATEXT})|(?:\"[^\"\\\r\n]*\"[ \t\r\n]*|[^\"()<>@,:;\[\]\\]*)<({_ATEXT}@{_ATEXT})>)[ \t\r\n]*\Z")


def _simple_addresses(values: list[str]) -> list[str] | None:
    """The addresses of fields that are plain lists of ``a@b`` and ``Name <a@b>``, as
    email.utils.getaddresses finds them, without its character-by-character parse; None
    for anything else (quotes around commas, comments, groups, routes, literals)."""
    out = []
    for value in values:
        for piece in value.split(",") if '"' not in value else (value,):
            m = _SIMPLE_ADDRESS.match(piece)
            if m is None:
                return None
            out.append(m.group(1) or m.group(2))
    return out


def field_addresses(value: str) -> list[str]:
    """The addresses in one field's value (groups flattened)."""
    return _addresses([value])


_LINE = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+")       # a line and its end, as StringIO splits
_FIELD_NAME = re.compile(r"[\041-\071\073-\176]*")                # email.feedparser.headerRE's name


def header_fields(head: bytes) -> dict[str, list[str]]:
    """Lower-case field name -> the values ``email.message_from_bytes(head,
    policy=compat32).get_all(name)`` gives, before ``header_fetch_parse`` (8-bit bytes
    still surrogate-escaped): the stdlib's header parse (feedparser._parsegen and
    _parse_headers, compat32.header_source_parse) rule for rule, without building a
    Message (a quarter of a scripted delivery's Sieve CPU, bench/sieve_rules.py).
    tests/test_sieve_program.py checks it against the stdlib on the corpus and on
    generated header blocks."""
    text = head.decode("ascii", "surrogateescape")
    fields = _fields_at_once(text)
    return fields if fields is not None else _header_fields_by_line(text)


def _fields_at_once(text: str) -> dict[str, list[str]] | None:
    """header_fields of a plain block (headerfields.py): one regular expression finds
    every field; None for any other block, which is read line by line instead. A plain
    block is also one :func:`stdlib_readable` hands back unchanged."""
    found = plain_fields(text)
    return None if found is None else _by_name(found)


def _by_name(found: list[tuple[str, str]]) -> dict[str, list[str]]:
    fields: dict[str, list[str]] = {}
    for name, value in found:
        key = name.lower()
        if key in fields:
            fields[key].append(value)
        else:
            fields[key] = [value]
    return fields


def _header_fields_by_line(text: str) -> dict[str, list[str]]:
    fields: dict[str, list[str]] = {}
    name = ""
    value: list[str] = []
    lines = _LINE.findall(text)
    last = len(lines) - 1
    for lineno, line in enumerate(lines):
        if line[0] in " \t":                         # a continuation (headerRE's [\t ])
            if name:
                value.append(line)
            continue
        is_from = line.startswith("From ")
        i = line.find(":")
        if not is_from and (i < 0 or _FIELD_NAME.match(line, 0, i).end() != i):   # type: ignore[union-attr]
            break                                    # not headerRE: the header ends here
        if name:
            first = value[0]
            text = first[first.find(":") + 1:].lstrip(" \t") + "".join(value[1:]) if len(value) > 1 \
                else first[first.find(":") + 1:].lstrip(" \t")
            fields.setdefault(name.lower(), []).append(text.rstrip("\r\n"))
            name, value = "", []
        if is_from:
            if lineno == last and lineno != 0:
                break                                # the body's first line, pushed back
            continue                                 # the unix-from line, or a misplaced one
        if i == 0:
            continue                                 # no name: a defect, skipped
        name, value = line[:i], [line]
    if name:
        first = value[0]
        text = first[first.find(":") + 1:].lstrip(" \t") + "".join(value[1:])
        fields.setdefault(name.lower(), []).append(text.rstrip("\r\n"))
    return fields


@dataclass(kw_only=True)
class SieveMessage:
    raw: bytes
    """The message as received: whole, or for a large one its first part (header section
    and the start of the body, see ``total_size``)."""
    mail_from: str = ""
    """The envelope sender (MAIL FROM), ``""`` for the null reverse path."""
    rcpt_to: str = ""
    """The envelope recipient this run is for."""
    total_size: int | None = None
    """The message's size when ``raw`` is only its first part (localdelivery.py)."""
    edited: bool = False
    """editheader (RFC 5293) changed ``raw``: deliver the new bytes."""
    _parsed: Message | None = field(default=None, repr=False)
    _head: Message | None = field(default=None, repr=False)
    _index: dict[str, list[str]] | None = field(default=None, repr=False)
    _headers: dict[str, list[str]] = field(default_factory=dict, repr=False)
    _addresses: dict[str, list[str]] = field(default_factory=dict, repr=False)
    memo: dict[str, list[str]] = field(default_factory=dict, repr=False)
    """Values derived from the header by the compiled tests (sieve/program.py), shared by
    every test of a run that asks the same: folded values, address parts."""

    @property
    def size(self) -> int:
        return len(self.raw) if self.total_size is None else self.total_size

    @property
    def parsed(self) -> Message:
        """The whole message, MIME parts and all (body tests)."""
        if self._parsed is None:
            self._parsed = message_from_bytes(stdlib_readable(self.raw), policy=policy.compat32)
        return self._parsed

    @property
    def head(self) -> Message:
        """The header section alone, parsed as :attr:`parsed` parses it: header, address
        and exists tests need no MIME parse of the body (a third of a scripted delivery's
        CPU, bench/sieve_rules.py)."""
        if self._head is None:
            if self._parsed is not None:
                self._head = self._parsed
            else:
                readable = stdlib_readable(self.raw)
                self._head = message_from_bytes(readable[:header_end(readable, 0, len(readable))],
                                                policy=policy.compat32)
        return self._head

    def _field_values(self, name: str) -> list[object]:
        """What ``head.get_all(name)`` gives (``[]`` for none), from :func:`header_fields`."""
        if self._index is None:
            self._index = self._header_index()
        values = self._index.get(name.lower())
        if not values:
            return []
        return [v if v.isascii() else policy.compat32.header_fetch_parse(name, v) for v in values]

    def _header_index(self) -> dict[str, list[str]]:
        """header_fields of the header as :func:`stdlib_readable` gives it: a block of
        fields alone (the common case) is one it hands back unchanged, read at once
        without that check; any other through it."""
        raw = self.raw
        head = raw[:header_end(raw, 0, len(raw))]
        text = None
        if len(head) <= MAX_HEADER_BYTES and head.count(b"\n") <= MAX_HEADER_FIELDS:
            text = head.decode("ascii", "surrogateescape")
            found = plain_fields(text)
            if found is not None:
                return _by_name(found)
        readable = stdlib_readable(raw)
        if readable is raw and text is not None:     # the block it had: no second try at once
            return _header_fields_by_line(text)
        return header_fields(readable[:header_end(readable, 0, len(readable))])

    def field_index(self) -> dict[str, list[str]]:
        """Lower-case field name -> its raw values (never an empty list), built at the first ask."""
        if self._index is None:
            self._index = self._header_index()
        return self._index

    def has_header(self, name: str) -> bool:
        if self._index is None:
            self._field_values(name)
        assert self._index is not None
        return bool(self._index.get(name.lower()))

    def headers(self, name: str) -> list[str]:
        """Every value of the named field, decoded, unfolded, in message order."""
        key = name.lower()
        if key not in self._headers:
            self._headers[key] = [
                (v if isinstance(v, str) and v.isascii() and "=?" not in v else _decode(_text(v)))
                .replace("\r\n", "").replace("\n", "")          # ASCII, no encoded word: as _decode gives it
                for v in self._field_values(name)]
        return self._headers[key]

    def addresses(self, name: str) -> list[str]:
        """The addresses in the named fields (groups flattened); RFC 5228 2.7.4."""
        key = name.lower()
        if key not in self._addresses:
            raw = [_text(v) for v in self._field_values(name)]
            if sum(map(len, raw)) <= MEMO_ADDRESSES:
                self._addresses[key] = _addresses(raw)
            else:
                simple = _simple_addresses(raw)
                self._addresses[key] = simple if simple is not None else _addresses(raw)
        return self._addresses[key]

    # -- editheader (RFC 5293) ----------------------------------------------------------
    def _fields(self) -> tuple[list[bytes], bytes]:
        """The header fields (each with its folded lines) and everything after them."""
        raw = self.raw
        ends = [i for i in (raw.find(b"\r\n\r\n"), raw.find(b"\n\n")) if i >= 0]
        if raw.startswith((b"\r\n", b"\n")):
            return [], raw
        cut = min(ends) + (2 if raw[min(ends)] == 0x0D else 1) if ends else len(raw)
        fields: list[bytes] = []
        for line in raw[:cut].splitlines(keepends=True):
            if fields and line[:1] in (b" ", b"\t"):
                fields[-1] += line
            else:
                fields.append(line)
        return fields, raw[cut:]

    def _replace(self, fields: list[bytes], rest: bytes) -> None:
        self.raw = b"".join(fields) + rest
        self.edited = True
        self._parsed = None
        self._head = None
        self._index = None
        self._headers = {}
        self._addresses = {}
        self.memo = {}

    def add_header(self, name: str, value: str, *, last: bool = False) -> None:
        """RFC 5293 4: at the top (or the end with :last); non-ASCII values RFC 2047-encoded."""
        fields, rest = self._fields()
        eol = b"\r\n" if b"\r\n" in self.raw[:4096] or not self.raw else b"\n"
        if not value.isascii():
            value = email.header.Header(value, "utf-8", header_name=name).encode()
        line = f"{name}: {value}".encode() + eol
        if last:
            fields.append(line)
        else:
            fields.insert(0, line)
        self._replace(fields, rest)

    def delete_headers(self, name: str, which: set[int]) -> None:
        """RFC 5293 5: remove the named fields at these positions (0-based, among that name's)."""
        fields, rest = self._fields()
        key = name.lower().encode()
        kept, n = [], 0
        for f in fields:
            if f.split(b":", 1)[0].strip().lower() == key:
                n += 1
                if n - 1 in which:
                    continue
            kept.append(f)
        if len(kept) != len(fields):
            self._replace(kept, rest)

    def raw_fields(self, name: str) -> list[str]:
        """Each named field's value undecoded, in message order (for :index on addresses)."""
        return [_text(v) for v in self._field_values(name)]

    def body_texts(self, transform: str, content_types: tuple[str, ...] = ()) -> list[str]:
        """RFC 5173 5: the body as ``raw`` (undecoded), ``text`` (text/* parts decoded) or
        the parts of the listed content types (``content``)."""
        if transform == "raw":
            sep = self.raw.find(b"\r\n\r\n")
            if sep < 0:
                sep2 = self.raw.find(b"\n\n")
                body = self.raw[sep2 + 2:] if sep2 >= 0 else b""
            else:
                body = self.raw[sep + 4:]
            return [body.decode("utf-8", "replace")]
        wanted = content_types if transform == "content" else ("text",)
        out = []
        for part in self.parsed.walk():
            if part.is_multipart():
                continue
            ctype = part.get_content_type()
            if not any(w == "" or ctype == w.lower() or ctype.split("/")[0] == w.lower()
                       for w in wanted):
                continue
            payload = part.get_payload(decode=True)
            if not isinstance(payload, bytes):
                continue
            charset = part.get_content_charset() or "us-ascii"
            try:
                out.append(payload.decode(charset, "replace"))
            except LookupError:
                out.append(payload.decode("utf-8", "replace"))
        return out
