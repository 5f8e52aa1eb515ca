"""RFC 5321 4.1.2 path and parameter grammar, and RFC 3461 xtext; shared by server and client.

Everything here is pure functions on ``str``; errors are raised as :class:`Reply`
constants so the server can answer them as they are.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .codes import BAD_ADDRESS_SYNTAX, SMTPUTF8_REQUIRED, SYNTAX_ERROR

# atext = ALPHA / DIGIT / "!" / "#" / "$" / "%" / "&" / "'" / "*" / "+" / "-" / "/" /
#         "=" / "?" / "^" / "_" / "`" / "{" / "|" / "}" / "~"         (RFC 5322 3.2.3)
_ATEXT = r"A-Za-z0-9!#$%&'*+\-/=?^_`{|}~"
# Dot-string = Atom *("." Atom); with SMTPUTF8, UTF8-non-ascii joins atext (RFC 6531 3.3).
_DOT_STRING_RE = re.compile(rf"^[{_ATEXT}\u0080-\U0010ffff]+(?:\.[{_ATEXT}\u0080-\U0010ffff]+)*$")
# Quoted-string = DQUOTE *QcontentSMTP DQUOTE; qtextSMTP = %d32-33 / %d35-91 / %d93-126
_QUOTED_RE = re.compile(r'^"(?:[\x20\x21\x23-\x5b\x5d-\x7e\u0080-\U0010ffff]|\\[\x20-\x7e])*"$')
# sub-domain = Let-dig [Ldh-str]; U-labels allowed under SMTPUTF8 (RFC 6531 3.3).
_LABEL = r"[A-Za-z0-9\u0080-\U0010ffff](?:[A-Za-z0-9\-\u0080-\U0010ffff]*[A-Za-z0-9\u0080-\U0010ffff])?"
_DOMAIN_RE = re.compile(rf"^{_LABEL}(?:\.{_LABEL})*$")
# address-literal = "[" ( IPv4-address-literal / IPv6-address-literal / General-address-literal ) "]"
_ADDRESS_LITERAL_RE = re.compile(r"^\[[\x21-\x5a\x5e-\x7e]+\]$")
# esmtp-keyword = (ALPHA / DIGIT) *(ALPHA / DIGIT / "-")
_KEYWORD_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]*$")
# esmtp-value = 1*(%d33-60 / %d62-126), plus UTF8-non-ascii under SMTPUTF8 (RFC 6531 3.3)
_VALUE_RE = re.compile(r"^[\x21-\x3c\x3e-\x7e\u0080-\U0010ffff]+$")
# xtext = *( xchar / hexchar ); hexchar = "+" 2(%x30-39 / %x41-46)   (RFC 3461 4)
_XTEXT_RE = re.compile(r"^(?:[\x21-\x2a\x2c-\x3c\x3e-\x7e]|\+[0-9A-F]{2})*$")

MAX_LOCAL_PART = 64      # RFC 5321 4.5.3.1.1
MAX_DOMAIN = 255         # RFC 5321 4.5.3.1.2
MAX_PATH = 256           # RFC 5321 4.5.3.1.3


@dataclass(frozen=True, kw_only=True)
class PathArgs:
    """The argument of MAIL FROM: or RCPT TO: split into address and parameters."""

    address: str
    """``local@domain`` without brackets; ``""`` for the null reverse-path ``<>``."""
    params: dict[str, str | None] = field(default_factory=dict)
    """Upper-case ESMTP keyword -> value (None for a keyword without ``=value``)."""


def is_ascii(text: str) -> bool:
    return text.isascii()


def validate_mailbox(address: str, *, utf8: bool) -> None:
    """Raise a 501/553 reply unless ``address`` is a valid RFC 5321 Mailbox."""
    if not utf8 and not address.isascii():
        raise SMTPUTF8_REQUIRED                                     # RFC 6531 3.5
    if len(address.encode("utf-8")) > MAX_PATH - 2:
        raise BAD_ADDRESS_SYNTAX.with_text("Address too long")
    local, at, domain = address.rpartition("@")
    if not at or not local or not domain:
        raise BAD_ADDRESS_SYNTAX
    if len(local.encode("utf-8")) > MAX_LOCAL_PART and not utf8:
        raise BAD_ADDRESS_SYNTAX.with_text("Local part too long")
    if not (_DOT_STRING_RE.match(local) or _QUOTED_RE.match(local)):
        raise BAD_ADDRESS_SYNTAX
    if len(domain) > MAX_DOMAIN or not (_DOMAIN_RE.match(domain) or _ADDRESS_LITERAL_RE.match(domain)):
        raise BAD_ADDRESS_SYNTAX.with_text("Bad domain syntax")


def _split_path(arg: str) -> tuple[str, str]:
    """Split ``<path> params`` (or a bare ``addr params``) into the path and the rest."""
    if not arg.startswith("<"):
        # Not RFC 5321, but common (Postfix accepts it): a bare address up to the first space.
        path, _, rest = arg.partition(" ")
        return path, rest
    in_quotes = False
    i = 1
    while i < len(arg):
        c = arg[i]
        if in_quotes and c == "\\":
            i += 2
            continue
        if c == '"':
            in_quotes = not in_quotes
        elif c == ">" and not in_quotes:
            rest = arg[i + 1:]
            if rest and not rest.startswith(" "):
                raise SYNTAX_ERROR
            return arg[1:i], rest
        i += 1
    raise SYNTAX_ERROR


def parse_path_args(arg: str, *, allow_null: bool) -> PathArgs:
    """Parse ``<local@domain> KEY=VALUE ...`` (RFC 5321 4.1.1.2 / 4.1.1.3, 4.1.2)."""
    path, rest = _split_path(arg.strip(" "))
    if ":" in path and path.startswith("@"):
        # A-d-l source route: "SHOULD be ignored" (RFC 5321 4.1.1.3, appendix C).
        path = path.split(":", 1)[1]
    if not path:
        if not allow_null:
            raise BAD_ADDRESS_SYNTAX
        address = ""
    else:
        address = path
    params: dict[str, str | None] = {}
    for item in rest.split(" "):
        if not item:
            continue
        keyword, eq, value = item.partition("=")
        if not _KEYWORD_RE.match(keyword) or (eq and not _VALUE_RE.match(value)):
            raise SYNTAX_ERROR.with_text(f"Bad parameter {item[:40]!r}")
        key = keyword.upper()
        if key in params:
            raise SYNTAX_ERROR.with_text(f"Duplicate parameter {key}")
        params[key] = value if eq else None
    return PathArgs(address=address, params=params)


def xtext_decode(value: str) -> str:
    """RFC 3461 4: ``+2B`` -> ``+``. Raises a 501 reply on malformed xtext."""
    if not _XTEXT_RE.match(value):
        raise SYNTAX_ERROR.with_text("Malformed xtext")
    return re.sub(r"\+([0-9A-F]{2})", lambda m: chr(int(m.group(1), 16)), value)


def xtext_encode(value: str) -> str:
    """RFC 3461 4: every char outside ``!``..``~``, and ``+`` and ``=``, as ``+XX``."""
    out = []
    for ch in value:
        if "!" <= ch <= "~" and ch not in "+=":
            out.append(ch)
        else:
            out.extend(f"+{b:02X}" for b in ch.encode("utf-8"))
    return "".join(out)


def domain_of(address: str) -> str:
    return address.rpartition("@")[2].lower()

