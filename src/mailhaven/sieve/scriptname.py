"""What a Sieve script may be called, the one rule ManageSieve (RFC 5804 1.6), JMAP
(RFC 9661 2) and ``include`` (RFC 6609 3.2) all apply, so that a name one of them accepts
the others can address. The limits are Dovecot Pigeonhole's (``sieve_script_name_is_valid``
and ``SIEVE_MAX_SCRIPT_NAME_LEN`` in its src/lib-sieve): at most 256 characters, none a
control character (C0, DEL, C1), ``/``, U+00FF or a line or paragraph separator."""

from __future__ import annotations

MAX_SCRIPT_NAME = 256
"""Characters (code points) in a script name: Pigeonhole's SIEVE_MAX_SCRIPT_NAME_LEN."""
MAX_SCRIPT_NAME_OCTETS = 4 * MAX_SCRIPT_NAME
"""The most UTF-8 octets such a name can take: JMAP's maxSizeScriptName (RFC 9661 2 asks
for at least 512)."""

_FORBIDDEN = frozenset("/\u00ff\u2028\u2029")


def valid_script_name(name: str) -> bool:
    """RFC 5804 1.6 (net-unicode, RFC 5198: no controls, no line separators) within
    Pigeonhole's limits; False for a lone surrogate (not UTF-8)."""
    if not 0 < len(name) <= MAX_SCRIPT_NAME:
        return False
    for c in name:
        o = ord(c)
        if o < 0x20 or 0x7F <= o <= 0x9F or c in _FORBIDDEN or 0xD800 <= o <= 0xDFFF:
            return False
    return True
