"""Port 25's connections to the least busy SMTP worker (``[smtp] workers = N``).

Every worker accepts on one listening socket that the main process bound, and a worker
stops accepting while it holds more sessions than the least busy live worker, as the
children of nginx and of Postfix's master hold back from a shared socket. The counts
live in a table of shared memory (:class:`WorkerTable`, a memfd the main process
creates), one row per worker, written only by that worker (and reset by the main process
when the worker dies).

Invariants:
- The least busy live worker never holds back, so a connection always has a taker, and
  a worker that is stopped (SIGSTOP), hung or dead takes none: it is not accepting. A
  worker is live while its heartbeat (every ``HEARTBEAT`` s) is younger than ``STALE`` s;
  a stale row no longer holds the others back.
- A worker that holds back is woken when another's count passes its own (an eventfd
  each), and checks again every ``HEARTBEAT`` s anyway, so a lost wake-up costs at most
  that.
- A connection is counted from its accept to its close, refused ones too, so a burst
  accepted before any session started is spread as well.

The table also holds, per worker, the connections its admission counts per client
address and per network (:class:`WorkerCounts`), so the per-address and per-network caps
hold for port 25 as a whole: each worker writes only its own counters and sums every live
worker's when it admits.
"""

from __future__ import annotations

import asyncio
import contextlib
import mmap
import os
import socket
import time
import zlib
from collections.abc import Awaitable, Callable
from typing import Any

from ..logs import Log

HEARTBEAT = 0.2
"""Seconds between a worker's heartbeats (and its own checks while holding back)."""
STALE = 1.0
"""A worker whose heartbeat is older than this is not waited for (stopped, hung, dead)."""
BATCH = 32
"""Connections accepted in one wake-up before the loop serves the others."""

# One row per worker: eight 8-byte fields.
ROW = 8
SESSIONS, HEARTBEAT_AT, LISTENING, PID, ACCEPTED, MESSAGES = range(6)
FIELDS = ("sessions", "heartbeat", "listening", "pid", "accepted", "messages")
SLOTS = 4096
"""Counters per worker for each of address, unauthenticated-per-address and network."""
KINDS = {"address": 0, "unauthenticated": 1, "network": 2}
COUNTERS = len(KINDS) * SLOTS
"""A worker's 4-byte counters, after every worker's row."""
BLOCK = ROW * 8 + COUNTERS * 4
"""Bytes of the table per worker."""
TABLE_NAME = "mailhaven-smtp-workers"
"""The memfd's name (``/proc/PID/fd`` shows ``/memfd:mailhaven-smtp-workers``)."""


class WorkerTable:
    """The shared counts: per worker, open sessions, heartbeat (``time.monotonic``, the
    same clock in every process), whether it accepts, its pid, and running totals of
    sessions accepted and messages delivered (for the bench and the curious)."""

    def __init__(self, fd: int, count: int) -> None:
        self.fd = fd
        self.count = count
        self._map = mmap.mmap(fd, count * BLOCK)
        rows = memoryview(self._map)[:count * ROW * 8]
        self.ints = rows.cast("q")
        self.floats = rows.cast("d")
        self.counters = memoryview(self._map)[count * ROW * 8:].cast("i")
        """Worker ``i``'s counters are ``counters[i * COUNTERS:(i + 1) * COUNTERS]``."""

    @classmethod
    def create(cls, count: int) -> WorkerTable:
        fd = os.memfd_create(TABLE_NAME, os.MFD_CLOEXEC)
        os.ftruncate(fd, count * BLOCK)
        return cls(fd, count)

    def get(self, worker: int, field: int) -> int:
        return int(self.ints[worker * ROW + field])

    def set(self, worker: int, field: int, value: int) -> None:
        self.ints[worker * ROW + field] = value

    def add(self, worker: int, field: int, delta: int) -> None:
        """Only the row's own worker adds to it: no two processes write one field."""
        self.ints[worker * ROW + field] += delta

    def beat(self, worker: int) -> None:
        self.floats[worker * ROW + HEARTBEAT_AT] = time.monotonic()

    def live(self, worker: int, now: float) -> bool:
        return self.ints[worker * ROW + PID] != 0 and now - self.floats[worker * ROW + HEARTBEAT_AT] < STALE

    def silent_for(self, worker: int, now: float) -> float:
        """Seconds since the worker's last heartbeat (huge before its first)."""
        return now - self.floats[worker * ROW + HEARTBEAT_AT]

    def gone(self, worker: int) -> None:
        """The main process's word that a worker died: its row no longer counts."""
        for field in (SESSIONS, LISTENING, PID):
            self.set(worker, field, 0)
        self.floats[worker * ROW + HEARTBEAT_AT] = 0.0
        self.clear_counters(worker)

    def clear_counters(self, worker: int) -> None:
        self.counters[worker * COUNTERS:(worker + 1) * COUNTERS] = memoryview(bytes(COUNTERS * 4)).cast("i")

    def rows(self) -> list[dict[str, float]]:
        now = time.monotonic()
        return [{**{name: self.get(i, f) for f, name in enumerate(FIELDS) if f != HEARTBEAT_AT},
                 "live": self.live(i, now)} for i in range(self.count)]

    def close(self) -> None:
        self.ints.release()
        self.floats.release()
        self.counters.release()
        self._map.close()


