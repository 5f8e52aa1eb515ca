"""VacationResponse/get and /set (RFC 8621 8): one object per account, id "singleton", kept
in the account's managed Sieve script (sieve/managed.py) as a ``vacation`` rule, so the
webmail's out-of-office form, ManageSieve and JMAP see one state. Setting it rewrites the
managed script and makes it the active one."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from typing import Any

from ...sieve import managed
from ...sieve.errors import SieveError
from ...store.api import SieveConflict
from .core import check_if_in_state, check_set_size, get_ids, properties, set_response
from .registry import MethodError, method

VACATION = "urn:ietf:params:jmap:vacationresponse"
SINGLETON = "singleton"                                             # RFC 8621 8
PROPERTIES = ["id", "isEnabled", "fromDate", "toDate", "subject", "textBody", "htmlBody"]
_FIELD_OF = {"isEnabled": "enabled", "fromDate": "from_date", "toDate": "to_date", "subject": "subject",
             "textBody": "text_body", "htmlBody": "html_body"}


def _object(state: managed.VacationState, active: bool) -> dict[str, Any]:
    return {"id": SINGLETON, "isEnabled": state.enabled and active, "fromDate": state.from_date,
            "toDate": state.to_date, "subject": state.subject, "textBody": state.text_body,
            "htmlBody": state.html_body}


def _state_string(obj: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


async def _load(call: Any) -> tuple[managed.ManagedState, dict[str, Any]]:
    state, active = await managed.load(call.store, call.account.id)
    return state, _object(state.vacation, active)


async def vacation_state(store: Any, account_id: int) -> str:
    """The VacationResponse state string /get gives now (for push, RFC 8620 7.1)."""
    state, active = await managed.load(store, account_id)
    return _state_string(_object(state.vacation, active))


@method("VacationResponse/get", VACATION)
async def vacation_get(call: Any, args: dict[str, Any]) -> dict[str, Any]:
    wanted = get_ids(call, args)
    props = properties(args, set(PROPERTIES), PROPERTIES)
    if any(p not in PROPERTIES for p in props):                     # (properties() allows header:*)
        raise MethodError("invalidArguments", "VacationResponse has no header properties")
    _, obj = await _load(call)
    found = wanted is None or SINGLETON in wanted
    return {"accountId": call.account_id, "state": _state_string(obj),
            "list": [{p: obj[p] for p in props}] if found else [],
            "notFound": [i for i in (wanted or []) if i != SINGLETON]}


def _apply(vacation: managed.VacationState, patch: Any) -> managed.VacationState:
    if not isinstance(patch, dict):
        raise MethodError("invalidPatch", "not an object")
    changes: dict[str, Any] = {}
    for prop, value in patch.items():
        if prop == "id":
            if value != SINGLETON:
                raise MethodError("invalidProperties", "id is immutable", properties=["id"])
            continue
        if prop not in _FIELD_OF:
            raise MethodError("invalidProperties", f"unknown property {prop}", properties=[prop])
        if prop == "isEnabled":
            if not isinstance(value, bool):
                raise MethodError("invalidProperties", "isEnabled is a boolean", properties=[prop])
        elif prop in ("fromDate", "toDate"):
            try:
                value = managed.utc_date(value)
            except managed.StateError as exc:
                raise MethodError("invalidProperties", str(exc), properties=[prop]) from None
        elif value is not None and not isinstance(value, str):
            raise MethodError("invalidProperties", f"{prop} is a string or null", properties=[prop])
        changes[_FIELD_OF[prop]] = value
    return replace(vacation, **changes)


@method("VacationResponse/set", VACATION)
async def vacation_set(call: Any, args: dict[str, Any]) -> dict[str, Any]:
    check_set_size(call, args)
    state, obj = await _load(call)
    old = _state_string(obj)
    check_if_in_state(args, old)
    results: dict[str, Any] = {}
    singleton = {"type": "singleton", "description": "VacationResponse has one object, id singleton"}
    if args.get("create"):                                          # RFC 8621 8: no create/destroy
        results["notCreated"] = {cid: singleton for cid in args["create"]}
    if args.get("destroy"):
        results["notDestroyed"] = {i: singleton for i in args["destroy"]}
    updated: dict[str, Any] = {}
    not_updated: dict[str, Any] = {}
    for oid, patch in (args.get("update") or {}).items():
        if oid != SINGLETON:
            not_updated[oid] = {"type": "notFound"}
            continue
        try:
            _apply(state.vacation, patch)                           # invalid patches fail before any write

            def edit(current: managed.ManagedState, patch: Any = patch) -> managed.ManagedState:
                return replace(current, vacation=_apply(current.vacation, patch))   # a merge: rules kept

            def still(current: managed.ManagedState, active: bool) -> None:
                # RFC 8620 5.3 ifInState, checked again on the state each attempt reads: the
                # store writes only if that read is still current (compare-and-set).
                check_if_in_state(args, _state_string(_object(current.vacation, active)))
            state = await managed.update(call.store, call.account.id, edit, quota=call.app.config.sieve,
                                         precondition=still)
            updated[oid] = None
        except MethodError as exc:
            if exc.type == "stateMismatch":
                raise
            not_updated[oid] = exc.as_response()
        except SieveConflict:                                       # others kept writing: try later
            not_updated[oid] = {"type": "serverFail", "description": "the Sieve scripts kept changing"}
        except (managed.StateError, SieveError) as exc:              # the rest of the script is broken
            not_updated[oid] = {"type": "invalidProperties",
                                "description": f"the filter script cannot be written: {exc}"}
    _, new_obj = await _load(call)
    return set_response(call, old, _state_string(new_obj), updated=updated, notUpdated=not_updated, **results)

