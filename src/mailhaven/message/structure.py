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

import email.utils
import re
from typing import Any

MAX_DEPTH = 40
MAX_PARTS = 5000
MAX_HEADER_FIELDS = 1000
"""Fields kept of one header block; a million header lines must not cost seconds and
megabytes in every reader (issue 14 item 8). Later fields stay in the bytes (BODY[HEADER])."""
MAX_HEADER_BYTES = 64 * 1024
"""Bytes of one header block parsed into fields (the rest is served from the bytes only)."""

_FIELD_RE = re.compile(rb"^([^:\s][^:]*?)[ \t]*:", re.MULTILINE)


def structure_summary(raw: bytes) -> dict[str, Any]:
    counter = [0]
    root = _entity(raw, 0, len(raw), ("text", "plain"), 0, counter)
    return {"imap": {"envelope": root.pop("env"), "body": root}}


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


def stdlib_readable(raw: bytes) -> bytes:
    """``raw`` with a header block the stdlib parser reads as :func:`split_fields` does.

    The stdlib ends the header at the first line that is not a field by its narrower rule
    (``Subject :`` with the obsolete blanks before the colon, a ``From`` broken over two
    lines, an SMTP transcript's ``HELO``) and takes the rest, Subject and From and
    Content-Type included, for body. Here such a header is rebuilt from the fields
    split_fields finds, blanks before a colon dropped, names the stdlib cannot hold left
    out; the body stays byte for byte. Most messages come back unchanged (the same object).
    """
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
_CONTENT_TYPE = re.compile(rb"(?i)content-type")


def stdlib_bounded(raw: bytes) -> bytes:
    """``raw`` for the stdlib parser at a bounded cost: the header block as
    :func:`stdlib_readable` gives it (at most MAX_HEADER_FIELDS fields), and the body of any
    multipart or message entity nested deeper than :data:`STDLIB_DEPTH` left out."""
    fields = 0
    for _ in _CONTENT_TYPE.finditer(raw):
        fields += 1
        if fields > STDLIB_DEPTH:
            break
    else:
        return stdlib_readable(raw)                     # too few Content-Types to nest deeply
    root = _entity(raw, 0, len(raw), ("text", "plain"), 0, [0])
    cuts: list[tuple[int, int]] = []
    stack: list[tuple[dict[str, Any], int]] = [(root, 0)]
    while stack:
        node, depth = stack.pop()
        children = [*node.get("parts", ()), *((node["msg"],) if "msg" in node else ())]
        if children and depth >= STDLIB_DEPTH:
            cuts.append((node["h"][1], node["e"]))
            continue
        stack.extend((child, depth + 1) for child in children)
    if cuts:
        pieces, pos = [], 0
        for start, end in sorted(cuts):
            pieces.append(raw[pos:start])
            pos = end
        raw = b"".join(pieces) + raw[pos:]
    return stdlib_readable(raw)


_FOLD = re.compile(rb"\r?\n([ \t])")


def parse_fields(block: bytes) -> list[tuple[str, bytes, bytes]]:
    """(lower-case name, unfolded value, raw field bytes including its line end)."""
    return [(name, _FOLD.sub(rb"\1", field.partition(b":")[2]).strip(), field)
            for name, field in split_fields(block)]


def _text(value: bytes) -> str:
    return value.decode("utf-8", "replace")


# -- Content-Type and friends --------------------------------------------------


def _params(value: str) -> tuple[str, list[list[str]]]:
    """``text/plain; charset="utf-8"`` -> (``text/plain``, [[charset, utf-8]])."""
    head, _, rest = value.partition(";")
    params: list[list[str]] = []
    i = 0
    n = len(rest)
    while i < n:
        while i < n and rest[i] in " \t;":
            i += 1
        j = i
        while j < n and rest[j] not in "=;":
            j += 1
        name = rest[i:j].strip()
        if j >= n or rest[j] == ";":
            i = j + 1
            continue
        j += 1
        while j < n and rest[j] in " \t":
            j += 1
        if j < n and rest[j] == '"':
            k = j + 1
            buf: list[str] = []
            while k < n and rest[k] != '"':
                if rest[k] == "\\" and k + 1 < n:
                    k += 1
                buf.append(rest[k])
                k += 1
            val = "".join(buf)
            i = k + 1
        else:
            k = j
            while k < n and rest[k] != ";":
                k += 1
            val = rest[j:k].strip()
            i = k
        if name and len(params) < 64:
            params.append([name, val])
    return head.strip(), params


