"""SASL mechanisms, sans-IO (RFC 4616 PLAIN, LOGIN, RFC 5802/7677 SCRAM-SHA-256) and
through the store."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest

from mailhaven.auth.sasl import (
    Challenge,
    CheckPassword,
    Failure,
    Login,
    NeedScram,
    Plain,
    ScramClient,
    ScramSha256,
    Success,
    new_mechanism,
    server_mechanism,
)
from mailhaven.store.api import ScramCredentials


def creds_for(password: str, salt: bytes, iterations: int) -> ScramCredentials:
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    return ScramCredentials(salt=salt, iterations=iterations, stored_key=hashlib.sha256(client_key).digest(),
                            server_key=hmac.new(salted, b"Server Key", "sha256").digest())


def test_rfc7677_test_vector() -> None:
    """RFC 7677 section 3, byte for byte."""
    mech = ScramSha256(nonce="%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0")
    step = mech.step(b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO")
    assert step == NeedScram(username="user")
    creds = creds_for("pencil", base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ=="), 4096)
    step = mech.scram_credentials(creds)
    assert step == Challenge(data=b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
                                  b"s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096")
    step = mech.step(b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
                     b"p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
    assert step == Challenge(data=b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")
    assert mech.step(b"") == Success(authcid="user")


def test_scram_client_and_server_agree_and_wrong_password_fails() -> None:
    creds = creds_for("s3cret", b"salt-salt-salt!!", 4096)
    for password, ok in (("s3cret", True), ("wrong", False)):
        mech, client = ScramSha256(), ScramClient("bob@x.example", password)
        assert isinstance(mech.step(client.first()), NeedScram)
        challenge = mech.scram_credentials(creds)
        assert isinstance(challenge, Challenge)
        final = mech.step(client.final(challenge.data))
        if ok:
            assert isinstance(final, Challenge) and client.verify(final.data)
            assert mech.step(b"") == Success(authcid="bob@x.example")
        else:
            assert isinstance(final, Failure)


def test_scram_unknown_user_looks_the_same_until_the_end() -> None:
    a, b = ScramSha256(fake_salt_key=b"k" * 32), ScramSha256(fake_salt_key=b"k" * 32)
    a.step(ScramClient("ghost@x", "p", nonce="n1").first())
    b.step(ScramClient("ghost@x", "p", nonce="n1").first())
    ca, cb = a.scram_credentials(None), b.scram_credentials(None)
    assert isinstance(ca, Challenge) and isinstance(cb, Challenge)
    salt = lambda c: c.data.split(b",")[1]  # noqa: E731
    assert salt(ca) == salt(cb)                     # stable fake salt: no user oracle
    client = ScramClient("ghost@x", "p", nonce="n1")
    assert isinstance(a.step(client.final(ca.data)), Failure)


@pytest.mark.parametrize("msg", [b"p=tls-unique,,n=u,r=abc", b"n,,r=abc", b"x", b"n,,n=u,r=",
                                 b"n,,n=u=ZZ,r=abc", b"n,a=other,n=u,r=abc", b"n,,m=ext,n=u,r=abc"])
def test_scram_rejects_malformed_first(msg: bytes) -> None:
    assert isinstance(ScramSha256().step(msg), Failure)


def test_scram_nonce_and_binding_checked() -> None:
    creds = creds_for("pw", b"0123456789abcdef", 4096)
    mech, client = ScramSha256(), ScramClient("u", "pw")
    mech.step(client.first())
    ch = mech.scram_credentials(creds)
    assert isinstance(ch, Challenge)
    final = client.final(ch.data)
    assert isinstance(mech.step(final.replace(b"c=biws", b"c=eSws")), Failure)


def test_plain() -> None:
    m = Plain()
    assert m.step(b"") == Challenge(data=b"")
    assert m.step(b"\x00bob@x\x00pw") == CheckPassword(authcid="bob@x", password="pw")
    assert m.password_checked(True) == Success(authcid="bob@x")
    assert isinstance(Plain().step(b"bob@x\x00bob@x\x00pw"), CheckPassword)
    assert isinstance(Plain().step(b"eve@x\x00bob@x\x00pw"), Failure)        # no proxy auth
    assert isinstance(Plain().step(b"\x00bob@x"), Failure)
    assert isinstance(Plain().step(b"\x00\xff\x00pw"), Failure)
    m2 = Plain()
    m2.step(b"\x00bob@x\x00bad")
    assert isinstance(m2.password_checked(False), Failure)


def test_login() -> None:
    m = Login()
    assert m.step(b"") == Challenge(data=b"Username:")
    assert m.step(b"bob@x") == Challenge(data=b"Password:")
    assert m.step(b"pw") == CheckPassword(authcid="bob@x", password="pw")
    assert m.password_checked(True) == Success(authcid="bob@x")
    m2 = Login()
    assert m2.step(b"bob@x") == Challenge(data=b"Password:")                # initial response


def test_unknown_mechanism() -> None:
    with pytest.raises(KeyError):
        new_mechanism("CRAM-MD5")


async def test_store_mechanisms(store) -> None:  # type: ignore[no-untyped-def]
    await store.add_domain("x.example")
    await store.add_account("bob@x.example", "s3cret")
    plain = server_mechanism("PLAIN", store)
    kind, _, account = await plain.step(b"\x00bob@x.example\x00s3cret")
    assert kind == "success" and account.address == "bob@x.example"
    assert (await server_mechanism("PLAIN", store).step(b"\x00bob@x.example\x00nope"))[0] == "failure"
    for password, expect in (("s3cret", "success"), ("nope", "failure")):
        scram, client = server_mechanism("SCRAM-SHA-256", store), ScramClient("bob@x.example", password)
        kind, data, _ = await scram.step(client.first())
        assert kind == "challenge" and data is not None
        kind, data, _ = await scram.step(client.final(data))
        if expect == "failure":
            assert kind == "failure"
            continue
        assert kind == "challenge" and data is not None and client.verify(data)
        kind, _, account = await scram.step(b"")
        assert kind == "success" and account.address == "bob@x.example"
    ghost = server_mechanism("SCRAM-SHA-256", store)
    client = ScramClient("ghost@x.example", "p")
    kind, data, _ = await ghost.step(client.first())
    assert kind == "challenge"
    assert (await ghost.step(client.final(data)))[0] == "failure"
