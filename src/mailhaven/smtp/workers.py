"""Inbound SMTP in worker processes: port 25 on every core.

One Python process runs on one core, and inbound mail is the heaviest load a server
takes. With ``[smtp] workers = N`` the main process binds the port-25 socket but does
not accept on it; N worker processes (``python -m mailhaven.smtp.workers``) inherit the
socket and each runs the same :class:`~mailhaven.smtp.server.SmtpListener` with a store
of its own on the same data directory (SQLite serialises their commits; PostgreSQL
nodes already share one database). A worker accepts only while it holds no more
sessions than the least busy live worker (smtp/balance.py). The main process keeps IMAP, POP3, HTTP and
submission, so a flood of inbound mail does not stall a mail client.

What a worker commits, it tells the main process over a socketpair, one JSON line per
change (the PostgreSQL backend carries them by NOTIFY instead), so IMAP IDLE and JMAP
push there hear of a delivery as they do of their own. A line ``{"queue": 1}`` wakes the
outbound queue after a worker queued mail (an alias that forwards off-site).

Invariants:
- A worker answers ``250`` after its own commit, as the main process does: nothing a
  worker acknowledged is lost when any process dies.
- A worker exits when the main process goes away (its end of the socketpair closes), so
  none outlives the server; the main process restarts a worker that died, and kills
  (then restarts) one whose heartbeat has been silent for ``[smtp] worker_hang_timeout``
  seconds: a worker stuck in a loop would otherwise keep its sessions forever.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import os
import pickle
import signal
import socket
import sys
import time
from collections.abc import Callable
from typing import Any

from ..logs import Log
from ..net.admission import Admission
from ..queue.api import OutboundMessage
from ..store.changes import decode_change, encode_change
from .balance import BalancedAccept, WorkerCounts, WorkerTable, make_wakes

RESTART_DELAY = 1.0
QUEUE_WAKE = b'{"queue":1}\n'
"""The line a worker sends after queueing outbound mail: the main process's runner wakes."""


