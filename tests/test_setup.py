"""``mailhaven setup`` (the quickstart) with flags and with answers on stdin: the
configuration it writes loads and names the standard ports and the ACME CA, the DKIM key
and account exist, the printed records are ``dns records``' own, and the real server on
that data directory takes an IMAP login with the printed password."""

from __future__ import annotations

import imaplib
import re
import tomllib
from pathlib import Path

from conftest import ServerProcess, run_cli
from mailhaven.config import load_config
from mailhaven.dnsrecords import expected_records
from mailhaven.queue import dkim

HOST, DOMAIN, ADMIN = "mail.example.org", "example.org", "admin@example.org"
STANDARD = {"smtp": ":25", "submission": ":587", "submissions": ":465", "imap": ":143", "imaps": ":993",
            "pop3": ":110", "pop3s": ":995", "http": ":443", "acme_http": ":80"}


def _password(out: str) -> str:
    match = re.search(rf"Account {re.escape(ADMIN)} created with password: (\S+)", out)
    assert match, out
    return match.group(1)


def _check_written(data: Path, out: str) -> None:
    """In this process (each CLI run costs a second or two): the file, the key, the records."""
    raw = tomllib.loads((data / "mailhaven.toml").read_text())
    assert raw["listen"] == STANDARD
    assert raw["acme"] == {"directory": "https://acme-v02.api.letsencrypt.org/directory", "email": ADMIN}
    config = load_config(data)
    assert config.hostname == HOST and config.acme.email == ADMIN
    keys = dkim.load_keys(data)
    assert [(k.domain, k.algorithm) for k in keys] == [(DOMAIN, "rsa")]
    records = [r.zone_line() for r in expected_records(config, DOMAIN, keys)]
    assert any("._domainkey." in line for line in records)
    for line in records:
        assert line in out.splitlines()
    assert "Next steps:" in out


def test_setup_with_flags_then_the_server_takes_the_login(tmp_path: Path) -> None:
    data = tmp_path / "data"
    out = run_cli(data, "setup", "--hostname", HOST, "--domain", DOMAIN, "--admin", ADMIN).stdout
    _check_written(data, out)
    password = _password(out)
    again = run_cli(data, "setup", "--hostname", HOST, "--domain", DOMAIN, "--admin", ADMIN, check=False)
    assert again.returncode == 1 and "exists" in again.stderr

    # The real server on that data directory, on free ports instead of the standard ones.
    (data / "mailhaven.toml").rename(data / "setup.toml")
    server = ServerProcess(data, hostname=HOST).start()
    try:
        imap = imaplib.IMAP4("127.0.0.1", server.port("imap"), timeout=10)
        assert imap.login(ADMIN, password)[0] == "OK"
        assert imap.select("INBOX")[0] == "OK"
        imap.logout()
    finally:
        server.stop()


def test_setup_reads_answers_from_stdin(tmp_path: Path) -> None:
    data = tmp_path / "data"
    out = run_cli(data, "setup", input=f"{HOST}.\n{DOMAIN}\n{ADMIN}\n").stdout
    _check_written(data, out)
    assert _password(out)
    # An address outside the domain: nothing is written.
    other = tmp_path / "other"
    result = run_cli(other, "setup", input=f"{HOST}\n{DOMAIN}\nadmin@other.example\n", check=False)
    assert result.returncode == 1 and "admin: expected an address at example.org" in result.stderr
    assert not (other / "mailhaven.toml").exists()
