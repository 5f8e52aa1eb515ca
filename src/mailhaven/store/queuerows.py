"""The outbound queue's rows, the same for both backends (sqlitequeue.py, pgqueue.py).

A row is ``queued`` (waiting for ``next_attempt``) or ``held`` (by the operator). A
delivered or finally failed recipient's row is deleted in the same transaction that
records the outcome. Claiming sets ``lease_owner``/``lease_until`` on due rows in one
statement, so several runners (processes, or nodes sharing one PostgreSQL database) never
deliver the same row twice at once; a runner that dies leaves leases that expire.
The blob garbage collector keeps every blob a ``queue.blob_id`` names.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

from .api import QueueEntry

if TYPE_CHECKING:
    from ..queue.api import OutboundMessage

COLUMNS = ("id, msg, blob_id, size, mail_from, rcpt, domain, notify, orcpt, envid, ret, body, smtputf8, "
           "submitted_by, created, state, attempts, next_attempt, last_reply, warned, lease_owner, lease_until, "
           "tls_policy")
INSERT_COLUMNS = ("msg, blob_id, size, mail_from, rcpt, domain, notify, orcpt, envid, ret, body, smtputf8, "
                  "submitted_by, created, state, attempts, next_attempt, last_reply, warned, tls_policy")


def entry(row: Any) -> QueueEntry:
    r = tuple(row)
    notify = frozenset(r[7].split(",")) if r[7] else None
    return QueueEntry(id=int(r[0]), msg=r[1], blob_id=r[2], size=int(r[3]), mail_from=r[4], rcpt=r[5],
                      domain=r[6], notify=notify, orcpt=r[8], envid=r[9], ret=r[10], body=r[11],
                      smtputf8=bool(r[12]), submitted_by=r[13], created=float(r[14]), state=r[15],
                      attempts=int(r[16]), next_attempt=float(r[17]), last_reply=r[18], warned=bool(r[19]),
                      lease_owner=r[20], lease_until=float(r[21]) if r[21] is not None else None,
                      tls_policy=r[22] or "")


def rows(message: OutboundMessage, now: float) -> list[tuple[Any, ...]]:
    """The INSERT_COLUMNS values of each recipient's row."""
    msg = uuid.uuid4().hex
    out = []
    for r in message.recipients:
        domain = r.address.rpartition("@")[2].lower()
        notify = ",".join(sorted(r.notify)) if r.notify else None
        out.append((msg, message.blob.id, message.blob.size, message.mail_from, r.address, domain, notify,
                    r.orcpt, message.envid, message.ret, message.body, message.smtputf8,
                    message.authenticated_as, now, "queued", 0, now, "", False, message.tls_policy))
    return out
