"""What this server tells the world about itself, derived from the configuration only: the
MTA-STS policy (RFC 8461 3.2) and the mail services clients connect to (RFC 6186, RFC 8314).

The web routes (web/wellknown.py, web/autoconfig.py) and the DNS records (dnsrecords.py)
both read from here, so the policy served and the ``id`` published, and the servers in an
autoconfig answer and the SRV records, cannot drift apart.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from .config import Config


def mta_sts_policy(config: Config) -> str:
    """The policy file: key/value lines ending in CRLF (RFC 8461 3.2)."""
    lines = [
        "version: STSv1",
        f"mode: {config.mta_sts.mode}",
        f"mx: {config.hostname.rstrip('.')}",
        f"max_age: {int(config.mta_sts.max_age)}",
    ]
    return "".join(line + "\r\n" for line in lines)


def mta_sts_id(config: Config) -> str:
    """The ``id`` of the ``_mta-sts`` TXT record: 1-32 alphanumerics that change whenever the
    policy does (RFC 8461 3.1), here a digest of the policy text."""
    return hashlib.sha256(mta_sts_policy(config).encode()).hexdigest()[:20]


@dataclass(frozen=True, kw_only=True)
class Service:
    """One listener a mail client may use."""

    protocol: str
    """``imap``, ``pop3`` or ``smtp`` (submission)."""
    listener: str
    """The ``[listen]`` key: ``imaps``, ``submission``..."""
    port: int
    implicit_tls: bool
    """TLS from the first byte (RFC 8314 3); otherwise STARTTLS on a cleartext port."""
    srv: str
    """The RFC 6186 / RFC 8314 5.1 SRV service label, ``_imaps`` ..."""


# In order of preference: implicit TLS first (RFC 8314 3), then STARTTLS.
_SERVICES = (
    ("imap", "imaps", True, "_imaps"),
    ("imap", "imap", False, "_imap"),
    ("pop3", "pop3s", True, "_pop3s"),
    ("pop3", "pop3", False, "_pop3"),
    ("smtp", "submissions", True, "_submissions"),
    ("smtp", "submission", False, "_submission"),
)


def client_services(config: Config) -> list[Service]:
    """The enabled client listeners with their ports, most preferred first per protocol."""
    services = []
    for protocol, listener, implicit, srv in _SERVICES:
        address = config.listen.address(listener)
        if address is not None:
            services.append(Service(protocol=protocol, listener=listener, port=address[1],
                                    implicit_tls=implicit, srv=srv))
    return services


def preferred(config: Config, protocol: str) -> Service | None:
    return next((s for s in client_services(config) if s.protocol == protocol), None)
