"""JMAP for Sieve scripts (RFC 9661): SieveScript/get, /set, /query and /validate over the
same stored scripts ManageSieve serves (store ``*_sieve_script`` methods).

Invariants:
- A script is compiled before it is stored, as over ManageSieve: nothing that does not
  compile reaches the store (``invalidSieve`` with line and column instead).
- Ids are ``Z<store id>``: a rename keeps the id (RFC 8620 1.2). A script's content is
  the blob ``K<store id>-<sha256 of its text>`` (blobs.py), so a new text is a new blobId.
- The state string hashes every script's id, name, activity and text: any change over
  JMAP or ManageSieve moves it. RFC 9661 defines no /changes or /queryChanges for this
  type, so /query says ``canCalculateChanges: false``.
"""

from __future__ import annotations

import hashlib
from typing import Any

from ...managesieve.session import IMPLEMENTATION
from ...managesieve.session import sieve_capability as extensions
from ...sieve.compiler import compile_script
from ...sieve.errors import SieveError
from ...sieve.scriptname import MAX_SCRIPT_NAME_OCTETS, valid_script_name
from ...store.api import AlreadyExists, NotFound, SieveConflict, SieveScriptInfo
from .blobs import read_blob_for, script_blob_id
from .core import check_if_in_state, check_set_size, get_ids, properties, set_response
from .registry import SIEVE, Call, MethodError, method

PROPERTIES = ["id", "name", "blobId", "isActive"]
SERVER_SET = {"id", "isActive"}
DEFAULT_NAME = "script"


def sieve_capability(config: Any) -> dict[str, Any]:
    """The account capability (RFC 9661 2)."""
    sieve = config.sieve
    return {"implementation": IMPLEMENTATION,
            "maxSizeScriptName": MAX_SCRIPT_NAME_OCTETS,    # sieve/scriptname.py
            "maxSizeScript": sieve.max_script_size,
            "maxNumberScripts": sieve.max_scripts,
            "maxNumberRedirects": sieve.max_redirects,
            "sieveExtensions": extensions().split(),
            "notificationMethods": ["mailto"],        # enotify (RFC 5436) only
            "externalLists": None}                    # no extlists (RFC 6134)


def script_id(n: int) -> str:
    return f"Z{n}"


class _Scripts:
    """The account's scripts as one /get or /set sees them, with their texts."""

    def __init__(self, infos: list[SieveScriptInfo], texts: dict[str, str]) -> None:
        self.by_id = {script_id(i.id): i for i in infos}
        self.texts = texts

    @classmethod
    async def load(cls, call: Call) -> _Scripts:
        return await cls.of(call.store, call.account.id)

    @classmethod
    async def of(cls, store: Any, account_id: int) -> _Scripts:
        infos = await store.list_sieve_scripts(account_id)
        texts = {i.name: await store.get_sieve_script(account_id, i.name) for i in infos}
        return cls(infos, texts)

    @property
    def state(self) -> str:
        digest = hashlib.sha256()
        for sid, info in sorted(self.by_id.items()):
            text = self.texts.get(info.name, "")
            digest.update(f"{sid}\0{info.name}\0{int(info.active)}\0{len(text)}\0".encode() + text.encode())
        return digest.hexdigest()[:24]

    def find(self, call: Call, value: Any) -> SieveScriptInfo | None:
        return self.by_id.get(call.resolve_id(value)) if isinstance(value, str) else None

    def as_json(self, info: SieveScriptInfo) -> dict[str, Any]:
        return {"id": script_id(info.id), "name": info.name, "isActive": info.active,
                "blobId": script_blob_id(info.id, self.texts.get(info.name, ""))}


async def script_state(store: Any, account_id: int) -> str:
    """The SieveScript state string /get gives now (for push, RFC 8620 7.1)."""
    return (await _Scripts.of(store, account_id)).state


