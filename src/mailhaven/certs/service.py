"""The ACME service: keep a certificate for the hostname and the ``mta-sts.`` and
``autoconfig.`` names of every local domain, and give it to every listener.

- At start, and again whenever it is due: no certificate yet, the names changed (a domain
  was added), or two thirds of its lifetime have passed.
- The acme client is synchronous: each order runs in a thread; the event loop serves on.
- A failed order is retried after ``BACKOFF_FIRST``, doubling up to ``BACKOFF_MAX``.
- The new chain goes into the one server context every listener shares (SMTP STARTTLS
  and 465, IMAP, POP3, HTTPS): new handshakes present it, open connections keep going.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import signal
from typing import Any

from ..logs import Log
from ..tls import swap_certificate
from .challenges import Challenges
from .files import acme_dir, cert_paths, read_info, save_certificate

BACKOFF_FIRST = 5.0
BACKOFF_MAX = 6 * 3600.0
RECHECK = 300.0
"""Seconds between looks at the domain list when nothing is due (a new domain's names)."""


def wanted_names(hostname: str, domains: list[str]) -> list[str]:
    """The hostname first, then each domain's MTA-STS policy host (RFC 8461 3.2) and
    autoconfig host."""
    names = [hostname.lower()]
    for domain in sorted(d.lower() for d in domains):
        names += [f"mta-sts.{domain}", f"autoconfig.{domain}"]
    return list(dict.fromkeys(names))


def backoff(failures: int) -> float:
    return min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** max(0, failures - 1))


class ACMEService:
    def __init__(self, ctx: Any) -> None:
        self.ctx = ctx
        self.config = ctx.config
        self.log = Log("acme")
        self.challenges = Challenges(acme_dir(self.config.data_dir))
        ctx.tls.sni_callback = self.challenges.sni  # RFC 8737 3, on every TLS listener
        ctx.extras["acme"] = self.challenges
        self.failures = 0
        self.renew_now = asyncio.Event()
        # ``mailhaven acme renew`` (certs/cli.py): order now, whatever the dates say
        with contextlib.suppress(RuntimeError, NotImplementedError):  # not the main thread
            asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, self.renew_now.set)
        self.task = asyncio.create_task(self._run())

    async def _names(self) -> list[str]:
        domains = [d.name for d in await self.ctx.store.list_domains()]
        return wanted_names(self.config.hostname, domains)

    def _due(self, names: list[str]) -> datetime.datetime | None:
        """When the current certificate needs replacing; None: now."""
        info = read_info(cert_paths(self.config.data_dir)[0])
        if info is None or info.names != frozenset(names):
            return None
        return info.renew_at()

    async def _run(self) -> None:
        await self.ctx.listening.wait()  # the CA's validation connects to our listeners
        while True:
            names = await self._names()
            due = self._due(names)
            now = datetime.datetime.now(datetime.UTC)
            if due is None or due <= now or self.renew_now.is_set():
                self.renew_now.clear()
                wait = await self._renew(names)
            else:
                wait = min(RECHECK, (due - now).total_seconds())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.renew_now.wait(), timeout=max(wait, 0.1))

    async def _renew(self, names: list[str]) -> float:
        """One order; the seconds until the next look."""
        from .issue import issue  # the acme package and requests: a second to import, only here

        data_dir = self.config.data_dir
        self.log.info("ordering certificate", names=",".join(names))
        try:
            issued = await asyncio.to_thread(issue, self.config.acme, data_dir, names, self.challenges)
            cert, key = await asyncio.to_thread(save_certificate, data_dir, issued.fullchain_pem, issued.key_pem)
        except Exception as exc:  # noqa: BLE001 - any failure: log, back off, try again
            self.failures += 1
            wait = backoff(self.failures)
            self.log.error("certificate order failed", error=str(exc) or type(exc).__name__,
                           retry_in=int(wait))
            return wait
        self.failures = 0
        swap_certificate(self.ctx.tls, cert, key)
        info = read_info(cert)
        self.log.info("certificate installed", names=",".join(names),
                      not_after=info.not_after.isoformat() if info else "")
        return 0.0

    def close(self) -> None:
        with contextlib.suppress(Exception):
            asyncio.get_running_loop().remove_signal_handler(signal.SIGUSR1)
        self.task.cancel()

    async def wait_closed(self) -> None:
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


class _Off:
    def close(self) -> None:
        pass

    async def wait_closed(self) -> None:
        pass


async def start_service(ctx: Any) -> ACMEService | _Off:
    if not ctx.config.acme.directory:
        return _Off()
    return ACMEService(ctx)


FOLLOW_INTERVAL = 5.0
"""Seconds between looks at the file's change time (one stat)."""


async def follow_certificate(ctx: Any, interval: float = FOLLOW_INTERVAL) -> None:
    """In an SMTP worker process (smtp/workers.py): take the certificate the main process's
    ACME service renewed, by the file's change time, into this process's context."""
    cert, key = cert_paths(ctx.config.data_dir)

    def stamp() -> float:
        try:
            return cert.stat().st_mtime
        except OSError:
            return 0.0

    seen = stamp()
    while True:
        await asyncio.sleep(interval)
        now = stamp()
        if now and now != seen:
            try:
                swap_certificate(ctx.tls, cert, key)
                seen = now
            except (OSError, ValueError):  # written between the key and the chain: next time
                pass
