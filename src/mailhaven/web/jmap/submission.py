"""Identity/get, changes, set; EmailSubmission/get, changes, query, set (RFC 8621 6, 7);
Quota/get (RFC 9425).

Sending follows the same rules as SMTP submission: the envelope sender must be one of the
account's addresses, local recipients get the message in their INBOX at once, others go
through the outbound queue (``ctx.outbound``) one entry per recipient. The copy sent has
no ``Bcc:`` header. ``onSuccessUpdateEmail`` / ``onSuccessDestroyEmail`` run as an implicit
Email/set whose response follows the EmailSubmission/set response.

Identities: one per address of the account (its own and its aliases); name, replyTo,
bcc and signatures are kept in the ``jmap_identities`` table. Submissions are kept per
process for EmailSubmission/get (their delivery goes on in the queue).
"""

from __future__ import annotations

import email.utils
import time
from dataclasses import dataclass, field
from email.parser import BytesHeaderParser
from email.policy import compat32
from typing import Any

from ...filter.ratelimit import shared_limiter
from ...localdelivery import deliver_local
from ...message.authors import foreign_authors
from ...queue.api import OutboundMessage, OutboundRecipient
from ...smtp.codes import Reply
from ...store.api import NotFound
from .core import check_if_in_state, check_set_size, create_each, get_ids, set_response
from .email_get import own_messages
from .email_set import apply_update, destroy
from .registry import QUOTA, SUBMISSION, Call, MethodError, ids, method
from .state import account_state

IDENTITY_FIELDS = {"name": "", "replyTo": None, "bcc": None, "textSignature": "", "htmlSignature": ""}


async def identities(call: Call) -> list[dict[str, Any]]:
    addresses = list(dict.fromkeys([call.account.address, *await call.store.addresses_of(call.account.id)]))
    saved = await call.store.identity_settings(call.account.id)
    out = []
    for n, address in enumerate(a for a in addresses if not a.startswith("@")):
        data = {**IDENTITY_FIELDS, **saved.get(address, {})}
        out.append({"id": f"I{n}", "email": address, "mayDelete": False, **data})
    return out


@method("Identity/get", SUBMISSION)
async def identity_get(call: Call, args: dict[str, Any]) -> dict[str, Any]:
    wanted = get_ids(call, args)
    found = await identities(call)
    listed = found if wanted is None else [i for i in found if i["id"] in wanted]
    return {"accountId": call.account_id, "state": await account_state(call.store, call.account.id),
            "list": listed, "notFound": [w for w in (wanted or []) if w not in {i["id"] for i in found}]}


@method("Identity/changes", SUBMISSION)
async def identity_changes(call: Call, args: dict[str, Any]) -> dict[str, Any]:
    call.check_account(args)
    raise MethodError("cannotCalculateChanges", "fetch the identities again")


@method("Identity/set", SUBMISSION)
async def identity_set(call: Call, args: dict[str, Any]) -> dict[str, Any]:
    check_set_size(call, args)
    old = await account_state(call.store, call.account.id)
    check_if_in_state(args, old)
    current = {i["id"]: i for i in await identities(call)}
    updated: dict[str, Any] = {}
    not_updated: dict[str, Any] = {}
    for iid, patch in (args.get("update") or {}).items():
        identity = current.get(iid)
        if identity is None or not isinstance(patch, dict):
            not_updated[iid] = {"type": "notFound"}
            continue
        bad = [k for k in patch if k not in IDENTITY_FIELDS]
        if bad:
            not_updated[iid] = {"type": "invalidProperties", "properties": bad}
            continue
        data = {k: identity[k] for k in IDENTITY_FIELDS} | patch
        await call.store.save_identity_settings(call.account.id, identity["email"], data)
        updated[iid] = None
    not_created = {cid: {"type": "forbidden", "description": "identities follow the account's addresses; "
                         "add an alias with 'mailhaven alias add'"} for cid in (args.get("create") or {})}
    not_destroyed = {i: {"type": "forbidden", "description": "an address's identity cannot be removed"}
                     for i in (args.get("destroy") or [])}
    return set_response(call, old, await account_state(call.store, call.account.id), updated=updated,
                        notUpdated=not_updated, notCreated=not_created, notDestroyed=not_destroyed)


@dataclass
class Submission:
    id: str
    identity_id: str
    email_id: str
    thread_id: str
    envelope: dict[str, Any]
    send_at: float
    delivery: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {"id": self.id, "identityId": self.identity_id, "emailId": self.email_id,
                "threadId": self.thread_id, "envelope": self.envelope,
                "sendAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.send_at)),
                "undoStatus": "final", "deliveryStatus": self.delivery, "dsnBlobIds": [], "mdnBlobIds": []}


