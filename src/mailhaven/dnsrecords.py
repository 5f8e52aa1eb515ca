"""The DNS records a domain served here should publish, as data: ``dns records`` prints
them as zone-file lines and ``dns check`` compares them with what resolvers answer.

MX (RFC 5321 5.1), SPF (RFC 7208), a DKIM key per selector (RFC 6376 3.6.2), DMARC (RFC
7489 6.1), MTA-STS (RFC 8461 3.1), TLS reporting (RFC 8460 3), the SRV records mail clients
use to find submission, IMAP and POP3 (RFC 6186 3, RFC 8314 5.1), and the names the
policy and autoconfiguration documents are fetched from (CNAMEs to this server).
"""

from __future__ import annotations

from dataclasses import dataclass

from .config import Config
from .discovery import client_services, mta_sts_id
from .queue import dkim


@dataclass(frozen=True, kw_only=True)
class Record:
    """One record to publish."""

    name: str
    """Owner name, fully qualified without the final dot."""
    rtype: str
    """``MX``, ``TXT``, ``SRV``, ``CNAME``."""
    value: str
    """The record data as written in a zone file (TXT: the unquoted string)."""
    kind: str
    """What it is for, which decides how ``dns check`` compares it: ``mx``, ``spf``, ``dkim``,
    ``dmarc``, ``mta-sts``, ``tls-rpt``, ``srv``, ``cname``."""

    def zone_line(self) -> str:
        data = txt_strings(self.value) if self.rtype == "TXT" else self.value
        return f"{self.name}. IN {self.rtype} {data}"


def txt_strings(value: str) -> str:
    """A TXT value as zone-file strings of at most 255 octets each (RFC 1035 3.3.14)."""
    chunks = [value[i:i + 255] for i in range(0, len(value), 255)] or [""]
    return " ".join(f'"{c}"' for c in chunks)


def expected_records(config: Config, domain: str, keys: list[dkim.Key]) -> list[Record]:
    domain = domain.lower().rstrip(".")
    host = config.hostname.rstrip(".")
    records = [
        Record(name=domain, rtype="MX", value=f"10 {host}.", kind="mx"),
        Record(name=domain, rtype="TXT", value="v=spf1 mx -all", kind="spf"),
    ]
    for key in keys:
        if key.domain == domain:
            records.append(Record(name=f"{key.selector}._domainkey.{domain}", rtype="TXT",
                                  value=key.public_record(), kind="dkim"))
    records += [
        Record(name=f"_dmarc.{domain}", rtype="TXT", kind="dmarc",
               value=f"v=DMARC1; p=quarantine; adkim=s; aspf=s; rua=mailto:postmaster@{domain}"),
        Record(name=f"_mta-sts.{domain}", rtype="TXT", value=f"v=STSv1; id={mta_sts_id(config)}",
               kind="mta-sts"),
        Record(name=f"_smtp._tls.{domain}", rtype="TXT", value=f"v=TLSRPTv1; rua=mailto:postmaster@{domain}",
               kind="tls-rpt"),
    ]
    for service in client_services(config):
        records.append(Record(name=f"{service.srv}._tcp.{domain}", rtype="SRV",
                              value=f"0 1 {service.port} {host}.", kind="srv"))
    records.append(Record(name=f"_autodiscover._tcp.{domain}", rtype="SRV", value=f"0 1 443 {host}.", kind="srv"))
    for label in ("mta-sts", "autoconfig", "autodiscover"):
        records.append(Record(name=f"{label}.{domain}", rtype="CNAME", value=f"{host}.", kind="cname"))
    return records
