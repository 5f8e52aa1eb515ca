"""What running a script decides: a list of actions for the caller to carry out."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True, slots=True)
class Action:
    kind: str
    """``keep``, ``fileinto``, ``discard``, ``redirect``, ``reject`` or ``ereject``."""
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