def _content_type(value: str | None, default: tuple[str, str]) -> tuple[str, str, list[list[str]]]:
    if not value:
        t, s = default
        return t, s, ([["charset", "us-ascii"]] if (t, s) == ("text", "plain") else [])
    head, params = _params(value)
    t, slash, s = head.partition("/")
    t, s = t.strip(), s.strip()
    if not slash or not t or not s or any(c in t + s for c in ' ()<>@,;:"\\[]?='):
        # RFC 2045 5.2: an unparseable Content-Type is text/plain; charset=us-ascii.
        return "text", "plain", [["charset", "us-ascii"]]
    return t, s, params


def _boundary(params: list[list[str]]) -> bytes | None:
    for name, value in params:
        if name.lower() == "boundary" and value:
            try:
                return value.encode("ascii")
            except UnicodeEncodeError:
                return value.encode("utf-8")
    return None


def _count_lines(raw: bytes, start: int, end: int) -> int:
    if end <= start:
        return 0
    n = raw.count(b"\n", start, end)
    return n if raw[end - 1:end] == b"\n" else n + 1


# -- entities ------------------------------------------------------------------


def _entity(raw: bytes, start: int, end: int, default: tuple[str, str], depth: int,
            counter: list[int]) -> dict[str, Any]:
    counter[0] += 1
    body_start = header_end(raw, start, end)
    fields = parse_fields(raw[start:body_start])
    first: dict[str, str] = {}
    for name, value, _ in fields:
        first.setdefault(name, _text(value))
    ctype, subtype, params = _content_type(first.get("content-type"), default)
    if ctype.lower() == "text" and not any(k.lower() == "charset" for k, _ in params):
        params = [*params, ["charset", "us-ascii"]]     # RFC 2046 4.1.2: the default, shown (as Dovecot)
    node: dict[str, Any] = {
        "h": [start, body_start], "e": end, "t": ctype, "s": subtype, "p": params,
        "id": first.get("content-id"), "desc": first.get("content-description"),
        "enc": (first.get("content-transfer-encoding") or "7bit").strip() or "7bit",
        "md5": first.get("content-md5"), "loc": first.get("content-location"),
        "disp": None, "lang": None,
        "env": envelope(fields),
    }
    if "content-disposition" in first:
        dtype, dparams = _params(first["content-disposition"])
        if dtype:
            node["disp"] = [dtype, dparams]
    if "content-language" in first:
        langs = [x.strip() for x in first["content-language"].split(",") if x.strip()]
        node["lang"] = langs or None
    lower_t, lower_s = ctype.lower(), subtype.lower()
    boundary = _boundary(params) if lower_t == "multipart" else None
    if lower_t == "multipart" and boundary and depth < MAX_DEPTH:
        child_default = ("message", "rfc822") if lower_s == "digest" else ("text", "plain")
        node["parts"] = [
            _strip_env(_entity(raw, a, b, child_default, depth + 1, counter))
            for a, b in _split_multipart(raw, body_start, end, boundary)
            if counter[0] < MAX_PARTS
        ]
        if not node["parts"]:
            # RFC 9051 7.5.2: a multipart always has at least one part; show an empty one.
            node["parts"] = [_strip_env(_entity(raw, end, end, child_default, depth + 1, counter))]
    elif lower_t == "multipart":
        # No usable boundary: serve the body as opaque text (as Dovecot does).
        node["t"], node["s"], node["p"] = "text", "plain", [["charset", "us-ascii"]]
        node["lines"] = _count_lines(raw, body_start, end)
    elif lower_t == "message" and lower_s in ("rfc822", "global") and depth < MAX_DEPTH \
            and node["enc"].lower() in ("7bit", "8bit", "binary"):
        inner = _entity(raw, body_start, end, ("text", "plain"), depth + 1, counter)
        node["msg"] = inner
        node["lines"] = _count_lines(raw, body_start, end)
    elif lower_t == "text" or (lower_t == "message" and lower_s in ("rfc822", "global")):
        # An encoded (or too deeply nested) message is not parsed, but its BODYSTRUCTURE
        # still needs its line count (RFC 9051 7.5.2 body-type-msg).
        node["lines"] = _count_lines(raw, body_start, end)
    return node


def _strip_env(node: dict[str, Any]) -> dict[str, Any]:
    """Only messages carry an envelope: drop the one computed for a body part."""
    node.pop("env", None)
    return node


