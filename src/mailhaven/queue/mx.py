"""Where mail for a domain goes: relay routes, then MX records, then the domain itself.

RFC 5321 5.1: the MX records of the domain, lowest preference first (equal preferences in
random order, to spread load); with no MX record the domain's own address records are an
implicit MX of preference 0. RFC 7505: a single MX of "." (null MX) says the domain takes
no mail: a permanent failure. A domain that does not exist (NXDOMAIN) is permanent too;
a resolver failure or timeout is temporary. Each host's addresses are tried IPv6 first,
then IPv4, as the RFC 6724 default does for global addresses.

``[relay]`` overrides DNS: ``routes = {"example.com" = "mx.example.net:2525"}`` for one
domain, ``host`` for everything else (a smarthost, with AUTH when a username is set).
"""

from __future__ import annotations

import ipaddress
import random
import time
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

import dns.asyncresolver
import dns.exception
import dns.flags
import dns.nameserver
import dns.rdatatype
import dns.resolver

from ..config import Config
from . import dane, mtasts
from .mtasts import PolicyFinder

SMTP_PORT = 25
MAX_MX = 10
"""Hosts tried per destination (Postfix tries 5 by default; a few more costs little)."""


@dataclass(frozen=True, kw_only=True)
class Hop:
    name: str
    """MX host name (or relay host), for TLS SNI and logs."""
    port: int
    addresses: tuple[str, ...]
    """Resolved IPs in the order to try."""
    preference: int
    tls: str = "opportunistic"
    """``opportunistic`` | ``required`` | ``dane`` | ``implicit`` | ``none``."""
    auth: tuple[str, str] | None = None
    """Smarthost AUTH (user, password)."""
    cafile: str | None = None
    """CA bundle verifying this hop's certificate (``[tls] ca_file``); None: the system's."""
    policy: str = ""
    """What made TLS required here (``mta-sts``, ``DANE``), for logs and diagnostics."""
    tlsa: tuple[dane.TLSA, ...] = ()
    """With ``tls="dane"``: the records the certificate must match (RFC 7672)."""
    policy_text: str = ""
    """The policy as TLS reports quote it (RFC 8460 4.4 ``policy-string``), lines joined by \\n."""


class RouteError(Exception):
    def __init__(self, text: str, *, permanent: bool, code: int | None = None,
                 enhanced: str | None = None, tls: tuple[str, str, str] | None = None) -> None:
        super().__init__(text)
        self.tls = tls
        """(policy type, policy text, RFC 8460 result type) when a TLS policy stopped the route."""
        self.text = text
        self.permanent = permanent
        self.code = code if code is not None else (550 if permanent else 451)
        self.enhanced = enhanced if enhanced is not None else ("5.1.2" if permanent else "4.4.3")


R = TypeVar("R", bound=dns.resolver.BaseResolver)


def configured_resolver(kind: type[R], config: Config) -> R:
    """A resolver of ``kind`` (dnspython's blocking or async one) that honours
    ``[dns] nameservers = ["127.0.0.1:5353", "::1"]`` and ``[dns] timeout``."""
    if not config.dns.nameservers:
        resolver = kind()
    else:
        resolver = kind(configure=False)
        servers: list[str | dns.nameserver.Nameserver] = []
        for entry in config.dns.nameservers:
            host, port = split_host_port(entry, 53)
            servers.append(dns.nameserver.Do53Nameserver(host, port))
        resolver.nameservers = servers
    resolver.timeout = config.dns.timeout
    resolver.lifetime = config.dns.timeout * 2
    # RFC 6840 5.7: AD in the query asks a validating resolver to say which answers it
    # validated; DANE (queue/dane.py) believes only those.
    resolver.flags = dns.flags.RD | dns.flags.AD
    return resolver


def make_resolver(config: Config) -> dns.asyncresolver.Resolver:
    """The async resolver the queue (and every other async DNS user) looks names up with."""
    return configured_resolver(dns.asyncresolver.Resolver, config)