class WorkerCounts:
    """One worker's view of the connections every live worker's admission holds per
    address and per network (``Admission.shared``, net/admission.py).

    A key is counted in the slot ``crc32(key) % SLOTS`` (stable across processes, unlike
    ``hash``): two keys sharing a slot add up, so a collision can only over-count, which
    refuses early, never admits past a cap. A worker writes only its own counters, so no
    two processes write one field; a stale or dead worker's counters are not summed (the
    main process zeroes a dead one's). The check and the count are not one atomic step:
    connections from one address arriving at the same instant on different workers may
    pass a cap by at most the number of workers minus one, until one of them closes."""

    def __init__(self, table: WorkerTable, index: int) -> None:
        self.table = table
        self.index = index

    @staticmethod
    def _offset(kind: str, key: str) -> int:
        return KINDS[kind] * SLOTS + zlib.crc32(key.encode()) % SLOTS

    def held(self, kind: str, key: str) -> int:
        table, offset, now = self.table, self._offset(kind, key), time.monotonic()
        counters = table.counters
        return sum(counters[j * COUNTERS + offset] for j in range(table.count)
                   if j == self.index or table.live(j, now))

    def add(self, kind: str, key: str, delta: int) -> None:
        self.table.counters[self.index * COUNTERS + self._offset(kind, key)] += delta