@method("SieveScript/get", SIEVE)
async def sieve_get(call: Call, args: dict[str, Any]) -> dict[str, Any]:
    wanted = get_ids(call, args)
    props = properties(args, set(PROPERTIES), PROPERTIES)
    scripts = await _Scripts.load(call)
    found: list[dict[str, Any]] = []
    not_found: list[str] = []
    for sid in (wanted if wanted is not None else list(scripts.by_id)):
        info = scripts.by_id.get(sid)
        if info is None:
            not_found.append(sid)
            continue
        full = scripts.as_json(info)
        found.append({p: full[p] for p in props})
    return {"accountId": call.account_id, "state": scripts.state, "list": found, "notFound": not_found}


# -- content --------------------------------------------------------------------------------------
async def _content(call: Call, blob_id: Any) -> str:
    """The text behind ``blob_id``, compiled: SetError-shaped MethodErrors otherwise."""
    if not isinstance(blob_id, str):
        raise MethodError("invalidProperties", "blobId is required", properties=["blobId"])
    data = await read_blob_for(call.store, call.account.id, blob_id)
    if data is None:
        raise MethodError("blobNotFound", f"no blob {blob_id}", notFound=[blob_id])
    limit = call.app.config.sieve.max_script_size
    if len(data) > limit:                                        # RFC 8620 5.3 tooLarge
        raise MethodError("tooLarge", f"a script is at most {limit} octets", maxSize=limit)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise MethodError("invalidSieve", "the script is not UTF-8") from None
    try:
        compile_script(data)
    except SieveError as e:                                      # RFC 9661 2.4 invalidSieve
        raise MethodError("invalidSieve", f"line {e.line}, column {e.column}: {e.message}") from None
    return text


def _check_name(name: Any) -> None:
    """The name rule ManageSieve applies too (sieve/scriptname.py; RFC 5804 1.6, RFC 9661 2)."""
    if not isinstance(name, str) or not valid_script_name(name):
        raise MethodError("invalidProperties", "not a valid script name (RFC 5804 1.6)", properties=["name"])


def _free_name(taken: set[str]) -> str:
    """RFC 9661 2: the server chooses a name when the client gives none."""
    n = 1
    while (name := DEFAULT_NAME if n == 1 else f"{DEFAULT_NAME}-{n}") in taken:
        n += 1
    return name


def _only(obj: dict[str, Any], allowed: set[str]) -> None:
    bad = sorted(k for k in obj if k not in allowed)
    if bad:
        raise MethodError("invalidProperties", f"cannot set {bad}", properties=bad)


