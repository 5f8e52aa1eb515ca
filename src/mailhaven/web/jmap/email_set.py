"""Email/set, Email/import, Email/copy (RFC 8621 4.6-4.8).

Creating an Email builds RFC 5322 bytes with the stdlib ``email`` package from the JMAP
object (addresses, subject, text/HTML body values, attachments by blob id) and appends
them; messages are immutable, so updates change keywords (IMAP flags) and mailboxIds
(an IMAP MOVE in the store; one mailbox per Email here, ``maxMailboxesPerEmail`` = 1).
"""

from __future__ import annotations

import asyncio
import base64
import email.policy
import email.utils
import os
import uuid
from email.message import EmailMessage
from typing import Any

from ...filter.spam.train import train_move
from ...store.api import BlobRef, FlagMode, NotFound, QuotaExceeded, StorageFull
from .blobs import blob_ref_for, read_blob_for
from .core import check_if_in_state, check_set_size, create_each, set_response
from .email_get import flag_of, own_messages
from .registry import Call, MethodError, ids, method
from .state import account_state


def _addr(value: Any) -> str:
    if not isinstance(value, list):
        raise MethodError("invalidProperties", "addresses must be a list")
    out = []
    for a in value:
        if not isinstance(a, dict) or not isinstance(a.get("email"), str) or "@" not in a["email"]:
            raise MethodError("invalidProperties", "an address needs an email")
        if any(c in a["email"] for c in "\r\n<>, "):
            raise MethodError("invalidProperties", f"bad address {a['email']!r}")
        name = a.get("name")
        out.append(email.utils.formataddr((name, a["email"])) if name else a["email"])
    return ", ".join(out)


def _keywords(value: Any) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, dict) or not all(v is True for v in value.values()):
        raise MethodError("invalidProperties", "keywords is a map of keyword to true")
    for k in value:
        if not k or len(k) > 255 or any(c in k for c in " ()]{%*\"\\\r\n") or not k.isascii():
            raise MethodError("invalidProperties", f"bad keyword {k!r}")
    return [flag_of(k) for k in value]


ATTACH_FROM_FILE = 1024 * 1024
"""Attachments larger than this are base64-encoded from their file into the new message's
blob, a chunk at a time, instead of being read whole (:func:`compose`)."""
_B64_LINE = 57
"""Bytes per base64 line (76 characters, RFC 2045 6.8)."""


async def compose(call: Call, obj: dict[str, Any]) -> bytes | BlobRef:
    """The message Email/set creates: bytes, or (with large attachments) a blob written
    piece by piece: the skeleton the email package makes, each large attachment's
    placeholder line replaced by the base64 of its file."""
    files: dict[bytes, str] = {}
    raw = await build_message(call, obj, files)
    if not files:
        return raw
    writer = call.store.blob_writer()
    try:
        rest = raw
        while rest:
            hits = [(rest.find(line), line) for line in files if rest.find(line) >= 0]
            if not hits:
                writer.write(rest)
                break
            at, line = min(hits)
            writer.write(rest[:at])
            await asyncio.to_thread(_base64_into, files.pop(line), writer)
            rest = rest[at + len(line) + 2:]          # the placeholder's CRLF: the encoding ends its lines
        return await writer.finish()
    except BaseException:
        writer.abort()
        raise


def _base64_into(path: str, writer: Any) -> None:
    with open(path, "rb") as f:
        while data := f.read(_B64_LINE * 4096):
            writer.write(b"".join(base64.b64encode(data[i:i + _B64_LINE]) + b"\r\n"
                                  for i in range(0, len(data), _B64_LINE)))


