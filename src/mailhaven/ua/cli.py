"""``mailhaven mail ...``: a command-line user agent for any IMAP + submission server.

Mail stays on the server: every command connects, does its work over IMAP or submission,
and disconnects. Message ids are IMAP UIDs within a folder (``--folder``, default INBOX).
Bodies come from ``--body-file``, else standard input when it is not a terminal, else
``$VISUAL``/``$EDITOR`` (header lines, a blank line, the body). ``--json`` on listings
and ``read`` is for scripts.
"""

from __future__ import annotations

import argparse
import email
import email.policy
import email.utils
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from .compose import (
    Draft,
    build,
    draft_from_message,
    edit_text,
    envelope_recipients,
    forward,
    parse_edit,
    reply,
    without_bcc,
)
from .config import (
    ACCOUNTS_HELP,
    Account,
    UAError,
    config_path,
    editor_command,
    load_accounts,
    pick,
)
from .imap import Mail, submit
from .render import attachments, header_text, plain_text, render

SEEN, FLAGGED = "\\Seen", "\\Flagged"
BODY_FILE_HELP = "the text, from a file (default: standard input, or the editor in a terminal)"
ALLOW_EMPTY_HELP = "send even when the text is empty or the editor was left without a change"


def _account(args: argparse.Namespace) -> Account:
    return pick(load_accounts(config_path(args.accounts)), args.account)


def _me(account: Account) -> str:
    return email.utils.formataddr((account.display_name, account.address)) if account.display_name else account.address


def _run_editor(text: str) -> str:
    import subprocess

    try:
        command = editor_command()
    except ValueError as exc:
        raise UAError(f"cannot read $VISUAL/$EDITOR: {exc}; nothing was sent") from None
    with tempfile.NamedTemporaryFile("w+", suffix=".eml", delete=False, encoding="utf-8") as f:
        f.write(text)
        path = f.name
    try:
        try:
            code = subprocess.run([*command, path]).returncode
        except OSError as exc:
            raise UAError(f"cannot run the editor {' '.join(command)!r} (from $VISUAL/$EDITOR): "
                          f"{exc.strerror or exc}; set EDITOR to an installed editor, or give the text "
                          "with --body-file or on standard input; nothing was sent") from None
        if code != 0:
            raise UAError(f"the editor exited with status {code}; nothing was sent")
        return Path(path).read_text(encoding="utf-8")
    finally:
        Path(path).unlink(missing_ok=True)


def _compose(args: argparse.Namespace, draft: Draft, *, prepend: bool = False, text_needed: bool = True) -> Draft:
    """Fill the body from --body-file, stdin or the editor. An editor left without a change,
    or no text at all where the message is the text (``text_needed``), stops here unless
    --allow-empty says it is meant: an accidental ``:q`` or ``< /dev/null`` sends nothing."""
    allow_empty = getattr(args, "allow_empty", False)
    if getattr(args, "body_file", None) or not sys.stdin.isatty():
        try:
            text = Path(args.body_file).read_text(encoding="utf-8") if getattr(args, "body_file", None) \
                else sys.stdin.read()
        except (OSError, UnicodeDecodeError) as exc:
            raise UAError(f"cannot read the text: {exc}") from None
        if text_needed and not text.strip() and not allow_empty:
            source = f"--body-file {args.body_file}" if getattr(args, "body_file", None) else "standard input"
            raise UAError(f"the text is empty ({source} gave none): nothing was sent; "
                          "--allow-empty sends it anyway")
        draft.body = text + draft.body if prepend else text
        return draft
    before = edit_text(draft)
    after = _run_editor(before)
    if after == before and not allow_empty:
        raise UAError("the editor exited without a change: nothing was sent or saved; "
                      "--allow-empty sends it anyway")
    return parse_edit(after, draft)


def _send(account: Account, draft: Draft, mail: Mail) -> str:
    if not envelope_recipients(draft):
        raise UAError("no recipients")
    msg = build(draft)
    raw = msg.as_bytes()
    submit(account, account.address, envelope_recipients(draft), without_bcc(msg))
    try:
        mail.append(mail.special("\\Sent"), raw, ["\\Seen"])
    except UAError as exc:
        print(f"mailhaven: sent, but the copy for Sent failed: {exc}", file=sys.stderr)
    return str(msg["Message-ID"])


def _print(args: argparse.Namespace, value: Any, text: str) -> None:
    if getattr(args, "json", False):
        print(json.dumps(value, indent=2, ensure_ascii=False))
    else:
        print(text, end="" if text.endswith("\n") else "\n")


