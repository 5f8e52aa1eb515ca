"""Structured logging: ``key=value`` text or JSON lines, with a per-connection id."""

from __future__ import annotations

import itertools
import json
import logging
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
        line = f"{stamp} {record.levelname.lower()} {record.name} {record.getMessage()}"
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


def _quote(v: Any) -> str:
    s = str(v)
    return json.dumps(s) if (" " in s or '"' in s or not s) else s


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
