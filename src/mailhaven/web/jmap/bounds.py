"""Bounds on the work one JMAP request may cause (RFC 8620 3.6.1 ``limit``).

Result references (RFC 8620 3.7) let a small request name the same large value many
times: ``Core/echo`` calls that each refer to the previous result twice double the
response at every step, while the objects in memory stay a small shared graph. So the
size that matters is the size of the JSON the graph would serialise to, measured here
without serialising it: :func:`json_size` walks the graph with a budget and stops as soon
as the budget is spent, yielding to the event loop every few thousand nodes so a large
walk never stalls other clients. :func:`dumps` serialises a response in a worker thread
once it is large enough to take more than a moment.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

MAX_SIZE_RESPONSE = 10 * 1024 * 1024
"""Serialised size of a whole response; beyond it the request is refused with ``limit``."""
MAX_DEPTH = 100
"""JSON nesting of a request or of resolved arguments (bounds recursion everywhere after)."""
MAX_VALUES = 250_000
"""JSON values in one request, counted by their separating commas before it is parsed:
the C parser holds the GIL for the whole parse (~0.2 s a million values), and no JMAP
request needs more (maxObjectsInGet/Set are 1,000)."""
THREAD_SERIALISE_ABOVE = 64 * 1024
"""Responses estimated larger than this are serialised off the event loop."""
CHUNKED_ABOVE = 1024 * 1024
"""Larger still, the thread uses the pure-Python encoder: the C encoder holds the GIL for
the whole call (~10 ms a MB), the Python one lets the event loop in every 5 ms."""
_YIELD_EVERY = 1024
_END = object()


class TooLarge(Exception):
    """The value is larger than the budget (or nested deeper than :data:`MAX_DEPTH`)."""

    def __init__(self, what: str) -> None:
        super().__init__(what)
        self.what = what


async def json_size(value: Any, budget: int) -> int:
    """An estimate (never lower than the ASCII size) of ``json.dumps(value)`` in bytes;
    :class:`TooLarge` once it exceeds ``budget`` or nests deeper than :data:`MAX_DEPTH`.
    Containers are walked one member at a time (a list of millions is never copied onto
    a stack at once), yielding to the event loop every :data:`_YIELD_EVERY` members."""
    total = 0
    visited = 0
    stack: list[tuple[Iterator[Any], int, bool]] = [(iter((value,)), 0, False)]
    while stack:
        members, depth, is_object = stack[-1]
        member: Any = next(members, _END)
        if member is _END:
            stack.pop()
            continue
        visited += 1
        if visited % _YIELD_EVERY == 0:
            await asyncio.sleep(0)
        if is_object:
            key, member = member
            total += len(key) + 3 if isinstance(key, str) else 10
        if isinstance(member, str):
            total += len(member) + 3
        elif isinstance(member, (dict, list, tuple)):
            if depth >= MAX_DEPTH:
                raise TooLarge("depth")
            total += 3
            if isinstance(member, dict):
                stack.append((iter(member.items()), depth + 1, True))
            else:
                stack.append((iter(member), depth + 1, False))
        else:
            total += 9 if member is not None else 5
        if total > budget:
            raise TooLarge("size")
    return total


async def depth_ok(value: Any) -> bool:
    """Is a parsed request nested no deeper than :data:`MAX_DEPTH`? Walked as
    :func:`json_size` walks, yielding to the event loop (a 10 MB request has millions of
    nodes); its size was bounded as bytes already."""
    try:
        await json_size(value, 2**62)
    except TooLarge:
        return False
    return True


async def dumps(value: Any, estimated: int) -> bytes:
    """``value`` as UTF-8 JSON; in a worker thread when it is large."""
    if estimated <= THREAD_SERIALISE_ABOVE:
        return _dumps(value)
    if estimated <= CHUNKED_ABOVE:
        return await asyncio.to_thread(_dumps, value)
    return await asyncio.to_thread(_dumps_chunked, value)


def _dumps(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


def _dumps_chunked(value: Any) -> bytes:
    encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
    return "".join(encoder.iterencode(value, _one_shot=False)).encode()


async def loads(body: bytes) -> Any:
    """Parse a request body (a worker thread for a large one). Raises ValueError for
    anything that is not JSON, including nesting too deep for the parser (RecursionError),
    and :class:`TooLarge` for a body of more than :data:`MAX_VALUES` values."""
    if body.count(b",") > MAX_VALUES:
        raise TooLarge("values")
    try:
        if len(body) <= THREAD_SERIALISE_ABOVE:
            return json.loads(body)
        return await asyncio.to_thread(json.loads, body)
    except RecursionError:
        raise ValueError("nested too deeply") from None