async def build_message(call: Call, obj: dict[str, Any], files: dict[bytes, str] | None = None) -> bytes:
    """The message as bytes; with ``files`` given, a large uploaded attachment is left as a
    one-line placeholder (its base64 line -> the file) for :func:`compose` to fill."""
    msg = EmailMessage(policy=email.policy.SMTP)
    for prop, header in (("from", "From"), ("sender", "Sender"), ("to", "To"), ("cc", "Cc"), ("bcc", "Bcc"),
                         ("replyTo", "Reply-To")):
        if obj.get(prop):
            msg[header] = _addr(obj[prop])
    subject = obj.get("subject")
    if subject is not None:
        if not isinstance(subject, str) or "\n" in subject or "\r" in subject:
            raise MethodError("invalidProperties", "bad subject")
        msg["Subject"] = subject
    sent = obj.get("sentAt")
    if sent is None:
        msg["Date"] = email.utils.format_datetime(email.utils.localtime())
    else:
        from .email_query import _utc

        msg["Date"] = email.utils.formatdate(_utc(sent), localtime=True)
    ids_ = obj.get("messageId")
    host = call.account.address.rpartition("@")[2] or "mailhaven"
    msg["Message-ID"] = f"<{ids_[0]}>" if isinstance(ids_, list) and ids_ else f"<{uuid.uuid4().hex}@{host}>"
    for prop, header in (("inReplyTo", "In-Reply-To"), ("references", "References")):
        value = obj.get(prop)
        if value:
            if not isinstance(value, list) or not all(isinstance(v, str) and v and " " not in v for v in value):
                raise MethodError("invalidProperties", f"{prop} is a list of message ids")
            msg[header] = " ".join(f"<{v.strip('<>')}>" for v in value)
    for key, value in obj.items():
        if key.startswith("header:"):
            name = key.split(":")[1]
            if not isinstance(value, str) or "\n" in value:
                raise MethodError("invalidProperties", f"bad {key}")
            msg[name] = value
    values = obj.get("bodyValues") or {}

    def body_text(parts: Any, kind: str) -> str | None:
        if not parts:
            return None
        if not isinstance(parts, list) or len(parts) != 1 or not isinstance(parts[0], dict):
            raise MethodError("invalidProperties", f"{kind} must be one part")
        value = values.get(parts[0].get("partId"))
        if not isinstance(value, dict) or not isinstance(value.get("value"), str):
            raise MethodError("invalidProperties", f"no body value for the {kind} part")
        return str(value["value"])

    text = body_text(obj.get("textBody"), "textBody")
    html = body_text(obj.get("htmlBody"), "htmlBody")
    if text is None and html is None and obj.get("bodyStructure") is None:
        text = ""
    if text is not None:
        msg.set_content(text, subtype="plain", cte="quoted-printable" if not text.isascii() else None)
        if html is not None:
            msg.add_alternative(html, subtype="html")
    elif html is not None:
        msg.set_content(html, subtype="html")
    for att in obj.get("attachments") or []:
        if not isinstance(att, dict) or not isinstance(att.get("blobId"), str):
            raise MethodError("invalidProperties", "an attachment needs a blobId")
        ref = await blob_ref_for(call.store, call.account.id, att["blobId"]) if files is not None else None
        path = call.store.blob_path(ref.id) if ref is not None and ref.size > ATTACH_FROM_FILE else None
        if path is not None and files is not None:
            marker = os.urandom(_B64_LINE)                      # one base64 line, unique
            files[base64.b64encode(marker)] = path
            data: bytes | None = marker
        else:
            data = await read_blob_for(call.store, call.account.id, att["blobId"])
        if data is None:
            raise MethodError("invalidProperties", f"no blob {att['blobId']}", properties=["attachments"])
        ctype = att.get("type") or "application/octet-stream"
        maintype, _, subtype = ctype.partition("/")
        if maintype == "message" and subtype == "rfc822":
            maintype, subtype = "application", "octet-stream"     # keep the bytes exactly as uploaded
        msg.add_attachment(data, maintype=maintype or "application", subtype=subtype or "octet-stream",
                           filename=att.get("name") or None,
                           disposition="inline" if att.get("disposition") == "inline" else "attachment",
                           cid=f"<{att['cid']}>" if att.get("cid") else None)
    return msg.as_bytes()


