"""Certificates by ACME (RFC 8555) from Debian's pebble, the CA's test server, started here
on free ports with its resolver pointed at tests/dnsserver.py. Pebble really validates
(no PEBBLE_VA_ALWAYS_VALID): tls-alpn-01 (RFC 8737) against the server's IMAPS listener,
http-01 against its plain ``acme_http`` listener. The listeners must then present a chain
that pebble's own root (fetched from its management port) verifies, take a renewed one
without a restart, and keep a connection opened before the swap working after it."""

from __future__ import annotations

import imaplib
import json
import os
import poplib
import shutil
import smtplib
import socket
import ssl
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509

from conftest import ServerProcess, free_port, wait_for
from dnsserver import DNSServer
from testcerts import self_signed

PEBBLE = shutil.which("pebble")
HOSTNAME = "mail.acme.example"
DOMAIN = "nyu.example"
NAMES = {HOSTNAME, f"mta-sts.{DOMAIN}", f"autoconfig.{DOMAIN}"}

pytestmark = pytest.mark.skipif(PEBBLE is None and os.environ.get("CI") != "true",
                                reason="pebble (Debian package) not installed")


class Pebble:
    def __init__(self, directory: Path, dns_port: int, http_port: int, tls_port: int, validity: int) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.cert, key = self_signed(directory, "pebble", "pebble")    # pebble's own HTTPS (Debian ships none)
        self.port, self.management = free_port(), free_port()
        config = {"pebble": {
            "listenAddress": f"127.0.0.1:{self.port}",
            "managementListenAddress": f"127.0.0.1:{self.management}",
            "certificate": str(self.cert), "privateKey": str(key),
            "httpPort": http_port, "tlsPort": tls_port,
            "ocspResponderURL": "", "externalAccountBindingRequired": False,
            "certificateValidityPeriod": validity,
        }}
        path = directory / "pebble.json"
        path.write_text(json.dumps(config))
        env = dict(os.environ, PEBBLE_VA_NOSLEEP="1", PEBBLE_WFE_NONCEREJECT="0")
        env.pop("PEBBLE_VA_ALWAYS_VALID", None)
        self.log = open(directory / "pebble.log", "w")
        self.proc = subprocess.Popen([str(PEBBLE), "-config", str(path), "-dnsserver", f"127.0.0.1:{dns_port}"],
                                     stdout=self.log, stderr=subprocess.STDOUT, env=env)
        wait_for(self._listening, 20, "pebble to listen")

    def _listening(self) -> bool:
        try:
            socket.create_connection(("127.0.0.1", self.management), timeout=1).close()
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
            return True
        except OSError:
            return False

    @property
    def directory(self) -> str:
        return f"https://127.0.0.1:{self.port}/dir"

    def root_pem(self) -> bytes:
        """The root pebble issues under, from its management interface."""
        ctx = ssl.create_default_context(cafile=str(self.cert))
        with urllib.request.urlopen(f"https://127.0.0.1:{self.management}/roots/0", context=ctx,
                                    timeout=10) as response:
            return bytes(response.read())

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)
        self.log.close()


def start(tmp_path: Path, challenge: str, validity: int, missing: str,
          workers: int) -> tuple[ServerProcess, Pebble, DNSServer]:
    dns = DNSServer({name: {"A": ["127.0.0.1"]} for name in NAMES if name != missing}).start()
    server = ServerProcess(tmp_path / "data", hostname=HOSTNAME)
    server.ports["acme_http"] = free_port()
    pebble = Pebble(tmp_path / "pebble", dns.port, server.port("acme_http"), server.port("imaps"), validity)
    server.extra_config = (f'[acme]\ndirectory = "{pebble.directory}"\nemail = "postmaster@{DOMAIN}"\n'
                           f'ca_file = "{pebble.cert}"\nchallenge = "{challenge}"\n'
                           f"[smtp]\nworkers = {workers}\n")
    server.write_config()
    server.admin("domain", "add", DOMAIN)
    server.start()
    return server, pebble, dns


@pytest.fixture
def stack(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[ServerProcess, Pebble, DNSServer]]:
    challenge, validity, missing, workers = request.param
    server, pebble, dns = start(tmp_path, challenge, validity, missing, workers)
    try:
        yield server, pebble, dns
    finally:
        server.stop()
        pebble.stop()
        dns.stop()


def trusting(root: bytes) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cadata=root.decode())
    return ctx


def presented(port: int) -> x509.Certificate:
    """The certificate the implicit-TLS listener on ``port`` presents now (not verified)."""
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
            ctx.wrap_socket(raw, server_hostname=HOSTNAME) as tls:
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


def issued_by_pebble(server: ServerProcess) -> x509.Certificate | None:
    cert = presented(server.port("imaps"))
    return cert if cert.issuer != cert.subject else None


def sans(cert: x509.Certificate) -> set[str]:
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return set(san.get_values_for_type(x509.DNSName))


def check_every_listener(server: ServerProcess, root: bytes) -> None:
    """Each TLS listener's chain verifies against pebble's root for the hostname. While
    pebble validates a renewal, a client naming the host gets the tls-alpn-01 certificate
    (certs/challenges.py): a failed verification is tried again, for a few seconds."""

    def verified() -> bool:
        try:
            _check_every_listener(server, root)
        except ssl.SSLCertVerificationError:
            return False
        return True

    wait_for(verified, 15, "every listener to present pebble's chain")


