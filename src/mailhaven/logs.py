"""Structured logging: ``key=value`` text or JSON lines, with a per-connection id."""

from __future__ import annotations

import itertools
import json
import logging
import re
import sys
import time
from typing import Any

_ids = itertools.count(1)
_process = ""


def set_process_tag(tag: str) -> None:
    """Worker processes tag their connection ids (``w1s000001``) so they stay unique."""
    global _process
    _process = tag


def connection_id(prefix: str) -> str:
    """A short id that ties every log line of one connection together."""
    return f"{_process}{prefix}{next(_ids):06d}"


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
