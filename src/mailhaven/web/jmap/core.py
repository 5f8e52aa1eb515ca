"""Core/echo (RFC 8620 4) and the shared shape of /get and /set arguments."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from .registry import CORE, Call, MethodError, method


@method("Core/echo", CORE)
async def echo(call: Call, args: dict[str, Any]) -> dict[str, Any]:
    return args


def get_ids(call: Call, args: dict[str, Any]) -> list[str] | None:
    """The ``ids`` argument of a /get (None: all), checked against maxObjectsInGet."""
    call.check_account(args)
    wanted = args.get("ids")
    if wanted is None:
        return None
    if not isinstance(wanted, list) or not all(isinstance(i, str) for i in wanted):
        raise MethodError("invalidArguments", "ids must be a list of strings or null")
    if len(wanted) > call.limits.get("maxObjectsInGet", 1000):
        raise MethodError("requestTooLarge", "too many ids")
    return [call.resolve_id(i) for i in wanted]


def properties(args: dict[str, Any], allowed: set[str], default: list[str]) -> list[str]:
    props = args.get("properties")
    if props is None:
        return default
    if not isinstance(props, list) or not all(isinstance(p, str) for p in props):
        raise MethodError("invalidArguments", "properties must be a list of strings")
    bad = [p for p in props if p not in allowed and not p.startswith("header:")]
    if bad:
        raise MethodError("invalidArguments", f"unknown properties {bad}")
    return list(dict.fromkeys(["id", *props]))


def check_set_size(call: Call, args: dict[str, Any]) -> None:
    call.check_account(args)
    n = sum(len(args.get(k) or {}) for k in ("create", "update", "destroy"))
    if n > call.limits.get("maxObjectsInSet", 1000):
        raise MethodError("requestTooLarge", "too many objects in one /set")
    for key, kind in (("create", dict), ("update", dict), ("destroy", list)):
        if args.get(key) is not None and not isinstance(args[key], kind):
            raise MethodError("invalidArguments", f"{key} has the wrong type")


async def create_each(call: Call, creates: Any,
                      make: Callable[[dict[str, Any]], Awaitable[tuple[str, dict[str, Any]]]]
                      ) -> tuple[dict[str, Any], dict[str, Any]]:
    """The create half of a /set: ``make(obj)`` returns (server id, created properties) or
    raises MethodError; creation ids are recorded for later calls (RFC 8620 5.3)."""
    created: dict[str, Any] = {}
    not_created: dict[str, Any] = {}
    for cid, obj in (creates or {}).items():
        try:
            if not isinstance(obj, dict):
                raise MethodError("invalidProperties", "not an object")
            server_id, props = await make(obj)
            call.created_ids[cid] = server_id
            created[cid] = props
        except MethodError as exc:
            not_created[cid] = exc.as_response()
    return created, not_created


SET_RESULTS = ("created", "updated", "destroyed", "notCreated", "notUpdated", "notDestroyed")


def set_response(call: Call, old_state: str | None, new_state: str, **results: Any) -> dict[str, Any]:
    """A /set response (RFC 8620 5.3): every one of created, updated, destroyed, notCreated,
    notUpdated and notDestroyed is present, null when empty (clients rely on each)."""
    unknown = set(results) - set(SET_RESULTS)
    if unknown:
        raise AssertionError(f"not a /set result: {unknown}")
    return {"accountId": call.account_id, "oldState": old_state, "newState": new_state,
            **{key: results.get(key) or None for key in SET_RESULTS}}


def check_if_in_state(args: dict[str, Any], state: str) -> None:
    wanted = args.get("ifInState")
    if wanted is not None and wanted != state:
        raise MethodError("stateMismatch", f"state is {state}")
