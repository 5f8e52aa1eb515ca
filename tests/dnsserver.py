"""A small authoritative DNS server for tests: real UDP and TCP sockets, dnspython wire format.

    with DNSServer({"nyu.example": {"MX": ["10 mx.nyu.example."]},
                    "mx.nyu.example": {"A": ["127.0.0.3"]}}) as dns:
        config = f'[dns]\\nnameservers = ["127.0.0.1:{dns.port}"]'

Names missing from the table answer NXDOMAIN; a name present without the asked type answers
NOERROR with no records (NoAnswer); ``{"MX": ["0 ."]}`` is a null MX (RFC 7505). Records can
be changed while it runs (``dns.records[...] = ...``).
"""

from __future__ import annotations

import socket
import socketserver
import struct
import threading
from typing import Any

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset


def txt(text: str) -> str:
    """A TXT record value for the table, split into strings of at most 255 characters
    (DKIM keys are longer)."""
    return " ".join(f'"{text[i:i + 200]}"' for i in range(0, len(text), 200))


def answer(records: dict[str, dict[str, list[str]]], wire: bytes) -> bytes:
    query = dns.message.from_wire(wire)
    response = dns.message.make_response(query)
    response.flags |= dns.flags.AA
    question = query.question[0]
    name = question.name.to_text(omit_final_dot=True).lower()
    node = records.get(name)
    if node is None:
        response.set_rcode(dns.rcode.NXDOMAIN)
        return bytes(response.to_wire())
    rdtype = dns.rdatatype.to_text(question.rdtype)
    values = node.get(rdtype, [])
    if values:
        rrset = dns.rrset.RRset(question.name, dns.rdataclass.IN, question.rdtype)
        for value in values:
            rrset.add(dns.rdata.from_text(dns.rdataclass.IN, question.rdtype, value), ttl=60)
        response.answer.append(rrset)
    return bytes(response.to_wire())


class DNSServer:
    def __init__(self, records: dict[str, dict[str, list[str]]], host: str = "127.0.0.1") -> None:
        self.records = {k.lower().rstrip("."): v for k, v in records.items()}
        self.host = host
        self.queries: list[tuple[str, str]] = []
        server = self

        class UDP(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                data, sock = self.request
                sock.sendto(server._answer(data), self.client_address)

        class TCP(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                head = self.request.recv(2)
                if len(head) < 2:
                    return
                (length,) = struct.unpack("!H", head)
                data = b""
                while len(data) < length:
                    chunk = self.request.recv(length - len(data))
                    if not chunk:
                        return
                    data += chunk
                out = server._answer(data)
                self.request.sendall(struct.pack("!H", len(out)) + out)

        socketserver.ThreadingTCPServer.allow_reuse_address = True
        for attempt in range(20):
            # UDP and TCP on one port: the UDP port the kernel picks may be some TCP
            # socket's (an outgoing connection's) already, then another is tried.
            self._udp = socketserver.ThreadingUDPServer((host, 0), UDP)
            self.port = self._udp.server_address[1]
            try:
                self._tcp = socketserver.ThreadingTCPServer((host, self.port), TCP)
                break
            except OSError:
                self._udp.server_close()
                if attempt == 19:
                    raise
        self._threads: list[threading.Thread] = []

    def _answer(self, data: bytes) -> bytes:
        try:
            query = dns.message.from_wire(data)
            q = query.question[0]
            self.queries.append((q.name.to_text(omit_final_dot=True), dns.rdatatype.to_text(q.rdtype)))
        except Exception:  # noqa: BLE001 - a test server answers what it can
            pass
        return answer(self.records, data)

    def start(self) -> DNSServer:
        for srv in (self._udp, self._tcp):
            t = threading.Thread(target=srv.serve_forever, daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def stop(self) -> None:
        for srv in (self._udp, self._tcp):
            srv.shutdown()
            srv.server_close()

    def __enter__(self) -> DNSServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def can_bind(host: str, port: int) -> bool:
    """Whether this process may listen on host:port (port 25 needs root or a capability)."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((host, port))
        return True
    except OSError:
        return False