class WorkerPool:
    """The main process's side: spawn, feed from, supervise and stop the workers.

    ``sockets`` holds the one listening socket every worker accepts on (this process keeps
    it open, so connections queued while every worker is away wait for a replacement);
    ``table`` the shared counts the workers balance by, ``wakes`` their eventfds."""

    def __init__(self, app: Any, sock: socket.socket, count: int, log: Log) -> None:
        self.app = app
        self.sockets = [sock]
        self.count = count
        self.log = log
        self.table = WorkerTable.create(count)
        self.wakes = make_wakes(count)
        self.closing = False
        self.procs: dict[int, asyncio.subprocess.Process] = {}
        self.ready_at: dict[int, float] = {}
        """When each running worker said it was ready (its heartbeat may not have begun)."""
        self.hang_timeout = app.config.smtp.worker_hang_timeout
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        started = [asyncio.get_running_loop().create_future() for _ in range(self.count)]
        for i in range(self.count):
            task = asyncio.create_task(self._keep(i, started[i]))
            self._tasks.add(task)
        await asyncio.gather(*started)
        self._tasks.add(asyncio.create_task(self._watch()))

    async def _watch(self) -> None:
        """Kill a worker whose heartbeat has been silent too long; ``_keep`` restarts it."""
        while not self.closing:
            await asyncio.sleep(min(5.0, self.hang_timeout / 4))
            now = time.monotonic()
            for index, proc in list(self.procs.items()):
                ready = self.ready_at.get(index)
                if self.closing or ready is None or proc.returncode is not None:
                    continue
                silent = min(self.table.silent_for(index, now), now - ready)
                if silent > self.hang_timeout:
                    self.log.error("smtp worker hung; killing it", worker=index, pid=proc.pid,
                                   silent=round(silent, 1))
                    with contextlib.suppress(ProcessLookupError):
                        proc.kill()
                    self.ready_at.pop(index, None)

    async def _keep(self, index: int, started: asyncio.Future[None]) -> None:
        """Run worker ``index``; restart it when it dies unless we are closing."""
        while not self.closing:
            try:
                await self._run_one(index, started)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - keep supervising
                self.log.error("smtp worker failed to start", worker=index, error=str(exc))
                if not started.done():
                    started.set_exception(exc)
                    return
            if not self.closing:
                self.log.warning("smtp worker exited; restarting", worker=index)
                await asyncio.sleep(RESTART_DELAY)

    async def _run_one(self, index: int, started: asyncio.Future[None]) -> None:
        ours, theirs = socket.socketpair()
        listen = self.sockets[0].fileno()
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "mailhaven.smtp.workers",
                "--listen-fd", str(listen), "--feed-fd", str(theirs.fileno()),
                "--table-fd", str(self.table.fd), "--wake-fds", ",".join(map(str, self.wakes)),
                "--index", str(index), "--count", str(self.count),
                stdin=asyncio.subprocess.PIPE, pass_fds=(listen, theirs.fileno(), self.table.fd, *self.wakes))
        finally:
            theirs.close()
        self.procs[index] = proc
        assert proc.stdin is not None
        proc.stdin.write(pickle.dumps(self.app.config))
        await proc.stdin.drain()
        proc.stdin.close()
        reader, writer = await asyncio.open_connection(sock=ours)
        try:
            ready = await reader.readline()
            if ready.strip() != b'{"ready":1}':
                raise RuntimeError(f"smtp worker {index} did not start (exit {await proc.wait()})")
            if not started.done():
                started.set_result(None)
            self.ready_at[index] = time.monotonic()
            self.log.info("smtp worker started", worker=index, pid=proc.pid)
            while line := await reader.readline():
                self._feed(line)
        finally:
            writer.close()
            await proc.wait()
            self.table.gone(index)              # its sessions died with it: not waited for
            self.procs.pop(index, None)
            self.ready_at.pop(index, None)

    def _feed(self, line: bytes) -> None:
        if line.strip() == QUEUE_WAKE.strip():
            wake = getattr(self.app.outbound, "wake", None)
            if wake is not None:
                wake()
            return
        decoded = decode_change(line.decode(errors="replace"))
        if decoded is None:
            return
        if decoded[1].kind == "exists":
            delivered = getattr(self.app.store, "delivered_elsewhere", None)
            if delivered is not None:               # SQLite: the search index is built here
                delivered()
        hub = getattr(self.app.store, "hub", None)
        if hub is not None:
            hub.publish(decoded[1])

    def close(self) -> None:
        self.closing = True
        for proc in self.procs.values():
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)

    async def wait_closed(self) -> None:
        procs = list(self.procs.values())
        if procs:
            done, pending = await asyncio.wait([asyncio.ensure_future(p.wait()) for p in procs], timeout=10)
            for p in procs:
                if p.returncode is None:
                    with contextlib.suppress(ProcessLookupError):
                        p.kill()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for s in self.sockets:
            s.close()
        self.table.close()
        os.close(self.table.fd)
        for fd in self.wakes:
            os.close(fd)


class _QueueOnly:
    """A worker's ``ctx.outbound``: commits queue entries, then wakes the main process's
    queue runner (which does the delivering)."""

    def __init__(self, store: Any, notify: Any) -> None:
        from ..queue.store import queue_store

        self.queue = queue_store(store)
        self.notify = notify

    async def open(self) -> None:
        await self.queue.open()

    async def enqueue(self, message: OutboundMessage) -> list[int]:
        ids = await self.queue.enqueue(message)
        self.notify(QUEUE_WAKE)
        return ids


