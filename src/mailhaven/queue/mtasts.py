"""MTA-STS for outbound mail (RFC 8461): which MX hosts of a recipient domain may receive
its mail, and that they must do so over TLS with a certificate that verifies.

A domain announces a policy with a TXT record at ``_mta-sts.<domain>`` (``v=STSv1; id=...``)
and serves it at ``https://mta-sts.<domain>/.well-known/mta-sts.txt``. :class:`PolicyFinder`
looks the record up on every delivery attempt, fetches the policy when its ``id`` is new,
and keeps it in the store (shared by every process and node) for its ``max_age``: a cached
policy that has not expired holds even when DNS or the policy host fails (5.1), so an
attacker who blocks them cannot take the protection away. With no record and no cached
policy the domain has none, and delivery is as before (opportunistic TLS).

:func:`apply` then narrows the route: in ``enforce`` mode only MX hosts the policy names are
tried, each with TLS required and its certificate verified against the MX name (4.1, 4.2);
when none matches, the message waits in the queue (a temporary failure, never a bounce,
as the RFC's senders "MUST NOT deliver" there). ``testing`` changes nothing but is logged.
"""

from __future__ import annotations

import asyncio
import re
import ssl
import time
from dataclasses import dataclass, replace
from typing import Any

import dns.exception
import dns.resolver

from ..logs import Log
from ..store.api import CachedPolicy
from ..tls import client_context

POLICY_PATH = "/.well-known/mta-sts.txt"                 # RFC 8461 3.2
MAX_POLICY = 64 * 1024
"""Largest policy body read (3.3 leaves the bound to the sender; policies are a few lines)."""
MAX_AGE = 31557600                                       # RFC 8461 3.2: about a year
FETCH_TIMEOUT = 30.0
"""For the whole HTTPS fetch (3.3 suggests no more than a minute)."""
MODES = ("enforce", "testing", "none")


class PolicyError(ValueError):
    """A policy (or TXT record) that does not follow RFC 8461 3.1/3.2."""


@dataclass(frozen=True, kw_only=True)
class Policy:
    mode: str
    mx: tuple[str, ...]
    max_age: int
    text: str = ""
    """Its lines as served, newline-separated (quoted in TLS reports, RFC 8460 4.4)."""

    def matches(self, host: str) -> bool:
        """RFC 8461 4.1: an ``mx`` pattern is a name, or ``*.`` and a name matching exactly
        one more label on the left."""
        host = host.lower().rstrip(".")
        for pattern in self.mx:
            if pattern.startswith("*."):
                label, dot, rest = host.partition(".")
                if dot and label and rest == pattern[2:]:
                    return True
            elif host == pattern:
                return True
        return False


def parse_policy(text: str) -> Policy:
    """RFC 8461 3.2: ``key: value`` lines (CRLF or LF); ``version: STSv1`` first, ``mode``,
    ``max_age`` and, except in mode none, at least one ``mx``. Unknown keys are ignored."""
    fields: dict[str, str] = {}
    mx: list[str] = []
    lines = text.replace("\r\n", "\n").split("\n")
    for line in lines:
        if not line.strip():
            continue
        key, colon, value = line.partition(":")
        if not colon:
            raise PolicyError(f"not a key: value line: {line[:60]!r}")
        key, value = key.strip().lower(), value.strip()
        if key == "mx":
            mx.append(value.lower().rstrip("."))
        else:
            fields.setdefault(key, value)
    if fields.get("version") != "STSv1" or not lines[0].startswith("version"):
        raise PolicyError("the policy does not start with version: STSv1")
    mode = fields.get("mode", "")
    if mode not in MODES:
        raise PolicyError(f"mode must be enforce, testing or none, not {mode!r}")
    age = fields.get("max_age", "")
    if not age.isdigit() or len(age) > 10:
        raise PolicyError(f"max_age must be a number of seconds, not {age!r}")
    if mode != "none" and not mx:
        raise PolicyError("a policy in mode enforce or testing names no mx")
    return Policy(mode=mode, mx=tuple(mx), max_age=min(int(age), MAX_AGE),
                  text="\n".join(line.strip() for line in lines if line.strip()))


_TXT_FIELD = re.compile(r"\s*([A-Za-z0-9_]+)\s*=\s*([^;]*?)\s*(?:;|$)")


def parse_txt(records: list[str]) -> str | None:
    """RFC 8461 3.1: the ``id`` of the one TXT record starting ``v=STSv1``; None when there
    is none. More than one such record, or one without a valid id, is no policy either."""
    ours = [r for r in records if r.startswith("v=STSv1")]
    if len(ours) != 1:
        return None
    fields = dict(_TXT_FIELD.findall(ours[0]))
    policy_id = fields.get("id", "")
    if fields.get("v") != "STSv1" or not re.fullmatch(r"[A-Za-z0-9]{1,32}", policy_id):
        return None
    return policy_id


class FetchError(Exception):
    pass


