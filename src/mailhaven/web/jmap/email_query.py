"""Email/query, Email/queryChanges and SearchSnippet/get (RFC 8621 4.4, 4.5, 5).

Candidates come from one indexed query over the account's (or the named mailboxes')
messages; text conditions use the store's full-text index per mailbox (SQLite FTS5 or
PostgreSQL trigram), never a scan of message bodies; conditions and sorts on addresses
and subjects read the delivery-time summaries of the candidates only.
"""

from __future__ import annotations

import datetime
import html
from typing import Any

from .email_get import flag_of, own_messages
from .registry import Call, MethodError, ids, method
from .state import account_state

TEXT_FIELDS = {"text": "text", "from": "from", "to": "to", "cc": "cc", "bcc": "bcc", "subject": "subject",
               "body": "body"}
CONDITIONS = {"inMailbox", "inMailboxOtherThan", "before", "after", "minSize", "maxSize",
              "allInThreadHaveKeyword", "someInThreadHaveKeyword", "noneInThreadHaveKeyword",
              "hasKeyword", "notKeyword", "hasAttachment", "header", *TEXT_FIELDS}
SORTS = {"receivedAt", "size", "from", "to", "subject", "sentAt", "hasKeyword"}


def _utc(value: Any) -> float:
    if not isinstance(value, str):
        raise MethodError("invalidArguments", "dates are UTCDate strings")
    try:
        return datetime.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        raise MethodError("invalidArguments", f"bad date {value}") from None


class _Light:
    __slots__ = ("id", "thread_id")

    def __init__(self, id_: int, thread_id: int) -> None:
        self.id, self.thread_id = id_, thread_id


class Row:
    __slots__ = ("id", "mailbox_id", "uid", "size", "received", "thread_id", "_flags", "_parsed")

    def __init__(self, r: tuple[Any, ...]) -> None:
        self.id, self.mailbox_id, self.uid, self.size, self.received, self.thread_id, self._flags = r
        self._parsed: frozenset[str] | None = None

    @property
    def flags(self) -> frozenset[str]:
        if self._parsed is None:
            self._parsed = frozenset((self._flags or "").split())
        return self._parsed


