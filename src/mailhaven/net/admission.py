"""Who may open a connection: caps per address, per network and in total.

A slow client costs the server nothing but a slot, so slots are what an attacker takes.
The rules, checked in this order when a connection arrives:

1. An address holds at most ``per_address`` connections, and at most
   ``unauthenticated_per_address`` that have not logged in yet.
2. A network (IPv4 /24, IPv6 /64) holds at most ``per_network``.
3. The listener holds at most ``total``.

A connection from an address with nothing open is never refused by rule 2 or 3 while
some connection that has not logged in is open: the oldest such connection of the same
network (rule 2), or of the network holding the most (rule 3), is evicted to make room.
So neither one address nor one network can take every slot from the rest of the world.
IPv6 addresses count by their /64, as one host usually holds a whole /64.

Rules 1 and 2 count what one process holds, unless a :class:`SharedCounts` is plugged
in (port 25's workers, smtp/balance.py): then they count every live worker's
connections, and rule 3 stays this process's share (smtp/workers.py).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, Protocol

Kind = Literal["address", "unauthenticated", "network"]


@dataclass(frozen=True, kw_only=True)
class Caps:
    total: int
    """Connections per listener."""
    per_address: int
    """Connections per client address, logged in or not."""
    unauthenticated_per_address: int
    """Connections per client address that have not logged in."""
    per_network: int
    """Connections per IPv4 /24 or IPv6 /64."""


def address_key(ip: str) -> str:
    """The address a cap counts: IPv4 as is, IPv6 by its /64."""
    try:
        addr = ipaddress.ip_address(ip.split("%")[0])
    except ValueError:
        return ip
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.ipv4_mapped is not None:
            return str(addr.ipv4_mapped)
        return str(ipaddress.ip_network(f"{addr}/64", strict=False))
    return str(addr)


def network_key(ip: str) -> str:
    """The network a cap counts: IPv4 /24, IPv6 /64."""
    key = address_key(ip)
    try:
        addr = ipaddress.ip_address(key)
    except ValueError:
        return key                              # an IPv6 /64 already, or "unix"
    return str(ipaddress.ip_network(f"{addr}/24", strict=False))


class SharedCounts(Protocol):
    """Counts held by several processes together: ``add`` this process's changes,
    ``held`` the total (this process's own included). May over-count, never under-count."""

    def held(self, kind: Kind, key: str) -> int: ...

    def add(self, kind: Kind, key: str, delta: int) -> None: ...


@dataclass(eq=False)
class Slot:
    """One admitted connection's place in the counts."""

    address: str
    network: str
    evict: Callable[[], None]
    """Ends the connection (politely, at its next read) to make room for a newcomer."""
    authenticated: bool = False
    evicted: bool = False


@dataclass
class Admission:
    caps: Caps
    slots: dict[Slot, None] = field(default_factory=dict)
    """Open connections, oldest first."""
    by_address: dict[str, int] = field(default_factory=dict)
    unauthenticated: dict[str, int] = field(default_factory=dict)
    by_network: dict[str, int] = field(default_factory=dict)
    shared: SharedCounts | None = None
    """Rules 1 and 2 over several processes; None: this process alone (no cost)."""

    def __len__(self) -> int:
        return len(self.slots)

    def admit(self, ip: str, evict: Callable[[], None]) -> Slot | None:
        """A slot for a new connection from ``ip``, or None: refuse it."""
        caps = self.caps
        address, network = address_key(ip), network_key(ip)
        shared = self.shared
        if shared is None:
            held = self.by_address.get(address, 0)
            unauthenticated = self.unauthenticated.get(address, 0)
            in_network = self.by_network.get(network, 0)
        else:
            held = shared.held("address", address)
            unauthenticated = shared.held("unauthenticated", address)
            in_network = shared.held("network", network)
        if held >= caps.per_address or unauthenticated >= caps.unauthenticated_per_address:
            return None
        if in_network >= caps.per_network:
            if held or not self._evict_from(network):       # evicts only what this process holds
                return None
        if len(self.slots) >= caps.total:
            if held or not any(self._evict_from(n) for n in self._networks_busiest_first()):
                return None
        slot = Slot(address, network, evict)
        self.slots[slot] = None
        _add(self.by_address, address, 1)
        _add(self.unauthenticated, address, 1)
        _add(self.by_network, network, 1)
        if shared is not None:
            shared.add("address", address, 1)
            shared.add("unauthenticated", address, 1)
            shared.add("network", network, 1)
        return slot

    def authenticated(self, slot: Slot) -> None:
        """The connection logged in: it no longer counts against the unauthenticated cap."""
        if not slot.authenticated and slot in self.slots:
            slot.authenticated = True
            _add(self.unauthenticated, slot.address, -1)
            if self.shared is not None:
                self.shared.add("unauthenticated", slot.address, -1)

    def release(self, slot: Slot) -> None:
        if slot not in self.slots:
            return
        del self.slots[slot]
        _add(self.by_address, slot.address, -1)
        _add(self.by_network, slot.network, -1)
        if not slot.authenticated:
            _add(self.unauthenticated, slot.address, -1)
        if self.shared is not None:
            self.shared.add("address", slot.address, -1)
            self.shared.add("network", slot.network, -1)
            if not slot.authenticated:
                self.shared.add("unauthenticated", slot.address, -1)

    def _networks_busiest_first(self) -> list[str]:
        return sorted(self.by_network, key=self.by_network.__getitem__, reverse=True)

    def _evict_from(self, network: str) -> bool:
        """End the oldest connection of ``network`` that has not logged in; its slot is
        freed at once (the connection says goodbye on its own time)."""
        for slot in self.slots:
            if slot.network == network and not slot.authenticated and not slot.evicted:
                slot.evicted = True
                self.release(slot)
                slot.evict()
                return True
        return False


def _add(counts: dict[str, int], key: str, delta: int) -> None:
    value = counts.get(key, 0) + delta
    if value > 0:
        counts[key] = value
    else:
        counts.pop(key, None)