async def _append(call: Call, raw: bytes | BlobRef, mailbox_ids: Any, keywords: Any, received_at: Any = None) -> Any:
    """Store ``raw`` (bytes, or a blob already stored) as a new Email."""
    if not isinstance(mailbox_ids, dict) or len(mailbox_ids) != 1 or not all(v is True for v in mailbox_ids.values()):
        raise MethodError("invalidProperties", "exactly one mailbox (maxMailboxesPerEmail is 1)",
                          properties=["mailboxIds"])
    box_id = ids.parse(call.resolve_id(next(iter(mailbox_ids))), "M")
    own = {b.id for b in await call.store.list_mailboxes(call.account.id)}
    if box_id not in own:
        raise MethodError("invalidProperties", "no such mailbox", properties=["mailboxIds"])
    flags = _keywords(keywords)
    when = None
    if isinstance(received_at, str):
        from .email_query import _utc

        when = _utc(received_at)
    try:
        blob = raw if isinstance(raw, BlobRef) else await call.store.put_blob(raw)
        return await call.store.append(box_id, blob, flags=flags, internal_date=when)
    except QuotaExceeded:
        raise MethodError("overQuota", "the account is over its quota") from None
    except StorageFull:
        # RFC 8620 5.3 has no SetError for a full disk; overQuota with this text is what
        # the IMAP side says too (NO [OVERQUOTA], as Dovecot words ENOSPC).
        raise MethodError("overQuota", "not enough disk space on the server, try again later") from None


def _created(message: Any) -> dict[str, Any]:
    return {"id": ids.email(message.id), "blobId": ids.blob(message.blob_id),
            "threadId": ids.thread(message.thread_id), "size": message.size}


async def apply_update(call: Call, jid: str, patch: dict[str, Any]) -> None:
    """One Email/set update: keywords (whole or ``keywords/$x`` patches) and mailboxIds.

    RFC 8620 5.3: the patch is applied whole to the current values, then the result is
    validated, so its keys' order does not matter (RFC 8621 7.5.1's ``mailboxIds/<drafts>:
    null, mailboxIds/<sent>: true`` moves the Email either way round); nothing changes
    unless all of it is valid."""
    found = await own_messages(call, [jid], with_summary=False)
    message = found.get(jid)
    if message is None:
        raise NotFound(jid)
    for key in patch:
        head = key.split("/", 1)[0]
        if "/" in key and head in patch:
            raise MethodError("invalidPatch", f"{head} and {key} in one patch")
    add: list[str] = []
    remove: list[str] = []
    replace: list[str] | None = None
    boxes: set[int | None] = {message.mailbox_id}
    for key, value in patch.items():
        if key == "keywords":
            replace = _keywords(value)
        elif key.startswith("keywords/"):
            flag = flag_of(key.split("/", 1)[1])
            if value is True:
                add.append(flag)
            elif value is None:
                remove.append(flag)
            else:
                raise MethodError("invalidPatch", f"{key} takes true or null")
        elif key == "mailboxIds":
            if not isinstance(value, dict) or any(v is not True for v in value.values()):
                raise MethodError("invalidProperties", "mailboxIds maps ids to true", properties=["mailboxIds"])
            boxes = {ids.parse(call.resolve_id(str(k)), "M") for k in value}
        elif key.startswith("mailboxIds/"):
            box = ids.parse(call.resolve_id(key.split("/", 1)[1]), "M")
            if value is True:
                boxes.add(box)
            elif value is None:
                boxes.discard(box)
            else:
                raise MethodError("invalidPatch", f"{key} takes true or null")
        else:
            raise MethodError("invalidProperties", f"{key} cannot be changed", properties=[key])
    # Validate the patched Email: exactly one mailbox (maxMailboxesPerEmail 1), one of hers.
    if len(boxes) != 1:
        raise MethodError("invalidProperties", "an Email must be in exactly one mailbox", properties=["mailboxIds"])
    target = next(iter(boxes))
    store = call.store
    if target != message.mailbox_id:
        own = {b.id: b for b in await store.list_mailboxes(call.account.id)}
        if target is None or target not in own:
            raise MethodError("invalidProperties", "no such mailbox", properties=["mailboxIds"])
        if message.mailbox_id in own:                            # the Junk and Not junk buttons train
            await train_move(store, call.account.id, own[message.mailbox_id], own[target], [message.uid])
    if replace is not None:
        keep = {f for f in message.flags if f.startswith("\\") and f not in ("\\Seen", "\\Flagged", "\\Answered",
                                                                              "\\Draft")}
        await store.set_flags(message.mailbox_id, [message.uid], sorted(keep | set(replace)), FlagMode.REPLACE)
    if add:
        await store.set_flags(message.mailbox_id, [message.uid], add, FlagMode.ADD)
    if remove:
        await store.set_flags(message.mailbox_id, [message.uid], remove, FlagMode.REMOVE)
    if target is not None and target != message.mailbox_id:
        await store.move(message.mailbox_id, [message.uid], target)


