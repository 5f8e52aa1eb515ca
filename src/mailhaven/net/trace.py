"""Opt-in protocol traces: what a client sent and what it was told, line by line.

Like Dovecot's rawlog, for seeing what a misbehaving client does. ``[trace] listeners``
records every connection of those listeners from its first byte; ``[trace] accounts``
records a connection from the moment one of those accounts logs in. One file per
connection under ``DATA/trace/`` (directory 0700, files 0600), each line
``HH:MM:SS.mmm C: ...`` (client) or ``S: ...`` (server).

Passwords and SASL data never reach the file: the arguments of IMAP LOGIN (and its
literals), IMAP AUTHENTICATE / SMTP AUTH / POP3 AUTH / ManageSieve AUTHENTICATE initial
responses and every client
line of the exchange that follows, and POP3 PASS and APOP are replaced by ``<redacted>``.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import Any, BinaryIO

REDACTED = b"<redacted>"
MAX_LINE = 8192
"""Longer lines are cut in the trace (a literal of a whole message stays readable)."""

_LITERAL_AT_END = re.compile(rb"\{\d+\+?\}$")


class Redactor:
    """Decides, line by line, what of a client line may be written.

    ``commands``: pattern -> how many leading groups to keep (the rest is redacted);
    ``sasl``: a command that starts a SASL exchange, during which every client line is
    secret until the server answers with a line that is not ``continuation``."""

    def __init__(self, commands: list[tuple[re.Pattern[bytes], bool]], sasl: re.Pattern[bytes],
                 continuation: tuple[bytes, ...], literal_logins: bool = False) -> None:
        self.commands = commands
        self.sasl = sasl
        self.continuation = continuation
        self.literal_logins = literal_logins
        self.in_sasl = False
        self.in_login = False

    def client(self, line: bytes) -> bytes:
        if self.in_login:                        # the rest of an IMAP LOGIN sent as literals
            self.in_login = bool(_LITERAL_AT_END.search(line))
            return REDACTED
        if self.in_sasl:
            return REDACTED
        m = self.sasl.match(line)
        if m:
            self.in_sasl = True
            return m.group(1) + (b" " + REDACTED if m.group(2) else b"")
        for pattern, literals in self.commands:
            m = pattern.match(line)
            if m:
                if literals and self.literal_logins and _LITERAL_AT_END.search(line):
                    self.in_login = True
                return m.group(1) + REDACTED
        return line

    def server(self, line: bytes) -> None:
        if self.in_sasl and not line.startswith(self.continuation):
            self.in_sasl = False


def redactor_for(protocol: str) -> Redactor:
    if protocol == "imap":
        return Redactor(
            [(re.compile(rb"^(\S+ LOGIN (?:\"(?:[^\"\\]|\\.)*\"|[^\s{\"]+) ?).*", re.I | re.S), True),
             (re.compile(rb"^(\S+ LOGIN ).*", re.I | re.S), True)],
            re.compile(rb"^(\S+ AUTHENTICATE \S+)( .*)?$", re.I | re.S), (b"+",), literal_logins=True)
    if protocol == "pop3":
        return Redactor(
            [(re.compile(rb"^(PASS ).*", re.I | re.S), False),
             (re.compile(rb"^(APOP \S+ ).*", re.I | re.S), False)],
            re.compile(rb"^(AUTH \S+)( .*)?$", re.I | re.S), (b"+ ", b"+\r", b"+\n"))
    if protocol == "managesieve":                    # RFC 5804 2.1: challenges are strings
        return Redactor([], re.compile(rb'^(AUTHENTICATE (?:"[^"]*"|\{\d+\+?\}))( .*)?$', re.I | re.S),
                        (b'"', b"{"))
    return Redactor([], re.compile(rb"^(AUTH \S+)( .*)?$", re.I | re.S), (b"334",))


class Trace:
    """One connection's trace file."""

    def __init__(self, path: Path, protocol: str) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self.file: BinaryIO = os.fdopen(fd, "ab")
        self.path = path
        self.redactor = redactor_for(protocol)
        self._partial = {b"C": b"", b"S": b""}

    def received(self, data: bytes) -> None:
        self._lines(b"C", data)

    def sent(self, data: bytes) -> None:
        self._lines(b"S", data)

    def user(self, name: str) -> None:
        self._write(b"*", f"logged in as {name}".encode())

    def _lines(self, side: bytes, data: bytes) -> None:
        buf = self._partial[side] + data
        lines = buf.split(b"\n")
        rest = lines.pop()
        self._partial[side] = rest[-MAX_LINE:]
        for line in lines:
            self._line(side, line.rstrip(b"\r"))

    def _line(self, side: bytes, line: bytes) -> None:
        if side == b"C":
            line = self.redactor.client(line)
        else:
            self.redactor.server(line)
        self._write(side, line)

    def _write(self, side: bytes, line: bytes) -> None:
        now = time.time()
        stamp = time.strftime("%H:%M:%S", time.localtime(now)) + f".{int(now * 1000) % 1000:03d}"
        if len(line) > MAX_LINE:
            line = line[:MAX_LINE] + b"..."
        self.file.write(stamp.encode() + b" " + side + b": " + line + b"\n")

    def close(self) -> None:
        for side, rest in self._partial.items():
            if rest:
                self._line(side, rest)
        self._partial = {b"C": b"", b"S": b""}
        self.file.close()


def trace_dir(config: Any) -> Path:
    path = Path(config.data_dir) / "trace"
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path, 0o700)
    return path


def open_trace(config: Any, protocol: str, listener: str, cid: str, user: str | None = None) -> Trace | None:
    """A trace for a connection of ``listener`` (and, once logged in, of ``user``), when
    the configuration asks for one."""
    wanted = config.trace
    if listener not in wanted.listeners and (user is None or user.lower() not in wanted.accounts):
        return None
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Trace(trace_dir(config) / f"{listener}-{stamp}-{cid}.log", protocol)
