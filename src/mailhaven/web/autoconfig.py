"""Mail client autoconfiguration: what servers, ports and TLS to use, for an address of a
local domain. Three formats, one source (discovery.client_services):

- Thunderbird autoconfig: ``GET /mail/config-v1.1.xml`` and
  ``/.well-known/autoconfig/mail/config-v1.1.xml`` (Host ``autoconfig.<domain>`` or the
  ``emailaddress`` query parameter names the domain);
- Microsoft Autodiscover, the POX form: ``POST /autodiscover/autodiscover.xml``;
- an Apple configuration profile (unsigned plist): ``GET /apple/mobileconfig?email=``.

Unknown domains get 404: nothing is said about domains this server does not serve.
"""

from __future__ import annotations

import plistlib
import uuid
import xml.etree.ElementTree as ET
from typing import Any

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from ..config import Config
from ..discovery import Service, client_services, preferred

AUTODISCOVER_REQUEST_NS = "http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006"
AUTODISCOVER_NS = "http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006"
AUTODISCOVER_OUTLOOK_NS = "http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a"
MOBILECONFIG_TYPE = "application/x-apple-aspen-config"
MAX_REQUEST = 16 * 1024
_NOT_FOUND = "no mail settings for that domain here\n"


class _NoDomain(Exception):
    """The request names no domain served here."""


def _domain_of(address: str) -> str:
    local, at, domain = address.strip().rpartition("@")
    if not at or not local or not domain:
        raise _NoDomain(address)
    return domain.lower().rstrip(".")


# -- Thunderbird --------------------------------------------------------------

def thunderbird_xml(config: Config, domain: str) -> bytes:
    root = ET.Element("clientConfig", version="1.1")
    provider = ET.SubElement(root, "emailProvider", id=domain)
    ET.SubElement(provider, "domain").text = domain
    ET.SubElement(provider, "displayName").text = f"{domain} mail"
    ET.SubElement(provider, "displayShortName").text = domain
    for service in client_services(config):
        if service.protocol == "smtp":
            server = ET.SubElement(provider, "outgoingServer", type="smtp")
        else:
            server = ET.SubElement(provider, "incomingServer", type=service.protocol)
        ET.SubElement(server, "hostname").text = config.hostname
        ET.SubElement(server, "port").text = str(service.port)
        ET.SubElement(server, "socketType").text = "SSL" if service.implicit_tls else "STARTTLS"
        ET.SubElement(server, "authentication").text = "password-cleartext"
        ET.SubElement(server, "username").text = "%EMAILADDRESS%"
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="utf-8", xml_declaration=False)


# -- Microsoft Autodiscover (POX) ---------------------------------------------

def autodiscover_address(body: bytes) -> str:
    """The ``EMailAddress`` of a POX Autodiscover request."""
    try:
        root = ET.fromstring(body)
    except ET.ParseError:
        raise _NoDomain("unparseable request") from None
    node = root.find(f"{{{AUTODISCOVER_REQUEST_NS}}}Request/{{{AUTODISCOVER_REQUEST_NS}}}EMailAddress")
    if node is None:
        node = root.find("Request/EMailAddress")  # some clients omit the namespace
    if node is None or not node.text:
        raise _NoDomain("no EMailAddress")
    return node.text.strip()


def autodiscover_xml(config: Config, address: str) -> bytes:
    ET.register_namespace("", AUTODISCOVER_NS)
    root = ET.Element(f"{{{AUTODISCOVER_NS}}}Autodiscover")
    response = ET.SubElement(root, f"{{{AUTODISCOVER_OUTLOOK_NS}}}Response")
    account = ET.SubElement(response, f"{{{AUTODISCOVER_OUTLOOK_NS}}}Account")

    def add(parent: ET.Element, name: str, text: str) -> ET.Element:
        element = ET.SubElement(parent, f"{{{AUTODISCOVER_OUTLOOK_NS}}}{name}")
        element.text = text
        return element

    add(account, "AccountType", "email")
    add(account, "Action", "settings")
    for kind, service in (("IMAP", preferred(config, "imap")), ("POP3", preferred(config, "pop3")),
                          ("SMTP", preferred(config, "smtp"))):
        if service is None:
            continue
        protocol = ET.SubElement(account, f"{{{AUTODISCOVER_OUTLOOK_NS}}}Protocol")
        add(protocol, "Type", kind)
        add(protocol, "Server", config.hostname)
        add(protocol, "Port", str(service.port))
        add(protocol, "LoginName", address)
        add(protocol, "SPA", "off")
        add(protocol, "SSL", "on")
        add(protocol, "Encryption", "SSL" if service.implicit_tls else "TLS")
        add(protocol, "AuthRequired", "on")
    return b'<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="utf-8", xml_declaration=False)