def _submissions(call: Call) -> dict[str, Submission]:
    per_account: dict[int, dict[str, Submission]] = call.app.extras.setdefault("jmap_submissions", {})
    return per_account.setdefault(call.account.id, {})


async def _send(call: Call, sub_args: dict[str, Any]) -> Submission:
    email_id = call.resolve_id(str(sub_args.get("emailId", "")))
    found = await own_messages(call, [email_id], with_summary=True)
    message = found.get(email_id)
    if message is None:
        raise MethodError("invalidProperties", "no such email", properties=["emailId"])
    own = [i for i in await identities(call) if i["id"] == sub_args.get("identityId")] or (await identities(call))[:1]
    identity = own[0]
    raw = bytes(await call.store.read_blob(message.blob_id))
    end = raw.find(b"\r\n\r\n")
    header = BytesHeaderParser(policy=compat32).parsebytes(raw[: end + 4] if end >= 0 else raw)
    envelope = sub_args.get("envelope")
    addresses = {a.lower() for a in await call.store.addresses_of(call.account.id)} | {call.account.address}
    if envelope is None:
        rcpts = [a for _, a in email.utils.getaddresses(
            [str(v) for k in ("To", "Cc", "Bcc") for v in (header.get_all(k) or [])]) if "@" in a]
        envelope = {"mailFrom": {"email": identity["email"], "parameters": None},
                    "rcptTo": [{"email": a, "parameters": None} for a in dict.fromkeys(rcpts)]}
    mail_from = str((envelope.get("mailFrom") or {}).get("email", ""))
    rcpt_to = [str(r.get("email", "")) for r in envelope.get("rcptTo") or [] if isinstance(r, dict)]
    if mail_from.lower() not in addresses:
        raise MethodError("forbiddenFrom", f"{mail_from} is not one of your addresses")
    refused = foreign_authors(raw, addresses)      # RFC 8621 7.5: as SMTP submission checks it
    if refused is not None:
        raise MethodError("forbiddenFrom", refused)
    if not rcpt_to or any("@" not in r or any(c in r for c in "\r\n<> ") for r in rcpt_to):
        raise MethodError("noRecipients" if not rcpt_to else "invalidRecipients", "check the recipients")
    if len(rcpt_to) > call.app.config.limits.recipients:
        raise MethodError("tooManyRecipients", f"at most {call.app.config.limits.recipients}")
    outgoing = _without_bcc(raw)
    blob = await call.store.put_blob(outgoing)
    local: dict[str, list[int]] = {}
    remote: list[str] = []
    delivery: dict[str, Any] = {}
    for rcpt in rcpt_to:
        resolution = await call.store.resolve(rcpt)
        if resolution.local_domain:
            if not resolution.account_ids:
                delivery[rcpt] = {"smtpReply": "550 5.1.1 no such user", "delivered": "no", "displayed": "unknown"}
                continue
            local[rcpt] = list(resolution.account_ids)
            delivery[rcpt] = {"smtpReply": "250 2.0.0 delivered", "delivered": "yes", "displayed": "unknown"}
        else:
            remote.append(rcpt)
            delivery[rcpt] = {"smtpReply": "250 2.0.0 queued", "delivered": "queued", "displayed": "unknown"}
    if remote and call.app.outbound is None:
        raise MethodError("forbiddenToSend", "delivery to other servers is not available")
    try:
        await shared_limiter(call.app).submitted(call.account.id, call.account.address, len(remote))
    except Reply:
        raise MethodError("forbiddenToSend", "sending rate limit reached, try again later") from None
    if local:
        await deliver_local(call.store, blob, local, mail_from=mail_from,   # each recipient's Sieve script
                            sieve=call.app.config.sieve)
    if remote:
        await call.app.outbound.enqueue(OutboundMessage(
            blob=blob, mail_from=mail_from, recipients=tuple(OutboundRecipient(address=r) for r in remote),
            smtputf8=not all(r.isascii() for r in [mail_from, *remote]),
            body="7BIT" if outgoing.isascii() else "8BITMIME", authenticated_as=call.account.address))
    n = call.app.extras.setdefault("jmap_submission_counter", [0])
    n[0] += 1
    sub = Submission(id=f"S{n[0]}", identity_id=identity["id"], email_id=email_id,
                     thread_id=ids.thread(message.thread_id), envelope=envelope, send_at=time.time(),
                     delivery=delivery)
    _submissions(call)[sub.id] = sub
    return sub


def _without_bcc(raw: bytes) -> bytes:
    end = raw.find(b"\r\n\r\n")
    if end < 0:
        return raw
    lines = raw[: end + 2].split(b"\r\n")
    out, skipping = [], False
    for line in lines:
        if line[:1] in (b" ", b"\t") and skipping:
            continue
        skipping = line.lower().startswith(b"bcc:")
        if not skipping:
            out.append(line)
    return b"\r\n".join(out) + raw[end:]


