"""A private Postfix instance for benchmarks and interop tests, delivering to Maildir.

It runs from its own config and queue directories under a work directory, listens on one
loopback address:port, accepts mail for one domain (virtual mailboxes in Maildir format,
created on demand per recipient) and never touches the system's Postfix.

    python bench/postfix_peer.py start WORKDIR --listen 127.0.0.5:2526 --domain postfix.example
    python bench/postfix_peer.py stop WORKDIR
"""

from __future__ import annotations

import argparse
import grp
import os
import pwd
import shutil
import subprocess
import time
from pathlib import Path

MASTER_CF = """\
{listen} inet n - n - - smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
virtual   unix  -       n       n       -       -       virtual
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


def which_postfix() -> str | None:
    return shutil.which("postfix") or ("/usr/sbin/postfix" if Path("/usr/sbin/postfix").exists() else None)


class PostfixPeer:
    def __init__(self, work: Path, listen: str = "127.0.0.5:2526", domain: str = "postfix.example",
                 relay_host: str | None = None, extra_main: str = "",
                 users: tuple[str, ...] = ("bob", "bench")) -> None:
        self.users = users
        self.work = Path(work).resolve()
        self.listen = listen
        self.domain = domain
        self.relay_host = relay_host
        self.extra_main = extra_main
        self.etc = self.work / "etc"
        self.mail = self.work / "mail"

    def write_config(self) -> None:
        uid = pwd.getpwnam("postfix").pw_uid
        gid = grp.getgrnam("postfix").gr_gid
        for d in (self.etc, self.work / "queue", self.work / "data", self.mail):
            d.mkdir(parents=True, exist_ok=True)
        os.chown(self.work / "data", uid, gid)
        os.chown(self.mail, uid, gid)
        lines = [
            "compatibility_level = 3.6",
            f"queue_directory = {self.work / 'queue'}",
            f"data_directory = {self.work / 'data'}",
            "mail_owner = postfix",
            "setgid_group = postdrop",
            "inet_interfaces = all",  # master.cf binds the one address; loopback aliases are no interfaces
            "inet_protocols = ipv4",
            f"myhostname = mx.{self.domain}",
            "mydestination =",
            "mynetworks = 127.0.0.0/8",
            "alias_maps =",
            "alias_database =",
            "local_recipient_maps =",
            f"virtual_mailbox_domains = {self.domain}",
            f"virtual_mailbox_base = {self.mail}",
            f"virtual_mailbox_maps = texthash:{self.etc / 'vmailbox'}",
            f"virtual_uid_maps = static:{uid}",
            f"virtual_gid_maps = static:{gid}",
            "smtpd_recipient_restrictions = permit_mynetworks, reject_unauth_destination",
            "smtp_dns_support_level = disabled" if self.relay_host else "",
            f"relayhost = {self.relay_host}" if self.relay_host else "",
            "maillog_file = " + str(self.work / "maillog"),
            f"maillog_file_prefixes = {self.work}",
            "smtpd_banner = $myhostname ESMTP",
            "biff = no",
            "message_size_limit = 52428800",
            "virtual_mailbox_limit = 0",
            self.extra_main,
        ]
        (self.etc / "main.cf").write_text("\n".join(x for x in lines if x) + "\n")
        (self.etc / "master.cf").write_text(MASTER_CF.format(listen=self.listen))
        # Named users get their own Maildir; every other recipient lands in catchall/.
        entries = [f"{u}@{self.domain} {u}/" for u in self.users] + [f"@{self.domain} catchall/"]
        (self.etc / "vmailbox").write_text("\n".join(entries) + "\n")
        (self.work / "maillog").touch()
        os.chown(self.work / "maillog", uid, gid)

    def start(self) -> None:
        postfix = which_postfix()
        if postfix is None:
            raise RuntimeError("postfix is not installed")
        self.write_config()
        env = dict(os.environ, MAIL_CONFIG=str(self.etc))
        subprocess.run([postfix, "-c", str(self.etc), "set-permissions"], env=env, capture_output=True)
        r = subprocess.run([postfix, "-c", str(self.etc), "start"], env=env, capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"postfix start failed: {r.stderr}{r.stdout}")
        host, _, port = self.listen.rpartition(":")
        import socket

        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                with socket.create_connection((host, int(port)), timeout=1):
                    return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError("postfix did not start listening:\n" + self.log())

    def stop(self) -> None:
        postfix = which_postfix()
        if postfix and (self.etc / "main.cf").exists():
            subprocess.run([postfix, "-c", str(self.etc), "stop"], capture_output=True,
                           env=dict(os.environ, MAIL_CONFIG=str(self.etc)))

    def log(self) -> str:
        p = self.work / "maillog"
        return p.read_text(errors="replace") if p.exists() else ""

    def delivered(self, local: str) -> list[Path]:
        box = self.mail / (local if local in self.users else "catchall")
        return sorted((box / "new").glob("*")) + sorted((box / "cur").glob("*")) if box.exists() else []


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("action", choices=["start", "stop"])
    ap.add_argument("work")
    ap.add_argument("--listen", default="127.0.0.5:2526")
    ap.add_argument("--domain", default="postfix.example")
    args = ap.parse_args()
    peer = PostfixPeer(Path(args.work), args.listen, args.domain)
    if args.action == "start":
        peer.start()
        print(f"postfix listening on {args.listen} for {args.domain}, maildirs under {peer.mail}")
    else:
        peer.stop()


if __name__ == "__main__":
    main()
