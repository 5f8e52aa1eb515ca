"""``mailhaven dns records`` and ``mailhaven dns check`` through the CLI, the check asking
tests/dnsserver.py (real UDP/TCP DNS) through ``[dns] nameservers``."""

from __future__ import annotations

import re
from pathlib import Path

from checkdmarc.mta_sts import parse_mta_sts_record
from checkdmarc.smtp_tls_reporting import parse_smtp_tls_reporting_record

from conftest import run_cli
from dnsserver import DNSServer


def _data(tmp_path: Path, extra: str = "") -> Path:
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    (data / "mailhaven.toml").write_text(
        'hostname = "mail.nyu.example"\n[listen]\nimaps = "0.0.0.0:993"\nimap = ""\npop3 = ""\n'
        'pop3s = "0.0.0.0:995"\nsubmissions = "0.0.0.0:465"\nsubmission = "0.0.0.0:587"\n' + extra)
    return data


def _zone(stdout: str) -> dict[str, dict[str, list[str]]]:
    """The zone-file lines ``dns records`` printed, as a DNSServer table."""
    zone: dict[str, dict[str, list[str]]] = {}
    for line in stdout.splitlines():
        if line.startswith(";"):
            continue
        name, klass, rtype, data = line.split(" ", 3)
        assert klass == "IN", line
        zone.setdefault(name.rstrip("."), {}).setdefault(rtype, []).append(data)
    return zone


def test_records_name_mta_sts_tls_rpt_srv_and_aliases(tmp_path: Path) -> None:
    data = _data(tmp_path, '[mta_sts]\nmode = "enforce"\n')
    out = run_cli(data, "dns", "records", "nyu.example").stdout
    zone = _zone(out)
    (sts,) = zone["_mta-sts.nyu.example"]["TXT"]
    assert re.fullmatch(r'"v=STSv1; id=[A-Za-z0-9]{1,32}"', sts), sts  # RFC 8461 3.1
    assert parse_mta_sts_record(sts.strip('"'))["warnings"] == []  # checkdmarc's reading of RFC 8461 3.1
    assert zone["_smtp._tls.nyu.example"]["TXT"] == ['"v=TLSRPTv1; rua=mailto:postmaster@nyu.example"']
    tlsrpt = parse_smtp_tls_reporting_record(zone["_smtp._tls.nyu.example"]["TXT"][0].strip('"'))
    assert tlsrpt["tags"]["rua"]["value"] == ["mailto:postmaster@nyu.example"]
    assert zone["_imaps._tcp.nyu.example"]["SRV"] == ["0 1 993 mail.nyu.example."]
    assert zone["_pop3s._tcp.nyu.example"]["SRV"] == ["0 1 995 mail.nyu.example."]
    assert zone["_submissions._tcp.nyu.example"]["SRV"] == ["0 1 465 mail.nyu.example."]
    assert zone["_submission._tcp.nyu.example"]["SRV"] == ["0 1 587 mail.nyu.example."]
    assert "_imap._tcp.nyu.example" not in zone and "_pop3._tcp.nyu.example" not in zone  # disabled
    for label in ("mta-sts", "autoconfig", "autodiscover"):
        assert zone[f"{label}.nyu.example"]["CNAME"] == ["mail.nyu.example."]
    # the id follows the policy: another mode, another id
    (data / "mailhaven.toml").write_text((data / "mailhaven.toml").read_text().replace("enforce", "testing"))
    assert _zone(run_cli(data, "dns", "records", "nyu.example").stdout)["_mta-sts.nyu.example"]["TXT"] != [sts]


