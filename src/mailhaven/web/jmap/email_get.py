"""Email/get, Email/changes, Email/parse, Thread/get, Thread/changes (RFC 8621 3, 4.2, 4.3, 4.9).

List properties (addresses, subject, preview, dates, sizes, keywords) come from the
summary computed at delivery; body properties parse the stored message with the stdlib
parser only when asked for.
"""

from __future__ import annotations

import asyncio
import datetime
import email.utils
import os
from typing import Any

from ...message.fileview import FileView
from ...message.summary import message_ids, parse_addresses
from ...store.blobview import BlobView
from . import largeparts
from .core import get_ids, properties
from .parts import body_lists, body_part, body_value, parse_message, walk
from .registry import Call, MethodError, ids, method
from .state import account_state, parse_state

DEFAULT_PROPS = ["id", "blobId", "threadId", "mailboxIds", "keywords", "size", "receivedAt", "messageId",
                 "inReplyTo", "references", "sender", "from", "to", "cc", "bcc", "replyTo", "subject", "sentAt",
                 "hasAttachment", "preview", "bodyValues", "textBody", "htmlBody", "attachments"]
PROPS = set(DEFAULT_PROPS) | {"bodyStructure", "headers"}
LARGE = 2 * 1024 * 1024
"""Messages above this size are read for Email/get with :mod:`largeparts`."""
BODY_PROPS = {"bodyValues", "textBody", "htmlBody", "attachments", "bodyStructure", "headers"}
DEFAULT_BODY_PROPS = ["partId", "blobId", "size", "name", "type", "charset", "disposition", "cid", "language",
                      "location"]

SYSTEM_FLAGS = {"\\Seen": "$seen", "\\Flagged": "$flagged", "\\Answered": "$answered", "\\Draft": "$draft"}
FLAG_OF_KEYWORD = {v: k for k, v in SYSTEM_FLAGS.items()}


def keywords_of(flags: frozenset[str]) -> dict[str, bool]:
    out = {}
    for flag in flags:
        if flag in SYSTEM_FLAGS:
            out[SYSTEM_FLAGS[flag]] = True
        elif not flag.startswith("\\"):
            out[flag.lower()] = True
    return out


def flag_of(keyword: str) -> str:
    """JMAP keyword -> IMAP flag (RFC 8621 4.1.1)."""
    return FLAG_OF_KEYWORD.get(keyword.lower(), keyword)


