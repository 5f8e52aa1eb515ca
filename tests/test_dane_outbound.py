"""DANE when sending (RFC 7672), over real sockets: the sending Mailhaven's resolver is
Debian's unbound, validating two zones the test signs with ldns-signzone (served by unbound
itself as auth-zones, with the test's keys as trust anchors). One receiving Mailhaven on
port 25 of its own loopback address answers for every MX name; what differs is the TLSA
records published for each:

- good: DANE-EE 3 1 1 of the server's key: delivered.
- ta: DANE-TA 2 0 1 of the CA that issued the server's certificate: delivered.
- plain: signed, but no TLSA at all: delivered (opportunistic TLS, as before).
- wrong: DANE-EE of another key: not delivered, although the server offers STARTTLS
  (without DANE the message would go, since opportunistic TLS takes any certificate).
- bogus: a TLSA record whose signature no longer verifies (unbound answers SERVFAIL): the
  host is unusable and the message waits.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import ServerProcess, wait_for
from dnsserver import can_bind
from mx_client import inbox, submit
from peers import require, running, tool, unbound
from testcerts import CA, spki_sha256

MX_IP = "127.0.0.43"
TOOLS = ("unbound", "ldns-keygen", "ldns-signzone")


def _need() -> None:
    missing = [f"{t} is not installed" for t in TOOLS if tool(t) is None]
    if not can_bind(MX_IP, 25):
        missing.append(f"cannot listen on {MX_IP}:25")
    require(missing)


def _certificates(directory: Path) -> tuple[Path, Path, bytes, bytes]:
    """A CA and a server certificate from it (chain file: server then CA); returns the
    SHA-256 of the server's SubjectPublicKeyInfo and of the CA certificate."""
    ca = CA(directory, "DANE test CA")
    names = [f"{h}.dane.example" for h in ("mx-good", "mx-ta", "mx-plain", "mx-wrong")] + ["mx.bogus.example"]
    cert, key = ca.issue("mx", names)
    chain = directory / "mx-chain.pem"
    chain.write_bytes(cert.read_bytes() + ca.path.read_bytes())
    return chain, key, spki_sha256(cert), ca.sha256()


def _sign(directory: Path, origin: str, body: str) -> tuple[Path, str]:
    """Write and sign a zone with ldns; returns the signed file and its KSK as a trust anchor."""
    zone = directory / f"{origin}zone"
    zone.write_text(f"$ORIGIN {origin}.\n$TTL 300\n@ IN SOA ns.{origin}. hostmaster.{origin}. 1 3600 600 86400 300\n"
                    f"@ IN NS ns.{origin}.\nns IN A 127.0.0.1\n{body}")
    def keygen(*args: str) -> str:
        return subprocess.run([tool("ldns-keygen") or "ldns-keygen", "-a", "ECDSAP256SHA256", *args, origin],
                              cwd=directory, check=True, capture_output=True, text=True).stdout.strip()
    ksk, zsk = keygen("-k"), keygen()
    subprocess.run([tool("ldns-signzone") or "ldns-signzone", "-n", str(zone), ksk, zsk], cwd=directory,
                   check=True, capture_output=True)
    anchor = next(line for line in (directory / f"{ksk}.key").read_text().splitlines() if "DNSKEY" in line)
    return Path(f"{zone}.signed"), anchor


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    _need()
    root = tmp_path_factory.mktemp("dane")
    chain, key, spki_hash, ca_hash = _certificates(root)
    zone = "".join(f"{d} IN MX 10 mx-{d}\nmx-{d} IN A {MX_IP}\n" for d in ("good", "ta", "plain", "wrong"))
    zone += (f"_25._tcp.mx-good IN TLSA 3 1 1 {spki_hash.hex()}\n"
             f"_25._tcp.mx-ta IN TLSA 2 0 1 {ca_hash.hex()}\n"
             f"_25._tcp.mx-wrong IN TLSA 3 1 1 {hashlib.sha256(b'another key').hexdigest()}\n")
    signed, anchor = _sign(root, "dane.example", zone)
    bogus, bogus_anchor = _sign(root, "bogus.example",
                                f"@ IN MX 10 mx\nmx IN A {MX_IP}\n_25._tcp.mx IN TLSA 3 1 1 {spki_hash.hex()}\n")
    # Change the record after signing: its RRSIG no longer verifies, so the answer is bogus.
    text = bogus.read_text()
    assert spki_hash.hex() in text
    bogus.write_text(text.replace(spki_hash.hex(), hashlib.sha256(b"forged").hexdigest()))
    with unbound(root, [("dane.example", signed), ("bogus.example", bogus)], [anchor, bogus_anchor],
                 probe="mx-good.dane.example") as resolver_port:
        dns_conf = f'[dns]\nnameservers = ["127.0.0.1:{resolver_port}"]\ntimeout = "2s"\n[filter]\nenabled = false\n'
        mx = ServerProcess(root / "mx", host=MX_IP, ports={"smtp": 25}, hostname="mx-good.dane.example",
                           extra_config=f'[tls]\ncert = "{chain}"\nkey = "{key}"\n' + dns_conf)
        sender = ServerProcess(root / "sender", hostname="mail.lancs.example", extra_config=dns_conf
                               + '[queue]\nretry = ["1s"]\nwarn_after = "1h"\nexpire = "1h"\npoll = "1s"\n')
        with running(mx, sender):
            mx.add_users(*(f"bob@{d}" for d in ("good.dane.example", "ta.dane.example", "plain.dane.example",
                                                "wrong.dane.example", "bogus.example")))
            sender.add_user("alice@lancs.example")
            yield {"mx": mx, "sender": sender}


def _submit(sender: ServerProcess, rcpt: str) -> None:
    submit(sender, "alice@lancs.example", rcpt, "DANE")


def _attempted(sender: ServerProcess, rcpt: str) -> dict[str, Any]:
    def entry() -> list[dict[str, Any]]:
        return [e for e in json.loads(sender.admin("queue", "list", "--json").stdout)
                if e["to"] == rcpt and e["attempts"] >= 1]
    return dict(wait_for(entry, what=f"a deferred attempt for {rcpt}")[0])


@pytest.mark.parametrize("domain", ["good.dane.example", "ta.dane.example", "plain.dane.example"])
def test_delivered_when_the_certificate_matches_or_no_tlsa(net: dict[str, Any], domain: str) -> None:
    _submit(net["sender"], f"bob@{domain}")
    wait_for(lambda: inbox(net["mx"], f"bob@{domain}"), what=f"delivery to {domain}")


def test_a_certificate_matching_no_tlsa_record_is_refused(net: dict[str, Any]) -> None:
    _submit(net["sender"], "bob@wrong.dane.example")
    entry = _attempted(net["sender"], "bob@wrong.dane.example")
    assert "matches none of the TLSA records" in entry["last_reply"], entry
    assert inbox(net["mx"], "bob@wrong.dane.example") == []


def test_a_bogus_tlsa_answer_makes_the_host_unusable(net: dict[str, Any]) -> None:
    _submit(net["sender"], "bob@bogus.example")
    entry = _attempted(net["sender"], "bob@bogus.example")
    assert "TLSA lookup" in entry["last_reply"] and "4.7.5" in entry["last_reply"], entry
    assert inbox(net["mx"], "bob@bogus.example") == []