# -- SieveScript/set (RFC 9661 2.4) ---------------------------------------------------------------
@method("SieveScript/set", SIEVE)
async def sieve_set(call: Call, args: dict[str, Any]) -> dict[str, Any]:
    check_set_size(call, args)
    activate = args.get("onSuccessActivateScript")
    deactivate = args.get("onSuccessDeactivateScript")
    if activate is not None and not isinstance(activate, str):
        raise MethodError("invalidArguments", "onSuccessActivateScript must be an id")
    if deactivate is not None and not isinstance(deactivate, bool):
        raise MethodError("invalidArguments", "onSuccessDeactivateScript must be a boolean")
    store, account_id = call.store, call.account.id
    # ifInState (RFC 8620 5.3): the script writes are compare-and-set on the store's Sieve
    # version read before the checked state, so a change in between is a stateMismatch.
    checked = await store.sieve_version(account_id) if args.get("ifInState") is not None else None
    before = await _Scripts.load(call)
    check_if_in_state(args, before.state)
    expected = [checked]

    async def put(name: str, text: str) -> None:
        try:
            version = await store.put_sieve_script(account_id, name, text, if_version=expected[0])
        except SieveConflict:
            raise MethodError("stateMismatch", "the scripts changed meanwhile") from None
        if expected[0] is not None:
            expected[0] = version

    async def resync() -> None:                # after a write without a version check of its own
        if expected[0] is not None:
            expected[0] = await store.sieve_version(account_id)

    created: dict[str, Any] = {}
    updated: dict[str, Any] = {}
    failed: dict[str, dict[str, Any]] = {"notCreated": {}, "notUpdated": {}, "notDestroyed": {}}
    destroyed: list[str] = []

    async def names() -> dict[str, SieveScriptInfo]:
        return {i.name: i for i in await store.list_sieve_scripts(account_id)}

    for cid, obj in (args.get("create") or {}).items():
        try:
            if not isinstance(obj, dict):
                raise MethodError("invalidProperties", "not an object")
            _only(obj, {"name", "blobId"})
            current = await names()
            name = obj.get("name")
            if name is None:
                name = _free_name(set(current))
            _check_name(name)
            assert isinstance(name, str)
            if name in current:
                raise MethodError("alreadyExists", f"a script is named {name!r}",
                                  existingId=script_id(current[name].id))
            if len(current) >= call.app.config.sieve.max_scripts:                 # RFC 8620 5.3
                raise MethodError("overQuota", f"at most {call.app.config.sieve.max_scripts} scripts")
            text = await _content(call, obj.get("blobId"))
            await put(name, text)
            info = (await names())[name]
            call.created_ids[cid] = script_id(info.id)
            created[cid] = {"id": script_id(info.id), "name": name, "isActive": False,
                            "blobId": script_blob_id(info.id, text)}
        except MethodError as exc:
            if exc.type == "stateMismatch":
                raise
            failed["notCreated"][cid] = exc.as_response()

    for sid, patch in (args.get("update") or {}).items():
        try:
            found = (await _Scripts.load(call)).find(call, sid)
            if found is None:
                raise MethodError("notFound")
            info = found
            if not isinstance(patch, dict):
                raise MethodError("invalidProperties", "not an object")
            _only(patch, {"name", "blobId"})
            changes: dict[str, Any] = {}
            current_name = info.name
            new_text = await _content(call, patch["blobId"]) if "blobId" in patch else None
            if "name" in patch and patch["name"] != info.name:
                _check_name(patch["name"])
                try:
                    await store.rename_sieve_script(account_id, info.name, patch["name"])
                except AlreadyExists:
                    raise MethodError("alreadyExists", f"a script is named {patch['name']!r}") from None
                await resync()
                current_name = patch["name"]
            if new_text is not None:
                await put(current_name, new_text)
                changes["blobId"] = script_blob_id(info.id, new_text)
            updated[call.resolve_id(sid)] = changes or None
        except MethodError as exc:
            if exc.type == "stateMismatch":
                raise
            failed["notUpdated"][sid] = exc.as_response()
        except NotFound:
            failed["notUpdated"][sid] = {"type": "notFound"}

    for sid in args.get("destroy") or []:
        try:
            gone = (await _Scripts.load(call)).find(call, sid)
            if gone is None:
                raise MethodError("notFound")
            if gone.active:                                                     # RFC 9661 2.4
                raise MethodError("sieveIsActive", "deactivate the script first")
            await store.delete_sieve_script(account_id, gone.name)
            await resync()
            destroyed.append(script_id(gone.id))
        except MethodError as exc:
            failed["notDestroyed"][str(sid)] = exc.as_response()
        except NotFound:
            failed["notDestroyed"][str(sid)] = {"type": "notFound"}

    if not any(failed.values()):
        await _switch(call, activate, bool(deactivate), created, updated)
    after = await _Scripts.load(call)
    return set_response(call, before.state, after.state, created=created, updated=updated,
                        destroyed=destroyed, **failed)


async def _switch(call: Call, activate: str | None, deactivate: bool,
                  created: dict[str, Any], updated: dict[str, Any]) -> None:
    """onSuccessDeactivateScript, then onSuccessActivateScript (RFC 9661 2.4): only when every
    create, update and destroy succeeded; an unknown id to activate is ignored."""
    scripts = await _Scripts.load(call)
    active = next((i for i in scripts.by_id.values() if i.active), None)
    try:
        target = scripts.find(call, activate) if activate is not None else None
    except MethodError:                       # "#creationId" of a create that did not happen
        target = None
    if target is None and not deactivate:
        return
    new = target.name if target is not None else None
    if active is not None and new == active.name:
        return
    await call.store.activate_sieve_script(call.account.id, new)
    if active is not None:
        _report(call, script_id(active.id), False, created, updated)
    if target is not None:
        _report(call, script_id(target.id), True, created, updated)