class Query:
    def __init__(self, call: Call, rows: list[Row]) -> None:
        self.call = call
        self.rows = rows
        self.by_id = {r.id: r for r in rows}
        self.threads: dict[int, list[Row]] = {}
        for r in rows:
            self.threads.setdefault(r.thread_id, []).append(r)
        self._summaries: dict[int, dict[str, Any]] | None = None
        self._text_cache: dict[tuple[str, str], set[int]] = {}

    async def summaries(self) -> dict[int, dict[str, Any]]:
        if self._summaries is None:
            found = await self.call.store.get_messages_by_id([r.id for r in self.rows], with_summary=True)
            self._summaries = {m.id: m.summary for m in found}
        return self._summaries

    async def text_matches(self, field: str, text: str) -> set[int]:
        key = (field, text)
        if key not in self._text_cache:
            matched: set[int] = set()
            by_box: dict[int, dict[int, int]] = {}
            for r in self.rows:
                by_box.setdefault(r.mailbox_id, {})[r.uid] = r.id
            for box, uids in by_box.items():
                for uid in await self.call.store.search_text(box, field, text):
                    if uid in uids:
                        matched.add(uids[uid])
            self._text_cache[key] = matched
        return self._text_cache[key]

    async def matches(self, flt: dict[str, Any]) -> set[int]:
        if "operator" in flt:
            op = flt["operator"]
            conditions = flt.get("conditions")
            if op not in ("AND", "OR", "NOT") or not isinstance(conditions, list):
                raise MethodError("unsupportedFilter", "bad FilterOperator")
            sets = [await self.matches(c) for c in conditions]
            everything = set(self.by_id)
            if op == "AND":
                return set.intersection(everything, *sets)
            union = set().union(*sets) if sets else set()
            return union if op == "OR" else everything - union
        result = set(self.by_id)
        for key, value in flt.items():
            if key not in CONDITIONS:
                raise MethodError("unsupportedFilter", f"unknown filter condition {key}")
            result &= await self.condition(key, value)
        return result

    async def condition(self, key: str, value: Any) -> set[int]:
        rows = self.rows
        if key == "inMailbox":
            box = ids.parse(value, "M")
            return {r.id for r in rows if r.mailbox_id == box}
        if key == "inMailboxOtherThan":
            if not isinstance(value, list):
                raise MethodError("invalidArguments", "inMailboxOtherThan is a list")
            boxes = {ids.parse(v, "M") for v in value}
            return {r.id for r in rows if r.mailbox_id not in boxes}
        if key == "before":
            return {r.id for r in rows if r.received < _utc(value)}
        if key == "after":
            return {r.id for r in rows if r.received >= _utc(value)}
        if key == "minSize":
            return {r.id for r in rows if r.size >= int(value)}
        if key == "maxSize":
            return {r.id for r in rows if r.size < int(value)}
        if key in ("hasKeyword", "notKeyword"):
            flag = flag_of(str(value))
            has = {r.id for r in rows if flag in r.flags or flag.lower() in {f.lower() for f in r.flags}}
            return has if key == "hasKeyword" else set(self.by_id) - has
        if key.endswith("InThreadHaveKeyword"):
            flag = flag_of(str(value))
            out = set()
            for members in self.threads.values():
                count = sum(1 for r in members if flag in r.flags)
                ok = {"all": count == len(members), "some": count > 0, "none": count == 0}[key[:-len("InThreadHaveKeyword")]]
                if ok:
                    out |= {r.id for r in members}
            return out
        if key == "hasAttachment":
            summaries = await self.summaries()
            return {i for i, s in summaries.items() if bool(s.get("has_attachment")) == bool(value)}
        if key == "header":
            if not isinstance(value, list) or not value:
                raise MethodError("invalidArguments", "header is [name] or [name, value]")
            return await self.text_matches("header", " ".join(str(v) for v in value[:2]) if len(value) > 1
                                           else f"{value[0]}:")
        if not isinstance(value, str):
            raise MethodError("invalidArguments", f"{key} takes a string")
        return await self.text_matches(TEXT_FIELDS[key], value)


async def _sort_key(query: Query, sort: list[dict[str, Any]]) -> Any:
    summaries = await query.summaries() if any(c.get("property") in ("from", "to", "subject", "sentAt")
                                                for c in sort) else {}

    def value(row: Row, prop: str, comparator: dict[str, Any]) -> Any:
        s = summaries.get(row.id, {})
        if prop == "receivedAt":
            return row.received
        if prop == "size":
            return row.size
        if prop == "sentAt":
            return s.get("date") or 0
        if prop == "subject":
            subject = (s.get("subject") or "").lower()
            while subject[:3] in ("re:", "fw:") or subject[:4] == "fwd:":
                subject = subject.split(":", 1)[1].strip()
            return subject
        if prop in ("from", "to"):
            first = (s.get(prop) or [{}])[0]
            return (first.get("name") or first.get("email") or "").lower()
        if prop == "hasKeyword":
            return flag_of(str(comparator.get("keyword", ""))) in row.flags
        raise MethodError("unsupportedSort", f"cannot sort by {prop}")

    return value


