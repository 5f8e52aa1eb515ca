"""Mailbox/get, changes, query, queryChanges, set (RFC 8621 2).

A JMAP Mailbox is an IMAP mailbox of the same store: ``name`` is the last component of
the hierarchical name (``/`` separated), ``parentId`` the mailbox above it, ``role`` the
special-use attribute (RFC 8457 names: inbox, sent, drafts, trash, junk, archive).
Thread counts count distinct thread ids among the mailbox's messages.
"""

from __future__ import annotations

from typing import Any

from ...store.api import AlreadyExists, InvalidName, Mailbox, NotFound
from .core import check_if_in_state, check_set_size, get_ids, properties, set_response
from .registry import Call, MethodError, ids, method
from .state import account_state, parse_state

PROPS = {"id", "name", "parentId", "role", "sortOrder", "totalEmails", "unreadEmails", "totalThreads",
         "unreadThreads", "myRights", "isSubscribed"}
RIGHTS = {"mayReadItems": True, "mayAddItems": True, "mayRemoveItems": True, "maySetSeen": True,
          "maySetKeywords": True, "mayCreateChild": True, "mayRename": True, "mayDelete": True,
          "maySubmit": True}
ROLE_ORDER = ["inbox", "drafts", "sent", "archive", "junk", "trash"]


def role_of(box: Mailbox) -> str | None:
    if box.name == "INBOX":
        return "inbox"
    if box.special_use:
        return box.special_use.lstrip("\\").lower()
    return None


def special_use_of(role: str | None) -> str | None:
    if role is None or role == "inbox":
        return None
    return "\\" + role.capitalize()


async def thread_counts(store: Any, box: Mailbox) -> tuple[int, int]:
    messages = await store.list_messages(box.id)
    threads = {m.thread_id for m in messages}
    unread = {m.thread_id for m in messages if "\\Seen" not in m.flags}
    return len(threads), len(unread)


async def to_jmap(call: Call, box: Mailbox, by_name: dict[str, Mailbox], props: list[str]) -> dict[str, Any]:
    parent_name, _, leaf = box.name.rpartition("/")
    parent = by_name.get(parent_name) if parent_name else None
    role = role_of(box)
    out: dict[str, Any] = {"id": ids.mailbox(box.id)}
    values: dict[str, Any] = {
        "name": leaf, "parentId": ids.mailbox(parent.id) if parent else None, "role": role,
        "sortOrder": ROLE_ORDER.index(role) + 1 if role in ROLE_ORDER else 10,
        "totalEmails": box.messages, "unreadEmails": box.unseen, "myRights": RIGHTS,
        "isSubscribed": box.subscribed,
    }
    if "totalThreads" in props or "unreadThreads" in props:
        values["totalThreads"], values["unreadThreads"] = await thread_counts(call.store, box)
    for p in props:
        if p != "id":
            out[p] = values.get(p)
    return out


async def _all(call: Call) -> list[Mailbox]:
    return list(await call.store.list_mailboxes(call.account.id, counts=True))


@method("Mailbox/get")
async def mailbox_get(call: Call, args: dict[str, Any]) -> dict[str, Any]:
    wanted = get_ids(call, args)
    props = properties(args, PROPS, sorted(PROPS))
    boxes = await _all(call)
    by_name = {b.name: b for b in boxes}
    by_id = {ids.mailbox(b.id): b for b in boxes}
    state = await account_state(call.store, call.account.id)
    if wanted is None:
        found, missing = boxes, []
    else:
        found = [by_id[i] for i in wanted if i in by_id]
        missing = [i for i in wanted if i not in by_id]
    return {"accountId": call.account_id, "state": state,
            "list": [await to_jmap(call, b, by_name, props) for b in found], "notFound": missing}


