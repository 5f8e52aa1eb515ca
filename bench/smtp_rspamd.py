"""Inbound SMTP with rspamd as the spam engine: Mailhaven (``[rspamd] url``) against
Postfix with rspamd's milter (its proxy worker in milter mode, scanning itself), one
rspamd for both, the same load (bench/smtp_inbound.py's sessions, PIPELINING).

    python bench/smtp_rspamd.py [-c 10] [-m 2000] [-s 4096]

rspamd runs tests/test_filter_scanners.py's configuration (GTUBE and a test prefilter, no
DNS lists, no redis), so this measures the two MTAs' cost around the same scan. SPF, DKIM
and DMARC are off on both sides. Prints messages/s, p50/p99, and rspamd's CPU per message.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

from postfix_peer import PostfixPeer  # noqa: E402
from scanner_checks import _ping, group_cpu  # noqa: E402
from smtp_inbound import maildir_count, run_python  # noqa: E402

from conftest import free_port, wait_for  # noqa: E402
from test_filter_scanners import start_rspamd, stop  # noqa: E402

MILTER = """
worker "rspamd_proxy" {{
    bind_socket = "127.0.0.1:{port}"; milter = yes; timeout = 120s; count = 1;
    upstream "local" {{ default = yes; self_scan = yes; }}
}}
"""


def spawn_mailhaven(work: Path, rspamd_port: int, rcpt: str) -> tuple[subprocess.Popen[str], int]:
    data = work / "mailhaven"
    data.mkdir()
    port = free_port()
    listen = "\n".join(f'{n} = ""' for n in ("submission", "submissions", "imap", "imaps", "pop3", "pop3s", "http"))
    (data / "mailhaven.toml").write_text(
        f'hostname = "bench.example"\nlog_level = "warning"\n[listen]\nsmtp = "127.0.0.1:{port}"\n{listen}\n'
        "[limits]\nconnections_per_ip = 5000\nunauthenticated_per_ip = 5000\n"
        "[filter]\nspf = false\ndkim = false\ndmarc = false\n"
        f'[rspamd]\nurl = "http://127.0.0.1:{rspamd_port}"\n'
        "[ratelimit]\nmessages_per_address = 0\nmessages_per_sender_domain = 0\n")
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    for args, stdin in ((("domain", "add", rcpt.rpartition("@")[2]), None),
                        (("user", "add", rcpt, "--password-stdin"), "bench-password\n")):
        subprocess.run([sys.executable, "-m", "mailhaven", "--data", str(data), *args], env=env, check=True,
                       input=stdin, text=True, stdout=subprocess.DEVNULL)
    proc = subprocess.Popen([sys.executable, "-m", "mailhaven", "--data", str(data), "serve"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.strip() == "Ready.":
            break
    return proc, port


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-c", "--concurrency", type=int, default=10)
    ap.add_argument("-m", "--messages", type=int, default=2000)
    ap.add_argument("-s", "--size", type=int, default=4096)
    args = ap.parse_args()
    args.sender = "bench@sender.example"
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        os.chmod(work, 0o755)
        milter_port = free_port()
        rspamd, rspamd_port = start_rspamd(work / "rspamd", extra=MILTER.format(port=milter_port))
        postfix = PostfixPeer(work / "postfix", listen=f"127.0.0.1:{free_port()}", domain="postfix.example",
                              extra_main=f"smtpd_milters = inet:127.0.0.1:{milter_port}\n"
                                         "milter_default_action = tempfail\nmilter_protocol = 6")
        mh: subprocess.Popen[str] | None = None
        try:
            wait_for(lambda: _ping(rspamd_port), timeout=300, what="rspamd")
            postfix.start()
            mh, mh_port = spawn_mailhaven(work, rspamd_port, "bench@bench.example")
            results = {}
            for name, port, rcpt in (("mailhaven", mh_port, "bench@bench.example"),
                                     ("postfix+milter", int(postfix.listen.rpartition(":")[2]),
                                      "bench@postfix.example")):
                cpu0 = group_cpu(rspamd.pid)
                r = asyncio.run(run_python("127.0.0.1", port, args, rcpt))
                r["rspamd_ms"] = (group_cpu(rspamd.pid) - cpu0) / max(1, r["accepted"]) * 1000
                results[name] = r
                print(f"{name:15} {r['accepted']:6.0f} accepted {r['refused']:4.0f} refused "
                      f"{r['rate']:8.1f} msg/s  p50 {r['p50_ms']:6.1f} ms  p99 {r['p99_ms']:6.1f} ms  "
                      f"rspamd CPU {r['rspamd_ms']:.2f} ms/msg", flush=True)
            deadline = time.monotonic() + 60
            while maildir_count(postfix.mail / "bench") < args.messages and time.monotonic() < deadline:
                time.sleep(0.5)
            print(f"postfix delivered {maildir_count(postfix.mail / 'bench')} to its Maildir")
            print(f"ratio mailhaven/postfix+milter: {results['mailhaven']['rate'] / results['postfix+milter']['rate']:.2f}")
        finally:
            if mh is not None:
                mh.send_signal(signal.SIGTERM)
                mh.wait(timeout=30)
            postfix.stop()
            stop(rspamd)


if __name__ == "__main__":
    main()