def _split_multipart(raw: bytes, start: int, end: int, boundary: bytes) -> list[tuple[int, int]]:
    """Body part (start, end) offsets between delimiter lines (RFC 2046 section 5.1.1).

    The line break before a delimiter belongs to the delimiter, not to the part.
    """
    delim = b"--" + boundary
    parts: list[tuple[int, int]] = []
    part_start: int | None = None
    pos = start
    while True:
        i = raw.find(delim, pos, end)
        if i < 0:
            break
        at_line_start = i == start or raw[i - 1:i] == b"\n"
        after = i + len(delim)
        closing = raw.startswith(b"--", after)
        j = after + 2 if closing else after
        # Transport padding (LWSP) may follow the delimiter before the line end.
        while j < end and raw[j:j + 1] in (b" ", b"\t"):
            j += 1
        line_end_ok = j >= end or raw[j:j + 1] in (b"\r", b"\n")
        if not at_line_start or not line_end_ok:
            pos = after
            continue
        if part_start is not None:
            part_end = i
            if part_end > part_start and raw[part_end - 1:part_end] == b"\n":
                part_end -= 1
                if part_end > part_start and raw[part_end - 1:part_end] == b"\r":
                    part_end -= 1
            parts.append((part_start, max(part_start, part_end)))
        if closing:
            return parts
        if raw.startswith(b"\r\n", j):
            j += 2
        elif raw.startswith(b"\n", j):
            j += 1
        part_start = min(j, end)
        pos = part_start
    if part_start is not None:
        # No close delimiter: the last part runs to the end.
        parts.append((part_start, end))
    return parts


# -- envelope (RFC 9051 section 7.5.2) -------------------------------------------


def _split_groups(value: str) -> list[tuple[str | None, str]]:
    """``a@b, grp: c@d, e@f;, g@h`` -> [(None, "a@b, "), ("grp", "c@d, e@f"), (None, ", g@h")].

    Quoted strings, comments and angle brackets are skipped over (RFC 5322 3.4 group).
    """
    out: list[tuple[str | None, str]] = []
    depth_comment = 0
    in_quote = in_angle = False
    start = 0
    group: str | None = None
    i = 0
    while i < len(value):
        c = value[i]
        if in_quote:
            if c == "\\":
                i += 1
            elif c == '"':
                in_quote = False
        elif depth_comment:
            if c == "(":
                depth_comment += 1
            elif c == ")":
                depth_comment -= 1
        elif c == '"':
            in_quote = True
        elif c == "(":
            depth_comment = 1
        elif c == "<":
            in_angle = True
        elif c == ">":
            in_angle = False
        elif c == ":" and not in_angle and group is None:
            out.append((None, value[start:_last_sep(value, start, i)]))
            group = value[_last_sep(value, start, i):i].strip(" ,\t")
            start = i + 1
        elif c == ";" and not in_angle and group is not None:
            out.append((group, value[start:i]))
            group = None
            start = i + 1
        i += 1
    if group is not None:
        out.append((group, value[start:]))
    else:
        out.append((None, value[start:]))
    return out


def _last_sep(value: str, start: int, end: int) -> int:
    """Where the display name of a group begins: after the last top-level comma before ``end``."""
    j = value.rfind(",", start, end)
    return start if j < 0 else j + 1


def _plain_addresses(text: str) -> list[list[str | None]]:
    out: list[list[str | None]] = []
    try:
        pairs = email.utils.getaddresses([text])
    except Exception:  # noqa: BLE001 - unparseable address list: leave it out
        return out
    for name, addr in pairs:
        if not name and not addr:
            continue
        local, at, host = addr.rpartition("@")
        if not at:
            local, host = addr, ""
        # A NIL host marks a group (RFC 9051 7.5.2), so an address without a domain (or a
        # mailbox) gets a placeholder, as Dovecot's MISSING_DOMAIN, instead of reading as one.
        out.append([name or None, None, local or "MISSING_MAILBOX", host or "MISSING_DOMAIN"])
    return out


def _addresses(values: list[str]) -> list[list[str | None]] | None:
    out: list[list[str | None]] = []
    for value in values:
        if ":" not in value or ";" not in value:
            out += _plain_addresses(value)
            continue
        for group, text in _split_groups(value):
            if group is None:
                out += _plain_addresses(text)
            else:
                # RFC 9051 7.5.2: group start (NIL NIL name NIL), members, end (NIL NIL NIL NIL).
                out.append([None, None, group, None])
                out += _plain_addresses(text)
                out.append([None, None, None, None])
    return out or None


def envelope(fields: list[tuple[str, bytes, bytes]]) -> list[Any]:
    first: dict[str, str] = {}
    every: dict[str, list[str]] = {}
    for name, value, _ in fields:
        text = _text(value)
        first.setdefault(name, text)
        every.setdefault(name, []).append(text)

    def addrs(name: str) -> list[list[str | None]] | None:
        return _addresses(every.get(name, []))

    from_ = addrs("from")
    sender = addrs("sender") or from_      # RFC 9051 7.5.2: defaults to From
    reply_to = addrs("reply-to") or from_
    return [
        first.get("date"), first.get("subject"), from_, sender, reply_to,
        addrs("to"), addrs("cc"), addrs("bcc"), first.get("in-reply-to"), first.get("message-id"),
    ]
