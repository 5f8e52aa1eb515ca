"""``mailhaven dns records DOMAIN`` (what to publish) and ``mailhaven dns check DOMAIN``
(what is published, compared with it)."""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import sys
from typing import Any

from .cli import load
from .dnscheck import ERROR, MISSING, OK, check_all, resolver_lookup
from .dnsrecords import expected_records
from .queue import dkim
from .queue.mx import make_resolver


def cmd_records(args: argparse.Namespace) -> int:
    config = load(args)
    domain = args.domain.lower().rstrip(".")
    host = config.hostname.rstrip(".")
    keys = dkim.load_keys(config.data_dir)
    lines = [f"; mail for {domain} is received and sent by {host}"]
    for record in expected_records(config, domain, keys):
        lines.append(record.zone_line())
    if not any(k.domain == domain for k in keys):
        lines.append(f"; no DKIM key for {domain} yet: mailhaven dkim generate {domain}")
    lines += [
        f"; the MTA-STS policy is served at https://mta-sts.{domain}/.well-known/mta-sts.txt "
        "(a certificate for that name is needed)",
        f"; and the address records of {host} (A/AAAA) with matching reverse DNS (PTR)",
    ]
    chain = _certificate_chain(config)
    if chain:
        from .dnscheck import tlsa_value
        lines.append(f"; optional, where {host}'s zone is DNSSEC-signed (DANE, RFC 7672; update it with the key): "
                     f"_25._tcp.{host}. IN TLSA {tlsa_value(chain[0])}")
    print("\n".join(lines))
    if _not_public(host):
        print(f"mailhaven: warning: the hostname is {host!r}, which other servers cannot reach; set "
              f"hostname = \"mail.{domain}\" (this server's public name) in the config before publishing "
              "these records", file=sys.stderr)
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    config = load(args)
    domain = args.domain.lower().rstrip(".")
    records = expected_records(config, domain, dkim.load_keys(config.data_dir))
    lookup = resolver_lookup(make_resolver(config))
    findings = asyncio.run(check_all(records, lookup, config.hostname, chain=_certificate_chain(config)))
    width = max(len(f.record.name) for f in findings)
    for finding in findings:
        record = finding.record
        print(f"{finding.status:<9} {record.rtype:<5} {record.name:<{width}}".rstrip())
        if finding.status == OK:
            continue
        label = "failed: " if finding.status == ERROR else "found:  "
        for value in finding.found:
            print(f"{'':<9} {label} {value}")
        if record.kind == "address":
            print(f"{'':<9} publish: {record.name}. IN A / AAAA (this server's public addresses)")
        elif record.kind == "ptr":
            print(f"{'':<9} publish: {record.zone_line()} (reverse DNS: ask whoever owns the address)")
        else:
            print(f"{'':<9} publish: {record.zone_line()}")
    bad = [f for f in findings if f.status != OK]
    missing = sum(1 for f in bad if f.status == MISSING)
    print(f"{len(findings) - len(bad)} of {len(findings)} records ok, {missing} missing, "
          f"{len(bad) - missing} different or unresolved")
    return 1 if bad else 0


def _certificate_chain(config: Any) -> list[bytes]:
    """The SMTP listener's certificate chain (DER, leaf first), for the TLSA check."""
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    from .tls import cert_files

    try:
        cert, _ = cert_files(config)
        return [c.public_bytes(Encoding.DER) for c in x509.load_pem_x509_certificates(cert.read_bytes())]
    except (OSError, ValueError):
        return []


def _not_public(host: str) -> bool:
    """``localhost``, a bare name or an IP literal: nothing an MX record may name (RFC 5321 5.1)."""
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        pass
    return host == "localhost" or host.endswith(".localhost") or "." not in host


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("dns", help="DNS records to publish, and a check of what is published")
    sub = p.add_subparsers(dest="dns_command", required=True)
    a = sub.add_parser("records", help="MX, SPF, DKIM, DMARC, MTA-STS, TLS-RPT, SRV and CNAME records for a domain")
    a.add_argument("domain")
    a.set_defaults(func=cmd_records)
    a = sub.add_parser("check", help="resolve the records for a domain and compare them with `dns records`")
    a.add_argument("domain")
    a.set_defaults(func=cmd_check)