# -- commands ---------------------------------------------------------------------------------
def cmd_folders(args: argparse.Namespace) -> int:
    with Mail(_account(args)) as mail:
        rows = []
        for f in mail.folders():
            if "\\Noselect" in f.flags or "\\NonExistent" in f.flags:
                continue
            total, unseen = mail.status(f.name)
            rows.append({"name": f.name, "special": f.special, "messages": total, "unread": unseen})
    _print(args, rows, "\n".join(f"{r['name']:<30} {r['unread']:>5} unread {r['messages']:>7} total"
                                 + (f"  {r['special']}" if r["special"] else "") for r in rows))
    return 0


def cmd_ls(args: argparse.Namespace) -> int:
    with Mail(_account(args)) as mail:
        mail.select(args.folder, readonly=True)
        uids = mail.uids("UNSEEN" if args.unread else "ALL")
        items = mail.summaries(uids[-args.limit:] if args.limit else uids)
    def marks(m: dict[str, Any]) -> str:
        return (" " if SEEN in m["flags"] else "N") + ("!" if FLAGGED in m["flags"] else " ")

    lines = [f"{m['uid']:>6} {marks(m)} {m['date'][:25]:<25} {m['from'][:28]:<28} {m['subject']}" for m in items]
    _print(args, items, "\n".join(lines) if lines else f"no messages in {args.folder}")
    return 0


def cmd_read(args: argparse.Namespace) -> int:
    with Mail(_account(args)) as mail:
        mail.select(args.folder)
        raw = mail.fetch(args.id)
        mail.store(args.id, "+FLAGS.SILENT", ["\\Seen"])
    if args.raw:
        sys.stdout.buffer.write(raw)
        return 0
    msg = email.message_from_bytes(raw, policy=email.policy.compat32)
    atts = attachments(msg)
    if args.save_attachments:
        folder = Path(args.save_attachments)
        folder.mkdir(parents=True, exist_ok=True)
        for a in atts:
            name = Path(a["name"]).name or f"part-{a['index']}"
            (folder / name).write_bytes(a["data"])
            print(f"saved {folder / name}", file=sys.stderr)
    value = {"uid": args.id, "from": header_text(msg, "From"), "to": header_text(msg, "To"),
             "cc": header_text(msg, "Cc"), "date": header_text(msg, "Date"), "subject": header_text(msg, "Subject"),
             "message_id": msg.get("Message-ID"), "text": plain_text(msg),
             "attachments": [{k: v for k, v in a.items() if k not in ("part", "data")} for a in atts]}
    _print(args, value, render(msg))
    return 0


def cmd_send(args: argparse.Namespace) -> int:
    account = _account(args)
    draft = Draft(sender=_me(account), to=args.to or [], cc=args.cc or [], bcc=args.bcc or [],
                  subject=args.subject or "", attachments=[Path(a) for a in args.attach or []])
    for path in draft.attachments:
        if not path.is_file():
            raise UAError(f"no file {path}")
    draft = _compose(args, draft)
    with Mail(account) as mail:
        message_id = _send(account, draft, mail)
    print(f"sent {message_id} to {', '.join(envelope_recipients(draft))}")
    return 0


def _original(mail: Mail, args: argparse.Namespace) -> tuple[bytes, Any]:
    mail.select(args.folder)
    raw = mail.fetch(args.id)
    return raw, email.message_from_bytes(raw, policy=email.policy.compat32)


def cmd_reply(args: argparse.Namespace) -> int:
    account = _account(args)
    with Mail(account) as mail:
        _, original = _original(mail, args)
        draft = reply(original, _me(account), {account.address}, reply_all=args.all)
        draft = _compose(args, draft, prepend=True)
        message_id = _send(account, draft, mail)
        mail.select(args.folder)
        mail.store(args.id, "+FLAGS.SILENT", ["\\Answered"])
    print(f"sent {message_id} to {', '.join(envelope_recipients(draft))}")
    return 0


def cmd_forward(args: argparse.Namespace) -> int:
    account = _account(args)
    with Mail(account) as mail:
        raw, original = _original(mail, args)
        draft = forward(original, raw, _me(account), args.to, as_attachment=args.as_attachment)
        draft = _compose(args, draft, prepend=True, text_needed=False)
        message_id = _send(account, draft, mail)
        mail.select(args.folder)
        mail.store(args.id, "+FLAGS.SILENT", ["$Forwarded"])
    print(f"forwarded as {message_id} to {', '.join(envelope_recipients(draft))}")
    return 0


