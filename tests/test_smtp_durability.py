"""A 250 is a promise: SIGKILL the server in the middle of a concurrent load, restart it,
and every message it acknowledged must be there, whole and readable; the store must be
consistent (SQLite integrity_check plus blob references)."""

from __future__ import annotations

import json
import smtplib
import subprocess
import sys
import threading
import time
from pathlib import Path

from conftest import ServerProcess, mailhaven_env

SENDERS = 8


def body(sender: int, n: int) -> bytes:
    marker = f"payload {sender}-{n} " * 40
    return (f"From: load@lancs.example\r\nTo: bob@nyu.example\r\nSubject: load {sender}-{n}\r\n"
            f"Message-ID: <load.{sender}.{n}@lancs.example>\r\n\r\n{marker}\r\n").encode()


def sender_loop(port: int, sender: int, acked: list[str], stop: threading.Event) -> None:
    n = 0
    while not stop.is_set():
        try:
            with smtplib.SMTP("127.0.0.1", port, timeout=10) as s:
                while not stop.is_set():
                    n += 1
                    s.sendmail("load@lancs.example", ["bob@nyu.example"], body(sender, n))
                    acked.append(f"<load.{sender}.{n}@lancs.example>")
        except (OSError, smtplib.SMTPException):
            time.sleep(0.05)                        # killed mid-transaction: not acknowledged


def test_sigkill_mid_load_loses_no_acknowledged_message(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "data").start()
    server.add_user("bob@nyu.example")
    port = server.port("smtp")
    acked: list[str] = []
    stop = threading.Event()
    threads = [threading.Thread(target=sender_loop, args=(port, i, acked, stop), daemon=True)
               for i in range(SENDERS)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 30
    while len(acked) < 150 and time.monotonic() < deadline:
        time.sleep(0.05)
    server.kill()                                   # SIGKILL, mid-load
    stop.set()
    for t in threads:
        t.join(timeout=15)
    acknowledged = set(acked)
    assert len(acknowledged) >= 150

    server.start()                                  # same data directory
    try:
        listing = json.loads(server.admin("mailbox", "list", "bob@nyu.example", "--json").stdout)
        stored = {m["message_id"]: m["uid"] for m in listing}
        missing = acknowledged - set(stored)
        assert not missing, f"{len(missing)} acknowledged messages lost, e.g. {sorted(missing)[:3]}"
        for mid in sorted(acknowledged)[:: max(1, len(acknowledged) // 40)]:
            sender, n = mid[len("<load."):].split("@")[0].split(".")
            raw = subprocess.run([sys.executable, "-m", "mailhaven", "--data", str(server.data), "mailbox",
                                  "show", "bob@nyu.example", str(stored[mid])],
                                 capture_output=True, check=True, env=mailhaven_env()).stdout
            assert raw.endswith(body(int(sender), int(n)).split(b"\r\n\r\n", 1)[1])
    finally:
        server.stop()

    check = (
        "import asyncio, sys\n"
        "from mailhaven.store.sqlite import SQLiteStore\n"
        "async def main():\n"
        f"    s = SQLiteStore({str(server.data)!r})\n"
        "    await s.open()\n"
        "    problems = await s.integrity_check()\n"
        "    await s.close()\n"
        "    print(problems)\n"
        "    sys.exit(1 if problems else 0)\n"
        "asyncio.run(main())\n"
    )
    result = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, env=mailhaven_env())
    assert result.returncode == 0, result.stdout + result.stderr
