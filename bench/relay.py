"""Relay benchmark: submission on instance A -> A's queue -> SMTP delivery to a destination.

Destinations, in the same run:
- ``mailhaven``: a second Mailhaven (B) storing every message in a mailbox (durable);
- ``smtp-sink``: Postfix's smtp-sink, which accepts and discards (where installed), so the
  figure is A's queue and SMTP client alone.

For each it prints the submission rate (messages/s accepted by A on 587 with AUTH, C
connections), the end-to-end rate (submission start until the last message is accepted by
the destination) and how long the queue took to drain after the last submission.

    python bench/relay.py                     # 2,000 messages of 4 KB over 10 connections
    python bench/relay.py -m 10000 -c 20 --to smtp-sink
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from smtp_inbound import read_reply  # bench/, the script's own folder

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "bench-password"


def free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class Instance:
    def __init__(self, host: str, hostname: str, extra: str = "") -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="mh-relay-"))
        self.host = host
        self.smtp = free_port(host)
        self.submission = free_port(host)
        self.env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
        off = "\n".join(f'{n} = ""' for n in ("submissions", "imap", "imaps", "pop3", "pop3s", "managesieve", "http"))
        (self.dir / "mailhaven.toml").write_text(
            f'hostname = "{hostname}"\nlog_level = "warning"\n[listen]\nsmtp = "{host}:{self.smtp}"\n'
            f'submission = "{host}:{self.submission}"\n{off}\n'
            "[limits]\nconnections = 5000\nconnections_per_ip = 5000\n"
            "unauthenticated_per_ip = 5000\nconnections_per_network = 5000\n" + extra)
        self.proc: subprocess.Popen[str] | None = None

    def cli(self, *args: str, input: str | None = None) -> str:
        return subprocess.run([sys.executable, "-m", "mailhaven", "--data", str(self.dir), *args], env=self.env,
                              check=True, input=input, text=True, capture_output=True).stdout

    def add_user(self, address: str) -> None:
        domain = address.rpartition("@")[2]
        if domain not in self.cli("domain", "list").split():
            self.cli("domain", "add", domain)
        self.cli("user", "add", address, "--password-stdin", input=PASSWORD + "\n")

    def start(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "mailhaven", "--data", str(self.dir), "serve"],
                                     env=self.env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.strip() == "Ready.":
                return
        raise RuntimeError("mailhaven did not start")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=30)
        shutil.rmtree(self.dir, ignore_errors=True)


def message(n: int, size: int, to: str) -> bytes:
    head = (f"From: alice@a.example\r\nTo: {to}\r\nSubject: relay {n}\r\n"
            f"Message-ID: <relay.{n}.{time.time_ns()}@a.example>\r\n\r\n").encode()
    line = b"The quick brown fox jumps over the lazy dog, again and again and again.\r\n"
    return head + (line * (size // len(line) + 1))[: max(0, size - len(head))]


async def submit(host: str, port: int, count: int, size: int, to: str, done: list[int]) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    await read_reply(reader)
    writer.write(b"EHLO bench.example\r\n")
    await read_reply(reader)
    token = base64.b64encode(f"\0alice@a.example\0{PASSWORD}".encode()).decode()
    writer.write(f"AUTH PLAIN {token}\r\n".encode())
    if not (await read_reply(reader)).startswith(b"235"):
        raise RuntimeError("AUTH failed")
    for i in range(count):
        body = message(done[0] + i * 1000003, size, to)
        writer.write(f"MAIL FROM:<alice@a.example>\r\nRCPT TO:<{to}>\r\nDATA\r\n".encode())
        replies = [await read_reply(reader) for _ in range(3)]
        if not replies[2].startswith(b"354"):
            raise RuntimeError(f"refused: {replies}")
        writer.write(body + b"\r\n.\r\n")
        if not (await read_reply(reader)).startswith(b"250"):
            raise RuntimeError("message refused")
        done[0] += 1
    writer.write(b"QUIT\r\n")
    writer.close()


def queue_length(a: Instance) -> int:
    out = a.cli("queue", "list")
    return 0 if "queue is empty" in out else int(out.strip().splitlines()[-1].split()[0])


def run(target: str, args: argparse.Namespace) -> None:
    sink: subprocess.Popen[bytes] | None = None
    b: Instance | None = None
    if target == "mailhaven":
        b = Instance("127.0.0.9", "mx.b.example")
        b.add_user("bob@b.example")
        b.start()
        route = f"127.0.0.9:{b.smtp}"
    else:
        sink_bin = shutil.which("smtp-sink") or "/usr/sbin/smtp-sink"
        if not Path(sink_bin).exists():
            print("smtp-sink: not installed (Debian package postfix); skipped")
            return
        port = free_port("127.0.0.10")
        sink = subprocess.Popen([sink_bin, "-c", "-u", "nobody", f"127.0.0.10:{port}", "1000"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.5)
        route = f"127.0.0.10:{port}"
    a = Instance("127.0.0.8", "mx.a.example",
                 f'[queue]\nconcurrency = {args.concurrency}\nper_domain = {args.per_domain}\n'
                 f'poll = "1s"\n[relay]\ntls = "none"\n[relay.routes]\n"b.example" = "{route}"\n'
                 "[ratelimit]\naccount_messages = 0\naccount_recipients = 0\n")
    a.add_user("alice@a.example")
    a.start()
    try:
        per, extra = divmod(args.messages, args.concurrency)
        counts = [per + (1 if i < extra else 0) for i in range(args.concurrency)]
        done = [0]
        start = time.perf_counter()

        async def all_sessions() -> None:
            await asyncio.gather(*(submit("127.0.0.8", a.submission, c, args.size, "bob@b.example", done)
                                   for c in counts if c))

        asyncio.run(all_sessions())
        submitted = time.perf_counter()
        while queue_length(a):
            time.sleep(0.2)
        drained = time.perf_counter()
        if b is not None:
            stored = len(json.loads(b.cli("mailbox", "list", "bob@b.example", "--json")))
            note = f"; {stored} in Bob's mailbox"
        else:
            note = ""
        print(f"relay to {target}: {args.messages} messages of {args.size} B over {args.concurrency} connections; "
              f"submission {args.messages / (submitted - start):.0f} msg/s, end to end "
              f"{args.messages / (drained - start):.0f} msg/s, queue drained {drained - submitted:.2f} s "
              f"after the last submission{note}")
    finally:
        a.stop()
        if b is not None:
            b.stop()
        if sink is not None:
            sink.terminate()
            sink.wait()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-m", "--messages", type=int, default=2000)
    ap.add_argument("-c", "--concurrency", type=int, default=10)
    ap.add_argument("-s", "--size", type=int, default=4096)
    ap.add_argument("--per-domain", type=int, default=5)
    ap.add_argument("--to", choices=["mailhaven", "smtp-sink", "both"], default="both")
    args = ap.parse_args()
    for target in (["mailhaven", "smtp-sink"] if args.to == "both" else [args.to]):
        run(target, args)


if __name__ == "__main__":
    main()
