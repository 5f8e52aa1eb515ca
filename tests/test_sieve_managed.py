"""The managed Sieve script (sieve/managed.py): the state written into the script reads back
the same, the user's raw tail keeps its own line numbers in errors and its requires merge
with ours, and generated scripts do what Dovecot's Pigeonhole (`sieve-test`) does with them."""

from __future__ import annotations

import datetime as dt
import pathlib

import pytest

import test_sieve_pigeonhole as ph  # skipped without sieve-test
from mailhaven.sieve import compile_script
from mailhaven.sieve.errors import SieveError
from mailhaven.sieve.managed import (
    ManagedState,
    Rule,
    StateError,
    VacationState,
    generate,
    parse_managed,
)
from test_sieve_pigeonhole import workdir  # noqa: F401 - the fixture

RULES = (
    Rule(field="list-id", contains="dev.lists.example.org", action="move", folder="Lists/dev"),
    Rule(field="subject", contains="release", action="flag"),
    Rule(field="from", contains="carol@", action="read"),
    Rule(field="to", contains="eve@example.org", action="forward", address="eve@example.net"),
    Rule(field="subject", contains="invoice", action="forward", address="books@example.net", keep_copy=False),
    Rule(field="from", contains="shop@example.com", action="delete"),
)


def _utc(days: int) -> str:
    return (dt.datetime.now(dt.UTC) + dt.timedelta(days=days)).strftime("%Y-%m-%dT%H:%M:%SZ")


def test_state_round_trips_through_the_script() -> None:
    state = ManagedState(rules=RULES, vacation=VacationState(
        enabled=True, from_date=_utc(-1), to_date=_utc(1), subject='Away "now"', text_body="Back\nMonday.",
        html_body="<p>Back Monday.</p>"), raw='require ["envelope"];\nif envelope :is "from" "x@y" { stop; }\n')
    text = generate(state)
    compile_script(text)
    assert parse_managed(text) == state
    assert parse_managed(generate(ManagedState())) == ManagedState()
    hand = 'require "fileinto";\nfileinto "A";\n'                 # written over ManageSieve: all raw
    assert parse_managed(hand) == ManagedState(raw=hand)
    assert parse_managed(generate(parse_managed(hand))).raw == hand


def test_raw_tail_errors_carry_the_users_line_and_column() -> None:
    with pytest.raises(SieveError) as err:
        generate(ManagedState(rules=RULES, raw='# mine\nif header :contains "subject" "x" {\n  fileinto "A";\n}\n'))
    assert (err.value.line, err.value.column) == (3, 3) and "fileinto" in err.value.message
    with pytest.raises(SieveError) as err:
        generate(ManagedState(raw='keep;\nif true { keep }\n'))
    assert err.value.line == 2
    with pytest.raises(StateError):
        generate(ManagedState(rules=(Rule(field="body", contains="x", action="move", folder="A"),)))
    with pytest.raises(StateError):
        generate(ManagedState(rules=(Rule(field="from", contains="x", action="forward", address="nobody"),)))
    with pytest.raises(StateError):
        generate(ManagedState(vacation=VacationState(enabled=True, from_date="2026-13-01T00:00:00Z")))


@pytest.mark.parametrize("name", ["rules", "vacation-now", "vacation-later", "raw-tail"])
def test_generated_scripts_do_what_pigeonhole_does(workdir: pathlib.Path, name: str) -> None:  # noqa: F811
    states = {
        "rules": ManagedState(rules=RULES),
        "vacation-now": ManagedState(rules=RULES[:2], vacation=VacationState(
            enabled=True, from_date=_utc(-1), to_date=_utc(2), subject="Out of office", text_body="Away.")),
        "vacation-later": ManagedState(vacation=VacationState(enabled=True, from_date=_utc(3), text_body="x")),
        "raw-tail": ManagedState(rules=RULES[:1], raw='require ["fileinto", "envelope"]; '
                                 'if envelope :domain "from" "lists.example.org" { fileinto "FromLists"; }\n'),
    }
    script = generate(states[name])
    seen = set()
    for msg in ph.MESSAGES:
        theirs = ph._pigeonhole(workdir, f"managed-{name}", script, msg)
        ours = ph._ours(script, msg)
        assert ours == theirs, f"{name} on {msg}:\n{script}"
        seen.update(a[0] for a in ours)
    expected = {"rules": {"store", "redirect", "discard", "implicit-keep"}, "vacation-now": {"vacation"},
                "vacation-later": {"implicit-keep"}, "raw-tail": {"store"}}[name]
    assert expected <= seen, seen
    if name == "vacation-later":
        assert "vacation" not in seen


async def test_saving_adopts_the_active_script_and_activates_the_managed_one(store) -> None:  # type: ignore[no-untyped-def]
    from mailhaven.sieve import managed

    await store.add_domain("nyu.example")
    bob = await store.add_account("bob@nyu.example", "s3cret")
    assert await managed.load(store, bob.id) == (ManagedState(), False)
    mine = 'require "fileinto";\nif header :is "subject" "x" { fileinto "X"; }\n'
    await store.put_sieve_script(bob.id, "mine", mine)
    await store.activate_sieve_script(bob.id, "mine")
    state, active = await managed.load(store, bob.id)
    assert (state, active) == (ManagedState(raw=mine), False)      # the user's rules are not lost
    on = ManagedState(rules=RULES[:1], vacation=VacationState(enabled=True, text_body="away"), raw=state.raw)
    text = await managed.save(store, bob.id, on)
    assert await store.get_active_sieve_script(bob.id) == ("mailhaven", text)
    assert await managed.load(store, bob.id) == (on, True)
    await store.activate_sieve_script(bob.id, "mine")               # over ManageSieve: another script
    assert await managed.load(store, bob.id) == (on, False)


def test_flag_rules_apply_before_a_move() -> None:
    from mailhaven.sieve import SieveMessage, run

    state = ManagedState(rules=(Rule(field="subject", contains="invoice", action="move", folder="Bills"),
                                Rule(field="from", contains="shop", action="flag")))
    outcome = run(compile_script(generate(state)), SieveMessage(
        raw=b"From: shop@x.example\r\nSubject: invoice 1\r\n\r\nx\r\n", mail_from="shop@x.example", rcpt_to="b@y.example"))
    assert [(a.kind, a.mailbox, a.flags) for a in outcome.actions] == [("fileinto", "Bills", ("\\Flagged",))]


async def test_saving_keeps_to_the_managesieve_quotas(store) -> None:  # type: ignore[no-untyped-def]
    from types import SimpleNamespace

    from mailhaven.sieve import managed

    await store.add_domain("nyu.example")
    bob = await store.add_account("bob@nyu.example", "s3cret")
    await store.put_sieve_script(bob.id, "a", "keep;")
    with pytest.raises(StateError, match="already 1"):
        await managed.save(store, bob.id, ManagedState(), quota=SimpleNamespace(max_script_size=65536, max_scripts=1))
    with pytest.raises(StateError, match="octets"):
        await managed.save(store, bob.id, ManagedState(raw="# " + "x" * 5000 + "\nkeep;\n"),
                           quota=SimpleNamespace(max_script_size=4096, max_scripts=16))
    assert [i.name for i in await store.list_sieve_scripts(bob.id)] == ["a"]       # nothing written
    await managed.save(store, bob.id, ManagedState(), quota=SimpleNamespace(max_script_size=4096, max_scripts=2))
    await managed.save(store, bob.id, ManagedState(), quota=SimpleNamespace(max_script_size=4096, max_scripts=2))
