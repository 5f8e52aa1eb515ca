"""The discovery documents over the real server's http listener, fetched with urllib and
parsed with the standard library's XML and plist readers: the MTA-STS policy (RFC 8461
3.2), Thunderbird autoconfig, Microsoft Autodiscover (POX) and the Apple profile."""

from __future__ import annotations

import plistlib
import urllib.error
import urllib.request
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest
from checkdmarc.mta_sts import parse_mta_sts_policy

from conftest import ServerProcess


@pytest.fixture
def srv(tmp_path: Path) -> Iterator[ServerProcess]:
    server = ServerProcess(tmp_path / "data", hostname="mail.nyu.example",
                           extra_config='[mta_sts]\nmode = "testing"\nmax_age = "2d"\n').start()
    try:
        server.admin("domain", "add", "nyu.example")
        yield server
    finally:
        server.stop()


def get(srv: ServerProcess, path: str, host: str, data: bytes | None = None) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(f"http://127.0.0.1:{srv.port('http')}{path}", data=data,
                                     headers={"Host": host})
    if data is not None:
        request.add_header("Content-Type", "text/xml")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def test_mta_sts_policy_is_served_for_local_domains_only(srv: ServerProcess) -> None:
    status, headers, body = get(srv, "/.well-known/mta-sts.txt", "mta-sts.nyu.example")
    assert status == 200
    assert headers["content-type"].startswith("text/plain")
    assert body == b"version: STSv1\r\nmode: testing\r\nmx: mail.nyu.example\r\nmax_age: 172800\r\n"
    parsed = parse_mta_sts_policy(body.decode())  # checkdmarc's reading of RFC 8461 3.2
    assert parsed["policy"] == {"version": "STSv1", "mode": "testing", "max_age": 172800,
                                "mx": ["mail.nyu.example"]}
    assert parsed["warnings"] == []
    assert get(srv, "/.well-known/mta-sts.txt", "mta-sts.other.example")[0] == 404
    assert get(srv, "/.well-known/mta-sts.txt", "nyu.example")[0] == 404
    assert get(srv, "/.well-known/mta-sts.txt", f"mta-sts.nyu.example:{srv.port('http')}")[0] == 200


def _servers(srv: ServerProcess) -> dict[str, tuple[str, str, str]]:
    return {"imap": (str(srv.port("imaps")), "SSL", str(srv.port("imap"))),
            "pop3": (str(srv.port("pop3s")), "SSL", str(srv.port("pop3"))),
            "smtp": (str(srv.port("submissions")), "SSL", str(srv.port("submission")))}


@pytest.mark.parametrize("path", ["/mail/config-v1.1.xml", "/.well-known/autoconfig/mail/config-v1.1.xml"])
def test_thunderbird_autoconfig_names_the_listeners(srv: ServerProcess, path: str) -> None:
    status, _, body = get(srv, path, "autoconfig.nyu.example")
    assert status == 200, body
    root = ET.fromstring(body)
    assert root.tag == "clientConfig" and root.get("version") == "1.1"
    provider = root.find("emailProvider")
    assert provider is not None and provider.findtext("domain") == "nyu.example"
    found = [(s.get("type"), s.findtext("hostname"), s.findtext("port"), s.findtext("socketType"),
              s.findtext("username")) for s in [*provider.iter("incomingServer"), *provider.iter("outgoingServer")]]
    expected = _servers(srv)
    for kind, (tls_port, _, starttls_port) in expected.items():
        assert (kind, "mail.nyu.example", tls_port, "SSL", "%EMAILADDRESS%") in found
        assert (kind, "mail.nyu.example", starttls_port, "STARTTLS", "%EMAILADDRESS%") in found
    # the first incoming server is the implicit-TLS IMAP one (RFC 8314 3)
    assert found[0][:4] == ("imap", "mail.nyu.example", str(srv.port("imaps")), "SSL")
    # any Host, with the address in the query; unknown domains are not described
    assert get(srv, path + "?emailaddress=bob%40nyu.example", "127.0.0.1")[0] == 200
    assert get(srv, path + "?emailaddress=bob%40other.example", "autoconfig.nyu.example")[0] == 404
    assert get(srv, path, "autoconfig.other.example")[0] == 404