def read_table(main_pid: int) -> list[dict[str, float]] | None:
    """The table of a running server, found among its main process's open files (the
    bench's per-worker figures); None without workers."""
    fds = f"/proc/{main_pid}/fd"
    try:
        entries = os.listdir(fds)
    except OSError:
        return None
    for entry in entries:
        with contextlib.suppress(OSError):
            if os.readlink(f"{fds}/{entry}").startswith(f"/memfd:{TABLE_NAME}"):
                fd = os.open(f"{fds}/{entry}", os.O_RDWR)
                try:
                    size = os.fstat(fd).st_size
                    table = WorkerTable(fd, size // BLOCK)
                    try:
                        return table.rows()
                    finally:
                        table.close()
                finally:
                    os.close(fd)
    return None


class BalancedAccept:
    """A worker's accept loop on the shared socket: accepts while this worker holds no
    more sessions than the least busy live one, and hands each connection to ``serve``."""

    def __init__(self, sock: socket.socket, table: WorkerTable, index: int, wakes: list[int],
                 serve: Callable[[socket.socket], Awaitable[None]], log: Log) -> None:
        self.sock = sock
        self.table = table
        self.index = index
        self.wakes = wakes
        """One eventfd per worker: ``wakes[index]`` is ours to read, the others' to write."""
        self.serve = serve
        self.log = log
        self.open = 0
        self.listening = False
        self.closed = False
        self.tasks: set[asyncio.Task[None]] = set()
        self._loop = asyncio.get_running_loop()
        self._timer: asyncio.TimerHandle | None = None

    def start(self) -> None:
        sock, table, i = self.sock, self.table, self.index
        sock.setblocking(False)
        table.set(i, SESSIONS, 0)
        table.clear_counters(i)
        table.set(i, PID, os.getpid())
        table.beat(i)
        self._loop.add_reader(self.wakes[i], self._woken)
        self._tick()
        self._check()

    def close(self) -> None:
        """Stop accepting (shutdown): the other workers take the new connections."""
        self.closed = True
        self._hold_back()
        self.table.set(self.index, PID, 0)
        with contextlib.suppress(Exception):
            self._loop.remove_reader(self.wakes[self.index])
        if self._timer is not None:
            self._timer.cancel()

    # -- the rule ---------------------------------------------------------------------
    def _least_busy(self) -> bool:
        """True while no live worker holds fewer sessions than this one."""
        table, now = self.table, time.monotonic()
        return all(table.get(j, SESSIONS) >= self.open for j in range(table.count)
                   if j != self.index and table.live(j, now))

    def _check(self) -> None:
        if self.closed:
            return
        if self._least_busy():
            if not self.listening:
                self.listening = True
                self.table.set(self.index, LISTENING, 1)
                self._loop.add_reader(self.sock, self._accept)
        else:
            self._hold_back()

    def _hold_back(self) -> None:
        if self.listening:
            self.listening = False
            self.table.set(self.index, LISTENING, 0)
            self._loop.remove_reader(self.sock)

    def _wake_others(self) -> None:
        """Our count rose: a worker holding back that is now no busier than we are may
        take connections again."""
        table, now = self.table, time.monotonic()
        for j in range(table.count):
            if (j != self.index and not table.get(j, LISTENING) and table.live(j, now)
                    and table.get(j, SESSIONS) <= self.open):
                with contextlib.suppress(OSError):
                    os.eventfd_write(self.wakes[j], 1)

    def _woken(self) -> None:
        with contextlib.suppress(OSError):
            os.eventfd_read(self.wakes[self.index])
        self._check()

    def _tick(self) -> None:
        self.table.beat(self.index)
        self._check()
        self._timer = self._loop.call_later(HEARTBEAT, self._tick)

    # -- accepting --------------------------------------------------------------------
    def _accept(self) -> None:
        for _ in range(BATCH):
            if not self.listening:
                return
            try:
                conn, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:             # EMFILE, ENOBUFS: let the others take them
                self.log.warning("smtp worker cannot accept", error=str(exc))
                self._hold_back()
                return
            conn.setblocking(False)
            self.open += 1
            self.table.set(self.index, SESSIONS, self.open)
            self.table.add(self.index, ACCEPTED, 1)
            task = self._loop.create_task(self._run(conn))
            self.tasks.add(task)
            self._wake_others()
            if not self._least_busy():
                self._hold_back()

    async def _run(self, conn: socket.socket) -> None:
        try:
            await self.serve(conn)          # which owns (and closes) the socket
        finally:
            self.open -= 1
            self.table.set(self.index, SESSIONS, self.open)
            task = asyncio.current_task()
            if task is not None:
                self.tasks.discard(task)
            self._check()

    def delivered(self, count: int = 1) -> None:
        self.table.add(self.index, MESSAGES, count)


def make_wakes(count: int) -> list[int]:
    """One eventfd per worker, made by the main process and passed to each worker."""
    return [os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC) for _ in range(count)]


def shared_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return socket.create_server((host, port), family=family, backlog=1024)


def describe(rows: list[dict[str, Any]]) -> str:
    return ", ".join(f"w{i}: {int(r['sessions'])} open, {int(r['accepted'])} accepted, "
                     f"{int(r['messages'])} delivered{'' if r['live'] else ' (not live)'}"
                     for i, r in enumerate(rows))