# -- Apple configuration profile ----------------------------------------------

def mobileconfig(config: Config, address: str) -> bytes:
    """An unsigned profile with one ``com.apple.mail.managed`` payload (IMAP, else POP3)."""
    incoming = preferred(config, "imap") or preferred(config, "pop3")
    outgoing = preferred(config, "smtp")
    if incoming is None or outgoing is None:
        raise _NoDomain("no incoming or outgoing listener")
    domain = _domain_of(address)
    reverse = ".".join(reversed(config.hostname.split(".")))
    ident = f"{reverse}.mailhaven.{address}"
    mail: dict[str, Any] = {
        "PayloadType": "com.apple.mail.managed",
        "PayloadVersion": 1,
        "PayloadIdentifier": ident + ".mail",
        "PayloadUUID": str(uuid.uuid5(uuid.NAMESPACE_URL, f"mailhaven:mail:{address}")).upper(),
        "PayloadDisplayName": f"Mail for {address}",
        "EmailAccountDescription": address,
        "EmailAccountType": "EmailTypeIMAP" if incoming.protocol == "imap" else "EmailTypePOP",
        "EmailAddress": address,
        **_apple_server("Incoming", config, incoming, address),
        **_apple_server("Outgoing", config, outgoing, address),
        "OutgoingPasswordSameAsIncomingPassword": True,
    }
    profile = {
        "PayloadType": "Configuration",
        "PayloadVersion": 1,
        "PayloadIdentifier": ident,
        "PayloadUUID": str(uuid.uuid5(uuid.NAMESPACE_URL, f"mailhaven:profile:{address}")).upper(),
        "PayloadDisplayName": f"{domain} mail",
        "PayloadDescription": f"Mail settings for {address} on {config.hostname}",
        "PayloadContent": [mail],
    }
    return plistlib.dumps(profile, fmt=plistlib.FMT_XML)


def _apple_server(prefix: str, config: Config, service: Service, address: str) -> dict[str, Any]:
    return {
        f"{prefix}MailServerHostName": config.hostname,
        f"{prefix}MailServerPortNumber": service.port,
        f"{prefix}MailServerUseSSL": True,  # implicit TLS or STARTTLS: never cleartext
        f"{prefix}MailServerUsername": address,
        f"{prefix}MailServerAuthentication": "EmailAuthPassword",
    }


# -- routes -------------------------------------------------------------------

def routes(ctx: Any) -> list[BaseRoute]:
    async def local(domain: str) -> str:
        if not domain or not await ctx.store.is_local_domain(domain):
            raise _NoDomain(domain)
        return domain

    async def thunderbird(request: Request) -> Response:
        address = request.query_params.get("emailaddress", "")
        host = (request.url.hostname or "").lower().rstrip(".")
        try:
            if address:
                domain = await local(_domain_of(address))
            else:
                domain = await local(host.removeprefix("autoconfig."))
        except _NoDomain:
            return PlainTextResponse(_NOT_FOUND, status_code=404)
        return Response(thunderbird_xml(ctx.config, domain), media_type="application/xml")

    async def autodiscover(request: Request) -> Response:
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_REQUEST:
                return PlainTextResponse("request too large\n", status_code=413)
        try:
            address = autodiscover_address(body)
            await local(_domain_of(address))
        except _NoDomain:
            return PlainTextResponse(_NOT_FOUND, status_code=404)
        return Response(autodiscover_xml(ctx.config, address), media_type="application/xml")

    async def apple(request: Request) -> Response:
        address = request.query_params.get("email", "").strip()
        try:
            await local(_domain_of(address))
            profile = mobileconfig(ctx.config, address)
        except _NoDomain:
            return PlainTextResponse(_NOT_FOUND, status_code=404)
        filename = "".join(c if c.isalnum() or c in "@.-_" else "_" for c in address)
        return Response(profile, media_type=MOBILECONFIG_TYPE,
                        headers={"Content-Disposition": f'attachment; filename="{filename}.mobileconfig"'})

    return [
        Route("/mail/config-v1.1.xml", thunderbird, methods=["GET"]),
        Route("/.well-known/autoconfig/mail/config-v1.1.xml", thunderbird, methods=["GET"]),
        Route("/autodiscover/autodiscover.xml", autodiscover, methods=["POST"]),
        Route("/Autodiscover/Autodiscover.xml", autodiscover, methods=["POST"]),
        Route("/apple/mobileconfig", apple, methods=["GET"]),
    ]