@method("Mailbox/changes")
async def mailbox_changes(call: Call, args: dict[str, Any]) -> dict[str, Any]:
    call.check_account(args)
    since = parse_state(args.get("sinceState"))
    state = await account_state(call.store, call.account.id)
    if since > int(state):
        raise MethodError("cannotCalculateChanges", "state from the future")
    if since == int(state):
        return {"accountId": call.account_id, "oldState": args["sinceState"], "newState": state,
                "hasMoreChanges": False, "created": [], "updated": [], "destroyed": [],
                "updatedProperties": None}
    # Mailbox deletions are not logged per state: ask the client to re-fetch (RFC 8620 5.2).
    raise MethodError("cannotCalculateChanges", "mailbox history is not kept; fetch the mailboxes again")


def _matches(box: Mailbox, by_name: dict[str, Mailbox], flt: dict[str, Any]) -> bool:
    parent_name = box.name.rpartition("/")[0]
    for key, value in flt.items():
        if key == "parentId":
            parent = by_name.get(parent_name) if parent_name else None
            if (ids.mailbox(parent.id) if parent else None) != value:
                return False
        elif key == "name":
            if not isinstance(value, str) or value.lower() not in box.name.rpartition("/")[2].lower():
                return False
        elif key == "role":
            if role_of(box) != value:
                return False
        elif key == "hasAnyRole":
            if (role_of(box) is not None) != bool(value):
                return False
        elif key == "isSubscribed":
            if box.subscribed != bool(value):
                return False
        else:
            raise MethodError("unsupportedFilter", f"unknown filter {key}")
    return True


@method("Mailbox/query")
async def mailbox_query(call: Call, args: dict[str, Any]) -> dict[str, Any]:
    call.check_account(args)
    boxes = await _all(call)
    by_name = {b.name: b for b in boxes}
    flt = args.get("filter") or {}
    if not isinstance(flt, dict):
        raise MethodError("invalidArguments", "filter must be an object")
    found = [b for b in boxes if _matches(b, by_name, flt)]
    for comparator in reversed(args.get("sort") or []):
        prop = comparator.get("property") if isinstance(comparator, dict) else None
        if prop not in ("name", "sortOrder"):
            raise MethodError("unsupportedSort", f"cannot sort by {prop}")
        key = (lambda b: b.name.lower()) if prop == "name" else (
            lambda b: ROLE_ORDER.index(role_of(b)) if role_of(b) in ROLE_ORDER else 10)  # type: ignore[arg-type]
        found.sort(key=key, reverse=not comparator.get("isAscending", True))
    position = int(args.get("position") or 0)
    limit = args.get("limit")
    page = found[position:position + int(limit)] if limit is not None else found[position:]
    return {"accountId": call.account_id, "queryState": await account_state(call.store, call.account.id),
            "canCalculateChanges": False, "position": position, "ids": [ids.mailbox(b.id) for b in page],
            "total": len(found)}


@method("Mailbox/queryChanges")
async def mailbox_query_changes(call: Call, args: dict[str, Any]) -> dict[str, Any]:
    call.check_account(args)
    raise MethodError("cannotCalculateChanges", "query the mailboxes again")