def _check_every_listener(server: ServerProcess, root: bytes) -> None:
    ctx = trusting(root)
    for name in ("imaps", "pop3s", "submissions"):
        with socket.create_connection(("127.0.0.1", server.port(name)), timeout=10) as raw, \
                ctx.wrap_socket(raw, server_hostname=HOSTNAME):
            pass
    with smtplib.SMTP("127.0.0.1", server.port("submission"), timeout=10) as smtp:
        smtp._host = HOSTNAME  # smtplib checks the name it connected to: the hostname here
        smtp.starttls(context=ctx)
    with smtplib.SMTP("127.0.0.1", server.port("smtp"), local_hostname="client.example", timeout=10) as smtp:
        smtp._host = HOSTNAME
        smtp.starttls(context=ctx)
    imap = imaplib.IMAP4("127.0.0.1", server.port("imap"), timeout=10)
    imap.host = HOSTNAME
    imap.starttls(ssl_context=ctx)
    imap.logout()
    pop = poplib.POP3("127.0.0.1", server.port("pop3"), timeout=10)
    pop.host = HOSTNAME
    pop.stls(context=ctx)
    pop.quit()


@pytest.mark.parametrize("stack", [("tls-alpn-01", 9, "", 1)], indirect=True)
def test_tls_alpn_01_issues_every_listener_and_renews_without_dropping(
        stack: tuple[ServerProcess, Pebble, DNSServer]) -> None:
    server, pebble, _ = stack
    first = wait_for(lambda: issued_by_pebble(server), 30, "a certificate from pebble")
    assert sans(first) == NAMES
    root = pebble.root_pem()
    # Port 25 is served by an SMTP worker process here: it takes the new file on its own.
    wait_for(lambda: smtp_starttls_serial(server, root) == first.serial_number, 20, "the worker's swap")
    check_every_listener(server, root)
    key = server.data / "acme" / "account.key"
    assert key.exists() and key.stat().st_mode & 0o777 == 0o600

    # A connection opened with the first certificate, across the renewal (two thirds of
    # pebble's 9 s lifetime), keeps working; new ones get the renewed certificate.
    imap = imaplib.IMAP4_SSL("127.0.0.1", server.port("imaps"), ssl_context=_hostname_ctx(root), timeout=10)
    before = imap.sock.getpeercert(binary_form=True)
    assert x509.load_der_x509_certificate(before).serial_number == first.serial_number
    renewed = wait_for(lambda: (c := issued_by_pebble(server)) and c.serial_number != first.serial_number and c,
                       30, "the renewed certificate")
    assert sans(renewed) == NAMES
    assert renewed.not_valid_before_utc >= first.not_valid_before_utc
    assert imap.noop()[0] == "OK"
    assert imap.sock.getpeercert(binary_form=True) == before
    imap.logout()
    wait_for(lambda: smtp_starttls_serial(server, root) != first.serial_number, 20, "the worker's renewal")
    check_every_listener(server, root)
    assert "certificate order failed" not in server.log_text()


@pytest.mark.parametrize("stack", [("http-01", 3600, f"autoconfig.{DOMAIN}", 0)], indirect=True)
def test_http_01_on_the_plain_listener_retries_and_renews_on_demand(
        stack: tuple[ServerProcess, Pebble, DNSServer]) -> None:
    server, pebble, dns = stack
    # One name does not resolve yet: pebble refuses the order, the server backs off and
    # tries again, and gets the certificate once the name is published.
    wait_for(lambda: "certificate order failed" in server.log_text(), 30, "the first order to fail")
    assert presented(server.port("imaps")).issuer == presented(server.port("imaps")).subject
    dns.records[f"autoconfig.{DOMAIN}"] = {"A": ["127.0.0.1"]}
    cert = wait_for(lambda: issued_by_pebble(server), 30, "a certificate from pebble")
    assert sans(cert) == NAMES
    check_every_listener(server, pebble.root_pem())
    status = server.admin("acme", "status").stdout
    assert f"mta-sts.{DOMAIN}" in status and "valid to:" in status

    # Not due for an hour: `mailhaven acme renew` has the running server order one now.
    out = server.admin("acme", "renew", "--wait", "30").stdout
    assert out.startswith("renewed")
    assert presented(server.port("imaps")).serial_number != cert.serial_number
    check_every_listener(server, pebble.root_pem())
    # Nothing under validation now: the plain listener answers 404, and serves nothing else.
    for path in ("/.well-known/acme-challenge/none", "/.well-known/mta-sts.txt"):
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(f"http://127.0.0.1:{server.port('acme_http')}{path}", timeout=10)
        assert err.value.code == 404


def smtp_starttls_serial(server: ServerProcess, root: bytes) -> int | None:
    """The serial of the certificate port 25 presents after STARTTLS, if pebble's root verifies it."""
    ctx = trusting(root)
    with smtplib.SMTP("127.0.0.1", server.port("smtp"), local_hostname="client.example", timeout=10) as smtp:
        smtp._host = HOSTNAME
        try:
            smtp.starttls(context=ctx)
        except ssl.SSLCertVerificationError:
            return None
        der = smtp.sock.getpeercert(binary_form=True)
    return x509.load_der_x509_certificate(der).serial_number if der else None


def _hostname_ctx(root: bytes) -> ssl.SSLContext:
    ctx = trusting(root)
    ctx.check_hostname = False  # imaplib connects to 127.0.0.1; the chain is what is checked
    return ctx