def test_autodiscover_pox_answer(srv: ServerProcess) -> None:
    request = (b'<?xml version="1.0" encoding="utf-8"?>\n'
               b'<Autodiscover xmlns="http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006">'
               b"<Request><EMailAddress>bob@nyu.example</EMailAddress><AcceptableResponseSchema>"
               b"http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a"
               b"</AcceptableResponseSchema></Request></Autodiscover>")
    status, headers, body = get(srv, "/autodiscover/autodiscover.xml", "autodiscover.nyu.example", request)
    assert status == 200, body
    ns = {"a": "http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006",
          "o": "http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a"}
    root = ET.fromstring(body)
    assert root.tag == f"{{{ns['a']}}}Autodiscover"
    account = root.find("o:Response/o:Account", ns)
    assert account is not None and account.findtext("o:AccountType", namespaces=ns) == "email"
    protocols = {p.findtext("o:Type", namespaces=ns): (p.findtext("o:Server", namespaces=ns),
                                                        p.findtext("o:Port", namespaces=ns),
                                                        p.findtext("o:LoginName", namespaces=ns),
                                                        p.findtext("o:Encryption", namespaces=ns))
                 for p in account.findall("o:Protocol", ns)}
    assert protocols == {
        "IMAP": ("mail.nyu.example", str(srv.port("imaps")), "bob@nyu.example", "SSL"),
        "POP3": ("mail.nyu.example", str(srv.port("pop3s")), "bob@nyu.example", "SSL"),
        "SMTP": ("mail.nyu.example", str(srv.port("submissions")), "bob@nyu.example", "SSL"),
    }
    other = request.replace(b"bob@nyu.example", b"bob@other.example")
    assert get(srv, "/autodiscover/autodiscover.xml", "autodiscover.nyu.example", other)[0] == 404
    assert get(srv, "/autodiscover/autodiscover.xml", "autodiscover.nyu.example", b"<not xml")[0] == 404
    padded = request.replace(b"<Request>", b"<Request>" + b" " * 20000)
    assert get(srv, "/autodiscover/autodiscover.xml", "autodiscover.nyu.example", padded)[0] == 413


def test_apple_mobileconfig(srv: ServerProcess) -> None:
    status, headers, body = get(srv, "/apple/mobileconfig?email=bob%40nyu.example", "mail.nyu.example")
    assert status == 200, body
    assert headers["content-type"] == "application/x-apple-aspen-config"
    assert 'filename="bob@nyu.example.mobileconfig"' in headers["content-disposition"]
    profile = plistlib.loads(body)
    assert profile["PayloadType"] == "Configuration" and profile["PayloadVersion"] == 1
    (mail,) = profile["PayloadContent"]
    assert mail["PayloadType"] == "com.apple.mail.managed"
    assert mail["EmailAccountType"] == "EmailTypeIMAP"
    assert mail["EmailAddress"] == "bob@nyu.example"
    assert (mail["IncomingMailServerHostName"], mail["IncomingMailServerPortNumber"],
            mail["IncomingMailServerUseSSL"], mail["IncomingMailServerUsername"]) == (
        "mail.nyu.example", srv.port("imaps"), True, "bob@nyu.example")
    assert (mail["OutgoingMailServerHostName"], mail["OutgoingMailServerPortNumber"],
            mail["OutgoingMailServerUseSSL"]) == ("mail.nyu.example", srv.port("submissions"), True)
    assert profile["PayloadUUID"] != mail["PayloadUUID"]
    assert get(srv, "/apple/mobileconfig?email=bob%40other.example", "mail.nyu.example")[0] == 404
    assert get(srv, "/apple/mobileconfig", "mail.nyu.example")[0] == 404


def test_mta_sts_config_is_checked() -> None:
    from mailhaven.config import ConfigError, config_from_dict

    assert config_from_dict({"mta_sts": {"mode": "none", "max_age": "1d"}}, Path("d")).mta_sts.max_age == 86400
    with pytest.raises(ConfigError, match="mta_sts.mode"):
        config_from_dict({"mta_sts": {"mode": "strict"}}, Path("d"))
    with pytest.raises(ConfigError, match="mta_sts.max_age"):
        config_from_dict({"mta_sts": {"max_age": "400d"}}, Path("d"))  # RFC 8461 3.2: at most a year
