"""Routing through a real DNS server (tests/dnsserver.py): MX order, implicit MX, null MX,
NXDOMAIN, unreachable resolvers, relay routes; and the per-address backoff."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from dnsserver import DNSServer
from mailhaven.config import Config, DNSConfig, RelayConfig
from mailhaven.queue.mx import Backoff, RouteError, Router, split_host_port

RECORDS = {
    "multi.example": {"MX": ["20 backup.multi.example.", "10 a.multi.example.", "10 b.multi.example."]},
    "a.multi.example": {"A": ["192.0.2.1"], "AAAA": ["2001:db8::1"]},
    "b.multi.example": {"A": ["192.0.2.2"]},
    "backup.multi.example": {"A": ["192.0.2.9"]},
    "plain.example": {"A": ["192.0.2.30"]},                    # no MX: implicit MX
    "null.example": {"MX": ["0 ."]},
    "dangling.example": {"MX": ["10 nowhere.dangling.example."]},
}


@pytest.fixture(scope="module")
def dns() -> Iterator[DNSServer]:
    with DNSServer(RECORDS) as server:
        yield server


def router(dns: DNSServer, **relay: object) -> Router:
    return Router(Config(dns=DNSConfig(nameservers=(f"127.0.0.1:{dns.port}",), timeout=2.0),
                         relay=RelayConfig(**relay)))  # type: ignore[arg-type]


async def test_mx_preference_then_addresses(dns: DNSServer) -> None:
    seen_first = set()
    for _ in range(12):
        hops = await router(dns).find_route("multi.example")
        assert [h.preference for h in hops] == [10, 10, 20]
        assert hops[-1].name == "backup.multi.example" and hops[-1].port == 25
        seen_first.add(hops[0].name)
        a = next(h for h in hops if h.name == "a.multi.example")
        assert a.addresses == ("2001:db8::1", "192.0.2.1")       # IPv6 first, then IPv4
    assert seen_first == {"a.multi.example", "b.multi.example"}   # equal preferences shuffled


async def test_implicit_mx_null_mx_and_nxdomain(dns: DNSServer) -> None:
    (hop,) = await router(dns).find_route("plain.example")
    assert (hop.name, hop.addresses, hop.preference) == ("plain.example", ("192.0.2.30",), 0)
    with pytest.raises(RouteError) as null:
        await router(dns).find_route("null.example")
    assert null.value.permanent and (null.value.code, null.value.enhanced) == (556, "5.1.10")
    with pytest.raises(RouteError) as missing:
        await router(dns).find_route("no-such-domain.example")
    assert missing.value.permanent and missing.value.enhanced == "5.1.2"
    with pytest.raises(RouteError) as dangling:
        await router(dns).find_route("dangling.example")
    assert not dangling.value.permanent                          # the MX host may come back


async def test_dead_resolver_is_temporary() -> None:
    dead = Router(Config(dns=DNSConfig(nameservers=("127.0.0.1:9",), timeout=0.3)))
    with pytest.raises(RouteError) as exc:
        await dead.find_route("multi.example")
    assert not exc.value.permanent and exc.value.code == 451


async def test_relay_routes_and_smarthost(dns: DNSServer) -> None:
    r = router(dns, routes={"partner.example": "192.0.2.50:2525"}, host="smart.multi.example:587",
               username="me", password="pw", tls="required", require_tls=("partner.example",))
    (hop,) = await r.find_route("partner.example")
    assert (hop.addresses, hop.port, hop.auth, hop.tls) == (("192.0.2.50",), 2525, None, "required")
    with pytest.raises(RouteError):                              # smart.multi.example has no address
        await r.find_route("anything.example")
    r = router(dns, host="192.0.2.60:587", username="me", password="pw", tls="required")
    (hop,) = await r.find_route("anything.example")
    assert (hop.addresses, hop.port, hop.auth, hop.tls) == (("192.0.2.60",), 587, ("me", "pw"), "required")
    assert ("partner.example", "MX") not in dns.queries


def test_split_host_port() -> None:
    assert split_host_port("mx.example", 25) == ("mx.example", 25)
    assert split_host_port("mx.example:2525", 25) == ("mx.example", 2525)
    assert split_host_port("[2001:db8::1]:26", 25) == ("2001:db8::1", 26)
    assert split_host_port("2001:db8::1", 25) == ("2001:db8::1", 25)


def test_backoff_doubles_and_resets() -> None:
    now = [1000.0]
    b = Backoff(base=10, ceiling=35, clock=lambda: now[0])
    assert b.ready("x")
    b.failed("x")
    assert not b.ready("x")
    now[0] += 10
    assert b.ready("x")
    b.failed("x")                                                # 20 s now
    now[0] += 15
    assert not b.ready("x")
    b.failed("x")
    b.failed("x")                                                # capped at 35 s
    now[0] += 35
    assert b.ready("x")
    b.ok("x")
    b.failed("x")
    now[0] += 10
    assert b.ready("x")                                          # back to the base after a success