@method("Mailbox/set")
async def mailbox_set(call: Call, args: dict[str, Any]) -> dict[str, Any]:
    check_set_size(call, args)
    store = call.store
    old_state = await account_state(store, call.account.id)
    check_if_in_state(args, old_state)
    created: dict[str, Any] = {}
    not_created: dict[str, Any] = {}
    updated: dict[str, Any] = {}
    not_updated: dict[str, Any] = {}
    destroyed: list[str] = []
    not_destroyed: dict[str, Any] = {}

    async def full_name(parent_id: Any, name: str) -> str:
        if not isinstance(name, str) or not name or "/" in name or len(name) > 255:
            raise MethodError("invalidProperties", "name must be 1-255 characters without /")
        if parent_id is None:
            return name
        pid = ids.parse(call.resolve_id(parent_id), "M")
        boxes = {b.id: b for b in await _all(call)}
        if pid is None or pid not in boxes:
            raise MethodError("invalidProperties", "no such parent mailbox")
        return f"{boxes[pid].name}/{name}"

    for cid, obj in (args.get("create") or {}).items():
        try:
            if not isinstance(obj, dict):
                raise MethodError("invalidProperties", "not an object")
            name = await full_name(obj.get("parentId"), obj.get("name", ""))
            box = await store.create_mailbox(call.account.id, name, special_use=special_use_of(obj.get("role")))
            if obj.get("isSubscribed"):
                await store.set_subscribed(call.account.id, box.name, True)
            call.created_ids[cid] = ids.mailbox(box.id)
            created[cid] = {"id": ids.mailbox(box.id), "myRights": RIGHTS, "totalEmails": 0, "unreadEmails": 0,
                            "totalThreads": 0, "unreadThreads": 0, "sortOrder": 10}
        except MethodError as exc:
            not_created[cid] = exc.as_response()
        except AlreadyExists:
            not_created[cid] = {"type": "invalidProperties", "description": "a mailbox with that name exists",
                                "properties": ["name"]}
        except InvalidName as exc:
            not_created[cid] = {"type": "invalidProperties", "description": str(exc), "properties": ["name"]}

    for jid, patch in (args.get("update") or {}).items():
        box_id = ids.parse(call.resolve_id(jid), "M")
        try:
            if box_id is None or not isinstance(patch, dict):
                raise NotFound(jid)
            box = await store.get_mailbox_by_id(box_id)
            if box.account_id != call.account.id:
                raise NotFound(jid)
            if "name" in patch or "parentId" in patch:
                parent_name = box.name.rpartition("/")[0]
                parent_id = patch.get("parentId", None) if "parentId" in patch else (
                    ids.mailbox((await store.get_mailbox(call.account.id, parent_name)).id) if parent_name else None)
                new_name = await full_name(parent_id, patch.get("name", box.name.rpartition("/")[2]))
                if new_name != box.name:
                    if box.name == "INBOX":
                        raise MethodError("forbidden", "INBOX cannot be renamed")
                    await store.rename_mailbox(box.id, new_name)
            if "isSubscribed" in patch:
                await store.set_subscribed(call.account.id, (await store.get_mailbox_by_id(box.id)).name,
                                           bool(patch["isSubscribed"]))
            unknown = set(patch) - {"name", "parentId", "isSubscribed", "sortOrder", "role"}
            if unknown:
                raise MethodError("invalidProperties", f"cannot set {sorted(unknown)}")
            updated[jid] = None
        except NotFound:
            not_updated[jid] = {"type": "notFound"}
        except MethodError as exc:
            not_updated[jid] = exc.as_response()
        except (AlreadyExists, InvalidName) as exc:
            not_updated[jid] = {"type": "invalidProperties", "description": str(exc), "properties": ["name"]}

    remove_emails = bool(args.get("onDestroyRemoveEmails"))
    for jid in args.get("destroy") or []:
        box_id = ids.parse(call.resolve_id(jid), "M")
        try:
            if box_id is None:
                raise NotFound(jid)
            box = await store.get_mailbox_by_id(box_id)
            if box.account_id != call.account.id:
                raise NotFound(jid)
            if box.name == "INBOX":
                raise MethodError("forbidden", "INBOX cannot be destroyed")
            boxes = await _all(call)
            if any(b.name.startswith(box.name + "/") for b in boxes):
                raise MethodError("mailboxHasChild", "it has child mailboxes")
            messages = await store.list_messages(box.id)
            if messages and not remove_emails:
                raise MethodError("mailboxHasEmail", "it still has emails")
            await store.delete_mailbox(box.id)
            destroyed.append(jid)
        except NotFound:
            not_destroyed[jid] = {"type": "notFound"}
        except MethodError as exc:
            not_destroyed[jid] = exc.as_response()

    return set_response(call, old_state, await account_state(store, call.account.id), created=created,
                        notCreated=not_created, updated=updated, notUpdated=not_updated, destroyed=destroyed,
                        notDestroyed=not_destroyed)