def share_caps(admission: Admission, table: WorkerTable, index: int) -> None:
    """``[limits]`` connection caps hold for port 25 as a whole, not per worker.

    ``connections``: each worker admits its share (rounded up). The balancer keeps the
    workers' counts within one of each other, so a worker at its share means they all are.
    Per address and per network: one address's connections need not be spread evenly, so
    a share would refuse it early; each worker counts them in the shared table instead and
    admits against the sum over the live workers (balance.WorkerCounts)."""
    workers = table.count
    admission.caps = dataclasses.replace(admission.caps, total=-(-admission.caps.total // workers))
    admission.shared = WorkerCounts(table, index)


def _forward_changes(store: Any, writer: asyncio.StreamWriter, origin: str,
                     delivered: Callable[[], None]) -> None:
    """Send the main process every change this worker's store commits, one JSON line each,
    the lines of one loop iteration in one write: a commit's deliveries settle together, and
    a write (a syscall, and a wake-up of the main process) per change was 7% of a worker's
    samples under load."""
    lines: list[bytes] = []
    loop = asyncio.get_running_loop()

    def flush() -> None:
        writer.write(b"".join(lines))
        lines.clear()

    def take(change: Any) -> None:
        if not lines:
            loop.call_soon(flush)
        lines.append(encode_change(origin, change).encode() + b"\n")
        if change.kind == "exists":
            delivered()

    store.subscribe(None).on_change(take)


async def _worker(config: Any, listen_fd: int, feed_fd: int, table: WorkerTable, wakes: list[int],
                  index: int) -> None:
    from ..app import AppContext
    from ..store import create_store
    from ..tls import server_context
    from .server import SmtpListener

    log = Log("smtp-worker").bind(worker=index)
    feed = socket.socket(fileno=feed_fd)
    reader, writer = await asyncio.open_connection(sock=feed)
    store = create_store(config)
    await store.open()
    ctx = AppContext(config=config, store=store, log=log, tls=server_context(config))
    outbound = _QueueOnly(store, writer.write)
    await outbound.open()
    ctx.outbound = outbound
    listener = SmtpListener(ctx, "smtp")
    share_caps(listener.admission, table, index)
    accept = BalancedAccept(socket.socket(fileno=listen_fd), table, index, wakes, listener.serve_accepted, log)
    if config.store.backend == "sqlite":   # PostgreSQL nodes hear of each other by NOTIFY
        _forward_changes(store, writer, f"w{index}", accept.delivered)
        index_elsewhere = getattr(store, "index_elsewhere", None)
        if index_elsewhere is not None:     # the main process indexes what we deliver
            index_elsewhere()
    follow = None
    if config.acme.directory:                   # renewed by the main process's ACME service
        from ..certs.service import follow_certificate
        follow = asyncio.create_task(follow_certificate(ctx))
    accept.start()
    writer.write(b'{"ready":1}\n')
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, lambda: None)   # the main process decides
    parent_gone = asyncio.create_task(reader.read())         # EOF: the main process is gone
    stopping = asyncio.create_task(stop.wait())
    await asyncio.wait({parent_gone, stopping}, return_when=asyncio.FIRST_COMPLETED)
    accept.close()                        # the other workers take new connections meanwhile
    listener.close()
    await listener.wait_closed()
    if follow is not None:
        follow.cancel()
    await asyncio.sleep(0)                # let the last changes go out
    with contextlib.suppress(Exception):
        await writer.drain()
    await store.close()
    parent_gone.cancel()
    stopping.cancel()


def main() -> int:
    ap = argparse.ArgumentParser(description="internal: an inbound SMTP worker of `mailhaven serve`")
    ap.add_argument("--listen-fd", type=int, required=True)
    ap.add_argument("--feed-fd", type=int, required=True)
    ap.add_argument("--table-fd", type=int, required=True)
    ap.add_argument("--wake-fds", required=True)
    ap.add_argument("--index", type=int, default=0)
    ap.add_argument("--count", type=int, required=True)
    args = ap.parse_args()
    config = pickle.loads(sys.stdin.buffer.read())   # from our parent, over a pipe
    from .. import logs
    from ..datadir import restrict_umask

    restrict_umask()            # as the server that started us: what we create is private
    logs.setup(config.log_level, config.log_format)
    logs.set_process_tag(f"w{args.index}")
    from ..app import run

    table = WorkerTable(args.table_fd, args.count)
    wakes = [int(x) for x in args.wake_fds.split(",")]
    run(config, _worker(config, args.listen_fd, args.feed_fd, table, wakes, args.index))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
