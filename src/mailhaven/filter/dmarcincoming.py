"""DMARC aggregate reports others send about our domains (RFC 7489 7.2), parsed and kept.

A message delivered to ``[dmarc] receive`` is searched for report attachments: gzip,
zip or plain XML (by media type or file name, RFC 7489 7.2.1.1). Each ``feedback``
document whose ``policy_published/domain`` is one of our domains is kept in the store
(``mailhaven dmarc reports DOMAIN`` shows them); the message itself is delivered as any.
Decompressed data is capped at :data:`MAX_XML` per attachment.
"""

from __future__ import annotations

import gzip
import io
import json
import logging
import time
import zipfile
import zlib
from email import message_from_bytes
from email.message import Message
from email.policy import default
from typing import Any
from xml.etree import ElementTree as ET

from ..store.api import DmarcReport

log = logging.getLogger("mailhaven.filter")

MAX_XML = 20 * 1024 * 1024
"""Largest report accepted after decompression."""
MAX_ATTACHMENTS = 10


class ReportFormatError(ValueError):
    """An attachment that is not a DMARC aggregate report we can read."""


def _gunzip(data: bytes) -> bytes:
    d = zlib.decompressobj(16 + zlib.MAX_WBITS)
    out = d.decompress(data, MAX_XML + 1)
    if len(out) > MAX_XML:
        raise ReportFormatError("report too large")
    return out


def _unzip(data: bytes) -> bytes:
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        names = [n for n in z.namelist() if n.lower().endswith(".xml")]
        if len(names) != 1:
            raise ReportFormatError("zip without one .xml file")
        with z.open(names[0]) as f:
            out = f.read(MAX_XML + 1)
    if len(out) > MAX_XML:
        raise ReportFormatError("report too large")
    return out


def xml_documents(raw: bytes) -> list[bytes]:
    """The report documents attached to a message (7.2.1.1: gzip, zip or XML)."""
    msg = message_from_bytes(raw, policy=default)
    out: list[bytes] = []
    parts: list[Message] = list(msg.walk()) if msg.is_multipart() else [msg]
    for part in parts:
        if part.is_multipart() or len(out) >= MAX_ATTACHMENTS:
            continue
        ctype = part.get_content_type()
        name = (part.get_filename() or "").lower()
        payload = part.get_payload(decode=True)
        if not isinstance(payload, bytes):
            continue
        try:
            if ctype in ("application/gzip", "application/x-gzip") or name.endswith(".gz"):
                out.append(_gunzip(payload))
            elif ctype in ("application/zip", "application/x-zip-compressed") or name.endswith(".zip"):
                out.append(_unzip(payload))
            elif ctype in ("text/xml", "application/xml") or name.endswith(".xml"):
                out.append(payload[:MAX_XML])
        except (ReportFormatError, OSError, zlib.error, zipfile.BadZipFile, gzip.BadGzipFile) as exc:
            log.info("DMARC report attachment %r not read: %s", name, exc)
    return out


def _text(el: ET.Element | None, path: str) -> str:
    found = el.find(path) if el is not None else None
    return (found.text or "").strip() if found is not None else ""


def parse_report(xml: bytes, received: float) -> DmarcReport:
    """RFC 7489 Appendix C ``feedback`` into a stored report (rows as JSON)."""
    if b"<!DOCTYPE" in xml[:4096] or b"<!ENTITY" in xml:
        raise ReportFormatError("DTDs are not accepted")           # no entity expansion
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as exc:
        raise ReportFormatError(f"not XML: {exc}") from None
    if root.tag != "feedback":
        raise ReportFormatError("not a DMARC feedback document")
    meta = root.find("report_metadata")
    domain = _text(root, "policy_published/domain").lower().rstrip(".")
    org, report_id = _text(meta, "org_name"), _text(meta, "report_id")
    if not domain or not org or not report_id:
        raise ReportFormatError("report without domain, org_name or report_id")
    try:
        begin, end = int(_text(meta, "date_range/begin")), int(_text(meta, "date_range/end"))
    except ValueError:
        raise ReportFormatError("bad date_range") from None
    rows = []
    for rec in root.findall("record"):
        row = rec.find("row")
        try:
            count = int(_text(row, "count") or "0")
        except ValueError:
            count = 0
        rows.append({"source_ip": _text(row, "source_ip"), "count": count,
                     "disposition": _text(row, "policy_evaluated/disposition"),
                     "dkim": _text(row, "policy_evaluated/dkim"), "spf": _text(row, "policy_evaluated/spf"),
                     "header_from": _text(rec, "identifiers/header_from")})
    return DmarcReport(domain=domain, org_name=org[:200], report_id=report_id[:200], begin=begin, end=end,
                       received=received, records=json.dumps(rows))


async def take_reports(store: Any, raw: bytes, now: float | None = None) -> int:
    """Keep the reports in ``raw`` about our domains; returns how many were new."""
    ours = {d.name.lower() for d in await store.list_domains()}
    kept = 0
    for xml in xml_documents(raw):
        try:
            report = parse_report(xml, time.time() if now is None else now)
        except ReportFormatError as exc:
            log.info("DMARC report not read: %s", exc)
            continue
        if report.domain not in ours:
            log.info("DMARC report about %s (not ours) ignored", report.domain)
            continue
        if await store.add_dmarc_report(report):
            kept += 1
    return kept
