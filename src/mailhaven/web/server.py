"""The ``http`` listener: uvicorn serving :func:`mailhaven.web.app.build_app` in-process.

On a loopback address it speaks plain HTTP (a reverse proxy or the local browser); on any
other address HTTPS with the server's certificate, so passwords never cross a network in
clear text.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
from collections.abc import Iterator
from typing import Any

import uvicorn

from ..net.admission import Admission
from ..net.http import ConcurrencyLimit, guarded_protocol
from ..net.listener import caps_from
from .app import build_app, build_challenge_app


class _Server(uvicorn.Server):
    """uvicorn without its own signal handlers: ``mailhaven serve`` owns SIGINT/SIGTERM and
    closes every listener, this one included."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class HttpListener:
    def __init__(self, ctx: Any, host: str, port: int, challenges_only: bool = False) -> None:
        self.ctx = ctx
        self.challenges_only = challenges_only
        self.host = host
        self.port = port
        self.server: uvicorn.Server | None = None
        self.task: asyncio.Task[None] | None = None
        self.sockets: list[socket.socket] = []
        self.admission = Admission(caps_from(ctx.config.limits))

    async def start(self) -> None:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        sock.listen(1024)
        sock.setblocking(False)
        self.sockets = [sock]
        limits = self.ctx.config.limits
        # Connections are admitted by net/http.py's protocol (caps, header and body
        # deadlines); requests in work are capped by ConcurrencyLimit, not by uvicorn's
        # limit_concurrency, which counts idle connections too.
        app = build_challenge_app(self.ctx) if self.challenges_only else build_app(self.ctx)
        config = uvicorn.Config(ConcurrencyLimit(app, limits.http_concurrency),
                                log_level="warning", access_log=False, lifespan="off",
                                proxy_headers=False, server_header=False, timeout_keep_alive=30, timeout_graceful_shutdown=3,
                                http=guarded_protocol(self.admission, limits))
        config.load()
        if not _is_loopback(self.host) and not self.challenges_only:
            config.ssl = self.ctx.tls
        self.server = _Server(config)
        self.task = asyncio.create_task(self.server.serve(sockets=[sock]))
        while not self.server.started and not self.task.done():
            await asyncio.sleep(0.01)
        if self.task.done():
            self.task.result()

    def close(self) -> None:
        if self.server is not None:
            self.server.should_exit = True

    async def wait_closed(self) -> None:
        if self.task is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.task, timeout=10)


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


async def start_listener(ctx: Any, name: str, host: str, port: int) -> HttpListener:
    listener = HttpListener(ctx, host, port)
    await listener.start()
    return listener


async def start_challenge_listener(ctx: Any, name: str, host: str, port: int) -> HttpListener:
    """``[listen] acme_http``: plain HTTP on any address, ACME http-01 answers only."""
    listener = HttpListener(ctx, host, port, challenges_only=True)
    await listener.start()
    return listener
