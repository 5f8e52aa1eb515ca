"""Structured logging: ``key=value`` text or JSON lines, with a per-connection id."""

from __future__ import annotations

import itertools
import json
import logging
import os
import re
import secrets
import sys
import time
from typing import Any

_ids = itertools.count(1)
_process = ""
_stamp: tuple[int, str] | None = None
"""(pid, stamp) of this process: a forked child makes its own."""
_BASE32 = "0123456789abcdefghjkmnpqrstvwxyz"     # Crockford's: no i, l, o, u


def set_process_tag(tag: str) -> None:
    """Worker processes tag their connection ids (``w1s000001``) so they stay unique."""
    global _process
    _process = tag


def process_stamp() -> str:
    """13 characters naming this process among all processes of every node, before and
    after restarts: its start time in milliseconds and 24 random bits, base 32, so they
    sort by start time. A restart, an SMTP worker or another PostgreSQL node never repeats
    what an earlier process logged (issue 14, item 10)."""
    global _stamp
    pid = os.getpid()
    if _stamp is None or _stamp[0] != pid:
        n = (time.time_ns() // 1_000_000) << 24 | secrets.randbits(24)
        _stamp = (pid, "".join(_BASE32[(n >> shift) & 31] for shift in range(60, -1, -5)))
    return _stamp[1]


def connection_id(prefix: str) -> str:
    """The id that ties every log line of one connection together, also in the Received:
    trace and the reply to DATA (``s0fk3m2a8d1x9q.3``; ``.N`` per message). Unique across
    restarts and processes: the process's :func:`process_stamp` and a counter."""
    return f"{_process}{prefix}{process_stamp()}.{next(_ids)}"


class _TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields = getattr(record, "fields", {})
        extra = " ".join(f"{k}={_quote(v)}" for k, v in fields.items())
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        line = f"{stamp} {record.levelname.lower()} {record.name} {_escape(record.getMessage(), _CONTROL)}"
        if extra:
            line += " " + extra
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class _JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "ts": record.created, "level": record.levelname.lower(), "logger": record.name,
            "msg": record.getMessage(),
        }
        data.update(getattr(record, "fields", {}))
        if record.exc_info:
            data["exc"] = self.formatException(record.exc_info)
        return json.dumps(data, default=str)


_UNSAFE = re.compile(r'[\x00-\x20"\\\x7f-\x9f\u2028\u2029]')
"""What forces a value into quotes: space, quote, backslash, control characters."""
_ESCAPE = re.compile(r'["\\\x00-\x1f\x7f-\x9f\u2028\u2029]')
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t", '"': '\\"', "\\": "\\\\"}


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def _escape(s: str, pattern: re.Pattern[str] = _ESCAPE) -> str:
    """Control characters as escapes: a value never starts a line of its own."""
    return pattern.sub(lambda m: _NAMED.get(m.group(), f"\\x{ord(m.group()):02x}"
                                            if ord(m.group()) < 0x100 else f"\\u{ord(m.group()):04x}"), s)


def _quote(v: Any) -> str:
    s = str(v)
    return f'"{_escape(s)}"' if (not s or _UNSAFE.search(s)) else s


def setup(level: str = "info", fmt: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_JSONFormatter() if fmt == "json" else _TextFormatter())
    root = logging.getLogger("mailhaven")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False


class Log:
    """A logger bound to fields (``cid``, ``peer``...), passed around instead of globals."""

    def __init__(self, name: str, **fields: Any) -> None:
        self._logger = logging.getLogger(f"mailhaven.{name}")
        self.fields = fields

    def bind(self, **fields: Any) -> Log:
        new = Log.__new__(Log)
        new._logger = self._logger
        new.fields = {**self.fields, **fields}
        return new

    def _log(self, level: int, msg: str, exc: bool, fields: dict[str, Any]) -> None:
        if self._logger.isEnabledFor(level):
            self._logger.log(level, msg, exc_info=exc, extra={"fields": {**self.fields, **fields}})

    def debug(self, msg: str, **fields: Any) -> None:
        self._log(logging.DEBUG, msg, False, fields)

    def info(self, msg: str, **fields: Any) -> None:
        self._log(logging.INFO, msg, False, fields)

    def warning(self, msg: str, **fields: Any) -> None:
        self._log(logging.WARNING, msg, False, fields)

    def error(self, msg: str, exc: bool = False, **fields: Any) -> None:
        self._log(logging.ERROR, msg, exc, fields)
