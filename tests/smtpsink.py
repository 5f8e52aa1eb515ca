"""A plain SMTP server for tests that play someone else's MX: it accepts every message
and records the envelope and the bytes (no TLS, no checks). Threaded, real sockets."""

from __future__ import annotations

import socketserver
import threading
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Received:
    mail_from: str
    rcpt_to: list[str]
    data: bytes


@dataclass
class _State:
    messages: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _address(arg: str) -> str:
    return arg.split(":", 1)[1].strip().split(" ", 1)[0].strip("<>")


class _Handler(socketserver.StreamRequestHandler):
    state: _State

    def send(self, line: str) -> None:
        self.wfile.write(line.encode() + b"\r\n")
        self.wfile.flush()

    def handle(self) -> None:
        self.send("220 sink.test ESMTP")
        mail_from, rcpts = "", []
        while line := self.rfile.readline():
            verb = line[:4].decode("ascii", "replace").upper()
            if verb in ("EHLO", "HELO"):
                self.send("250-sink.test\r\n250-8BITMIME\r\n250 SMTPUTF8" if verb == "EHLO" else "250 sink.test")
            elif verb == "MAIL":
                mail_from, rcpts = _address(line.decode()), []
                self.send("250 2.1.0 ok")
            elif verb == "RCPT":
                rcpts.append(_address(line.decode()))
                self.send("250 2.1.5 ok")
            elif verb == "DATA":
                self.send("354 go on")
                data = bytearray()
                while (chunk := self.rfile.readline()) not in (b".\r\n", b""):
                    data += chunk[1:] if chunk.startswith(b"..") else chunk
                with self.state.lock:
                    self.state.messages.append(Received(mail_from, list(rcpts), bytes(data)))
                self.send("250 2.0.0 queued")
            elif verb == "QUIT":
                self.send("221 bye")
                return
            elif verb == "RSET":
                mail_from, rcpts = "", []
                self.send("250 ok")
            else:
                self.send("250 ok" if verb == "NOOP" else "502 5.5.1 not here")


class SmtpSink:
    def __init__(self, host: str, port: int = 25) -> None:
        self.state = _State()
        handler = type("Handler", (_Handler,), {"state": self.state})
        socketserver.ThreadingTCPServer.allow_reuse_address = True
        self.server = socketserver.ThreadingTCPServer((host, port), handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def messages(self) -> list[Received]:
        with self.state.lock:
            return list(self.state.messages)

    def __enter__(self) -> SmtpSink:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()
