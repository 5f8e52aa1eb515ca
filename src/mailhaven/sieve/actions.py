"""What running a script decides: a list of actions for the caller to carry out."""

from __future__ import annotations

from dataclasses import dataclass

from mailhaven.sieve.notify import Notify


@dataclass(frozen=True, kw_only=True, slots=True)
class Vacation:
    """What a ``vacation`` command asked for (RFC 5230 4, RFC 6131)."""

    reason: str
    seconds: int
    """How long one reply to a sender lasts (:days in seconds, or :seconds)."""
    handle: str
    subject: str | None = None
    sender: str | None = None
    """:from"""
    addresses: tuple[str, ...] = ()
    mime: bool = False
    fcc: str | None = None
    """RFC 8580: the mailbox a copy of the reply is filed into (already special-use resolved)."""
    fcc_flags: tuple[str, ...] = ()
    fcc_create: bool = False


@dataclass(frozen=True, kw_only=True, slots=True)
class Action:
    kind: str
    """``keep``, ``fileinto``, ``discard``, ``redirect``, ``reject``, ``ereject`` or ``vacation``."""
    mailbox: str | None = None
    """The folder for keep (INBOX) and fileinto."""
    address: str | None = None
    """The redirect target."""
    reason: str | None = None
    """The reject/ereject text."""
    flags: tuple[str, ...] = ()
    """IMAP flags to set on the stored message (RFC 5232), for keep and fileinto."""
    create: bool = False
    """fileinto :create (RFC 5490 3.2): make the mailbox when it does not exist."""
    copy: bool = False
    """:copy (RFC 3894): this action did not cancel the implicit keep."""
    implicit: bool = False
    """The implicit keep (RFC 5228 2.10.2), not a keep the script wrote."""
    vacation: Vacation | None = None
    """The reply to send, for ``vacation``."""
    notify: Notify | None = None
    """The notification to send, for ``notify`` (RFC 5435)."""