async def destroy(call: Call, jid: str) -> None:
    found = await own_messages(call, [jid], with_summary=False)
    message = found.get(jid)
    if message is None:
        raise NotFound(jid)
    await call.store.expunge(message.mailbox_id, [message.uid])


@method("Email/set")
async def email_set(call: Call, args: dict[str, Any]) -> dict[str, Any]:
    check_set_size(call, args)
    old_state = await account_state(call.store, call.account.id)
    check_if_in_state(args, old_state)

    async def make(obj: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        raw = await compose(call, obj)
        message = await _append(call, raw, obj.get("mailboxIds"), obj.get("keywords"), obj.get("receivedAt"))
        return ids.email(message.id), _created(message)

    created, not_created = await create_each(call, args.get("create"), make)
    updated: dict[str, Any] = {}
    not_updated: dict[str, Any] = {}
    for jid, patch in (args.get("update") or {}).items():
        real = call.resolve_id(jid)
        try:
            if not isinstance(patch, dict):
                raise MethodError("invalidPatch", "not an object")
            await apply_update(call, real, patch)
            updated[real] = None
        except NotFound:
            not_updated[real] = {"type": "notFound"}
        except MethodError as exc:
            not_updated[real] = exc.as_response()
    destroyed: list[str] = []
    not_destroyed: dict[str, Any] = {}
    for jid in args.get("destroy") or []:
        real = call.resolve_id(jid)
        try:
            await destroy(call, real)
            destroyed.append(real)
        except NotFound:
            not_destroyed[real] = {"type": "notFound"}
    return set_response(call, old_state, await account_state(call.store, call.account.id), created=created,
                        notCreated=not_created, updated=updated, notUpdated=not_updated, destroyed=destroyed,
                        notDestroyed=not_destroyed)


@method("Email/import")
async def email_import(call: Call, args: dict[str, Any]) -> dict[str, Any]:
    call.check_account(args)
    old_state = await account_state(call.store, call.account.id)
    check_if_in_state(args, old_state)
    emails = args.get("emails")
    if not isinstance(emails, dict):
        raise MethodError("invalidArguments", "emails must be a map")

    async def make(obj: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        if not isinstance(obj.get("blobId"), str):
            raise MethodError("invalidProperties", "blobId is required", properties=["blobId"])
        # An uploaded blob is imported by reference (no second copy, never read whole).
        raw: bytes | BlobRef | None = await blob_ref_for(call.store, call.account.id, obj["blobId"])
        if raw is None:
            raw = await read_blob_for(call.store, call.account.id, obj["blobId"])
        if raw is None:
            raise MethodError("blobNotFound", notFound=[obj["blobId"]])
        message = await _append(call, raw, obj.get("mailboxIds"), obj.get("keywords"), obj.get("receivedAt"))
        return ids.email(message.id), _created(message)

    created, not_created = await create_each(call, emails, make)
    return {"accountId": call.account_id, "oldState": old_state,
            "newState": await account_state(call.store, call.account.id),
            "created": created or None, "notCreated": not_created or None}


@method("Email/copy")
async def email_copy(call: Call, args: dict[str, Any]) -> dict[str, Any]:
    call.check_account(args)
    if args.get("fromAccountId") == call.account_id:
        raise MethodError("invalidArguments", "fromAccountId must differ from accountId (use Email/set)")
    raise MethodError("fromAccountNotFound", "this server gives each user one account")
