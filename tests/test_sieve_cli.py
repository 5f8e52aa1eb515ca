"""``mailhaven sieve put|show|remove`` run as a user would: the script is compiled at
upload, errors name the line and column, a good script becomes the active one."""

import json

from conftest import run_cli


def test_put_show_remove(tmp_path):
    data = tmp_path / "data"
    run_cli(data, "domain", "add", "nyu.example")
    run_cli(data, "user", "add", "bob@nyu.example", "--password-stdin", input="s3cret\n")
    bad = tmp_path / "bad.sieve"
    bad.write_text('require "fileinto";\nif header :contains "subject" "x" {\n  fileinto "Junk"\n}\n')
    r = run_cli(data, "sieve", "put", "bob@nyu.example", str(bad), check=False)
    assert r.returncode == 1 and f"{bad}:4:1: expected ';'" in r.stderr and "Traceback" not in r.stderr
    unknown = tmp_path / "unknown.sieve"
    unknown.write_text('require ["fileinto", "vacation-nope"];\nkeep;\n')
    r = run_cli(data, "sieve", "put", "bob@nyu.example", str(unknown), check=False)
    assert r.returncode == 1 and ":1:1: unsupported extension 'vacation-nope'" in r.stderr
    r = run_cli(data, "sieve", "show", "bob@nyu.example", check=False)
    assert r.returncode == 1 and "no active Sieve script" in r.stderr       # nothing was stored
    good = tmp_path / "good.sieve"
    text = 'require "fileinto";\nif header :contains "list-id" "dev" { fileinto "Lists"; }\n'
    good.write_text(text)
    assert "active" in run_cli(data, "sieve", "put", "bob@nyu.example", str(good)).stdout
    assert run_cli(data, "sieve", "show", "bob@nyu.example").stdout == text
    run_cli(data, "sieve", "remove", "bob@nyu.example")
    r = run_cli(data, "sieve", "show", "bob@nyu.example", check=False)
    assert r.returncode == 1 and "no active Sieve script" in r.stderr
    r = run_cli(data, "sieve", "show", "nobody@nyu.example", check=False)
    assert r.returncode == 1 and "no account" in r.stderr


def test_list_get_put_activate_deactivate_delete(tmp_path):
    data = tmp_path / "data"
    run_cli(data, "domain", "add", "nyu.example")
    run_cli(data, "user", "add", "bob@nyu.example", "--password-stdin", input="s3cret\n")
    a, b = tmp_path / "a.sieve", tmp_path / "b.sieve"
    a.write_text("keep;\n")
    b.write_text('require "fileinto";\nfileinto "B";\n')
    assert run_cli(data, "sieve", "list", "bob@nyu.example").stdout == ""
    assert "active" in run_cli(data, "sieve", "put", "bob@nyu.example", "work", str(a)).stdout   # the first
    assert "active" not in run_cli(data, "sieve", "put", "bob@nyu.example", "away", str(b)).stdout
    assert run_cli(data, "sieve", "list", "bob@nyu.example").stdout == "away\nwork\tactive\n"
    assert run_cli(data, "sieve", "get", "bob@nyu.example", "away").stdout == 'require "fileinto";\nfileinto "B";\n'
    assert run_cli(data, "sieve", "get", "bob@nyu.example").stdout == "keep;\n"        # the active one
    run_cli(data, "sieve", "activate", "bob@nyu.example", "away")
    assert json.loads(run_cli(data, "sieve", "list", "bob@nyu.example", "--json").stdout) == [
        {"name": "away", "active": True}, {"name": "work", "active": False}]
    r = run_cli(data, "sieve", "activate", "bob@nyu.example", "nosuch", check=False)
    assert r.returncode == 1 and "nosuch" in r.stderr and "Traceback" not in r.stderr
    run_cli(data, "sieve", "deactivate", "bob@nyu.example")
    assert run_cli(data, "sieve", "list", "bob@nyu.example").stdout == "away\nwork\n"
    run_cli(data, "sieve", "delete", "bob@nyu.example", "work")
    assert run_cli(data, "sieve", "list", "bob@nyu.example").stdout == "away\n"
    r = run_cli(data, "sieve", "get", "bob@nyu.example", "work", check=False)
    assert r.returncode == 1 and "work" in r.stderr and "Traceback" not in r.stderr


def test_sieve_test_json(tmp_path):
    data = tmp_path / "data"
    script = tmp_path / "s.sieve"
    script.write_text('require ["fileinto", "imap4flags", "envelope", "copy", "mailbox"];\n'
                      'if envelope :domain "from" "lists.example.org" { addflag "$List"; '
                      'fileinto :create :copy "Lists"; }\nif size :over 1M { discard; }\n')
    msg = tmp_path / "m.eml"
    msg.write_bytes(b"From: a@example.org\r\nSubject: x\r\n\r\nbody\r\n")
    out = run_cli(data, "sieve", "test", str(script), str(msg), "--from", "owner@lists.example.org",
                  "--to", "bob@nyu.example", "--json").stdout
    assert json.loads(out) == {"actions": [
        {"action": "fileinto", "mailbox": "Lists", "flags": ["$List"], "implicit": False, "create": True,
         "copy": True},
        {"action": "keep", "mailbox": "INBOX", "flags": ["$List"], "implicit": True}], "errors": []}
    out = run_cli(data, "sieve", "test", str(script), str(msg), "--json").stdout   # null sender
    assert json.loads(out)["actions"] == [{"action": "keep", "mailbox": "INBOX", "flags": [], "implicit": True}]
    script.write_text('require "fileinto";\nfileinto :nope "x";\n')
    r = run_cli(data, "sieve", "test", str(script), str(msg), "--json", check=False)
    assert r.returncode == 1
    assert json.loads(r.stdout) == {"actions": [], "errors": [
        {"line": 2, "column": 10, "message": "fileinto has no tag :nope"}]}


def test_sieve_test_json_shows_the_vacation_reply(tmp_path):
    script = tmp_path / "v.sieve"
    script.write_text('require ["vacation", "vacation-seconds"];\n'
                      'vacation :seconds 600 :subject "Away" :addresses ["b@nyu.example"] :handle "h" "Back Monday.";\n')
    msg = tmp_path / "m.eml"
    msg.write_bytes(b"From: a@example.org\r\nSubject: x\r\n\r\nbody\r\n")
    out = run_cli(tmp_path / "data", "sieve", "test", str(script), str(msg), "--json").stdout
    assert json.loads(out)["actions"] == [
        {"action": "vacation", "reason": "Back Monday.", "implicit": False, "seconds": 600, "handle": "h",
         "mime": False, "addresses": ["b@nyu.example"], "subject": "Away"},
        {"action": "keep", "mailbox": "INBOX", "flags": [], "implicit": True}]


def test_sieve_test_json_notify(tmp_path):
    script = tmp_path / "n.sieve"
    script.write_text('require ["enotify", "editheader"];\naddheader "X-A" "1";\n'
                      'notify :importance "1" :message "hi" "mailto:pager@example.org?cc=ops@example.org";\n')
    message = tmp_path / "m.eml"
    message.write_bytes(b"Subject: x\r\n\r\nbody\r\n")
    out = json.loads(run_cli(tmp_path / "data", "sieve", "test", str(script), str(message), "--json").stdout)
    assert out["actions"][0] == {"action": "notify", "implicit": False, "importance": "1", "subject": "hi",
                                 "method": "mailto:pager@example.org?cc=ops@example.org",
                                 "recipients": ["pager@example.org", "ops@example.org"]}
    assert out["actions"][1]["action"] == "keep" and out["errors"] == []
