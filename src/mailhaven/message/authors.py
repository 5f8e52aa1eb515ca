"""Who a submitted message says it is from, read as every reader of the stored message
will read it: the fields as IMAP's ENVELOPE splits them (:func:`structure.parse_fields`)
and the addresses as JMAP and the summary parse them (:func:`summary.parse_addresses`).

A check that read the header with another parser could be walked around: the stdlib's
parser stops at the first line that is no field (``From: alice`` / ``X`` / ``From: bob``)
and does not take ``From :`` for From, while ENVELOPE and JMAP show both addresses. So the
submission check (SMTP, JMAP EmailSubmission) asks :func:`foreign_authors` and refuses a
message for which it returns anything.
"""

from __future__ import annotations

import re
from collections.abc import Collection

from .structure import header_end, parse_fields
from .summary import parse_addresses

_FIELD_START = re.compile(rb"(?im)^(from|sender)[ \t]*:")
"""Any line that starts a From or Sender field, however far down the header."""


def foreign_authors(raw: bytes, own: Collection[str]) -> str | None:
    """Why the header of ``raw`` does not name only the user's own addresses (``own``,
    lower-case) as its author, or None when it does (RFC 5322 3.6.2, RFC 6409 8)."""
    block = raw[:header_end(raw, 0, len(raw))]
    fields = parse_fields(block)
    froms = [value for name, value, _ in fields if name == "from"]
    senders = [value for name, value, _ in fields if name == "sender"]
    starts = [m.group(1).lower() for m in _FIELD_START.finditer(block)]
    # RFC 5322 3.6: exactly one From field and at most one Sender field, counted both by
    # the parsed fields and by every line that starts one (fields past the parsed bound).
    if len(froms) != 1 or starts.count(b"from") != 1:
        return "the message must have exactly one From field"
    if len(senders) > 1 or starts.count(b"sender") > 1:
        return "the message must have at most one Sender field"
    for kind, values in (("From", froms), ("Sender", senders)):
        addresses = [a["email"].lower() for a in parse_addresses([v.decode("utf-8", "replace") for v in values])]
        if values and not addresses:
            return f"the {kind} field names no address"
        foreign = [a for a in addresses if a not in own]
        if foreign:
            return f"{foreign[0]} in {kind} is not one of your addresses"
    return None
