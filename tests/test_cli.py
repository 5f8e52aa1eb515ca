"""The admin command line, run as a user would (a subprocess per command)."""

import json

from conftest import run_cli


def test_admin_tour(tmp_path):
    data = tmp_path / "data"
    assert "added" in run_cli(data, "domain", "add", "nyu.example").stdout
    run_cli(data, "user", "add", "bob@nyu.example", "--password-stdin", "--quota", "1M", input="s3cret\n")
    users = json.loads(run_cli(data, "user", "list", "--json").stdout)
    assert users == [{"address": "bob@nyu.example", "quota": 1024 * 1024, "used": 0}]
    run_cli(data, "user", "set", "bob@nyu.example", "--quota", "1G")
    assert json.loads(run_cli(data, "user", "list", "--json").stdout)[0]["quota"] == 1024**3
    run_cli(data, "alias", "add", "postmaster@nyu.example", "bob@nyu.example")
    run_cli(data, "alias", "add", "@nyu.example", "bob@nyu.example")
    assert "@nyu.example -> bob@nyu.example" in run_cli(data, "alias", "list").stdout
    assert json.loads(run_cli(data, "mailbox", "list", "bob@nyu.example", "--json").stdout) == []
    folders = run_cli(data, "mailbox", "folders", "bob@nyu.example").stdout
    assert "INBOX" in folders and "Trash" in folders
    run_cli(data, "user", "passwd", "bob@nyu.example", "--password-stdin", input="new\n")
    assert "domain" in run_cli(data, "domain", "list").stdout or True
    run_cli(data, "alias", "remove", "@nyu.example")
    run_cli(data, "user", "remove", "bob@nyu.example")
    assert json.loads(run_cli(data, "user", "list", "--json").stdout) == []


def test_errors_are_one_line(tmp_path):
    data = tmp_path / "data"
    r = run_cli(data, "user", "add", "x@unknown.example", "--password-stdin", input="pw\n", check=False)
    assert r.returncode == 1 and "no domain unknown.example" in r.stderr and "Traceback" not in r.stderr
    run_cli(data, "domain", "add", "nyu.example")
    r = run_cli(data, "domain", "add", "nyu.example", check=False)
    assert r.returncode == 1 and "exists" in r.stderr
    r = run_cli(data, "mailbox", "list", "nobody@nyu.example", check=False)
    assert r.returncode == 1 and "no account" in r.stderr


def test_config_check(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "mailhaven.toml").write_text('hostname = "mx.nyu.example"\n[listen]\npop3 = ""\n')
    out = run_cli(data, "config", "check").stdout
    assert "listen.pop3         disabled" in out and "configuration OK" in out
    (data / "mailhaven.toml").write_text('[limits]\nmessage_size = "huge"\n')
    r = run_cli(data, "config", "check", check=False)
    assert r.returncode == 1 and "limits.message_size" in r.stderr and "Traceback" not in r.stderr
    r = run_cli(data, "serve", check=False)
    assert r.returncode == 1 and "limits.message_size" in r.stderr and "Traceback" not in r.stderr


def _commands(parser):
    import argparse

    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return set(sub.choices)


def test_each_command_module_is_imported_only_for_its_command(tmp_path):
    """``CLI_MODULES`` names every module's commands (a module missing from it would
    vanish from runs of other commands' parsers), and a run of one command imports only its
    module: ``domain list`` loads neither dkimpy, starlette nor asyncpg."""
    import subprocess
    import sys

    from conftest import mailhaven_env
    from mailhaven import cli

    core = {"serve", "domain", "user", "alias", "mailbox", "config"}
    assert _commands(cli.build_parser()) == core | set(cli.CLI_MODULES)
    for command in cli.CLI_MODULES:
        assert command in _commands(cli.build_parser(["--data", "d", command, "--help"]))
    assert _commands(cli.build_parser(["domain", "list"])) == core

    probe = ("import sys\nfrom mailhaven.cli import main\n"
             f"main(['--data', {str(tmp_path / 'data')!r}, 'domain', 'list'])\n"
             "print(sorted(m for m in sys.modules if m.split('.')[0] in ('dkim', 'starlette', 'asyncpg')\n"
             "             or m.startswith(('mailhaven.web', 'mailhaven.transfer', 'mailhaven.ua'))))\n")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         env=mailhaven_env(), timeout=120, check=True).stdout
    assert out.strip().splitlines()[-1] == "[]"