def test_check_reports_ok_missing_and_different(tmp_path: Path) -> None:
    data = _data(tmp_path)
    run_cli(data, "dkim", "generate", "nyu.example", "--selector", "s1")
    records = run_cli(data, "dns", "records", "nyu.example").stdout
    zone = _zone(records)
    zone["mail.nyu.example"] = {"A": ["192.0.2.25"]}
    zone["25.2.0.192.in-addr.arpa"] = {"PTR": ["mail.nyu.example."]}
    tlsa = re.search(r"^; optional.*_25\._tcp\.mail\.nyu\.example\. IN TLSA (3 1 1 [0-9a-f]{64})$", records, re.M)
    assert tlsa, records
    zone["_25._tcp.mail.nyu.example"] = {"TLSA": [tlsa.group(1)]}       # the server's own key: ok
    with DNSServer(zone) as dns:
        with (data / "mailhaven.toml").open("a") as f:
            f.write(f'[dns]\nnameservers = ["127.0.0.1:{dns.port}"]\ntimeout = "2s"\n')
        good = run_cli(data, "dns", "check", "nyu.example", check=False)
        assert good.returncode == 0, good.stdout + good.stderr
        assert not re.search(r"^(missing|different|error)", good.stdout, re.M), good.stdout

        dns.records["nyu.example"]["TXT"] = ['"v=spf1 ip4:192.0.2.1 -all"']        # different
        dns.records["s1._domainkey.nyu.example"]["TXT"] = ['"v=DKIM1; k=rsa; p=AAAA"']  # another key
        del dns.records["_dmarc.nyu.example"]                                       # missing
        dns.records["_mta-sts.nyu.example"]["TXT"] = ['"v=STSv1; id=stale1"']       # stale id
        dns.records["_submission._tcp.nyu.example"]["SRV"] = ["0 1 2587 mail.nyu.example."]
        del dns.records["_pop3s._tcp.nyu.example"]
        dns.records["autoconfig.nyu.example"] = {"A": ["192.0.2.25"]}               # same address: ok
        dns.records["autodiscover.nyu.example"] = {"A": ["198.51.100.1"]}           # another host
        del dns.records["mta-sts.nyu.example"]
        dns.records["25.2.0.192.in-addr.arpa"]["PTR"] = ["host-25.isp.example."]   # not confirmed
        dns.records["_25._tcp.mail.nyu.example"]["TLSA"] = ["3 1 1 " + "ab" * 32]  # a stale key
        bad = run_cli(data, "dns", "check", "nyu.example", check=False)
    assert bad.returncode == 1, bad.stdout + bad.stderr
    status = {(m.group(2), m.group(3)): m.group(1)
              for m in re.finditer(r"^(ok|missing|different|error)\s+(\S+)\s+(\S+)$", bad.stdout, re.M)}
    assert status == {
        ("A", "mail.nyu.example"): "ok",
        ("PTR", "25.2.0.192.in-addr.arpa"): "different",
        ("TLSA", "_25._tcp.mail.nyu.example"): "different",
        ("MX", "nyu.example"): "ok",
        ("TXT", "nyu.example"): "different",
        ("TXT", "s1._domainkey.nyu.example"): "different",
        ("TXT", "_dmarc.nyu.example"): "missing",
        ("TXT", "_mta-sts.nyu.example"): "different",
        ("TXT", "_smtp._tls.nyu.example"): "ok",
        ("SRV", "_imaps._tcp.nyu.example"): "ok",
        ("SRV", "_pop3s._tcp.nyu.example"): "missing",
        ("SRV", "_submissions._tcp.nyu.example"): "ok",
        ("SRV", "_submission._tcp.nyu.example"): "different",
        ("SRV", "_autodiscover._tcp.nyu.example"): "ok",
        ("CNAME", "mta-sts.nyu.example"): "missing",
        ("CNAME", "autoconfig.nyu.example"): "ok",
        ("CNAME", "autodiscover.nyu.example"): "different",
    }, bad.stdout
    # each wrong record is followed by what was found and the exact record to publish
    assert "found:   v=spf1 ip4:192.0.2.1 -all" in bad.stdout
    assert 'publish: nyu.example. IN TXT "v=spf1 mx -all"' in bad.stdout
    assert re.search(r'publish: _dmarc\.nyu\.example\. IN TXT "v=DMARC1; p=quarantine', bad.stdout)
    assert "publish: _submission._tcp.nyu.example. IN SRV 0 1 587 mail.nyu.example." in bad.stdout
    assert "publish: 25.2.0.192.in-addr.arpa. IN PTR mail.nyu.example." in bad.stdout
    assert f"publish: _25._tcp.mail.nyu.example. IN TLSA {tlsa.group(1)}" in bad.stdout
    assert re.search(r"^7 of 17 records ok, 3 missing, 7 different", bad.stdout, re.M), bad.stdout


def test_check_fails_when_the_resolver_does_not_answer(tmp_path: Path) -> None:
    data = _data(tmp_path, '[dns]\nnameservers = ["127.0.0.1:9"]\ntimeout = "0.3s"\n')
    out = run_cli(data, "dns", "check", "nyu.example", check=False)
    assert out.returncode == 1
    assert re.search(r"^error\s+MX\s+nyu\.example$", out.stdout, re.M), out.stdout
