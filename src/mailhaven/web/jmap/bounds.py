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
from typing import Any

MAX_SIZE_RESPONSE = 10 * 1024 * 1024
"""Serialised size of a whole response; beyond it the request is refused with ``limit``."""
MAX_DEPTH = 100
"""JSON nesting of a request or of resolved arguments (bounds recursion everywhere after)."""
THREAD_SERIALISE_ABOVE = 64 * 1024
"""Responses estimated larger than this are serialised off the event loop."""
CHUNKED_ABOVE = 1024 * 1024
"""Larger still, the thread uses the pure-Python encoder: the C encoder holds the GIL for
the whole call (~10 ms a MB), the Python one lets the event loop in every 5 ms."""
_YIELD_EVERY = 1024


class TooLarge(Exception):
    """The value is larger than the budget (or nested deeper than :data:`MAX_DEPTH`)."""

    def __init__(self, what: str) -> None:
        super().__init__(what)
        self.what = what


async def json_size(value: Any, budget: int) -> int:
    """An estimate (never lower than the ASCII size) of ``json.dumps(value)`` in bytes;
    :class:`TooLarge` once it exceeds ``budget`` or nests deeper than :data:`MAX_DEPTH`."""
    total = 0
    visited = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        visited += 1
        if visited % _YIELD_EVERY == 0:
            await asyncio.sleep(0)
        if isinstance(item, str):
            total += len(item) + 2
        elif isinstance(item, dict):
            if depth >= MAX_DEPTH:
                raise TooLarge("depth")
            total += 2 + 2 * len(item)
            for k, v in item.items():
                total += len(k) + 2 if isinstance(k, str) else 8
                stack.append((v, depth + 1))
        elif isinstance(item, (list, tuple)):
            if depth >= MAX_DEPTH:
                raise TooLarge("depth")
            total += 2 + len(item)
            stack.extend((v, depth + 1) for v in item)
        else:
            total += 8 if item is not None else 4
        if total > budget:
            raise TooLarge("size")
    return total


def depth_of(value: Any, limit: int = MAX_DEPTH) -> int:
    """Nesting depth of a parsed JSON value, stopping once past ``limit``."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            item = list(item.values())
        if isinstance(item, list):
            depth += 1
            deepest = max(deepest, depth)
            if deepest > limit:
                return deepest
            stack.extend((v, depth) for v in item)
    return deepest


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
    anything that is not JSON, including nesting too deep for the parser (RecursionError)."""
    try:
        if len(body) <= THREAD_SERIALISE_ABOVE:
            return json.loads(body)
        return await asyncio.to_thread(json.loads, body)
    except RecursionError:
        raise ValueError("nested too deeply") from None
