"""CPU per message of the inbound trust checks (filter/), in process.

    python bench/filter_checks.py [-n 300]

A DNS server (tests/dnsserver.py) runs in a child process so its CPU is not counted;
this process runs ``InboundFilter.check`` on 4 KB messages DKIM-signed (RSA 2048 or
ed25519) by dkimpy, one check at a time, and prints the CPU time (this process, all its
threads) per message for each check alone and for all of them. DNS answers are cached
for their TTL (60 s here) as in the server, so after the warm-up this is the CPU of the
checks themselves with a warm cache.

The spam filter (filter/spam/, ``[spam]``) is off in the first cases; the last ones run it
with a block and an allow list zone, reverse DNS, HELO, and the Bayes classifier of one
account (trained on 50 spam and 50 ham messages) in a SQLite store in a temporary directory.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import multiprocessing
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import dkim

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from dkimkeys import ed25519_pair, rsa_pair  # noqa: E402
from dnsserver import txt  # noqa: E402
from mailhaven.config import Config, DNSConfig, FilterConfig, SpamConfig  # noqa: E402
from mailhaven.filter.inbound import InboundFilter  # noqa: E402
from mailhaven.filter.spam.train import train_raw  # noqa: E402
from mailhaven.store.sqlite import SQLiteStore  # noqa: E402


def serve_dns(records: dict[str, dict[str, list[str]]], port_out: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    from dnsserver import DNSServer

    with DNSServer(records) as server:
        port_out.put(server.port)
        time.sleep(3600)


async def run(flt: InboundFilter, messages: list[bytes], ip: str, store: object = None,
              accounts: tuple[int, ...] = ()) -> float:
    start = time.process_time()
    for msg in messages:
        verdict = await flt.check(io.BytesIO(msg), len(msg), ip=ip, helo="client.example",
                                  mail_from="alice@good.example", store=store, accounts=accounts,
                                  recipients=["bob@nyu.example"])
        assert verdict.action == "deliver", verdict
    return (time.process_time() - start) / len(messages)


async def run_with_store(flt: InboundFilter, messages: list[bytes], data: Path) -> float:
    """The spam checks with a store: one account whose classifier learnt 50 + 50 messages."""
    store = SQLiteStore(data)
    await store.open()
    try:
        await store.add_domain("nyu.example")
        bob = await store.add_account("bob@nyu.example", "pw")
        for i in range(50):
            await train_raw(store, bob.id, f"Subject: cheap pills {i}\r\n\r\nDiscount pharmacy offer {i}\r\n"
                            .encode(), spam=True)
            await train_raw(store, bob.id, f"Subject: lunch {i}\r\n\r\nLorem ipsum dolor sit amet {i}\r\n"
                            .encode(), spam=False)
        await run(flt, messages[:5], "127.0.0.1", store, (bob.id,))
        return await run(flt, messages, "127.0.0.1", store, (bob.id,))
    finally:
        await store.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("-n", type=int, default=300)
    args = parser.parse_args()
    rsa_pem, rsa_pub = rsa_pair()
    ed_priv, ed_pub = ed25519_pair()
    records = {
        "good.example": {"TXT": [txt("v=spf1 ip4:192.0.2.0/24 include:_spf.good.example -all")]},
        "_spf.good.example": {"TXT": [txt("v=spf1 ip4:127.0.0.1 -all")]},
        "rsa._domainkey.good.example": {"TXT": [txt(f"v=DKIM1; k=rsa; p={rsa_pub}")]},
        "ed._domainkey.good.example": {"TXT": [txt(f"v=DKIM1; k=ed25519; p={ed_pub}")]},
        "_dmarc.good.example": {"TXT": [txt("v=DMARC1; p=reject")]},
        "1.0.0.127.in-addr.arpa": {"PTR": ["client.good.example."]},
        "client.good.example": {"A": ["127.0.0.1"]},
    }
    ports: multiprocessing.Queue = multiprocessing.Queue()  # type: ignore[type-arg]
    child = multiprocessing.Process(target=serve_dns, args=(records, ports), daemon=True)
    child.start()
    port = ports.get(timeout=30)
    body = ("Lorem ipsum dolor sit amet, consectetur adipiscing elit sed do.\r\n" * 60).encode()
    base = [(f"From: alice@good.example\r\nTo: bob@nyu.example\r\nSubject: m{i}\r\n"
             f"Message-ID: <m{i}@good.example>\r\n\r\n").encode() + body for i in range(args.n)]
    signed_rsa = [dkim.sign(m, b"rsa", b"good.example", rsa_pem) + m for m in base]
    signed_ed = [dkim.sign(m, b"ed", b"good.example", ed_priv, signature_algorithm=b"ed25519-sha256") + m
                 for m in base]
    config = Config(hostname="mx.bench.example", dns=DNSConfig(nameservers=(f"127.0.0.1:{port}",)),
                    spam=SpamConfig(enabled=False))
    spam = SpamConfig(dnsbl=("bl.bench.example",), dnswl=("wl.bench.example",))
    print(f"{args.n} messages of {len(signed_rsa[0])} bytes; CPU ms per message (this process):")
    cases = [
        ("spf only", FilterConfig(dkim=False, dmarc=False), signed_rsa),
        ("dkim only (rsa-2048)", FilterConfig(spf=False, dmarc=False), signed_rsa),
        ("dkim only (ed25519)", FilterConfig(spf=False, dmarc=False), signed_ed),
        ("dmarc only (no spf/dkim input)", FilterConfig(spf=False, dkim=False, dmarc_enforce=False), signed_rsa),
        ("all (rsa-2048)", FilterConfig(), signed_rsa),
        ("all (ed25519)", FilterConfig(), signed_ed),
        ("all (unsigned)", FilterConfig(), base),
    ]
    for name, settings, messages in cases:
        flt = InboundFilter(replace(config, filter=settings))
        asyncio.run(run(flt, messages[:5], "127.0.0.1"))     # warm up (PSL load, imports)
        per = asyncio.run(run(flt, messages, "127.0.0.1"))
        print(f"  {name:32} {per * 1000:7.2f} ms")
    spam_cases = [
        ("spam only (no store: no Bayes)", FilterConfig(spf=False, dkim=False, dmarc=False), False),
        ("spam only (Bayes, SQLite store)", FilterConfig(spf=False, dkim=False, dmarc=False), True),
        ("all + spam (rsa-2048, Bayes)", FilterConfig(), True),
        ("all + spam (unsigned, Bayes)", FilterConfig(), True),
    ]
    with tempfile.TemporaryDirectory() as tmp:
        for i, (name, settings, with_store) in enumerate(spam_cases):
            flt = InboundFilter(replace(config, filter=settings, spam=spam))
            if with_store:
                messages = base if "unsigned" in name else signed_rsa
                per = asyncio.run(run_with_store(flt, messages, Path(tmp) / f"store{i}"))
            else:
                asyncio.run(run(flt, signed_rsa[:5], "127.0.0.1"))
                per = asyncio.run(run(flt, signed_rsa, "127.0.0.1"))
            print(f"  {name:32} {per * 1000:7.2f} ms")
    child.kill()


if __name__ == "__main__":
    main()