def _report(call: Call, sid: str, active: bool, created: dict[str, Any], updated: dict[str, Any]) -> None:
    """An (de)activated script in ``created`` or ``updated`` with its new isActive."""
    for props in created.values():
        if props.get("id") == sid:
            props["isActive"] = active
            return
    updated[sid] = {**(updated.get(sid) or {}), "isActive": active}


# -- SieveScript/query (RFC 9661 2.5) -------------------------------------------------------------
def _matches(info: SieveScriptInfo, flt: dict[str, Any]) -> bool:
    if "operator" in flt:                                                       # RFC 8620 5.5
        conditions = flt.get("conditions")
        if not isinstance(conditions, list) or not all(isinstance(c, dict) for c in conditions):
            raise MethodError("invalidArguments", "conditions must be a list of filters")
        results = [_matches(info, c) for c in conditions]
        operator = flt["operator"]
        if operator == "AND":
            return all(results)
        if operator == "OR":
            return any(results)
        if operator == "NOT":
            return not any(results)
        raise MethodError("unsupportedFilter", f"unknown operator {operator}")
    for key, value in flt.items():
        if key == "name":
            if not isinstance(value, str):
                raise MethodError("invalidArguments", "name must be a string")
            if value.lower() not in info.name.lower():
                return False
        elif key == "isActive":
            if not isinstance(value, bool):
                raise MethodError("invalidArguments", "isActive must be a boolean")
            if info.active != value:
                return False
        else:
            raise MethodError("unsupportedFilter", f"unknown filter {key}")
    return True


@method("SieveScript/query", SIEVE)
async def sieve_query(call: Call, args: dict[str, Any]) -> dict[str, Any]:
    call.check_account(args)
    scripts = await _Scripts.load(call)
    flt = args.get("filter") or {}
    if not isinstance(flt, dict):
        raise MethodError("invalidArguments", "filter must be an object")
    found = sorted((i for i in scripts.by_id.values() if _matches(i, flt)), key=lambda i: i.id)
    sort = args.get("sort") or []
    if not isinstance(sort, list):
        raise MethodError("invalidArguments", "sort must be a list")
    for comparator in reversed(sort):
        prop = comparator.get("property") if isinstance(comparator, dict) else None
        if prop not in ("name", "isActive"):
            raise MethodError("unsupportedSort", f"cannot sort by {prop}")
        found.sort(key=(lambda i: i.name) if prop == "name" else (lambda i: i.active),
                   reverse=not comparator.get("isAscending", True))
    found_ids = [script_id(i.id) for i in found]
    position = args.get("position") or 0
    limit = args.get("limit")
    if not isinstance(position, int) or (limit is not None and (not isinstance(limit, int) or limit < 0)):
        raise MethodError("invalidArguments", "position and limit must be integers")
    anchor = args.get("anchor")
    if anchor is not None:                                                      # RFC 8620 5.5
        if anchor not in found_ids:
            raise MethodError("anchorNotFound")
        offset = args.get("anchorOffset") or 0
        position = max(0, found_ids.index(anchor) + (offset if isinstance(offset, int) else 0))
    elif position < 0:
        position = max(0, len(found_ids) + position)
    page = found_ids[position:position + limit] if limit is not None else found_ids[position:]
    out = {"accountId": call.account_id, "queryState": scripts.state, "canCalculateChanges": False,
           "position": position, "ids": page}
    if args.get("calculateTotal"):
        out["total"] = len(found_ids)
    return out


# -- SieveScript/validate (RFC 9661 2.6) ----------------------------------------------------------
@method("SieveScript/validate", SIEVE)
async def sieve_validate(call: Call, args: dict[str, Any]) -> dict[str, Any]:
    call.check_account(args)
    if not isinstance(args.get("blobId"), str):
        raise MethodError("invalidArguments", "blobId is required")
    try:
        await _content(call, args["blobId"])
        error = None
    except MethodError as exc:
        error = exc.as_response()
    return {"accountId": call.account_id, "error": error}
