"""What each command and test accepts: its extension, tags and positional arguments.

Positional kinds: ``s`` a single string, ``l`` a string-list, ``n`` a number."""

from __future__ import annotations

from dataclasses import dataclass, field

# Tag groups: at most one tag of a group on a command (RFC 5228 2.7.1 - 2.7.4).
MATCH = "match"
COMPARATOR = "comparator"
ADDRESS_PART = "address-part"
SIZE = "size"
BODY_TRANSFORM = "body-transform"


@dataclass(frozen=True, kw_only=True)
class TagSpec:
    group: str
    """Tags of one group exclude each other; a group named after the tag stands alone."""
    argument: str | None = None
    """Kind of the argument that follows the tag (``s``, ``l``), None for a flag tag."""
    extension: str | None = None
    """The ``require`` that makes the tag available."""


@dataclass(frozen=True, kw_only=True)
class Spec:
    extension: str | None = None
    tags: dict[str, TagSpec] = field(default_factory=dict)
    positional: tuple[str, ...] = ()
    optional_leading: str | None = None
    """A positional argument that may come first (imap4flags' variable name), needs variables."""
    optional_trailing: str | None = None
    """A positional argument that may come last (deleteheader's value patterns)."""
    tests: str = "none"
    """``none``, ``one`` (if, not) or ``list`` (allof, anyof)."""
    block: bool = False


_MATCH_TAGS = {
    "is": TagSpec(group=MATCH),
    "contains": TagSpec(group=MATCH),
    "matches": TagSpec(group=MATCH),
    "count": TagSpec(group=MATCH, argument="s", extension="relational"),   # RFC 5231 4.1
    "value": TagSpec(group=MATCH, argument="s", extension="relational"),   # RFC 5231 4.2
    "comparator": TagSpec(group=COMPARATOR, argument="s"),
    "regex": TagSpec(group=MATCH, extension="regex"),                      # draft-ietf-sieve-regex 3
}
_INDEX = {
    "index": TagSpec(group="index", argument="n", extension="index"),      # RFC 5260 6
    "last": TagSpec(group="last", extension="index"),
}
_ADDRESS_TAGS = {
    **_MATCH_TAGS,
    "all": TagSpec(group=ADDRESS_PART),
    "localpart": TagSpec(group=ADDRESS_PART),
    "domain": TagSpec(group=ADDRESS_PART),
    "user": TagSpec(group=ADDRESS_PART, extension="subaddress"),           # RFC 5233 4
    "detail": TagSpec(group=ADDRESS_PART, extension="subaddress"),
}
_FLAGS = TagSpec(group="flags", argument="l", extension="imap4flags")       # RFC 5232 5
_COPY = TagSpec(group="copy", extension="copy")                             # RFC 3894 3
_MODIFIERS = {name: TagSpec(group=f"modifier-{prec}") for prec, names in (
    (40, ("lower", "upper")), (30, ("lowerfirst", "upperfirst")),
    (20, ("quotewildcard",)), (10, ("length",))) for name in names}         # RFC 5229 4
_MODIFIERS["encodeurl"] = TagSpec(group="modifier-15", extension="enotify")  # RFC 5435 6

COMMANDS: dict[str, Spec] = {
    "require": Spec(positional=("l",)),
    "if": Spec(tests="one", block=True),
    "elsif": Spec(tests="one", block=True),
    "else": Spec(block=True),
    "stop": Spec(),
    "keep": Spec(tags={"flags": _FLAGS}),
    "discard": Spec(),
    "fileinto": Spec(extension="fileinto", positional=("s",), tags={
        "copy": _COPY, "flags": _FLAGS,
        "create": TagSpec(group="create", extension="mailbox"),             # RFC 5490 3.2
        "specialuse": TagSpec(group="specialuse", argument="s", extension="special-use")}),   # RFC 8579 4
    "redirect": Spec(positional=("s",), tags={"copy": _COPY}),
    "reject": Spec(extension="reject", positional=("s",)),                  # RFC 5429 2.2
    "ereject": Spec(extension="ereject", positional=("s",)),                # RFC 5429 2.1
    "setflag": Spec(extension="imap4flags", positional=("l",), optional_leading="s"),
    "addflag": Spec(extension="imap4flags", positional=("l",), optional_leading="s"),
    "removeflag": Spec(extension="imap4flags", positional=("l",), optional_leading="s"),
    "include": Spec(extension="include", positional=("s",), tags={           # RFC 6609 3.2
        "personal": TagSpec(group="location"), "global": TagSpec(group="location"),
        "once": TagSpec(group="once"), "optional": TagSpec(group="optional")}),
    "return": Spec(extension="include"),                                     # RFC 6609 3.3
    "global": Spec(extension="include", positional=("l",)),                  # RFC 6609 3.4
    "notify": Spec(extension="enotify", positional=("s",), tags={            # RFC 5435 3
        "from": TagSpec(group="from", argument="s"), "importance": TagSpec(group="importance", argument="s"),
        "options": TagSpec(group="options", argument="l"), "message": TagSpec(group="message", argument="s")}),
    "addheader": Spec(extension="editheader", positional=("s", "s"), tags={  # RFC 5293 4
        "last": TagSpec(group="last")}),
    "deleteheader": Spec(extension="editheader", positional=("s",), optional_trailing="l", tags={   # RFC 5293 5
        **_MATCH_TAGS, "index": TagSpec(group="index", argument="n"), "last": TagSpec(group="last")}),
    "set": Spec(extension="variables", positional=("s", "s"), tags=dict(_MODIFIERS)),
    "vacation": Spec(extension="vacation", positional=("s",), tags={        # RFC 5230 4
        "days": TagSpec(group="period", argument="n"),
        "seconds": TagSpec(group="period", argument="n", extension="vacation-seconds"),   # RFC 6131 2
        "subject": TagSpec(group="subject", argument="s"),
        "from": TagSpec(group="from", argument="s"),
        "addresses": TagSpec(group="addresses", argument="l"),
        "mime": TagSpec(group="mime"),
        "handle": TagSpec(group="handle", argument="s"),
        "fcc": TagSpec(group="fcc", argument="s", extension="fcc"),          # RFC 8580 4
        "flags": _FLAGS, "create": TagSpec(group="create", extension="mailbox"),
        "specialuse": TagSpec(group="specialuse", argument="s", extension="special-use")}),
}

