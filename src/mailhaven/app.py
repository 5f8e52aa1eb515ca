"""Process wiring: open the store, start every configured listener and service, stop cleanly.

Listeners and services are looked up by name in the tables below; a module that does
not exist (a protocol not written yet) is skipped, so the process always starts with
what there is.
"""

from __future__ import annotations

import asyncio
import gc
import importlib
import importlib.util
import signal
import ssl
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from .config import Config
from .logs import Log
from .queue.api import Outbound
from .store import create_store
from .store.api import Store
from .tls import server_context

T = TypeVar("T")


GC_THRESHOLDS = (50_000, 20, 100)
"""The cyclic collector's generation thresholds (CPython's are 700, 10, 10). A server holds
thousands of long-lived objects per connection, and with the defaults a burst of work (a
new message told to 3,000 IDLE sessions) kept running full collections over all of them:
fan-out took 0.31-0.58 s and 100-190 us of CPU a session, bimodally; with these it took
0.28-0.31 s and 93-107 us, every run. Nearly everything is freed by reference counting
anyway; cycles wait a little longer."""


def run(config: Config, main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(main)`` on the event loop the configuration asks for: uvloop by default,
    where it is installed. A one-message IMAP command costs about a third less server CPU
    on it than on the stdlib loop (alternating runs; the sockets, timers and wake-ups
    that are most of such a command run in C)."""
    gc.set_threshold(*GC_THRESHOLDS)
    factory = None
    if config.event_loop == "uvloop":
        try:
            import uvloop
        except ImportError:         # not built for this platform: the stdlib loop serves
            pass
        else:
            factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)


# listener name -> "module:async factory(ctx, name, host, port) -> Closeable"
LISTENERS: dict[str, str] = {
    "smtp": "mailhaven.smtp.server:start_listener",
    "submission": "mailhaven.smtp.server:start_listener",
    "submissions": "mailhaven.smtp.server:start_listener",
    "imap": "mailhaven.imap.server:start_listener",
    "imaps": "mailhaven.imap.server:start_listener",
    "pop3": "mailhaven.pop3.server:start_listener",
    "pop3s": "mailhaven.pop3.server:start_listener",
    "managesieve": "mailhaven.managesieve.server:start_listener",
    "http": "mailhaven.web.server:start_listener",
    "acme_http": "mailhaven.web.server:start_challenge_listener",
}

# service name -> "module:async factory(ctx) -> Closeable"; started before the listeners.
SERVICES: dict[str, str] = {
    "acme": "mailhaven.certs.service:start_service",  # first: it sets the TLS context's SNI hook
    "queue": "mailhaven.queue.runner:start_service",
    "maintenance": "mailhaven.app:start_maintenance",
    "dmarc_reports": "mailhaven.filter.dmarcreports:start_service",
}


class Closeable(Protocol):
    def close(self) -> None: ...

    async def wait_closed(self) -> None: ...


@dataclass
class AppContext:
    """Everything a listener or service needs, passed explicitly (no module globals)."""

    config: Config
    store: Store
    log: Log
    tls: ssl.SSLContext
    outbound: Outbound | None = None
    """Set by the queue service; None means remote delivery is unavailable."""
    shutting_down: asyncio.Event = field(default_factory=asyncio.Event)
    listening: asyncio.Event = field(default_factory=asyncio.Event)
    """Set once every listener is bound (the ACME service's challenges need them)."""
    extras: dict[str, Any] = field(default_factory=dict)


def _resolve(target: str) -> Callable[..., Awaitable[Any]] | None:
    module_name, _, attr = target.partition(":")
    if importlib.util.find_spec(module_name) is None:
        return None
    module = importlib.import_module(module_name)
    return getattr(module, attr, None)


def _module_exists(target: str) -> bool:
    module_name = target.partition(":")[0]
    try:
        return importlib.util.find_spec(module_name) is not None
    except ModuleNotFoundError:
        return False


class _Maintenance:
    """Hourly: remove blob files no row names (after a grace period)."""

    def __init__(self, ctx: AppContext) -> None:
        self._ctx = ctx
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        collect = getattr(self._ctx.store, "collect_garbage", None)
        while collect is not None:
            await asyncio.sleep(3600)
            try:
                removed = await collect()
                if removed:
                    self._ctx.log.info("blob gc", removed=removed)
            except Exception:  # noqa: BLE001 - maintenance must never stop the server
                self._ctx.log.error("blob gc failed", exc=True)

    def close(self) -> None:
        self._task.cancel()

    async def wait_closed(self) -> None:
        try:
            await self._task
        except asyncio.CancelledError:
            pass


async def start_maintenance(ctx: AppContext) -> Closeable:
    return _Maintenance(ctx)


@dataclass
class Running:
    ctx: AppContext
    listeners: dict[str, tuple[str, int]]
    closeables: list[Closeable]


async def start(config: Config, log: Log) -> Running:
    store = create_store(config)
    await store.open()
    store.refill_in_background()       # a lost search index, refilled beside serving (sqliterefill.py)
    ctx = AppContext(config=config, store=store, log=log, tls=server_context(config))
    closeables: list[Closeable] = []
    for target in SERVICES.values():
        if not _module_exists(target):
            continue
        factory = _resolve(target)
        if factory is not None:
            closeables.append(await factory(ctx))
    listeners: dict[str, tuple[str, int]] = {}
    for name, target in LISTENERS.items():
        address = config.listen.address(name)
        if address is None or not _module_exists(target):
            continue
        factory = _resolve(target)
        if factory is None:
            continue
        try:
            server = await factory(ctx, name, address[0], address[1])
        except OSError as exc:
            # Say which listener: "address already in use" alone leaves eight to choose from.
            raise OSError(exc.errno, f"listener {name} on {address[0]}:{address[1]} "
                          f"([listen] {name} in the config): {exc.strerror or exc}") from exc
        closeables.append(server)
        bound = address
        sockets = getattr(server, "sockets", None)
        if sockets:
            sock_name = sockets[0].getsockname()
            bound = (sock_name[0], sock_name[1])
        listeners[name] = bound
    ctx.listening.set()
    return Running(ctx=ctx, listeners=listeners, closeables=closeables)


async def stop(running: Running) -> None:
    running.ctx.shutting_down.set()
    for c in reversed(running.closeables):
        c.close()
    for c in reversed(running.closeables):
        try:
            await asyncio.wait_for(c.wait_closed(), timeout=10)
        except (TimeoutError, Exception):  # noqa: BLE001 - best effort on the way out
            pass
    await running.ctx.store.close()


async def serve(config: Config, log: Log, ready: Callable[[Running], None] | None = None) -> None:
    """Run until SIGINT/SIGTERM, then stop gracefully (421 to sessions, finish commits)."""
    running = await start(config, log)
    if ready is not None:
        gc.freeze()         # what start-up made lives as long as the process: never scan it again
        ready(running)
    stop_event = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop_event.set)
    await stop_event.wait()
    log.info("shutting down")
    await stop(running)
