"""MIME structure with byte offsets, and the IMAP envelope, computed once at delivery.

``structure_summary(raw)`` returns ``{"imap": {"envelope": ..., "body": ...}}``, which
:func:`mailhaven.message.summary.summarize` merges into the stored summary. IMAP FETCH
serves ENVELOPE, BODYSTRUCTURE and every ``BODY[section]`` (``1.2.MIME``, ``3.HEADER``,
``TEXT``...) from it by slicing the stored bytes: no re-parse per request.

Each entity (a message or a body part) is a dict:

- ``h``: ``[header_start, body_start]`` byte offsets (the header includes its blank line),
  ``e``: end of the body (exclusive),
- ``t``, ``s``: content type and subtype as written (defaults ``text``/``plain``),
- ``p``: parameters ``[[name, value], ...]`` as written (RFC 2231 parts kept as sent),
- ``id``, ``desc``, ``enc``, ``md5``, ``loc``: the Content-* fields or None,
- ``disp``: ``[type, [[name, value]...]]`` or None, ``lang``: list or None,
- ``lines``: body lines (text/* and message/rfc822),
- ``parts``: children of a multipart, ``msg``: the entity of an encapsulated message with
  its ``env`` (message/rfc822, message/global).

The parser is deliberately forgiving (RFC 2046 5.1.1 delimiters, missing close
delimiters, LF-only line ends, headers without a body) and bounded in depth.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

from . import mimeparams
from .addresses import parse_address_list

MAX_DEPTH = 40
MAX_PARTS = 5000
MAX_HEADER_FIELDS = 1000
"""Fields kept of one header block; a million header lines must not cost seconds and
megabytes in every reader (issue 14 item 8). Later fields stay in the bytes (BODY[HEADER])."""
MAX_HEADER_BYTES = 1024 * 1024
"""Bytes of one header block parsed into fields (the rest is served from the bytes only).
Real mail has headers of over 100 KB (a To: of thousands of addresses) whose later fields
Dovecot still reads; the field count is what bounds the cost of a hostile header."""

_FIELD_RE = re.compile(rb"^([^:\s][^:]*?)[ \t]*:", re.MULTILINE)


def parse_tree(raw: bytes) -> dict[str, Any]:
    """The MIME tree of ``raw`` as :func:`structure_summary` and :func:`stdlib_bounded`
    read it (parsed once when both are wanted: the summary)."""
    root, _ = _Parser(raw).entity(0, len(raw), [], False, False, 0)
    return root


def structure_summary(raw: bytes, tree: dict[str, Any] | None = None) -> dict[str, Any]:
    """``tree``: :func:`parse_tree` of ``raw`` (taken over: it becomes the summary's)."""
    root = tree if tree is not None else parse_tree(raw)
    if _plain_7bit(root):
        # Dovecot answers such a message from one fixed form, so "TEXT/PLAIN; charset=US-ASCII"
        # reads "text" "plain" ("charset" "us-ascii") "7bit" there: the same here.
        root.update(t="text", s="plain", p=[["charset", "us-ascii"]], enc="7bit")
    imap = {"envelope": root.pop("env"), "body": root}
    if "env8" in root:
        imap["envelope8"] = root.pop("env8")
    return {"imap": imap}


def _plain_7bit(node: dict[str, Any]) -> bool:
    return (node["t"].lower(), node["s"].lower()) == ("text", "plain") and "parts" not in node \
        and len(node["p"]) == 1 and node["p"][0][0].lower() == "charset" \
        and node["p"][0][1].lower() == "us-ascii" and node["enc"].lower() == "7bit" \
        and not any(node[k] for k in ("id", "desc", "md5", "disp", "lang", "loc"))


# -- headers --------------------------------------------------------------------


def header_end(raw: bytes, start: int, end: int) -> int:
    """Offset of the body: just after the blank line ending the header (or ``end``)."""
    if start >= end:
        return end
    if raw.startswith(b"\r\n", start, end):
        return start + 2
    if raw.startswith(b"\n", start, end):
        return start + 1
    # The first "\n\r\n" or "\n\n" (the end of the regex \r?\n\r?\n's first match), found
    # with bytes.find: about 10x faster than the regex over a typical header block, and
    # FETCH of bodies runs this for every message (the header cache keeps the block).
    crlf = raw.find(b"\n\r\n", start, end)
    lf = raw.find(b"\n\n", start, end if crlf < 0 else crlf + 1)
    if lf >= 0:
        return lf + 2
    return crlf + 3 if crlf >= 0 else end


def split_fields(block: bytes) -> list[tuple[str, bytes]]:
    """(lower-case name, raw field bytes with its folded lines and line end), in order,
    up to the blank line; a line that is no field (no colon, no name) is left out."""
    groups: list[list[bytes]] = []
    current: list[bytes] | None = None
    if len(block) > MAX_HEADER_BYTES:
        block = block[:block.rfind(b"\n", 0, MAX_HEADER_BYTES) + 1]
    for line in block.splitlines(keepends=True):
        if line == b"\r\n" or line == b"\n":
            break
        if current is not None and line[:1] in (b" ", b"\t"):
            current.append(line)                            # a folded continuation
            continue
        if len(groups) >= MAX_HEADER_FIELDS:
            break
        current = [line]
        groups.append(current)
    out: list[tuple[str, bytes]] = []
    for lines in groups:
        field = lines[0] if len(lines) == 1 else b"".join(lines)
        name, sep, _ = field.partition(b":")
        # A name may be followed by blanks before its colon (RFC 5322 4.5.3 obs-optional),
        # but never by a line break: "From\r\n : x" is no From field (a spoofing trick).
        if sep and name.strip() and not name[:1].isspace() and b"\n" not in name:
            out.append((name.strip().decode("ascii", "replace").lower(), field))
    return out


_STDLIB_NAME = re.compile(rb"[\x21-\x39\x3b-\x7e]+")
_NOT_STDLIB_FIELD = re.compile(rb"^(?![\x21-\x39\x3b-\x7e]+:|[ \t]|\r?$)", re.M)
"""A header line the stdlib parser takes for the start of the body."""


class _LastReadable:
    """The last message :func:`stdlib_readable` rebuilt and what it gave, held (so no
    other object can have its id) and found by identity, else by equal bytes: a Sieve
    script's header tests read a message whose header needs the rebuild, then the summary
    reads the same bytes object (the store's memory of recent blobs) and rebuilds it again
    (issue 16). A message kept in a file (over 128 KB) is read twice, by the delivery for
    the script and by the store for the summary: two equal objects, compared at memcmp
    speed (a corpus header of 138 KB took 3 ms to rebuild)."""

    MAX_SIZE = 256 * 1024
    """Larger messages are not held."""

    def __init__(self) -> None:
        self.pair: tuple[bytes, bytes] | None = None


_LAST_READABLE = _LastReadable()


def stdlib_readable(raw: bytes) -> bytes:
    """``raw`` with a header block the stdlib parser reads as :func:`split_fields` does.

    The stdlib ends the header at the first line that is not a field by its narrower rule
    (``Subject :`` with the obsolete blanks before the colon, a ``From`` broken over two
    lines, an SMTP transcript's ``HELO``) and takes the rest, Subject and From and
    Content-Type included, for body. Here such a header is rebuilt from the fields
    split_fields finds, blanks before a colon dropped, names the stdlib cannot hold left
    out; the body stays byte for byte. Most messages come back unchanged (the same object).
    """
    last = _LAST_READABLE.pair
    if last is not None and (last[0] is raw or last[0] == raw):     # lengths first, then memcmp
        return last[1]
    readable = _readable(raw)
    if readable is not raw and len(raw) <= _LastReadable.MAX_SIZE:
        _LAST_READABLE.pair = (raw, readable)
    return readable


def _readable(raw: bytes) -> bytes:
    end = header_end(raw, 0, len(raw))
    block = raw[:end]
    first = block.find(b"\n") + 1 if block.startswith(b"From ") else 0   # mbox's From_ line
    bounded = len(block) <= MAX_HEADER_BYTES and block.count(b"\n", 0, MAX_HEADER_BYTES) <= MAX_HEADER_FIELDS
    if bounded and _NOT_STDLIB_FIELD.search(block, first) is None:
        return raw
    if block.endswith(b"\n\r\n"):
        blank = b"\r\n"
    elif block.endswith(b"\n\n"):
        blank = b"\n"
    else:
        blank = b""
    out = [block[:first]]
    for _, field in split_fields(block[first:]):
        name, _, rest = field.partition(b":")
        name = name.rstrip(b" \t")
        if _STDLIB_NAME.fullmatch(name):
            out.append(name + b":" + rest if rest.endswith(b"\n") else name + b":" + rest + (blank or b"\r\n"))
    return b"".join(out) + blank + raw[end:]


STDLIB_DEPTH = 30
"""Nesting the stdlib parser is given (its cost grows with depth times size, and every
reader of its tree recurses): deeper entities reach it with an empty body."""


def stdlib_bounded(raw: bytes, tree: dict[str, Any] | None = None) -> bytes:
    """``raw`` for the stdlib parser at a bounded cost: the header block as
    :func:`stdlib_readable` gives it (at most MAX_HEADER_FIELDS fields), and the body of any
    multipart or message entity nested deeper than :data:`STDLIB_DEPTH` left out.

    ``tree`` (:func:`parse_tree` of ``raw``, the summary's, which reads no such body): the
    bodies of the parts that are neither text/*, message/* nor multipart are left out too,
    their headers kept. The stdlib parser reads a body a line at a time in Python: a 100 KB
    base64 attachment cost ~2-3 ms of a message's summary, where only its headers are read."""
    if tree is None:
        # A single part nests nothing: its header names neither a multipart nor a message/*
        # type (every "message" in it is a Message-ID's). Looked for in the header block
        # only; the count below lower-cased a copy of the whole message (~90 us at 100 KB).
        head = raw[:header_end(raw, 0, len(raw))].lower()
        if b"multipart" not in head and head.count(b"message") == head.count(b"message-id"):
            return stdlib_readable(raw)
        # Counting in a lower-cased copy: a case-blind regex over the whole message cost ~4x more.
        if raw.lower().count(b"content-type") <= STDLIB_DEPTH:
            return stdlib_readable(raw)                 # too few Content-Types to nest deeply
    root = tree if tree is not None else parse_tree(raw)
    if "parts" not in root and "msg" not in root:
        return stdlib_readable(raw)                     # one part: nothing to leave out
    cuts: list[tuple[int, int]] = []
    stack: list[tuple[dict[str, Any], int]] = [(root, 0)]
    while stack:
        node, depth = stack.pop()
        children = [*node.get("parts", ()), *((node["msg"],) if "msg" in node else ())]
        if children and depth >= STDLIB_DEPTH:
            cuts.append((node["h"][1], node["e"]))
            continue
        if tree is not None and "parts" not in node and "msg" not in node and node.get("s") \
                and str(node.get("t", "")).lower() not in ("", "text", "message", "multipart"):
            # (A type with no subtype, "BINARY", is text/plain to the stdlib: kept.)
            cuts.append((node["h"][1], node["e"]))
            continue
        stack.extend((child, depth + 1) for child in children)
    if not cuts:
        return stdlib_readable(raw)
    pieces, pos = [], 0
    for start, end in sorted(cuts):
        pieces.append(raw[pos:start])
        pos = end
    cut = b"".join(pieces) + raw[pos:]
    # Every cut lies in the body: the cut message has raw's header block, which
    # stdlib_readable rebuilds (or not) the same way. Rebuilt once for raw, which a Sieve
    # script's header tests did just before (_LAST_READABLE), rather than again for the
    # cut copy (~0.1 ms of a 2.5 KB header, issue 16).
    readable = stdlib_readable(raw)
    if readable is raw:
        return cut
    body = header_end(raw, 0, len(raw))
    return readable[:len(readable) - (len(raw) - body)] + cut[body:]


_FOLD = re.compile(rb"\r?\n([ \t])")


def parse_fields(block: bytes) -> list[tuple[str, bytes, bytes]]:
    """(lower-case name, unfolded value, raw field bytes including its line end)."""
    return [(name, _FOLD.sub(rb"\1", field.partition(b":")[2]).strip(), field)
            for name, field in split_fields(block)]


def _text(value: bytes) -> str:
    return value.decode("utf-8", "replace")


def _latin1(value: bytes) -> str:
    return value.decode("latin-1")


def _utf8(value: str) -> str:
    """A Latin-1 string (one character per byte) as the text its bytes spell in UTF-8."""
    return value.encode("latin-1").decode("utf-8", "replace")


def _raw_value(field: bytes) -> bytes:
    """A field's value as Dovecot keeps it: blanks after the colon skipped on the first
    line only, folds kept, the final line end dropped."""
    value = field.partition(b":")[2].lstrip(b" \t")   # (a loop over the bytes was ~1 us a field)
    if value.endswith(b"\n"):
        value = value[:-1]
        if value.endswith(b"\r"):
            value = value[:-1]
    return value


def _nolf(value: bytes) -> bytes:
    """Line breaks out of a value: dropped before a blank (a fold) or at the end, a space
    elsewhere (as Dovecot's imap_append_nstring_nolf)."""
    if b"\r" not in value and b"\n" not in value:
        return value
    out = bytearray()
    n = len(value)
    for i, c in enumerate(value):
        if c in (13, 10):
            nxt = value[i + 1] if i + 1 < n else None
            if nxt is not None and nxt not in (32, 9, 13, 10):
                out.append(32)
        else:
            out.append(c)
    return bytes(out)


_BLANKS = re.compile(rb"[ \t\r\n]+")


def for_humans(value: bytes) -> bytes:
    """Subject and display names as Dovecot sends them: runs of blanks and line breaks as
    one space, none at either end, NUL as 0x80 (RFC 9051 forbids NUL in a string)."""
    return _BLANKS.sub(b" ", value).strip(b" ").replace(b"\x00", b"\x80")


# -- entities ------------------------------------------------------------------


_BOUNDARY_MAX = 80
"""Longer boundaries are cut to this many bytes (as Dovecot's BOUNDARY_STRING_MAX_LEN)."""


class _Hit:
    """A delimiter line found in a body: where it starts, whose boundary it is, and
    whether it is a close delimiter (RFC 2046 5.1.1)."""

    __slots__ = ("at", "owner", "close", "floor")

    def __init__(self, at: int, owner: int, close: bool, floor: int) -> None:
        self.at, self.owner, self.close = at, owner, close
        self.floor = floor
        """Where the search began: a delimiter on that very line owns no line break before it."""


class _Parser:
    """RFC 2046 5.1 multipart bodies read as Dovecot reads them: a line starting with
    ``--`` and the boundary of any enclosing multipart ends the part (the rest of the line
    is not checked; the longest boundary wins, the innermost on a tie), so a missing close
    delimiter or a broken nested part cannot swallow its parent's later parts."""

    def __init__(self, raw: bytes) -> None:
        self.raw = raw                  # bytes, or a FileView: only len, slices, find, count, startswith
        self.count = 0
        self.owners = 0

    def find(self, start: int, end: int, stack: list[tuple[bytes, int]]) -> _Hit | None:
        if not stack:
            return None
        raw = self.raw
        first_line = start == 0 or raw[start - 1:start] == b"\n"
        at = -1
        for boundary, _ in stack:
            # The first line starting with "--" and one of the boundaries (a C-speed find for
            # each; walking every "--" line in Python was slow on hostile messages).
            delim = b"--" + boundary
            if first_line and raw.startswith(delim, start, end):
                at = start
                break
            i = raw.find(b"\n" + delim, start, end if at < 0 else min(end, at + len(delim) + 1))
            if i >= 0 and (at < 0 or i + 1 < at):
                at = i + 1
        if at >= 0:
            lf = raw.find(b"\n", at, end)
            line = raw[at + 2:lf if lf >= 0 else min(end, at + 2 + 2 * _BOUNDARY_MAX)]
            if line.endswith(b"\r"):
                line = line[:-1]
            dashes = len(line) > 2 and line.endswith(b"--")
            best: tuple[bytes, int] | None = None
            for boundary, owner in reversed(stack):
                if line.startswith(boundary) and (best is None or len(best[0]) < len(boundary)):
                    best = (boundary, owner)
                    if len(boundary) == len(line) or (dashes and len(boundary) + 2 == len(line)):
                        break
            if best is not None:
                return _Hit(at, best[1], line[len(best[0]):len(best[0]) + 2] == b"--", start)
        return None

    def before(self, hit: _Hit | None, end: int) -> int:
        """Where a body ends: at the line break before the delimiter line (RFC 2046 5.1.1)."""
        if hit is None:
            return end
        at, floor = hit.at, hit.floor
        if at > floor and self.raw[at - 1:at] == b"\n":
            at -= 1
            if at > floor and self.raw[at - 1:at] == b"\r":
                at -= 1
        return at

    def next_line(self, at: int, end: int) -> int:
        lf = self.raw.find(b"\n", at, end)
        return end if lf < 0 else lf + 1

    def entity(self, start: int, end: int, stack: list[tuple[bytes, int]], in_multipart: bool,
               digest_child: bool, depth: int) -> tuple[dict[str, Any], _Hit | None]:
        raw = self.raw
        self.count += 1
        # The first delimiter bounds the search for the header's end (unbounded, a part with
        # no blank line would make every part scan the rest of the message).
        first = self.find(start, end, stack)
        limit = end if first is None else first.at
        body_start = header_end(raw, start, limit)
        early = first if first is not None and not _blank_line_ends(raw, start, body_start, limit) else None
        if early is not None:
            # A delimiter inside the header: the part ends there, with no body.
            body_start = self.before(early, end)
        fields = split_fields(raw[start:body_start])   # the raw fields: no unfolded values needed here
        node = _content_fields(fields, in_multipart, digest_child)
        kind, boundary = node.pop("kind"), node.pop("boundary")
        node["h"] = [start, body_start]
        node["env"], env8 = envelope(fields)
        if env8:
            node["env8"] = env8
        if early is not None:
            node["e"] = body_start
            if kind == "multipart":
                node["parts"] = []
            _count(node, kind, raw, body_start, body_start)
            return node, early
        if kind == "multipart" and depth < MAX_DEPTH and boundary:
            return self.multipart(node, body_start, end, stack, boundary, depth)
        if kind == "multipart":
            node["parts"] = []              # no boundary: no parts (shown as an empty one)
        if kind == "rfc822" and depth < MAX_DEPTH and self.count < MAX_PARTS:
            inner, hit = self.entity(body_start, end, stack, False, False, depth + 1)
            node["msg"] = inner
            node["e"] = inner["e"]
            if hit is not None and inner["h"][1] == inner["e"] < hit.at and hit.floor < inner["e"]:
                node["e"] = hit.at      # ended inside its header: the line break stays in this body (as Dovecot)
            _count(node, kind, raw, body_start, node["e"])
            return node, hit
        # The delimiter ending this leaf is the first one after its start (searched again from
        # the body: the line break before it is the delimiter's unless it opens the body).
        hit = None if first is None else _Hit(first.at, first.owner, first.close, body_start)
        node["e"] = self.before(hit, end)
        _count(node, kind, raw, body_start, node["e"])
        return node, hit

    def multipart(self, node: dict[str, Any], body_start: int, end: int, stack: list[tuple[bytes, int]],
                  boundary: bytes, depth: int) -> tuple[dict[str, Any], _Hit | None]:
        self.owners += 1
        me = self.owners
        inner = [*stack, (boundary, me)]
        digest = node["s"].lower() == "digest"
        parts: list[dict[str, Any]] = []
        hit = self.find(body_start, end, inner)            # the preamble ends at the first delimiter
        while hit is not None and hit.owner == me and not hit.close and self.count < MAX_PARTS:
            if self.raw.find(b"\n", hit.at, end) < 0:
                hit = None                  # a delimiter without a line end, last in the message: no part after it
                break
            child, hit = self.entity(self.next_line(hit.at, end), end, inner, True, digest, depth + 1)
            parts.append(_strip_env(child))
        if hit is not None and hit.owner == me:
            # The close delimiter: the epilogue runs to an enclosing multipart's delimiter.
            hit = self.find(self.next_line(hit.at, end), end, stack)
        node["parts"] = parts
        node["e"] = self.before(hit, end)
        return node, hit


def _blank_line_ends(raw: bytes, start: int, body_start: int, limit: int) -> bool:
    """Whether the header in [start, limit) ended at a blank line (header_end found one)."""
    if body_start < limit:
        return True
    block = raw[max(start, limit - 3):limit]
    return ((limit - start <= 2 and raw[start:limit] in (b"\n", b"\r\n")) or block.endswith(b"\n\n")
            or (block == b"\n\r\n" and limit - 3 >= start))


def _count(node: dict[str, Any], kind: str, raw: bytes, start: int, end: int) -> None:
    """RFC 9051 7.5.2 body lines (text and message/rfc822): the line breaks in the body, so
    a last line without one is not counted (as Dovecot)."""
    if kind in ("text", "rfc822"):
        node["lines"] = raw.count(b"\n", start, end)


def _content_fields(fields: list[tuple[str, bytes]], in_multipart: bool,
                    digest_child: bool) -> dict[str, Any]:
    """The Content-* fields of one entity, read as Dovecot reads them: without
    MIME-Version or Content-Type outside a multipart they do not count (RFC 2045 4), the
    first of each wins."""
    names = {name for name, _ in fields}
    is_mime = in_multipart or "mime-version" in names or "content-type" in names
    first: dict[str, bytes] = {}
    disposition: tuple[str, list[list[str]]] | None = None
    for name, field in fields:
        if not name.startswith("content-"):
            continue
        value = _raw_value(field)
        if name == "content-disposition":
            if disposition is None or not disposition[1]:  # a later one replaces one without parameters
                parsed = mimeparams.disposition(_latin1(value))
                disposition = parsed if parsed is not None else disposition
            continue
        first.setdefault(name, value)
    if not is_mime:
        first, disposition = {}, None
    kind = "text"
    t, s, params = "text", "plain", None
    boundary: bytes | None = None
    if "content-type" in first:
        t, s, params = mimeparams.content_type(_latin1(first["content-type"]))
        lower = f"{t}/{s}".lower()
        if lower == "message/rfc822":
            kind = "rfc822"
        elif t.lower() == "text":
            kind = "text"
        elif t.lower() == "multipart" and s:
            kind = "multipart"
            for pname, pvalue in params or []:
                if pname.lower() == "boundary":
                    boundary = pvalue.encode("latin-1")[:_BOUNDARY_MAX]
                    break
        else:
            kind = "other"
    elif digest_child:
        kind = "rfc822"                      # RFC 2046 5.1.5: a digest's parts default to message/rfc822
    if kind == "rfc822":
        t, s = "message", "rfc822"
    params = [[_utf8(k), _utf8(v)] for k, v in params or []]
    if kind == "text" and not any(k.lower() == "charset" for k, _ in params):
        params.append(["charset", "us-ascii"])  # RFC 2046 4.1.2: the default, shown (as Dovecot)
    enc = mimeparams.transfer_encoding(_latin1(first["content-transfer-encoding"])) \
        if "content-transfer-encoding" in first else None

    def nolf(name: str) -> str | None:
        return _text(_nolf(first[name])) if name in first else None

    return {
        "t": _utf8(t), "s": _utf8(s), "p": params, "kind": kind, "boundary": boundary,
        "id": nolf("content-id"), "desc": nolf("content-description"),
        "enc": _utf8(enc) if enc else "7bit", "md5": nolf("content-md5"), "loc": nolf("content-location"),
        "disp": [_utf8(disposition[0]), [[_utf8(k), _utf8(v)] for k, v in disposition[1]]]
        if disposition is not None else None,
        "lang": [_utf8(x) for x in mimeparams.languages(_latin1(first["content-language"])) or []] or None
        if "content-language" in first else None,
    }


def _strip_env(node: dict[str, Any]) -> dict[str, Any]:
    """Only messages carry an envelope: drop the one computed for a body part."""
    node.pop("env", None)
    node.pop("env8", None)
    return node


# -- envelope (RFC 9051 section 7.5.2) -------------------------------------------


_ADDRESS_FIELDS = ("from", "sender", "reply-to", "to", "cc", "bcc")
_ENVELOPE_INDEX = {"date": 0, "subject": 1, "from": 2, "sender": 3, "reply-to": 4, "to": 5, "cc": 6, "bcc": 7,
                   "in-reply-to": 8, "message-id": 9}


def envelope(fields: list[tuple[str, bytes]]) -> tuple[list[Any], dict[str, str]]:
    """RFC 9051 7.5.2 ENVELOPE, and the 8-bit values that are no UTF-8 by position.

    Where the RFC is silent, as Dovecot: of a repeated Date, Subject, In-Reply-To or
    Message-ID the last counts, repeated address fields are joined; strings keep their
    bytes with line breaks out, Subject and display names with runs of blanks as one space.
    The envelope holds text (U+FFFD for bytes that are no UTF-8, for search and sort); the
    second value maps such a string's position (``"1"``, ``"2.0.0"``: field, address, part)
    to its bytes as Latin-1 (JSON has no bytes), so FETCH sends the original bytes back."""
    strings: dict[str, bytes] = {}
    every: dict[str, list[str]] = {}
    raw8: dict[str, str] = {}
    for name, field in fields:
        if name in ("date", "subject", "in-reply-to", "message-id"):
            strings[name] = _raw_value(field)
        elif name in _ADDRESS_FIELDS:
            every.setdefault(name, []).append(_latin1(_raw_value(field)))

    def text(value: bytes, path: str) -> str:
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            raw8[path] = value.decode("latin-1")
            return value.decode("utf-8", "replace")

    def addrs(name: str) -> list[list[Any]] | None:
        texts = tuple(every.get(name, ()))
        if not texts:
            return None
        i = _ENVELOPE_INDEX[name]
        # The same From: and To: come in message after message: short ones are remembered.
        rows, eight = (_remembered_addresses if sum(map(len, texts)) <= MEMO_ADDRESSES else _addresses)(texts, i)
        raw8.update(eight)
        return [list(row) for row in rows] if rows else None

    def string(name: str) -> Any:
        i = _ENVELOPE_INDEX[name]
        return text(_nolf(strings[name]), str(i)) if name in strings else None

    from_ = addrs("from")
    sender = addrs("sender") or from_      # RFC 9051 7.5.2: defaults to From
    reply_to = addrs("reply-to") or from_
    subject = text(for_humans(strings["subject"]), "1") if "subject" in strings else None
    env = [string("date"), subject, from_, sender, reply_to,
           addrs("to"), addrs("cc"), addrs("bcc"), string("in-reply-to"), string("message-id")]
    if sender is from_ or reply_to is from_:
        # defaulted to From: its 8-bit values are at the same places there
        for path, value in list(raw8.items()):
            where, _, rest = path.partition(".")
            if where == "2" and rest:
                if sender is from_:
                    raw8[f"3.{rest}"] = value
                if reply_to is from_:
                    raw8[f"4.{rest}"] = value
    return env, raw8


MEMO_ADDRESSES = 512
"""Address fields up to this many characters have their ENVELOPE form remembered."""

_Rows = tuple[tuple[str | None, ...], ...]


def _addresses(texts: tuple[str, ...], i: int) -> tuple[_Rows, tuple[tuple[str, str], ...]]:
    """The ENVELOPE addresses of the address fields ``texts`` (Latin-1 text, joined as one
    list: Dovecot shows a spoofed second From too) at ENVELOPE position ``i``, and the
    8-bit strings among them by position (see :func:`envelope`)."""
    eight: list[tuple[str, str]] = []

    def text(value: bytes, path: str) -> str:
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            eight.append((path, value.decode("latin-1")))
            return value.decode("utf-8", "replace")

    found = [a for t in texts for a in parse_address_list(t)]
    rows = tuple(tuple(None if x is None else text(for_humans(x.encode("latin-1")) if k == 0 else x.encode("latin-1"),
                                                   f"{i}.{j}.{k}")
                       for k, x in enumerate(addr)) for j, addr in enumerate(found))
    return rows, tuple(eight)


_remembered_addresses = lru_cache(maxsize=1024)(_addresses)