def cmd_draft(args: argparse.Namespace) -> int:
    account = _account(args)
    with Mail(account) as mail:
        drafts = mail.special("\\Drafts")
        old_uid = None
        if args.resume is not None:
            mail.select(drafts)
            draft = draft_from_message(email.message_from_bytes(mail.fetch(args.resume), policy=email.policy.compat32))
            old_uid = args.resume
            if not args.no_edit:
                draft = _compose(args, draft)
        else:
            draft = Draft(sender=_me(account), to=args.to or [], cc=args.cc or [], subject=args.subject or "")
            draft = _compose(args, draft)
        if args.send:
            message_id = _send(account, draft, mail)
            print(f"sent {message_id} to {', '.join(envelope_recipients(draft))}")
        else:
            mail.append(drafts, build(draft).as_bytes(), ["\\Draft", "\\Seen"])
            mail.select(drafts, readonly=True)
            new_uid = mail.uids("ALL")[-1]
            print(f"draft saved in {drafts} as {new_uid}; resume with: mailhaven mail draft --resume {new_uid}")
        if old_uid is not None:
            mail.select(drafts)
            mail.expunge(old_uid)
    return 0


def cmd_move(args: argparse.Namespace) -> int:
    with Mail(_account(args)) as mail:
        names = {f.name for f in mail.folders()}
        if args.target not in names:
            raise UAError(f"no folder {args.target!r}")
        mail.select(args.folder)
        mail.move(args.id, args.target)
    print(f"moved {args.id} to {args.target}")
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    with Mail(_account(args)) as mail:
        trash = mail.special("\\Trash")
        mail.select(args.folder)
        if args.expunge or args.folder == trash:
            mail.expunge(args.id)
            print(f"deleted {args.id} for good")
        else:
            mail.move(args.id, trash)
            print(f"moved {args.id} to {trash}")
    return 0


def _criteria(query: str) -> tuple[list[str], str | None]:
    """``from:alice subject:lunch words`` -> IMAP SEARCH keys (non-ASCII as one literal)."""
    keys: list[str] = []
    literal = None
    words = []
    for token in query.split():
        field, sep, value = token.partition(":")
        if sep and field.lower() in ("from", "to", "cc", "subject", "body") and value:
            if value.isascii():
                keys += [field.upper(), json.dumps(value)]
            else:
                words.append(value)
        else:
            words.append(token)
    text = " ".join(words)
    if text:
        if text.isascii():
            keys += ["TEXT", json.dumps(text)]
        else:
            keys.append("TEXT")
            literal = text
    return keys or ["ALL"], literal


def cmd_search(args: argparse.Namespace) -> int:
    with Mail(_account(args)) as mail:
        mail.select(args.folder, readonly=True)
        keys, literal = _criteria(args.query)
        uids = mail.uids(*keys, charset_literal=literal)
        items = mail.summaries(uids[-args.limit:] if args.limit else uids)
    _print(args, items, "\n".join(f"{m['uid']:>6} {m['date'][:25]:<25} {m['from'][:28]:<28} {m['subject']}"
                                  for m in items) or "no matches")
    return 0


def cmd_flag(args: argparse.Namespace) -> int:
    add: list[str] = []
    remove: list[str] = []
    for attr, flag, on in (("seen", "\\Seen", True), ("unseen", "\\Seen", False), ("flagged", "\\Flagged", True),
                           ("unflagged", "\\Flagged", False)):
        if getattr(args, attr):
            (add if on else remove).append(flag)
    add += args.keyword or []
    remove += args.remove_keyword or []
    if not add and not remove:
        raise UAError("nothing to change (--seen, --unseen, --flagged, --unflagged, --keyword K)")
    with Mail(_account(args)) as mail:
        mail.select(args.folder)
        if add:
            mail.store(args.id, "+FLAGS.SILENT", add)
        if remove:
            mail.store(args.id, "-FLAGS.SILENT", remove)
    print(f"{args.id}: +{' '.join(add) or '-'} -{' '.join(remove) or '-'}")
    return 0


def _safely(fn: Any) -> Any:
    def run(args: argparse.Namespace) -> int:
        try:
            return int(fn(args))
        except UAError as exc:
            print(f"mailhaven mail: {exc}", file=sys.stderr)
            return 1

    return run


