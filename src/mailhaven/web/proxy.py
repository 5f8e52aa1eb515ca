"""Requests through a trusted reverse proxy (``[http] trusted_proxies``): an ASGI middleware
that, when the connection comes from a trusted proxy, takes the client address from
``X-Forwarded-For`` (the nearest address not itself a trusted proxy), the scheme from
``X-Forwarded-Proto`` and the host from ``X-Forwarded-Host``. Everything after it (the
session resource's URLs, "is this HTTPS", the client address of logs and throttles) sees
the request as the client made it. From any other peer the headers are ignored, so no one
can claim another address by sending them.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(values: Iterable[str]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(v.strip(), strict=False) for v in values if v.strip())


def _trusted(address: str, networks: tuple[Network, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address.strip().strip("[]").split("%")[0])
    except ValueError:
        return False
    return any(ip in net for net in networks)


def _header(scope: Scope, name: bytes) -> str | None:
    values = [v.decode("latin-1") for k, v in scope.get("headers", []) if k.lower() == name]
    return ",".join(values) if values else None


class ProxyHeaders:
    def __init__(self, app: ASGIApp, trusted: Iterable[str]) -> None:
        self.app = app
        self.networks = parse_networks(trusted)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket") and self.networks:
            client = scope.get("client")
            if client and _trusted(client[0], self.networks):
                scope = dict(scope)
                self._rewrite(scope, client)
        await self.app(scope, receive, send)

    def _rewrite(self, scope: dict[str, Any], client: tuple[str, int]) -> None:
        forwarded_for = _header(scope, b"x-forwarded-for")
        if forwarded_for:
            # Right to left: each proxy appends the address it saw; the first one that is
            # not a trusted proxy is the client.
            hops = [h.strip() for h in forwarded_for.split(",") if h.strip()]
            address = next((h for h in reversed(hops) if not _trusted(h, self.networks)), hops[0] if hops else "")
            if address:
                scope["client"] = (address.strip("[]"), 0)
        proto = _header(scope, b"x-forwarded-proto")
        if proto:
            last = proto.split(",")[-1].strip().lower()
            if last in ("http", "https"):
                scope["scheme"] = last
        host = _header(scope, b"x-forwarded-host")
        if host:
            host = host.split(",")[-1].strip()
            if host and all(c.isalnum() or c in ".-:[]" for c in host):
                scope["headers"] = [(k, v) for k, v in scope["headers"] if k.lower() != b"host"]
                scope["headers"].append((b"host", host.encode("latin-1")))
