"""Content-Type, Content-Disposition, Content-Transfer-Encoding and Content-Language values
read as IMAP servers read them for BODYSTRUCTURE.

RFC 2045 5.1 gives the grammar (``type "/" subtype *(";" parameter)``) but not what to do
with the malformed values real mail carries (``text;``, a parameter without a value, an
unterminated quoted string, RFC 2231 continuations with a gap). Clients are tested against
Dovecot, so where the RFC is silent this reads as Dovecot 2.3 does (lib-mail's
rfc822-parser and rfc2231-parser): comments are skipped wherever blanks may be, a
broken parameter is skipped up to the next ``;``, RFC 2231 sections are merged into one
``name*`` parameter still percent-encoded. Strings here are the field's bytes as Latin-1
(one character per byte), so 8-bit values survive unchanged.
"""

from __future__ import annotations

from .quoted import read_quoted

_TOKEN_PUNCT = frozenset("!#$%&'*+-^_`{|}~.")


def _is_token_char(c: str) -> bool:
    """RFC 2045 5.1 token: any CHAR but SPACE, CTLs and tspecials; 8-bit bytes allowed (as Dovecot)."""
    return c.isascii() and (c.isalnum() or c in _TOKEN_PUNCT) or ord(c) >= 0x80


class _Reader:
    def __init__(self, text: str) -> None:
        self.s = text
        self.i = 0

    def at_end(self) -> bool:
        return self.i >= len(self.s)

    def peek(self) -> str:
        return self.s[self.i] if self.i < len(self.s) else ""

    def skip_lwsp(self) -> bool:
        """Skip blanks, line breaks and (nested) comments (RFC 5322 3.2.2 CFWS); True when
        something is left."""
        s = self.s
        while self.i < len(s):
            c = s[self.i]
            if c in " \t\r\n":
                self.i += 1
            elif c == "(":
                depth = 0
                while self.i < len(s):
                    c = s[self.i]
                    if c == "\\":
                        self.i += 1
                    elif c == "(":
                        depth += 1
                    elif c == ")":
                        depth -= 1
                        if depth == 0:
                            self.i += 1
                            break
                    self.i += 1
                else:
                    return False             # unterminated comment: nothing left
            else:
                return True
        return False

    def token(self) -> str:
        start = self.i
        while self.i < len(self.s) and _is_token_char(self.s[self.i]):
            self.i += 1
        out = self.s[start:self.i]
        self.skip_lwsp()
        return out

    def quoted(self) -> str | None:
        """A quoted string (RFC 5322 3.2.4), folding line breaks removed; None if unterminated."""
        text, self.i, closed = read_quoted(self.s, self.i)
        if not closed:
            return None
        self.skip_lwsp()
        return text


def content_type(value: str) -> tuple[str, str, list[list[str]] | None]:
    """``type/subtype; params`` -> (type, subtype, params); ("", "", None) when the type is
    unparseable (RFC 2045 5.2 would make it text/plain; Dovecot shows it empty), params None
    when the value is broken before them."""
    r = _Reader(value)
    if not r.skip_lwsp():
        return "", "", None
    main = r.token()
    if not main or r.peek() != "/":
        return "", "", None
    r.i += 1
    if not r.skip_lwsp():
        return "", "", None
    sub = r.token()
    if not sub or (not r.at_end() and r.peek() != ";"):
        return "", "", None
    return main, sub, _parameters(r)


def disposition(value: str) -> tuple[str, list[list[str]]] | None:
    """``attachment; filename=x`` -> (type, params)."""
    r = _Reader(value)
    r.skip_lwsp()
    kind = r.token()
    return kind, _parameters(r)


def transfer_encoding(value: str) -> str | None:
    r = _Reader(value)
    r.skip_lwsp()
    token = r.token()
    return token if token and r.at_end() else None


def languages(value: str) -> list[str] | None:
    """RFC 3282 ``Content-Language: 1#Language-tag`` -> the tags, in order."""
    r = _Reader(value)
    r.skip_lwsp()
    out: list[str] = []
    while True:
        start = r.i
        while r.i < len(r.s) and (_is_token_char(r.s[r.i]) or r.s[r.i] in "/=?") and r.s[r.i] != ".":
            r.i += 1
        tag = r.s[start:r.i]
        if not tag:
            break
        out.append(tag)
        r.skip_lwsp()
        if r.peek() != ",":
            break
        r.i += 1
        r.skip_lwsp()
    return out or None


def _parameters(r: _Reader) -> list[list[str]]:
    """``*(";" attribute "=" value)`` with RFC 2231 sections merged."""
    plain: list[list[str]] = []
    sections: list[tuple[str, int, bool, str]] = []
    while not r.at_end():
        # Any failure skips one character and wants a ";" next (Dovecot's rfc2231_parse).
        if r.peek() != ";":
            r.i += 1
            continue
        r.i += 1
        if not r.skip_lwsp():
            break
        key = r.token()
        if not key or r.peek() != "=":
            r.i += 1
            continue
        r.i += 1
        ok = True
        if not r.skip_lwsp():
            val = ""
        elif r.peek() == '"':
            quoted = r.quoted()
            ok, val = quoted is not None, quoted or ""
        elif r.peek() == "=":
            start = r.i                               # name==?utf-8?b?...?= (broken, common)
            while r.i < len(r.s) and r.s[r.i] not in "; \t\r\n":
                r.i += 1
            val = r.s[start:r.i]
        else:
            val = r.token()
        if not ok:
            r.i += 1
            continue
        star = key.find("*")
        if star >= 0:
            rest = key[star:]
            digits = ""
            if len(rest) > 1:               # name*N, name*N*; a bare name* is section 0, extended
                rest = rest[1:]
                while rest[:1].isdigit():
                    digits, rest = digits + rest[0], rest[1:]
            extended = rest.startswith("*")
            if rest in ("", "*"):
                sections.append((key[:star], int(digits) if digits else 0, extended, val))
                continue
        plain.append([key, val])
    if not sections:
        return plain
    # RFC 2231 3-4: name*0, name*1*... merged into name (or name* when any section is extended).
    sections.sort(key=lambda x: (x[0], x[1]))
    i = 0
    while i < len(sections):
        j = i
        while j < len(sections) and sections[j][0].lower() == sections[i][0].lower():
            j += 1
        group = sections[i:j]
        complete = all(s[1] == n for n, s in enumerate(group))
        extended = any(s[2] for s in group)
        if not complete:
            plain += [[f"{s[0]}*{s[1]}*" if s[2] else f"{s[0]}*{s[1]}", s[3]] for s in group]
        else:
            value = "''" if extended and not group[0][2] else ""
            for s in group:
                value += s[3].replace("%", "%25") if extended and not s[2] else s[3]
            plain.append([group[0][0] + ("*" if extended else ""), value])
        i = j
    return plain