def utc_date(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _ids_or_none(value: str) -> list[str] | None:
    found = [m.strip("<>") for m in message_ids(value or "")]
    return found or None


def _addresses(summary: dict[str, Any], key: str) -> list[dict[str, Any]] | None:
    values = summary.get(key) or []
    return [{"name": a.get("name") or None, "email": a.get("email") or ""} for a in values] or None


async def own_messages(call: Call, jids: list[str], *, with_summary: bool = True) -> dict[str, Any]:
    """JMAP id -> Message, only the account's own."""
    wanted = {ids.parse(j, "E"): j for j in jids}
    numbers = [n for n in wanted if n is not None]
    found = await call.store.get_messages_by_id(numbers, with_summary=with_summary) if numbers else []
    boxes = {b.id for b in await call.store.list_mailboxes(call.account.id)}
    return {wanted[m.id]: m for m in found if m.mailbox_id in boxes}


def header_property(msg: Any, prop: str) -> Any:
    """``header:Name[:asForm][:all]`` (RFC 8621 4.1.2)."""
    parts = prop.split(":")
    name = parts[1]
    form = "asRaw"
    want_all = False
    for extra in parts[2:]:
        if extra == "all":
            want_all = True
        elif extra.startswith("as"):
            form = extra
        else:
            raise MethodError("invalidArguments", f"bad header property {prop}")
    raw_values = [str(v) for v in (msg.get_all(name) or [])] if msg is not None else []

    def convert(value: str) -> Any:
        if form == "asRaw":
            return value
        if form == "asText":
            try:
                return str(email.header.make_header(email.header.decode_header(value))).strip()
            except Exception:  # noqa: BLE001
                return value.strip()
        if form in ("asAddresses", "asGroupedAddresses"):
            found = [{"name": a.get("name") or None, "email": a.get("email")} for a in parse_addresses([value])]
            return found if form == "asAddresses" else [{"name": None, "addresses": found}]
        if form == "asMessageIds":
            return _ids_or_none(value)
        if form == "asDate":
            try:
                return email.utils.parsedate_to_datetime(value).isoformat()
            except (TypeError, ValueError):
                return None
        if form == "asURLs":
            return [u.strip().strip("<>") for u in value.split(",") if u.strip()] or None
        raise MethodError("invalidArguments", f"unknown header form {form}")

    if want_all:
        return [convert(v) for v in raw_values]
    return convert(raw_values[-1]) if raw_values else None


def email_object(message: Any, raw: bytes | None, props: list[str], args: dict[str, Any],
                 parsed: Any = None) -> dict[str, Any]:
    s = message.summary if message is not None else {}
    out: dict[str, Any] = {}
    if message is not None:
        out["id"] = ids.email(message.id)
    simple = {
        "blobId": ids.blob(message.blob_id) if message is not None else None,
        "threadId": ids.thread(message.thread_id) if message is not None else None,
        "mailboxIds": {ids.mailbox(message.mailbox_id): True} if message is not None else None,
        "keywords": keywords_of(message.flags) if message is not None else None,
        "size": message.size if message is not None else (len(raw) if raw else 0),
        "receivedAt": utc_date(message.internal_date) if message is not None else None,
        "messageId": _ids_or_none(s.get("message_id", "")),
        "inReplyTo": _ids_or_none(s.get("in_reply_to", "")),
        "references": _ids_or_none(s.get("references", "")),
        "sender": _addresses(s, "sender"), "from": _addresses(s, "from"), "to": _addresses(s, "to"),
        "cc": _addresses(s, "cc"), "bcc": _addresses(s, "bcc"), "replyTo": _addresses(s, "reply_to"),
        "subject": s.get("subject") or None,
        "sentAt": utc_date(s.get("date")),
        "hasAttachment": bool(s.get("has_attachment")),
        "preview": s.get("preview", ""),
    }
    for p in props:
        if p in simple:
            out[p] = simple[p]
    needs_body = any(p in BODY_PROPS or p.startswith("header:") for p in props)
    if not needs_body:
        return out
    msg = parsed if parsed is not None else (parse_message(raw) if raw is not None else None)
    if msg is None:
        return out
    mid = message.id if message is not None else 0
    body_props = args.get("bodyProperties") or DEFAULT_BODY_PROPS

    def part_object(pid: str, part: Any) -> dict[str, Any]:
        full = body_part(mid, pid, part, with_headers="headers" in body_props)
        return {k: full.get(k) for k in body_props}

    text, html, attachments = body_lists(msg)
    if "textBody" in props:
        out["textBody"] = [part_object(pid, p) for pid, p in text]
    if "htmlBody" in props:
        out["htmlBody"] = [part_object(pid, p) for pid, p in html]
    if "attachments" in props:
        out["attachments"] = [part_object(pid, p) for pid, p in attachments]
    if "bodyStructure" in props:
        top = walk(msg)[0]
        out["bodyStructure"] = body_part(mid, top[0], top[1], with_headers=True)
    if "headers" in props:
        out["headers"] = [{"name": k, "value": str(v)} for k, v in msg.items()]
    if "bodyValues" in props:
        values: dict[str, Any] = {}
        max_bytes = int(args.get("maxBodyValueBytes") or 0)
        chosen: list[tuple[str, Any]] = []
        if args.get("fetchAllBodyValues"):
            chosen = [(pid, p) for pid, p in walk(msg) if not p.is_multipart() and p.get_content_maintype() == "text"]
        else:
            if args.get("fetchTextBodyValues"):
                chosen += text
            if args.get("fetchHTMLBodyValues"):
                chosen += html
        for pid, part in chosen:
            if part.get_content_maintype() == "text":
                values[pid] = body_value(part, max_bytes)
        out["bodyValues"] = values
    for p in props:
        if p.startswith("header:"):
            out[p] = header_property(msg, p)
    return out


@method("Email/get")
async def email_get(call: Call, args: dict[str, Any]) -> dict[str, Any]:
    wanted = get_ids(call, args)
    props = properties(args, PROPS, DEFAULT_PROPS)
    state = await account_state(call.store, call.account.id)
    if wanted is None:
        rows = await call.store.message_index(call.account.id)
        if len(rows) > call.limits.get("maxObjectsInGet", 1000):
            raise MethodError("requestTooLarge", "give ids")
        wanted = [ids.email(r[0]) for r in rows]
    found = await own_messages(call, wanted)
    needs_raw = any(p in BODY_PROPS or p.startswith("header:") for p in props)
    out = []
    for jid in wanted:
        message = found.get(jid)
        if message is None:
            continue
        large = needs_raw and message.size > LARGE
        structure = (message.summary.get("imap") or {}).get("body") if large else None
        if structure:       # from its file, else a range at a time from the store (PostgreSQL)
            source = call.store.blob_path(message.blob_id) or BlobView(
                call.store.read_blob_range, message.blob_id, await call.store.blob_size(message.blob_id))
            out.append(await asyncio.to_thread(_large_email_object, message, source, structure, props, args))
            continue
        raw = bytes(await call.store.read_blob(message.blob_id)) if needs_raw else None
        out.append(email_object(message, raw, props, args))
    return {"accountId": call.account_id, "state": state, "list": out,
            "notFound": [j for j in wanted if j not in found]}


def _large_email_object(message: Any, source: str | BlobView, structure: dict[str, Any], props: list[str],
                        args: dict[str, Any]) -> dict[str, Any]:
    """:func:`email_object` of a large message from its file (a path) or the store's
    ranges of it: large leaf bodies stay there. In a worker thread."""
    if not isinstance(source, str):
        return _email_object_from(message, source, structure, props, args)
    with open(source, "rb") as f:
        return _email_object_from(message, FileView(f.fileno(), os.fstat(f.fileno()).st_size), structure,
                                  props, args)


def _email_object_from(message: Any, view: FileView, structure: dict[str, Any], props: list[str],
                       args: dict[str, Any]) -> dict[str, Any]:
    reduced, cuts = largeparts.skeleton(view, structure)
    parsed = parse_message(reduced)
    largeparts.mark(parsed, cuts, walk(parsed))
    return email_object(message, None, props, args, parsed=parsed)


@method("Email/changes")
async def email_changes(call: Call, args: dict[str, Any]) -> dict[str, Any]:
    call.check_account(args)
    since = parse_state(args.get("sinceState"))
    changed, gone, current = await call.store.account_changes_since(call.account.id, since)
    if since > current:
        raise MethodError("cannotCalculateChanges", "state from the future")
    alive = {m.id for m in changed}
    return {"accountId": call.account_id, "oldState": args["sinceState"], "newState": str(current),
            "hasMoreChanges": False, "created": [],
            "updated": [ids.email(m.id) for m in changed],
            "destroyed": [ids.email(i) for i in dict.fromkeys(gone) if i not in alive]}


@method("Email/parse")
async def email_parse(call: Call, args: dict[str, Any]) -> dict[str, Any]:
    from ...message.summary import summarize
    from .blobs import read_blob_for

    call.check_account(args)
    blob_ids = args.get("blobIds")
    if not isinstance(blob_ids, list):
        raise MethodError("invalidArguments", "blobIds must be a list")
    props = properties(args, PROPS - {"id", "mailboxIds", "keywords", "receivedAt", "threadId"},
                       [p for p in DEFAULT_PROPS if p not in ("id", "mailboxIds", "keywords", "receivedAt",
                                                              "threadId")])
    parsed: dict[str, Any] = {}
    not_parsable: list[str] = []
    not_found: list[str] = []
    for blob_id in blob_ids:
        raw = await read_blob_for(call.store, call.account.id, blob_id)
        if raw is None:
            not_found.append(blob_id)
            continue
        try:
            obj = email_object(_Shim(summarize(raw), raw), raw, [p for p in props if p != "id"], args)
            obj.pop("id", None)
            obj["blobId"] = blob_id
            parsed[blob_id] = obj
        except Exception:  # noqa: BLE001
            not_parsable.append(blob_id)
    return {"accountId": call.account_id, "parsed": parsed or None, "notParsable": not_parsable or None,
            "notFound": not_found or None}


class _Shim:
    """A Message-like view of a parsed blob that is not stored (Email/parse)."""

    def __init__(self, summary: dict[str, Any], raw: bytes) -> None:
        self.summary = summary
        self.id = 0
        self.blob_id = ""
        self.thread_id = 0
        self.mailbox_id = 0
        self.flags: frozenset[str] = frozenset()
        self.size = len(raw)
        self.internal_date = None


@method("Thread/get")
async def thread_get(call: Call, args: dict[str, Any]) -> dict[str, Any]:
    wanted = get_ids(call, args) or []
    numbers = {j: ids.parse(j, "T") for j in wanted}
    members = await call.store.thread_members(call.account.id, [n for n in numbers.values() if n is not None])
    found, missing = [], []
    for jid, n in numbers.items():
        emails = members.get(n or -1) or []
        if n is None or not emails:
            missing.append(jid)
        else:
            found.append({"id": jid, "emailIds": [ids.email(e) for e in emails]})
    return {"accountId": call.account_id, "state": await account_state(call.store, call.account.id),
            "list": found, "notFound": missing}


@method("Thread/changes")
async def thread_changes(call: Call, args: dict[str, Any]) -> dict[str, Any]:
    call.check_account(args)
    since = parse_state(args.get("sinceState"))
    changed, gone, current = await call.store.account_changes_since(call.account.id, since)
    if since > current:
        raise MethodError("cannotCalculateChanges", "state from the future")
    if gone:
        raise MethodError("cannotCalculateChanges", "emails were removed; fetch the threads again")
    return {"accountId": call.account_id, "oldState": args["sinceState"], "newState": str(current),
            "hasMoreChanges": False, "created": [],
            "updated": list(dict.fromkeys(ids.thread(m.thread_id) for m in changed)), "destroyed": []}