TESTS: dict[str, Spec] = {
    "address": Spec(tags={**_ADDRESS_TAGS, **_INDEX}, positional=("l", "l")),
    "envelope": Spec(extension="envelope", tags=_ADDRESS_TAGS, positional=("l", "l")),
    "header": Spec(tags={**_MATCH_TAGS, **_INDEX}, positional=("l", "l")),
    "date": Spec(extension="date", positional=("s", "s", "l"), tags={        # RFC 5260 4
        **_MATCH_TAGS, **_INDEX,
        "zone": TagSpec(group="zone", argument="s"),
        "originalzone": TagSpec(group="zone")}),
    "currentdate": Spec(extension="date", positional=("s", "l"), tags={     # RFC 5260 5
        **_MATCH_TAGS, "zone": TagSpec(group="zone", argument="s")}),
    "spamtest": Spec(extension="spamtest", positional=("l",), tags={         # RFC 5235 3.2
        **_MATCH_TAGS, "percent": TagSpec(group="percent", extension="spamtestplus")}),   # RFC 5235 3.3
    "valid_notify_method": Spec(extension="enotify", positional=("l",)),      # RFC 5435 5.1
    "notify_method_capability": Spec(extension="enotify", positional=("s", "s", "l"), tags=_MATCH_TAGS),  # 5.2
    "duplicate": Spec(extension="duplicate", tags={                          # RFC 7352 3
        "handle": TagSpec(group="handle", argument="s"),
        "header": TagSpec(group="id", argument="s"), "uniqueid": TagSpec(group="id", argument="s"),
        "seconds": TagSpec(group="seconds", argument="n"), "last": TagSpec(group="last")}),
    "virustest": Spec(extension="virustest", positional=("l",), tags=_MATCH_TAGS),     # RFC 5235 3.4
    "exists": Spec(positional=("l",)),
    "size": Spec(positional=("n",), tags={"over": TagSpec(group=SIZE), "under": TagSpec(group=SIZE)}),
    "true": Spec(),
    "false": Spec(),
    "not": Spec(tests="one"),
    "allof": Spec(tests="list"),
    "anyof": Spec(tests="list"),
    "hasflag": Spec(extension="imap4flags", tags=_MATCH_TAGS, positional=("l",), optional_leading="l"),
    "string": Spec(extension="variables", tags=_MATCH_TAGS, positional=("l", "l")),
    "mailboxexists": Spec(extension="mailbox", positional=("l",)),          # RFC 5490 3.1
    "specialuse_exists": Spec(extension="special-use", positional=("l",), optional_leading="l"),  # RFC 8579 3
    "body": Spec(extension="body", positional=("l",), tags={                # RFC 5173 4
        **_MATCH_TAGS,
        "raw": TagSpec(group=BODY_TRANSFORM),
        "content": TagSpec(group=BODY_TRANSFORM, argument="l"),
        "text": TagSpec(group=BODY_TRANSFORM)}),
}

EXTENSIONS = frozenset({
    "fileinto", "envelope", "imap4flags", "copy", "variables", "relational", "subaddress",
    "mailbox", "body", "reject", "ereject", "encoded-character", "vacation", "vacation-seconds",
    "comparator-i;octet", "comparator-i;ascii-casemap", "comparator-i;ascii-numeric",
    "regex", "date", "index", "spamtest", "spamtestplus", "virustest", "editheader", "include", "duplicate", "special-use", "fcc", "enotify",
})
IMPLIED = {"spamtestplus": "spamtest"}
"""Requiring the key requires the value too (RFC 5235 3.3: spamtestplus extends spamtest)."""

COMPARATORS = {"i;octet": None, "i;ascii-casemap": None,
               "i;ascii-numeric": "comparator-i;ascii-numeric"}            # RFC 4790 9
RELATIONAL_OPS = frozenset({"gt", "ge", "lt", "le", "eq", "ne"})          # RFC 5231 5
