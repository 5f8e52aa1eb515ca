"""Typed Sieve errors: a script error carries where it is (line and column, 1-based)."""

from __future__ import annotations


class SieveError(Exception):
    """The script is not valid Sieve (syntax, unknown command, missing require...)."""

    def __init__(self, message: str, line: int = 0, column: int = 0) -> None:
        self.message = message
        self.line = line
        self.column = column
        where = f"line {line}, column {column}: " if line else ""
        super().__init__(f"{where}{message}")


class SieveRuntimeError(Exception):
    """Running a valid script failed (a limit reached, conflicting actions): RFC 5228
    section 2.10.6 has the implicit keep happen instead."""
