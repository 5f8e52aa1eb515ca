"""Address lists (RFC 5322 3.4) read for the IMAP ENVELOPE as Dovecot 2.3 reads them.

RFC 9051 7.5.2 says what an address structure holds, not how to read the malformed lists
real mail carries. Clients are tested against Dovecot, so where the RFC is silent this
reads as Dovecot's message-address parser does (with its FILL_MISSING flag):

- the list stops at the first address not followed by a comma
  (``Bob <b@x> Bobby <c@x>`` is Bob alone);
- a display name is the phrase before ``<``, its comments dropped
  (``John Doe (comment) <j@x>`` is John Doe); an addr-spec takes its last comment as name;
- a phrase with no address (``Big Bug bb@bug.com``, ``Undisclosed recipients``) is a name
  with MISSING_MAILBOX and MISSING_DOMAIN, a lone word a mailbox with MISSING_DOMAIN;
- a broken angle address gets the domain SYNTAX_ERROR, a broken route INVALID_ROUTE;
- a group is (NIL NIL name NIL), its members, then (NIL NIL NIL NIL).

Strings are the field's bytes as Latin-1 (one character per byte): 8-bit bytes pass
through and are atext, as in Dovecot.
"""

from __future__ import annotations

from .quoted import read_quoted

Address = list[str | None]
"""[name, route, mailbox, host]"""

_SPECIALS = frozenset('()<>[]:;@\\,."')


def _atext(c: str) -> bool:
    """RFC 5322 3.2.3 atext; 8-bit bytes count (as Dovecot)."""
    return c > " " and c != "\x7f" and c not in _SPECIALS