@method("EmailSubmission/set", SUBMISSION)
async def submission_set(call: Call, args: dict[str, Any]) -> dict[str, Any]:
    check_set_size(call, args)
    old = await account_state(call.store, call.account.id)
    check_if_in_state(args, old)

    async def make(obj: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        sub = await _send(call, obj)
        return sub.id, {"id": sub.id, "sendAt": sub.as_json()["sendAt"], "undoStatus": "final"}

    created, not_created = await create_each(call, args.get("create"), make)
    not_updated = {sid: {"type": "cannotUnsend", "description": "sent at once"} for sid in (args.get("update") or {})}
    not_destroyed = {sid: {"type": "forbidden"} for sid in (args.get("destroy") or [])}
    out = set_response(call, old, await account_state(call.store, call.account.id), created=created,
                       notCreated=not_created, notUpdated=not_updated, notDestroyed=not_destroyed)
    # RFC 8621 7.5: the implicit Email/set for the submissions that succeeded.
    update_email = args.get("onSuccessUpdateEmail") or {}
    destroy_email = args.get("onSuccessDestroyEmail") or []
    if created and (update_email or destroy_email):
        email_old = await account_state(call.store, call.account.id)
        by_ref = {f"#{cid}": _submissions(call)[c["id"]].email_id for cid, c in created.items()}
        by_ref |= {c["id"]: _submissions(call)[c["id"]].email_id for c in created.values()}
        updated: dict[str, Any] = {}
        not_upd: dict[str, Any] = {}
        for ref, patch in update_email.items():
            if ref in by_ref:
                try:
                    if not isinstance(patch, dict):
                        raise MethodError("invalidPatch", "not an object")
                    await apply_update(call, by_ref[ref], patch)
                    updated[by_ref[ref]] = None
                except (NotFound, MethodError) as exc:
                    not_upd[by_ref[ref]] = exc.as_response() if isinstance(exc, MethodError) else {"type": "notFound"}
        destroyed = []
        not_destroyed_email: dict[str, Any] = {}
        for ref in destroy_email:
            if ref in by_ref:
                try:
                    await destroy(call, by_ref[ref])
                    destroyed.append(by_ref[ref])
                except NotFound:
                    not_destroyed_email[by_ref[ref]] = {"type": "notFound"}
        out["__extra__"] = [("Email/set", set_response(
            call, email_old, await account_state(call.store, call.account.id), updated=updated,
            notUpdated=not_upd, destroyed=destroyed, notDestroyed=not_destroyed_email))]
    return out


@method("EmailSubmission/get", SUBMISSION)
async def submission_get(call: Call, args: dict[str, Any]) -> dict[str, Any]:
    wanted = get_ids(call, args)
    subs = _submissions(call)
    chosen = list(subs.values()) if wanted is None else [subs[w] for w in wanted if w in subs]
    return {"accountId": call.account_id, "state": await account_state(call.store, call.account.id),
            "list": [s.as_json() for s in chosen], "notFound": [w for w in wanted or [] if w not in subs]}


@method("EmailSubmission/changes", SUBMISSION)
async def submission_changes(call: Call, args: dict[str, Any]) -> dict[str, Any]:
    call.check_account(args)
    raise MethodError("cannotCalculateChanges", "fetch the submissions again")


@method("EmailSubmission/query", SUBMISSION)
async def submission_query(call: Call, args: dict[str, Any]) -> dict[str, Any]:
    call.check_account(args)
    flt = args.get("filter") or {}
    subs = list(_submissions(call).values())
    if isinstance(flt.get("emailIds"), list):
        subs = [s for s in subs if s.email_id in flt["emailIds"]]
    if isinstance(flt.get("identityIds"), list):
        subs = [s for s in subs if s.identity_id in flt["identityIds"]]
    subs.sort(key=lambda s: s.send_at)
    return {"accountId": call.account_id, "queryState": await account_state(call.store, call.account.id),
            "canCalculateChanges": False, "position": 0, "ids": [s.id for s in subs], "total": len(subs)}


@method("Quota/get", QUOTA)
async def quota_get(call: Call, args: dict[str, Any]) -> dict[str, Any]:
    wanted = get_ids(call, args)
    account = await call.store.get_account_by_id(call.account.id)
    quota = {"id": "Qstorage", "resourceType": "octets", "used": account.used,
             "hardLimit": account.quota if account.quota is not None else 0, "scope": "account",
             "name": f"{account.address} storage", "types": ["Mail"], "warnLimit": None, "softLimit": None,
             "description": None if account.quota is not None else "unlimited (hardLimit 0)"}
    found = [quota] if wanted is None or "Qstorage" in wanted else []
    return {"accountId": call.account_id, "state": str(account.used), "list": found,
            "notFound": [w for w in wanted or [] if w != "Qstorage"]}