DESCRIPTION = """\
A command-line user agent for any IMAP + submission server: mail stays on the server;
every command connects, does its work and disconnects. Message ids are IMAP UIDs within
a folder (--folder, default INBOX). The text of a message comes from --body-file, else
standard input when it is not a terminal, else $VISUAL or $EDITOR (header lines, a blank
line, the body). An editor left without a change, or an empty text, sends nothing unless
--allow-empty is given. --json on listings and read is for scripts.

"""


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("mail", help="read and send mail on any IMAP/submission server (a user agent)",
                              description=DESCRIPTION + ACCOUNTS_HELP.format(path=config_path()),
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--account", help="account name in accounts.toml (default: the default or first)")
    p.add_argument("--accounts", metavar="FILE", help="accounts file (default ~/.config/mailhaven/accounts.toml)")
    sub = p.add_subparsers(dest="mail_command", required=True)

    def add(name: str, fn: Any, help: str, folder: bool = True, json_: bool = False) -> argparse.ArgumentParser:
        a = sub.add_parser(name, help=help)
        if folder:
            a.add_argument("--folder", default="INBOX", help="the folder the UID is in (default INBOX)")
        if json_:
            a.add_argument("--json", action="store_true", help="print JSON, for scripts")
        a.set_defaults(func=_safely(fn))
        return a

    add("folders", cmd_folders, "folders with unread and total counts", folder=False, json_=True)
    a = add("ls", cmd_ls, "list messages", folder=False, json_=True)
    a.add_argument("folder", nargs="?", default="INBOX", help="folder to list (default INBOX)")
    a.add_argument("--unread", action="store_true", help="only messages not yet read")
    a.add_argument("--limit", type=int, default=50, metavar="N", help="the newest N (default 50; 0: all)")
    a = add("read", cmd_read, "show a message (marks it read)", json_=True)
    a.add_argument("id", type=int)
    a.add_argument("--raw", action="store_true")
    a.add_argument("--save-attachments", metavar="DIR")
    a = add("send", cmd_send, "compose and send", folder=False)
    a.add_argument("--to", action="append", metavar="ADDRESS", help="a recipient (repeat for more)")
    a.add_argument("--cc", action="append", metavar="ADDRESS", help="a copy recipient (repeat for more)")
    a.add_argument("--bcc", action="append", metavar="ADDRESS",
                   help="a blind copy recipient, not shown to the others (repeat for more)")
    a.add_argument("--subject", help="the subject line")
    a.add_argument("--attach", action="append", metavar="FILE", help="attach a file (repeat for more)")
    a.add_argument("--body-file", metavar="FILE", help=BODY_FILE_HELP)
    a.add_argument("--allow-empty", action="store_true", help=ALLOW_EMPTY_HELP)
    a = add("reply", cmd_reply, "reply (quoting; In-Reply-To and References set)")
    a.add_argument("id", type=int)
    a.add_argument("--all", action="store_true", help="reply to everyone but yourself")
    a.add_argument("--body-file", metavar="FILE", help=BODY_FILE_HELP)
    a.add_argument("--allow-empty", action="store_true", help=ALLOW_EMPTY_HELP)
    a = add("forward", cmd_forward, "forward inline or as an attachment")
    a.add_argument("id", type=int)
    a.add_argument("--to", action="append", required=True)
    a.add_argument("--as-attachment", action="store_true")
    a.add_argument("--body-file", metavar="FILE", help=BODY_FILE_HELP)
    a.add_argument("--allow-empty", action="store_true", help=ALLOW_EMPTY_HELP)
    a = add("draft", cmd_draft, "write or resume a draft (saved in Drafts)", folder=False)
    a.add_argument("--resume", type=int, metavar="UID", help="a draft's UID in the Drafts folder")
    a.add_argument("--to", action="append")
    a.add_argument("--cc", action="append")
    a.add_argument("--subject")
    a.add_argument("--body-file", metavar="FILE", help=BODY_FILE_HELP)
    a.add_argument("--allow-empty", action="store_true", help=ALLOW_EMPTY_HELP)
    a.add_argument("--send", action="store_true", help="send it now instead of saving")
    a.add_argument("--no-edit", action="store_true", help="with --resume --send: send as saved")
    a = add("move", cmd_move, "move a message to another folder")
    a.add_argument("id", type=int)
    a.add_argument("target", metavar="FOLDER")
    a = add("delete", cmd_delete, "move to Trash (or --expunge)")
    a.add_argument("id", type=int)
    a.add_argument("--expunge", action="store_true")
    a = add("search", cmd_search, "search (from: to: cc: subject: body: prefixes, other words in TEXT)",
            json_=True)
    a.add_argument("query")
    a.add_argument("--limit", type=int, default=0)
    a = add("flag", cmd_flag, "set or clear flags and keywords")
    a.add_argument("id", type=int)
    for name in ("seen", "unseen", "flagged", "unflagged"):
        a.add_argument(f"--{name}", action="store_true")
    a.add_argument("--keyword", action="append")
    a.add_argument("--remove-keyword", action="append")