class _Parser:
    def __init__(self, text: str) -> None:
        self.s = text
        self.i = 0
        self.comment = ""
        self.out: list[Address] = []
        self._reset()

    def _reset(self) -> None:
        self.name: str | None = None
        self.route: str | None = None
        self.mailbox: str | None = None
        self.domain: str | None = None
        self.invalid = False

    def cur(self) -> str:
        return self.s[self.i] if self.i < len(self.s) else ""

    def at_end(self) -> bool:
        return self.i >= len(self.s)

    # -- RFC 5322 3.2 lexical tokens ----------------------------------------------------

    def skip_lwsp(self) -> int:
        """CFWS; 1 when text follows, 0 at the end, -1 for an unterminated comment."""
        s = self.s
        while self.i < len(s):
            c = s[self.i]
            if c in " \t\r\n":
                self.i += 1
            elif c == "(":
                if not self._comment():
                    return -1
            else:
                break
        return 1 if self.i < len(s) else 0

    def _comment(self) -> bool:
        s = self.s
        self.i += 1
        depth = 1
        out: list[str] = []
        while self.i < len(s):
            c = s[self.i]
            if c == "(":
                depth += 1
            elif c == ")":
                depth -= 1
                if depth == 0:
                    self.i += 1
                    self.comment = "".join(out)
                    return True
            elif c == "\\" and self.i + 1 < len(s) and s[self.i + 1] not in "\r\n\x00":
                self.i += 1
                c = s[self.i]
            elif c in "\r\n":
                c = ""
            out.append(c)
            self.i += 1
        return False

    def quoted(self, out: list[str]) -> int:
        text, self.i, closed = read_quoted(self.s, self.i)
        out.append(text)                                # unterminated: what there is, still
        return self.skip_lwsp() if closed else -1

    def atom(self, out: list[str], dots: bool = False) -> int:
        s = self.s
        start = self.i
        while self.i < len(s) and (_atext(s[self.i]) or (dots and s[self.i] == ".")):
            self.i += 1
        if not dots and start == self.i:
            return -1
        out.append(s[start:self.i])
        return self.skip_lwsp() if self.i < len(s) else 0

    def dot_atom(self, out: list[str]) -> int:
        """RFC 5322 dot-atom, blanks allowed around the dots (RFC 822)."""
        s = self.s
        if self.at_end() or not _atext(self.cur()):
            return -1
        while True:
            start = self.i
            while self.i < len(s) and _atext(s[self.i]):
                self.i += 1
            if start == self.i:
                return -1
            out.append(s[start:self.i])
            if self.i >= len(s):
                return 0
            ret = self.skip_lwsp()
            if ret <= 0:
                return ret
            if self.cur() != ".":
                return 1
            self.i += 1
            out.append(".")
            if self.skip_lwsp() <= 0:
                return -1

    def nonstrict_dot_atom(self, out: list[str]) -> int:
        """A local part that may start or end with dots, or have two in a row."""
        ret = -1
        while True:
            while self.cur() == ".":
                out.append(".")
                self.i += 1
                if self.at_end():
                    return 0
                ret = 1
            if self.cur() == "@":
                break
            ret = self.atom(out)
            if not (ret > 0 and self.cur() == "."):
                break
        return ret

    def phrase(self, out: list[str]) -> int:
        if self.at_end():
            return 0
        if self.cur() == ".":
            return -1
        while True:
            if self.cur() == '"':
                ret = self.quoted(out)
            else:
                ret = self.atom(out, dots=True)
            if ret <= 0:
                return ret
            c = self.cur()
            if not (c and (_atext(c) or c in '".')):
                break
            out.append(" ")
        return self.skip_lwsp()

    def domain_into(self, out: list[str]) -> int:
        self.i += 1                                     # the "@"
        if self.skip_lwsp() <= 0:
            return -1
        if self.cur() == "[":
            end = self.s.find("]", self.i)
            if end < 0:
                return -1
            out.append(self.s[self.i:end + 1])
            self.i = end + 1
            return self.skip_lwsp()
        return self.dot_atom(out)

    # -- RFC 5322 3.4 addresses -----------------------------------------------------------

    def local_part(self) -> int:
        out: list[str] = []
        ret = self.quoted(out) if self.cur() == '"' else self.nonstrict_dot_atom(out)
        if ret < 0:
            return -1
        self.mailbox = "".join(out)
        return ret

    def parse_domain(self) -> int:
        out: list[str] = []
        ret = self.domain_into(out)
        if ret < 0:
            return -1
        self.domain = "".join(out)
        return ret

    def angle_addr(self) -> int:
        self.i += 1                                     # the "<"
        if self.skip_lwsp() <= 0:
            return -1
        if self.cur() == "@":
            routes: list[str] = []
            ok = 1
            while True:                                 # RFC 5322 4.4 obs-route
                if self.at_end():
                    ok = 0
                    break
                if self.cur() != "@":
                    break
                out: list[str] = []
                r = self.domain_into(out)
                routes.append("@" + "".join(out))
                if r <= 0:
                    ok = r
                    break
                while self.skip_lwsp() > 0 and self.cur() == ",":
                    self.i += 1
            if ok > 0 and self.cur() == ":":
                self.route = ",".join(routes)
                self.i += 1
            else:
                self.route = "INVALID_ROUTE"
                if self.at_end():
                    return -1
            if self.skip_lwsp() <= 0:
                return -1
        if self.cur() != ">":
            if self.local_part() <= 0:
                return -1
            if self.cur() == "@" and self.parse_domain() <= 0:
                return -1
        if self.cur() != ">":
            return -1
        self.i += 1
        return self.skip_lwsp()

    def name_addr(self) -> int:
        out: list[str] = []
        if self.phrase(out) <= 0 or self.cur() != "<":
            return -1
        self.name = "".join(out) or None
        if self.angle_addr() < 0:
            self.domain = "SYNTAX_ERROR"
            self.invalid = True
        return 1 if not self.at_end() else 0

    def addr_spec(self) -> int:
        self.comment = ""
        quoted = self.cur() == '"'
        ret = self.local_part()
        if ret <= 0:
            self.invalid = True
        ret2 = -2
        if ret != 0 and not self.at_end() and self.cur() == "@":
            ret2 = self.parse_domain()
            if ret2 <= 0:
                ret = ret2
        if self.comment:
            self.name = self.comment
        elif ret2 == -2:
            # A word without @domain: a mailbox alone, but the start of a name when more follows.
            out = [self.mailbox or "", " "]
            before = len("".join(out))
            self.phrase(out)
            text = "".join(out)
            if len(text) != before:
                self.mailbox = None
                self.name = text
            elif not quoted:
                self.domain = ""
            self.invalid = True
            ret = -1
        return ret

    def add(self) -> None:
        self.out.append([self.name, self.route, self.mailbox, self.domain])
        self._reset()

    def add_fixed(self) -> None:
        if self.mailbox is None:
            self.mailbox = "MISSING_MAILBOX"
        if not self.domain:
            self.domain = "MISSING_DOMAIN"
        self.add()

    def parse_mailbox(self) -> int:
        start = self.i
        ret = self.name_addr()
        if ret < 0:
            self.i = start
            self.name = self.route = self.mailbox = self.domain = None
            ret = self.addr_spec()
            if self.invalid and self.name is None and self.mailbox is not None and self.domain is None:
                self.name, self.mailbox = self.mailbox, None
        self.add_fixed()
        return ret

    def group(self) -> int:
        out: list[str] = []
        if self.phrase(out) <= 0 or self.cur() != ":":
            return -1
        self.i += 1
        ret = self.skip_lwsp()
        self.mailbox = "".join(out)
        self.add()                                      # RFC 9051 7.5.2: (NIL NIL name NIL) starts it
        if ret > 0 and self.cur() != ";":
            while True:
                self.parse_mailbox()
                if self.at_end() or self.cur() != ",":
                    break
                self.i += 1
                if self.skip_lwsp() <= 0:
                    ret = -1
                    break
        if ret >= 0:
            if self.at_end() or self.cur() != ";":
                ret = -1
            else:
                self.i += 1
                ret = self.skip_lwsp()
        self.add()                                      # and (NIL NIL NIL NIL) ends it
        return 0 if ret == 0 else 1

    def address(self) -> int:
        start = self.i
        ret = self.group()
        if ret < 0:
            self.i = start
            self._reset()
            ret = self.parse_mailbox()
        return ret

    def address_list(self) -> None:
        if self.skip_lwsp() <= 0:
            return
        while True:
            if self.address() == 0:
                break
            if self.at_end() or self.cur() != ",":
                break
            self.i += 1
            ret = self.skip_lwsp()
            if ret <= 0:
                if ret < 0:
                    self.add_fixed()                    # ends with some garbage
                break


def parse_address_list(text: str) -> list[Address]:
    """``Name <a@b>, grp: c@d;`` (Latin-1 text) -> the ENVELOPE address structures."""
    parser = _Parser(text)
    try:
        parser.address_list()
    except RecursionError:  # pragma: no cover - no recursion here; defensive
        pass
    return parser.out