class PolicyFinder:
    """Finds the policy in force for a recipient domain (RFC 8461 5.1)."""

    def __init__(self, store: Any, resolver: Any, addresses: Any, *, cafile: str | None = None,
                 clock: Any = time.time) -> None:
        self.store = store
        self.resolver = resolver
        self._addresses = addresses
        """``async (host) -> [ip, ...]`` through the queue's own resolver."""
        self.cafile = cafile or None
        self.clock = clock
        self.log = Log("mta-sts")

    async def policy_for(self, domain: str) -> Policy | None:
        domain = domain.lower().rstrip(".")
        now = float(self.clock())
        cached = await self.store.get_mta_sts_policy(domain)
        valid = _parsed(cached) if cached is not None and cached.expires > now else None
        try:
            policy_id = await self._txt(domain)
        except FetchError as exc:
            # 5.1: a DNS failure leaves a cached policy in force; without one, no policy.
            self.log.info("TXT lookup failed", domain=domain, error=str(exc), cached=valid is not None)
            return valid
        if policy_id is None:
            return valid                        # 5.1: the record may go; the policy lasts max_age
        if valid is not None and cached is not None and cached.policy_id == policy_id:
            return valid
        try:
            text = await self._fetch(domain)
            policy = parse_policy(text)
        except (FetchError, PolicyError, UnicodeDecodeError) as exc:
            # 3.3 / 5.1: no policy we can use; a still valid cached one goes on holding.
            self.log.warning("policy fetch failed", domain=domain, error=str(exc), cached=valid is not None)
            return valid
        await self.store.put_mta_sts_policy(CachedPolicy(
            domain=domain, policy_id=policy_id, text=text, fetched=now, expires=now + policy.max_age))
        self.log.info("policy fetched", domain=domain, id=policy_id, mode=policy.mode, mx=",".join(policy.mx))
        return policy

    async def _txt(self, domain: str) -> str | None:
        try:
            answer = await self.resolver.resolve(f"_mta-sts.{domain}", "TXT")
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return None
        except (dns.exception.Timeout, dns.resolver.NoNameservers) as exc:
            raise FetchError(f"TXT lookup of _mta-sts.{domain}: {exc}") from None
        records = [b"".join(r.strings).decode("utf-8", "replace") for r in answer]
        return parse_txt(records)

    async def _fetch(self, domain: str) -> str:
        host = f"mta-sts.{domain}"
        try:
            addresses = await self._addresses(host)
        except Exception as exc:  # noqa: BLE001 - RouteError and DNS failures alike
            raise FetchError(f"no address for {host}: {exc}") from None
        last: Exception | None = None
        for address in addresses:
            try:
                return await asyncio.wait_for(self._get(address, host), FETCH_TIMEOUT)
            except (OSError, TimeoutError, ssl.SSLError, FetchError) as exc:
                last = exc
        raise FetchError(f"https://{host}{POLICY_PATH}: {last}")

    async def _get(self, address: str, host: str) -> str:
        """One HTTPS GET (3.3): the certificate must verify for ``host``; HTTP/1.0 so the body
        is simply what comes before the close; redirects are not followed."""
        reader, writer = await asyncio.open_connection(address, 443, ssl=client_context(cafile=self.cafile),
                                                       server_hostname=host)
        try:
            writer.write(f"GET {POLICY_PATH} HTTP/1.0\r\nHost: {host}\r\nUser-Agent: mailhaven\r\n"
                         "Accept: text/plain\r\n\r\n".encode("ascii"))
            await writer.drain()
            data = await reader.read(MAX_POLICY + 8192)
            while len(data) <= MAX_POLICY + 8192:
                more = await reader.read(65536)
                if not more:
                    break
                data += more
        finally:
            writer.close()
        head, sep, body = data.partition(b"\r\n\r\n")
        if not sep:
            raise FetchError("no complete HTTP response")
        status, *header_lines = head.decode("latin-1").split("\r\n")
        parts = status.split(" ", 2)
        if len(parts) < 2 or parts[1] != "200":
            raise FetchError(f"HTTP status {status!r} (redirects are not followed)")
        headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in header_lines)}
        kind = headers.get("content-type", "").split(";")[0].strip().lower()
        if kind != "text/plain":                          # 3.2: served as text/plain
            raise FetchError(f"media type {kind or 'none'}, not text/plain")
        if len(body) > MAX_POLICY:
            raise FetchError("policy larger than 64 KiB")
        if "content-length" in headers and headers["content-length"].isdigit():
            body = body[:int(headers["content-length"])]
        return body.decode("utf-8")


def _parsed(cached: CachedPolicy) -> Policy | None:
    try:
        return parse_policy(cached.text)
    except PolicyError:
        return None


class NoMatchingMX(Exception):
    pass


def apply(policy: Policy | None, hops: list[Any]) -> list[Any]:
    """The hops to try under ``policy``: in enforce mode only the matching MX hosts, each
    with TLS required and verified (4.1, 4.2); otherwise ``hops`` unchanged."""
    if policy is None or policy.mode != "enforce":
        return hops
    # RFC 8461 2: where DANE applies to a host it decides how TLS is checked there.
    matching = [hop if hop.tls == "dane" else replace(hop, tls="required", policy="mta-sts", policy_text=policy.text)
                for hop in hops if policy.matches(hop.name)]
    if not matching:
        raise NoMatchingMX("no MX host matches the domain's MTA-STS policy (mx: "
                           + ", ".join(policy.mx) + ")")
    return matching