@method("Email/query")
async def email_query(call: Call, args: dict[str, Any]) -> dict[str, Any]:
    call.check_account(args)
    flt = args.get("filter") or {}
    if not isinstance(flt, dict):
        raise MethodError("invalidArguments", "filter must be an object")
    sort = args.get("sort") or [{"property": "receivedAt", "isAscending": False}]
    if not isinstance(sort, list) or not all(isinstance(c, dict) and c.get("property") in SORTS for c in sort):
        raise MethodError("unsupportedSort", "unsupported sort")
    box = ids.parse(flt["inMailbox"], "M") if isinstance(flt.get("inMailbox"), str) else None
    boxes = [box] if box is not None else None
    own = {b.id for b in await call.store.list_mailboxes(call.account.id)}
    found: list[Any]
    if isinstance(flt.get("inMailbox"), str) and box not in own:
        found = []
    elif set(flt) <= {"inMailbox"} and len(sort) == 1 and sort[0]["property"] in ("receivedAt", "size"):
        # The webmail's listing: sorted by the database, no per-message Python objects.
        column = "internal_date" if sort[0]["property"] == "receivedAt" else "size"
        ordered = await call.store.ordered_message_ids(call.account.id, box, column,
                                                       bool(sort[0].get("isAscending", True)))
        found = [_Light(i, t) for i, t in ordered]
    else:
        rows = [Row(r) for r in await call.store.message_index(call.account.id, boxes)]
        query = Query(call, rows)
        matched = await query.matches(flt)
        found = [r for r in rows if r.id in matched]
        value = await _sort_key(query, sort)
        found.sort(key=lambda r: r.id, reverse=True)
        for comparator in reversed(sort):
            found.sort(key=lambda r, c=comparator: value(r, c["property"], c),  # type: ignore[misc]
                       reverse=not comparator.get("isAscending", True))
    if args.get("collapseThreads"):
        seen: set[int] = set()
        collapsed = []
        for r in found:
            if r.thread_id not in seen:
                seen.add(r.thread_id)
                collapsed.append(r)
        found = collapsed
    total = len(found)
    position = args.get("position") or 0
    if not isinstance(position, int):
        raise MethodError("invalidArguments", "position must be an integer")
    anchor = args.get("anchor")
    if anchor is not None:
        index = next((i for i, r in enumerate(found) if ids.email(r.id) == anchor), None)
        if index is None:
            raise MethodError("anchorNotFound")
        position = max(0, index + int(args.get("anchorOffset") or 0))
    elif position < 0:
        position = max(0, total + position)
    limit = args.get("limit")
    if limit is not None and (not isinstance(limit, int) or limit < 0):
        raise MethodError("invalidArguments", "limit must be a non-negative integer")
    page = found[position:position + limit] if limit is not None else found[position:]
    out: dict[str, Any] = {"accountId": call.account_id,
                           "queryState": await account_state(call.store, call.account.id),
                           "canCalculateChanges": False, "position": position,
                           "ids": [ids.email(r.id) for r in page]}
    if args.get("calculateTotal"):
        out["total"] = total
    if limit is not None:
        out["limit"] = limit
    return out


@method("Email/queryChanges")
async def email_query_changes(call: Call, args: dict[str, Any]) -> dict[str, Any]:
    call.check_account(args)
    raise MethodError("cannotCalculateChanges", "run the query again")


def _highlight(text: str, terms: list[str]) -> str | None:
    lower = text.lower()
    spans = []
    for term in terms:
        t = term.lower()
        start = 0
        while t and (i := lower.find(t, start)) >= 0:
            spans.append((i, i + len(t)))
            start = i + len(t)
    if not spans:
        return None
    spans.sort()
    out, pos = [], 0
    for a, b in spans:
        if a < pos:
            continue
        out.append(html.escape(text[pos:a]))
        out.append(f"<mark>{html.escape(text[a:b])}</mark>")
        pos = b
    out.append(html.escape(text[pos:]))
    return "".join(out)


def _terms(flt: Any) -> list[str]:
    if not isinstance(flt, dict):
        return []
    if "conditions" in flt and flt.get("operator") != "NOT":
        return [t for c in flt["conditions"] for t in _terms(c)]
    return [str(flt[k]) for k in ("text", "subject", "body") if isinstance(flt.get(k), str)]


@method("SearchSnippet/get")
async def snippet_get(call: Call, args: dict[str, Any]) -> dict[str, Any]:
    call.check_account(args)
    email_ids = args.get("emailIds")
    if not isinstance(email_ids, list):
        raise MethodError("invalidArguments", "emailIds must be a list")
    terms = _terms(args.get("filter"))
    found = await own_messages(call, email_ids)
    out = []
    for jid in email_ids:
        message = found.get(jid)
        if message is None:
            continue
        s = message.summary
        out.append({"emailId": jid, "subject": _highlight(s.get("subject") or "", terms),
                    "preview": _highlight(s.get("preview") or "", terms)})
    return {"accountId": call.account_id, "list": out, "notFound": [j for j in email_ids if j not in found] or None}
