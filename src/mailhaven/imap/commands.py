"""The command table, and the commands valid in any state (RFC 9051 6.1) plus ENABLE, ID, IDLE.

``COMMANDS`` maps a command name to its handler and the states it is allowed in; the
session rejects every other (state, command) pair with BAD.
"""

from __future__ import annotations

from . import fetch, mailbox, message, search
from .authenticate import cmd_authenticate, cmd_login, continue_authenticate
from .grammar import Args
from .parser import Atom, Command, CommandReader, String
from .responses import Bad, Bye, No, astring_bytes
from .session import (
    ANY,
    AUTH,
    NOT_AUTH,
    SELECTED,
    CommandHooks,
    Handler,
    Mode,
    Session,
    SessionContext,
    State,
)


async def cmd_capability(s: Session, cmd: Command) -> str:
    Args(cmd.args).end()
    s.untagged("CAPABILITY " + " ".join(s.capabilities()))
    return "CAPABILITY completed"


async def cmd_noop(s: Session, cmd: Command) -> str:
    Args(cmd.args).end()
    return "NOOP completed"


async def cmd_logout(s: Session, cmd: Command) -> str:
    Args(cmd.args).end()
    s.untagged("BYE Logging out")  # RFC 9051 6.1.3
    s.closing = True
    s.state = State.LOGOUT
    return "LOGOUT completed"


async def cmd_starttls(s: Session, cmd: Command) -> str:
    Args(cmd.args).end()
    if s.ctx.tls or not s.ctx.starttls:
        raise Bad("TLS is already active" if s.ctx.tls else "STARTTLS is not available")
    if s.reader.buffered:
        # RFC 9051 6.2.1 / RFC 3207-style injection defence: nothing may follow STARTTLS.
        raise Bye("Data pipelined after STARTTLS")
    s.starttls_pending = True
    return "Begin TLS negotiation now"


async def cmd_compress(s: Session, cmd: Command) -> str:
    """RFC 4978: deflate both directions after the tagged OK (the adapter does the work)."""
    args = Args(cmd.args)
    mechanism = args.atom("compression mechanism").upper()
    args.end()
    if mechanism != "DEFLATE":
        raise Bad(f"Unknown compression mechanism {mechanism[:20]}")
    if s.compressed:
        raise No("DEFLATE is already active", code="COMPRESSIONACTIVE")
    if s.reader.buffered:
        raise Bad("Data pipelined after COMPRESS")   # it would be read as compressed
    s.compress_pending = s.compressed = True
    return "DEFLATE active"


async def cmd_id(s: Session, cmd: Command) -> str:
    """RFC 2971: log the client's identification, answer with ours."""
    args = Args(cmd.args)
    tok = args.next("parameter list")
    client: dict[str, str] = {}
    if isinstance(tok, Atom) and tok.value.upper() == "NIL":
        pass
    elif hasattr(tok, "items"):
        items = list(tok.items)  # type: ignore[union-attr]
        if len(items) % 2 or len(items) > 60:
            raise Bad("ID needs field/value pairs")
        for k, v in zip(items[::2], items[1::2], strict=True):
            if not isinstance(k, String):
                raise Bad("ID field must be a string")
            value = "" if isinstance(v, Atom) and v.value.upper() == "NIL" else (
                v.value.decode("utf-8", "replace") if isinstance(v, String) else "")
            client[k.value.decode("utf-8", "replace")[:30]] = value[:1024]
    else:
        raise Bad("ID needs a list or NIL")
    args.end()
    if client:
        s.ctx.log.info("client id", **{k.replace(" ", "_"): v for k, v in client.items()})
    fields = {"name": "Mailhaven", "vendor": "Mailhaven", "support-url": "https://example.invalid/mailhaven"}
    body = b" ".join(astring_bytes(k) + b" " + astring_bytes(v) for k, v in fields.items())
    s.untagged(b"ID (" + body + b")")
    return "ID completed"


_ENABLABLE = {"CONDSTORE", "QRESYNC", "IMAP4REV2", "UTF8=ACCEPT"}


async def cmd_enable(s: Session, cmd: Command) -> str:
    """RFC 5161. Only the extensions that change server behaviour are listed as enabled."""
    args = Args(cmd.args)
    if args.at_end():
        raise Bad("ENABLE needs at least one capability")
    newly: list[str] = []
    before = set(s.enabled)
    while not args.at_end():
        cap = args.atom("capability").upper()
        if cap in _ENABLABLE and cap not in before and {"IMAP4REV2": "IMAP4rev2"}.get(cap, cap) not in newly:
            if cap in ("CONDSTORE", "QRESYNC"):
                s.enable_condstore()        # RFC 7162 3.2.3: QRESYNC implies CONDSTORE
            s.enabled.add(cap)
            newly.append({"IMAP4REV2": "IMAP4rev2"}.get(cap, cap))
    s.untagged("ENABLED" + "".join(" " + c for c in newly))
    return "ENABLE completed"


async def cmd_idle(s: Session, cmd: Command) -> str | None:
    """RFC 2177 / RFC 9051 6.3.13: updates flow until DONE."""
    Args(cmd.args).end()
    s.mode = Mode.IDLE
    s.idle_tag = cmd.tag
    s.write(b"+ idling\r\n")
    await s.announce(allow_expunge=True)
    return None


async def cmd_check(s: Session, cmd: Command) -> str:
    Args(cmd.args).end()
    return "CHECK completed"


def _table() -> dict[str, tuple[Handler, frozenset[State]]]:
    table: dict[str, tuple[Handler, frozenset[State]]] = {
        "CAPABILITY": (cmd_capability, ANY),
        "NOOP": (cmd_noop, ANY),
        "LOGOUT": (cmd_logout, ANY),
        "ID": (cmd_id, ANY),
        "STARTTLS": (cmd_starttls, NOT_AUTH),
        "LOGIN": (cmd_login, NOT_AUTH),
        "AUTHENTICATE": (cmd_authenticate, NOT_AUTH),
        "ENABLE": (cmd_enable, AUTH),
        "COMPRESS": (cmd_compress, AUTH),
        "IDLE": (cmd_idle, AUTH),
        "CHECK": (cmd_check, SELECTED),
    }
    for module in (mailbox, message, fetch, search):
        for name, (handler, needs) in module.COMMANDS.items():
            table[name] = (handler, {"auth": AUTH, "selected": SELECTED}[needs])
    return table


COMMANDS = _table()


def new_session(ctx: SessionContext, reader: CommandReader) -> Session:
    """A session answering this table's commands (what the listener and tests make)."""
    return Session(ctx, reader, commands=COMMANDS, hooks=HOOKS)


HOOKS = CommandHooks(run_updates=search.run_updates, tell_added=search.tell_added,
                     claim_recent=mailbox.claim_recent, continue_authenticate=continue_authenticate,
                     answer_now=fetch.fetch_now)
