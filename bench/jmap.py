"""JMAP benchmark: Email/query + Email/get round trips per second on a large mailbox, and the
time from an SMTP delivery to the EventSource push that announces it.

    python bench/jmap.py                    # 10,000 messages, 30 s of round trips, 20 pushes
    python bench/jmap.py -n 2000 --seconds 10

A throw-away Mailhaven is filled through the store (so filling is not what is measured),
then started; the client uses HTTP Basic over loopback with keep-alive connections, C of
them at once, each asking for one page (50 ids, newest first) and its list properties,
the way the webmail lists a mailbox.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import http.client
import json
import os
import shutil
import signal
import smtplib
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
USER, PASSWORD = "bench@bench.example", "bench-password"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def fill(data: Path, n: int) -> None:
    from mailhaven.store.sqlite import SQLiteStore

    store = SQLiteStore(data)
    await store.open()
    await store.add_domain("bench.example")
    account = await store.add_account(USER, PASSWORD)
    sem = asyncio.Semaphore(32)

    async def one(i: int) -> None:
        raw = (f"From: Sender {i % 97} <s{i % 97}@example.com>\r\nTo: {USER}\r\nSubject: Report number {i}\r\n"
               f"Message-ID: <b{i}@example.com>\r\nDate: Mon, 23 Nov 2026 10:{i % 60:02d}:00 +0000\r\n\r\n"
               + "Quarterly figures and some more words to index.\r\n" * 20).encode()
        async with sem:
            await store.deliver(await store.put_blob(raw), [account.id])

    await asyncio.gather(*(one(i) for i in range(n)))
    await store.close()


class Client:
    def __init__(self, port: int) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        self.headers = {"Authorization": "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode(),
                        "Content-Type": "application/json"}

    def get(self, path: str) -> dict:  # type: ignore[type-arg]
        self.conn.request("GET", path, headers=self.headers)
        return json.loads(self.conn.getresponse().read())  # type: ignore[no-any-return]

    def call(self, calls: list) -> dict:  # type: ignore[type-arg]
        body = json.dumps({"using": ["urn:ietf:params:jmap:core", "urn:ietf:params:jmap:mail"], "methodCalls": calls})
        self.conn.request("POST", "/jmap/api", body=body, headers=self.headers)
        res = self.conn.getresponse()
        data = res.read()
        if res.status != 200:
            raise RuntimeError(data[:200])
        return json.loads(data)  # type: ignore[no-any-return]


def round_trips(port: int, account: str, inbox: str, seconds: float, concurrency: int) -> tuple[int, list[float]]:
    done: list[float] = []
    stop = time.monotonic() + seconds
    lock = threading.Lock()

    def worker(k: int) -> None:
        c = Client(port)
        position = (k * 50) % 1000
        while time.monotonic() < stop:
            start = time.perf_counter()
            out = c.call([
                ["Email/query", {"accountId": account, "filter": {"inMailbox": inbox}, "position": position,
                                 "limit": 50, "sort": [{"property": "receivedAt", "isAscending": False}],
                                 "collapseThreads": True, "calculateTotal": True}, "q"],
                ["Email/get", {"accountId": account, "#ids": {"resultOf": "q", "name": "Email/query", "path": "/ids"},
                               "properties": ["id", "threadId", "mailboxIds", "keywords", "from", "to", "subject",
                                              "receivedAt", "preview", "hasAttachment", "size"]}, "g"]])
            assert len(out["methodResponses"][1][1]["list"]) == 50
            with lock:
                done.append(time.perf_counter() - start)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return len(done), done


def push_latency(port: int, smtp_port: int, samples: int) -> list[float]:
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    sock.sendall((f"GET /jmap/eventsource?types=*&closeafter=no&ping=0 HTTP/1.1\r\nHost: b\r\n"
                  f"Authorization: Basic {token}\r\nAccept: text/event-stream\r\n\r\n").encode())
    buf = b""
    while b"event: state" not in buf:
        buf += sock.recv(65536)
    out = []
    with smtplib.SMTP("127.0.0.1", smtp_port) as smtp:
        for i in range(samples):
            seen = buf.count(b"event: state")
            start = time.perf_counter()
            smtp.sendmail("x@example.com", [USER], f"Subject: push {i}\r\n\r\nhi\r\n".encode())
            while buf.count(b"event: state") <= seen:
                buf += sock.recv(65536)
            out.append(time.perf_counter() - start)
            time.sleep(0.2)
    sock.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", "--messages", type=int, default=10000)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("-c", "--concurrency", type=int, default=4)
    ap.add_argument("--pushes", type=int, default=20)
    args = ap.parse_args()
    data = Path(tempfile.mkdtemp(prefix="mh-jmap-bench-"))
    try:
        t = time.perf_counter()
        asyncio.run(fill(data, args.messages))
        print(f"filled {args.messages} messages in {time.perf_counter() - t:.1f} s")
        http_port, smtp_port = free_port(), free_port()
        off = "\n".join(f'{n} = ""' for n in ("submission", "submissions", "imap", "imaps", "pop3", "pop3s", "managesieve"))
        (data / "mailhaven.toml").write_text(f'hostname = "bench.example"\nlog_level = "warning"\n[listen]\n'
                                             f'smtp = "127.0.0.1:{smtp_port}"\nhttp = "127.0.0.1:{http_port}"\n{off}\n')
        env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
        proc = subprocess.Popen([sys.executable, "-m", "mailhaven", "--data", str(data), "serve"], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.strip() == "Ready.":
                break
        try:
            c = Client(http_port)
            session = c.get("/.well-known/jmap")
            account = session["primaryAccounts"]["urn:ietf:params:jmap:mail"]
            boxes = c.call([["Mailbox/get", {"accountId": account, "ids": None}, "m"]])["methodResponses"][0][1]["list"]
            inbox = next(b["id"] for b in boxes if b["role"] == "inbox")
            n, times = round_trips(http_port, account, inbox, args.seconds, args.concurrency)
            times.sort()
            print(f"Email/query + Email/get (50 per page, {args.messages} in the mailbox, {args.concurrency} clients): "
                  f"{n / args.seconds:.1f} round trips/s; p50 {times[len(times) // 2] * 1000:.1f} ms "
                  f"p99 {times[int(len(times) * 0.99) - 1] * 1000:.1f} ms")
            pushes = push_latency(http_port, smtp_port, args.pushes)
            print(f"SMTP delivery to EventSource push: p50 {statistics.median(pushes) * 1000:.1f} ms, "
                  f"max {max(pushes) * 1000:.1f} ms over {len(pushes)} deliveries (includes the 250 and a 50 ms "
                  "coalescing window)")
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
    finally:
        shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    main()