def split_host_port(value: str, default_port: int) -> tuple[str, int]:
    """``host``, ``host:port``, ``[v6]:port`` or a bare IPv6 address."""
    value = value.strip()
    if value.startswith("["):
        host, _, rest = value[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") else default_port
    if value.count(":") == 1:
        host, _, port = value.partition(":")
        return host, int(port)
    return value, default_port


class Router:
    def __init__(self, config: Config, resolver: dns.asyncresolver.Resolver | None = None,
                 store: Any = None) -> None:
        self.config = config
        self.resolver = resolver or make_resolver(config)
        self.cafile = config.tls.ca_file or None
        self.sts: PolicyFinder | None = None
        if store is not None and config.mta_sts.outbound:
            self.sts = PolicyFinder(store, self.resolver, self._addresses, cafile=self.cafile)

    def _tls_for(self, domain: str, default: str = "opportunistic") -> str:
        return "required" if domain in self.config.relay.require_tls else default

    async def find_route(self, domain: str) -> list[Hop]:
        domain = domain.lower().rstrip(".")
        relay = self.config.relay
        route = relay.routes.get(domain) or relay.host
        if route:
            host, port = split_host_port(route, SMTP_PORT)
            auth = (relay.username, relay.password) if relay.username and not relay.routes.get(domain) else None
            tls = relay.tls if not relay.routes.get(domain) else self._tls_for(domain)
            return [Hop(name=host, port=port, addresses=tuple(await self._addresses(host)), preference=0,
                        tls=self._tls_for(domain, tls), auth=auth, cafile=self.cafile)]
        hosts, mx_secure = await self._mx(domain)
        hops = []
        unusable: list[str] = []
        for preference, host in hosts[:MAX_MX]:
            try:
                addresses, addresses_secure = await self._host_addresses(host)
            except RouteError:
                continue                      # try the next MX (RFC 5321 5.1)
            hop = Hop(name=host, port=SMTP_PORT, addresses=tuple(addresses), preference=preference,
                      tls=self._tls_for(domain), cafile=self.cafile)
            if self.config.dane.enabled and mx_secure and addresses_secure:
                try:                          # RFC 7672 2.2: every step of the way signed
                    records = await dane.lookup(self.resolver, host)
                except dane.LookupFailed as exc:
                    unusable.append(str(exc))  # 2.2: a failed TLSA lookup makes the host unusable
                    continue
                if records:
                    hop = replace(hop, tls="dane", tlsa=records, policy="DANE", policy_text="\n".join(
                        f"_25._tcp.{host} IN TLSA {r.usage} {r.selector} {r.mtype} {r.data.hex()}" for r in records))
            hops.append(hop)
        if not hops:
            if unusable:
                raise RouteError(f"{domain}: " + "; ".join(unusable), permanent=False, enhanced="4.7.5",
                                 tls=("tlsa", "", "dnssec-invalid"))
            raise RouteError(f"no address for any mail exchanger of {domain}", permanent=False)
        if self.sts is not None:                       # RFC 8461 5: only MX hosts the policy allows
            policy = await self.sts.policy_for(domain)
            try:
                hops = mtasts.apply(policy, hops)
            except mtasts.NoMatchingMX as exc:
                raise RouteError(f"{domain}: {exc}", permanent=False, enhanced="4.7.5",
                                 tls=("sts", policy.text if policy else "", "validation-failure")) from None
        return hops

    async def _mx(self, domain: str) -> tuple[list[tuple[int, str]], bool]:
        """The MX hosts in the order to try, and whether the RRset was DNSSEC-validated."""
        try:
            answer = await self.resolver.resolve(domain, "MX")
        except dns.resolver.NXDOMAIN:
            raise RouteError(f"domain {domain} does not exist", permanent=True,
                             enhanced="5.1.2") from None
        except dns.resolver.NoAnswer:
            return [(0, domain)], False        # implicit MX (RFC 5321 5.1); no DANE for it here
        except (dns.exception.Timeout, dns.resolver.NoNameservers) as exc:
            raise RouteError(f"MX lookup for {domain} failed: {exc}", permanent=False) from None
        records = [(int(r.preference), r.exchange.to_text(omit_final_dot=True).lower()) for r in answer]
        if any(host in ("", ".") for _, host in records):
            if len(records) == 1:              # RFC 7505 3: null MX
                raise RouteError(f"{domain} accepts no mail (null MX)", permanent=True, code=556,
                                 enhanced="5.1.10")
            records = [r for r in records if r[1] not in ("", ".")]
        by_pref: dict[int, list[str]] = {}
        for pref, host in records:
            by_pref.setdefault(pref, []).append(host)
        ordered: list[tuple[int, str]] = []
        for pref in sorted(by_pref):
            hosts = by_pref[pref]
            random.shuffle(hosts)
            ordered.extend((pref, h) for h in hosts)
        return ordered, dane.secure(answer)

    async def _addresses(self, host: str) -> list[str]:
        return (await self._host_addresses(host))[0]

    async def _host_addresses(self, host: str) -> tuple[list[str], bool]:
        """The host's addresses, and whether every answer that gave some was validated."""
        try:
            return [str(ipaddress.ip_address(host))], False
        except ValueError:
            pass
        found: list[str] = []
        secure = True
        for rdtype in ("AAAA", "A"):
            try:
                answer = await self.resolver.resolve(host, rdtype)
            except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
                continue
            except (dns.exception.Timeout, dns.resolver.NoNameservers):
                continue
            found.extend(r.to_text() for r in answer)
            secure = secure and dane.secure(answer)
        if not found:
            raise RouteError(f"no address for {host}", permanent=False)
        return found, secure


@dataclass
class Backoff:
    """Hosts that just failed are skipped for a while (per IP address), so one dead
    server does not cost every message a connect timeout."""

    base: float = 60.0
    ceiling: float = 3600.0
    clock: object = field(default=time.monotonic)
    _until: dict[str, tuple[float, float]] = field(default_factory=dict)

    def _now(self) -> float:
        return float(self.clock())  # type: ignore[operator]

    def ready(self, key: str) -> bool:
        entry = self._until.get(key)
        return entry is None or entry[0] <= self._now()

    def failed(self, key: str) -> None:
        _, last = self._until.get(key, (0.0, 0.0))
        delay = min(self.ceiling, max(self.base, last * 2))
        self._until[key] = (self._now() + delay, delay)

    def ok(self, key: str) -> None:
        self._until.pop(key, None)
