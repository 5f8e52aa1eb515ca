"""The types of the standard method arguments (RFC 8620 5.1-5.6, RFC 8621), checked once
by the dispatcher before a method runs: a value of the wrong type is ``invalidArguments``
(RFC 8620 3.6.2), so methods may rely on the types below.

Each entry names a check: ``str`` ``Id``/String, ``uint`` UnsignedInt, ``int`` Int,
``bool`` Boolean, ``ids`` Id[], ``strs`` String[], ``obj`` an object, ``objs`` an array of
objects, ``map`` an object whose values are objects (``create``, ``update``,
``onSuccessUpdateEmail``), each optionally nullable (``?``).
"""

from __future__ import annotations

from typing import Any

from .registry import MethodError

MAX_INT = 2**53 - 1
"""RFC 8620 1.3: Int and UnsignedInt are within +-2^53-1."""

STANDARD: dict[str, str] = {
    "accountId": "str", "fromAccountId": "str",
    "ids": "ids?", "properties": "strs?", "bodyProperties": "strs?",
    "sinceState": "str", "sinceQueryState": "str", "ifInState": "str?", "ifFromInState": "str?",
    "maxChanges": "uint?", "upToId": "str?",
    "filter": "obj?", "sort": "objs?", "position": "int", "anchor": "str?", "anchorOffset": "int",
    "limit": "uint?", "calculateTotal": "bool", "collapseThreads": "bool",
    "create": "map?", "update": "map?", "destroy": "ids?", "emails": "map",
    "onDestroyRemoveEmails": "bool", "onSuccessUpdateEmail": "map?", "onSuccessDestroyEmail": "ids?",
    "destroyFromIfInState": "str?", "onSuccessDestroyOriginal": "bool",
    "blobIds": "ids",
    "fetchTextBodyValues": "bool", "fetchHTMLBodyValues": "bool", "fetchAllBodyValues": "bool",
    "maxBodyValueBytes": "uint", "emailIds": "ids", "identityId": "str",
}


def check(args: dict[str, Any]) -> None:
    """Raise ``invalidArguments`` for a standard argument of the wrong type."""
    for name, value in args.items():
        kind = STANDARD.get(name)
        if kind is None:
            continue
        nullable = kind.endswith("?")
        if value is None and nullable:
            continue
        if not _fits(kind.rstrip("?"), value):
            raise MethodError("invalidArguments", f"{name} has the wrong type", arguments=[name])


def _fits(kind: str, value: Any) -> bool:
    if kind == "str":
        return isinstance(value, str)
    if kind == "bool":
        return isinstance(value, bool)
    if kind in ("int", "uint"):
        return (isinstance(value, int) and not isinstance(value, bool)
                and (0 if kind == "uint" else -MAX_INT) <= value <= MAX_INT)
    if kind in ("ids", "strs"):
        return isinstance(value, list) and all(isinstance(v, str) for v in value)
    if kind == "obj":
        return isinstance(value, dict)
    if kind == "objs":
        return isinstance(value, list) and all(isinstance(v, dict) for v in value)
    if kind == "map":
        return isinstance(value, dict)
    raise AssertionError(kind)
