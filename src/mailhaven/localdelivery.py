"""Delivery to local accounts through each recipient's active Sieve script.

Accounts without a script get the message in INBOX in one store call, as before. For an
account with one, the compiled script (cached by its text) runs on the message and its
actions are carried out: keep into INBOX, fileinto into the named mailbox (made first with
``:create``, else INBOX when it does not exist, as Pigeonhole does), IMAP flags on both,
discard stores nothing. ``reject``/``ereject`` are returned to the caller, who can refuse
the message in SMTP when every recipient rejected it. ``redirect`` hands a copy to the
outbound queue (sieve/forward.py: SRS envelope sender, Delivered-To loop check, hourly
limit); ``vacation`` queues an automatic reply (sieve/vacation.py). When SMTP cannot refuse
(another recipient took the message, or it did not come over SMTP), a reject becomes an MDN
and an ereject a DSN to the sender (sieve/rejection.py) and the message is not kept.
A script that fails at run time gives the implicit keep (RFC 5228 2.10.6).

A message over :data:`SIEVE_PREFIX` is not read whole: the script sees its first
:data:`SIEVE_PREFIX` bytes (the header section and the start of the body, so ``header``,
``address`` and ``body`` tests work on what a person reads first) and its true size;
a redirect copies it from its file, and an editheader change is written before the rest
of the file."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Any

from .config import SieveConfig
from .sieve import Action, Script, SieveError, SieveMessage, compile_script, run
from .sieve.actions import Vacation
from .sieve.compiler import Command, Test
from .sieve.forward import COPY_CHUNK, has_eight_bit, redirect, strip_return_path
from .sieve.interpreter import Environment, Limits
from .sieve.notify import send as send_notification
from .sieve.rejection import send as send_rejection
from .sieve.vacation import respond
from .store.api import BlobRef, DeliveryResult, InvalidName, NotFound, Store, StoreError

log = logging.getLogger("mailhaven.sieve")

SIEVE_PREFIX = 2 * 1024 * 1024
"""Bytes of a large message a script sees (as the summary's bounded prefix does)."""

_SYSTEM_FLAGS = {f.lower(): f for f in ("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft")}
_KEYWORD = re.compile(r"[!#$&'+\-.0-9:<=>?@A-Z^_`a-z|~]+\Z")             # RFC 3501 atom, no specials


@dataclass(kw_only=True)
class LocalOutcome:
    results: list[DeliveryResult] = field(default_factory=list)
    """One per account that stored the message at least once (over_quota when it could not)."""
    rejected: dict[int, str] = field(default_factory=dict)
    """account id -> the reject/ereject reason (RFC 5429), nothing stored for it."""
    reject_kinds: dict[int, str] = field(default_factory=dict)
    """account id -> ``reject`` or ``ereject``."""
    discarded: list[int] = field(default_factory=list)
    """Accounts whose script stored the message nowhere (discard)."""


@lru_cache(maxsize=512)
def _compiled(text: str) -> Script | None:
    try:
        return compile_script(text)
    except SieveError as e:                        # checked at upload; an old or hand-made row
        log.warning("stored Sieve script does not compile: %s", e)
        return None


@dataclass(frozen=True)
class _Active:
    text: str
    script: Script | None
    asks_mailboxes: bool


class ActiveScripts:
    """Each account's active script as last compiled, checked against the text the store
    gives at every delivery (the store stays the truth: a script changed by ManageSieve,
    JMAP, the CLI, the webmail or another process or node is a different text). Comparing
    the text with the one kept is a memcmp; looking it up in the compile cache by text
    hashed the fresh 5 KB string of a 50-rule script every time (12 us warm)."""

    def __init__(self, size: int = 512) -> None:
        # As many as _compiled's cache keeps: a script may be 64 KB ([sieve]
        # max_script_size) and its compiled form several times that.
        self.size = size
        self._by_account: dict[int, _Active] = {}

    def get(self, account_id: int, text: str) -> _Active:
        found = self._by_account.get(account_id)
        if found is not None and found.text == text:
            return found
        script = _compiled(text)
        found = _Active(text, script, script is not None and _asks_mailboxes(script))
        if len(self._by_account) >= self.size:
            self._by_account.clear()
        self._by_account[account_id] = found
        return found


_ACTIVE = ActiveScripts()


_DEFAULT_SETTINGS = SieveConfig()
"""``[sieve]`` when the caller gives none (made once: a SieveConfig made and hashed for
the cache below at every delivery cost ~2 us)."""


@lru_cache(maxsize=8)
def _run_settings(settings: SieveConfig) -> tuple[Limits, Environment]:
    return (Limits(max_redirects=settings.max_redirects),
            Environment(spam_header=settings.spamtest_header, spam_max=settings.spamtest_max,
                        virus_header=settings.virustest_header, virus_max=settings.virustest_max))


MAX_INCLUDED = 32
"""Personal scripts one delivery loads for include (RFC 6609); more are left out (missing)."""


async def included_scripts(store: Store, account_id: int, script: Script) -> dict[str, Script]:
    """The account's scripts that ``script`` includes, and those they include, compiled."""
    found: dict[str, Script] = {}
    todo = list(script.includes)
    while todo and len(found) < MAX_INCLUDED:
        name = todo.pop()
        if name in found:
            continue
        try:
            text = await store.get_sieve_script(account_id, name)
        except NotFound:
            continue                                   # a run-time error, unless :optional
        compiled = _compiled(text)
        if compiled is not None:
            found[name] = compiled
            todo.extend(compiled.includes)
    return found


def imap_flags(flags: Sequence[str]) -> list[str]:
    """Sieve flag names as IMAP stores them: system flags in their canonical case, keywords
    that are IMAP atoms; anything else (\\Recent, spaces, parentheses) is dropped."""
    out = []
    for f in flags:
        if f.lower() in _SYSTEM_FLAGS:
            out.append(_SYSTEM_FLAGS[f.lower()])
        elif not f.startswith("\\") and _KEYWORD.match(f):
            out.append(f)
    return out


async def deliver_local(store: Store, blob: BlobRef, recipients: Mapping[str, Sequence[int]], *,
                        mail_from: str, refusable: bool = False, mailbox: str = "INBOX",
                        sealer: Any = None, sieve: SieveConfig | None = None) -> LocalOutcome:
    """``recipients`` maps each envelope recipient to its accounts (aliases may fan out).
    ``refusable``: the caller can refuse the whole message (no other recipient wants it);
    rejections are returned only then, and only when every account rejected; otherwise each
    rejecting account's refusal goes to the sender by mail (an MDN or a DSN).
    ``mailbox``: where a message no script files goes (the implicit keep): Junk when the
    inbound checks said so (filter/). ``sealer``: the ARC sealer (filter/arc.py) for
    redirected copies. ``sieve``: the ``[sieve]`` settings (the redirect limit, the
    spamtest/virustest headers); None: the defaults."""
    rcpt_of: dict[int, str] = {}
    for rcpt, ids in recipients.items():
        for account_id in ids:
            rcpt_of.setdefault(account_id, rcpt)
    outcome = LocalOutcome()
    plain: list[int] = []
    scripted: list[tuple[int, Script, bool]] = []
    for account_id in rcpt_of:
        active = await store.get_active_sieve_script(account_id)
        known = _ACTIVE.get(account_id, active[1]) if active is not None else None
        if known is None or known.script is None:
            plain.append(account_id)
        else:
            scripted.append((account_id, known.script, known.asks_mailboxes))
    if plain:
        outcome.results.extend(await store.deliver(blob, plain, mailbox=mailbox))
    if not scripted:
        return outcome
    raw, path = await read_bounded(store, blob)
    total = blob.size if path is not None else None
    limits, env = _run_settings(sieve or _DEFAULT_SETTINGS)
    for account_id, script, asks_mailboxes in scripted:
        names: dict[str, str] = {}
        mine_env = env
        if script.includes or asks_mailboxes:           # else listed only if an action files the message
            names, special = await _mailboxes(store, account_id)
            mine_env = replace(env, special_use=special) if special else env
        if script.includes:
            mine_env = replace(mine_env, includes=await included_scripts(store, account_id, script))
        if "duplicate" in script.extensions or any("duplicate" in s.extensions for s in mine_env.includes.values()):
            now = time.time()
            mine_env = replace(mine_env, duplicates=await store.duplicate_keys(account_id, now=now))
        result = run(script, SieveMessage(raw=raw, mail_from=mail_from, rcpt_to=rcpt_of[account_id],
                                          total_size=total),
                     mailbox_exists=lambda name, names=names: name.lower() in names,   # type: ignore[misc]
                     limits=limits, env=mine_env)
        if result.error:
            log.info("Sieve script of account %d failed, implicit keep: %s", account_id, result.error)
        elif result.duplicates:                # RFC 7352 3: recorded once the run succeeded
            now = time.time()
            await store.remember_duplicates(account_id, {k: now + s for k, s in result.duplicates.items()}, now=now)
        if not names and _files_anywhere(result.actions, mailbox):
            names = (await _mailboxes(store, account_id))[0]
        actions: list[Action] = []
        junk = mailbox != "INBOX"              # the inbound checks' verdict: never forward or answer it
        kept = False
        mine, copy, mine_path = blob, raw, path
        if result.message is not None:         # RFC 5293: editheader changed this recipient's copy
            mine, copy, mine_path = await _edited_copy(store, result.message, raw, path)
        for action in result.actions:
            if action.kind == "redirect":
                if (junk or not await redirect(store, copy, account_id, rcpt_of[account_id], action.address or "",
                                               mail_from=mail_from, sealer=sealer, copy=copier(store, mine_path))) \
                        and not action.copy and not kept:
                    kept = True                                 # not sent: kept (once) rather than lost
                    actions.append(Action(kind="keep", implicit=True))
                continue
            if action.kind == "notify":                 # RFC 5435: through the outbound queue
                if action.notify is not None and not junk:
                    await send_notification(store, raw, account_id, rcpt_of[account_id], action.notify)
                continue
            if action.kind == "vacation" and action.vacation is not None and not junk:
                reply = await respond(store, raw, account_id, rcpt_of[account_id], action.vacation, mail_from=mail_from)
                if reply is not None and action.vacation.fcc is not None:      # RFC 8580 4: file a copy
                    await _file_copy(store, reply, account_id, action.vacation, names)
            actions.append(action)
        await _carry_out(store, mine, account_id, actions, names, outcome, keep=mailbox)
    if outcome.rejected and (not refusable or outcome.results or outcome.discarded):
        for account_id, reason in outcome.rejected.items():   # RFC 5429 2.1, 2.2.1: refused by mail
            await send_rejection(store, raw, kind=outcome.reject_kinds.get(account_id, "reject"), reason=reason,
                                 rcpt=rcpt_of[account_id], mail_from=mail_from)
            outcome.discarded.append(account_id)
        outcome.rejected.clear()
    for account_id, reason in outcome.rejected.items():     # one line of printable ASCII
        outcome.rejected[account_id] = re.sub(r"[^ -~]+", " ", reason).strip()[:200] or "Rejected"
    return outcome


async def _mailboxes(store: Store, account_id: int) -> tuple[dict[str, str], dict[str, str]]:
    """The account's mailbox names by their lower case, and special-use attribute -> name."""
    boxes = await store.mailbox_names(account_id)
    names = {name.lower(): name for name in boxes}
    return names, {a.lower(): name for name, use in boxes.items() if use for a in use.split()}


_MAILBOX_TESTS = frozenset({"mailboxexists", "specialuse_exists"})


def _asks_mailboxes(script: Script) -> bool:
    """The run of this script needs the mailbox list: special-use (RFC 8579) names
    mailboxes by attribute, mailboxexists (RFC 5490 3.1) asks. Other scripts (fileinto
    :create included) run first; the list is read only when an action files."""
    return "special-use" in script.extensions or _tests_named(script.commands, _MAILBOX_TESTS)


def _tests_named(commands: tuple[Command, ...] | None, names: frozenset[str]) -> bool:
    return any(_test_named(c.test, names) or _tests_named(c.block, names) for c in commands or ())


def _test_named(test: Test | None, names: frozenset[str]) -> bool:
    return test is not None and (test.name in names or any(_test_named(t, names) for t in test.tests))


def _files_anywhere(actions: Sequence[Action], keep: str) -> bool:
    """Some action stores the message elsewhere than INBOX (fileinto, a keep to Junk) or
    files a vacation reply (:fcc): _carry_out needs the account's mailbox names."""
    for action in actions:
        if action.kind in ("fileinto", "vacation"):
            return True
        if action.kind == "keep" and (keep if action.implicit else action.mailbox or keep).upper() != "INBOX":
            return True
    return False


@dataclass(frozen=True)
class StoredRange:
    """A large message with no file of its own (PostgreSQL's ``blob_chunks``): read by range."""

    blob_id: str


Source = str | StoredRange
"""Where the rest of a message read only in part comes from: its file, or the store."""


async def _edited_copy(store: Store, edited: bytes, raw: bytes,
                       source: Source | None) -> tuple[BlobRef, bytes, Source | None]:
    """The recipient's own copy after editheader: ``edited`` whole, or for a message read
    only in part its new header section followed by the rest of the body from ``source``."""
    if source is None:
        return await store.put_blob(edited), edited, None
    old_end, new_end = _header_end(raw), _header_end(edited)
    if old_end is None or new_end is None:         # the header does not end in the prefix:
        return await store.put_blob(edited), edited, None   # what the script saw is the message
    writer = store.blob_writer()
    try:
        writer.write(edited[:new_end])
        async for piece in _pieces(store, source, old_end):
            writer.write(piece)
        ref = await writer.finish()
    except BaseException:
        writer.abort()
        raise
    return ref, edited, _source(store, ref.id)


def _header_end(message: bytes) -> int | None:
    """The offset just past the blank line ending the header section."""
    m = re.search(rb"\r?\n\r?\n", message)
    return m.end() if m is not None else None


def _source(store: Store, blob_id: str) -> Source:
    path = store.blob_path(blob_id)
    return path if path is not None else StoredRange(blob_id)


async def _pieces(store: Store, source: Source, offset: int = 0) -> AsyncIterator[bytes]:
    """The message from ``offset`` a piece of at most :data:`COPY_CHUNK` at a time."""
    if isinstance(source, StoredRange):
        while piece := await store.read_blob_range(source.blob_id, offset, COPY_CHUNK):
            yield piece
            offset += len(piece)
        return
    f = await asyncio.to_thread(open, source, "rb")
    try:
        f.seek(offset)
        while piece := await asyncio.to_thread(f.read, COPY_CHUNK):
            yield piece
    finally:
        f.close()


async def read_bounded(store: Store, blob: BlobRef) -> tuple[bytes, Source | None]:
    """The message for scripts and forwarding: whole up to :data:`SIEVE_PREFIX`, else its
    first part and where the rest is (:func:`copier`): its file, or on PostgreSQL the
    store, read by range (never whole)."""
    if blob.size <= SIEVE_PREFIX:
        return await store.read_blob(blob.id), None
    source = _source(store, blob.id)
    if isinstance(source, StoredRange):
        return await store.read_blob_range(blob.id, 0, SIEVE_PREFIX), source
    return await asyncio.to_thread(_read_prefix, source, SIEVE_PREFIX), source


def _read_prefix(path: str, size: int) -> bytes:
    with open(path, "rb") as f:
        return f.read(size)


def copier(store: Store, source: Source | None) -> Callable[[bytes], Awaitable[tuple[BlobRef, bool]]] | None:
    """A redirect's copy of a large message written a piece at a time from ``source``."""
    if source is None:
        return None
    where = source

    async def copy(trace: bytes) -> tuple[BlobRef, bool]:
        writer = store.blob_writer()
        try:
            writer.write(trace)
            eight_bit, first = False, True
            async for piece in _pieces(store, where):
                if first:
                    piece, first = strip_return_path(piece), False
                eight_bit = eight_bit or has_eight_bit(piece)
                writer.write(piece)
            return await writer.finish(), eight_bit
        except BaseException:
            writer.abort()
            raise

    return copy


async def _carry_out(store: Store, blob: BlobRef, account_id: int, actions: list[Action],
                     names: dict[str, str], outcome: LocalOutcome, keep: str = "INBOX") -> None:
    stored: list[DeliveryResult] = []
    for action in actions:
        if action.kind in ("reject", "ereject"):
            outcome.rejected[account_id] = action.reason or ""
            outcome.reject_kinds[account_id] = action.kind
            return
    for action in actions:
        if action.kind not in ("keep", "fileinto"):
            continue
        mailbox = keep if action.implicit else action.mailbox or keep   # implicit keep: Junk for junk
        if action.kind == "fileinto" and mailbox.lower() not in names:
            mailbox = await _create(store, account_id, mailbox, names) if action.create else "INBOX"
        stored.extend(await store.deliver(blob, [account_id], mailbox=names.get(mailbox.lower(), mailbox),
                                          flags=imap_flags(action.flags)))
    if not stored:
        outcome.discarded.append(account_id)
        return
    taken = [r for r in stored if not r.over_quota]
    outcome.results.append(taken[0] if taken else stored[0])


async def _file_copy(store: Store, blob: BlobRef, account_id: int, vacation: Vacation,
                     names: dict[str, str]) -> None:
    """RFC 8580 4: the sent reply into :fcc (created with :create; INBOX when it cannot be)."""
    mailbox = vacation.fcc or "INBOX"
    if mailbox.lower() not in names:
        mailbox = await _create(store, account_id, mailbox, names) if vacation.fcc_create else "INBOX"
    await store.deliver(blob, [account_id], mailbox=names.get(mailbox.lower(), mailbox),
                        flags=imap_flags(vacation.fcc_flags))


async def _create(store: Store, account_id: int, mailbox: str, names: dict[str, str]) -> str:
    """RFC 5490 3.2 :create; INBOX when the name is not one the store accepts."""
    try:
        made = await store.create_mailbox(account_id, mailbox)
    except InvalidName:
        return "INBOX"
    except StoreError:                              # made meanwhile by another delivery
        return mailbox
    names[made.name.lower()] = made.name
    return made.name
