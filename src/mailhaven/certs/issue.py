"""One certificate order against an ACME CA (RFC 8555 7.4), synchronous: it runs in a
thread (``certs/service.py``), never on the event loop.

The account key is an ECDSA P-256 key in ``DATA/acme/account.key`` (0600), made on first
use; the account is found again by that key (RFC 8555 7.3.1, onlyReturnExisting is not
needed: newAccount with a known key answers 200 and the account's URL).
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import josepy as jose
from acme import challenges, client, crypto_util, errors, messages
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from ..config import ACMEConfig
from .challenges import Challenges
from .files import acme_dir, write_private

USER_AGENT = "mailhaven"
ORDER_TIMEOUT = datetime.timedelta(seconds=90)


class ACMEFailure(Exception):
    """The CA refused or a challenge failed: retried later with backoff."""


@challenges.ChallengeResponse.register
class TLSALPN01Response(challenges.KeyAuthorizationChallengeResponse):
    """RFC 8737 3: the response is an empty object, like http-01's."""

    typ = "tls-alpn-01"


@challenges.Challenge.register
class TLSALPN01(challenges.KeyAuthorizationChallenge):
    """RFC 8737 3 (the acme package dropped its own class)."""

    response_cls = TLSALPN01Response
    typ = response_cls.typ

    def validation(self, account_key: jose.JWK, **kwargs: Any) -> str:
        return self.key_authorization(account_key)


@dataclass(frozen=True)
class Issued:
    fullchain_pem: bytes
    key_pem: bytes


def _account_key(data_dir: Path) -> jose.JWKEC:
    path = acme_dir(data_dir) / "account.key"
    if path.exists():
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    else:
        key = ec.generate_private_key(ec.SECP256R1())
        write_private(path, key.private_bytes(serialization.Encoding.PEM,
                                              serialization.PrivateFormat.PKCS8,
                                              serialization.NoEncryption()))
    return jose.JWKEC(key=key)


def _client(config: ACMEConfig, data_dir: Path) -> tuple[client.ClientV2, jose.JWKEC]:
    key = _account_key(data_dir)
    verify: Any = config.ca_file or True  # requests takes a CA bundle path here
    net = client.ClientNetwork(key, alg=jose.ES256, verify_ssl=verify, user_agent=USER_AGENT)
    directory = client.ClientV2.get_directory(config.directory, net)
    acme = client.ClientV2(directory, net=net)
    contact = (f"mailto:{config.email}",) if config.email else ()
    registration = messages.NewRegistration.from_data(terms_of_service_agreed=True)
    if contact:
        registration = registration.update(contact=contact)
    try:
        regr = acme.new_account(registration)  # RFC 8555 7.3
    except errors.ConflictError as exc:  # the key already has an account: its URL
        regr = messages.RegistrationResource(uri=exc.location, body=messages.Registration())
        acme.net.account = regr
        regr = acme.query_registration(regr)
    (acme_dir(data_dir) / "account.json").write_text(json.dumps({"uri": regr.uri}))
    return acme, key


def _answer(acme: client.ClientV2, key: jose.JWK, kind: str, order: messages.OrderResource,
            pending: Challenges) -> list[tuple[str, str]]:
    """Publish and answer one challenge of ``kind`` per pending authorization."""
    answered = []
    for authz in order.authorizations:
        if authz.body.status == messages.STATUS_VALID:
            continue  # RFC 8555 7.1.4: an authorization still valid from an earlier order
        domain = authz.body.identifier.value
        challb = next((c for c in authz.body.challenges if c.chall.typ == kind), None)
        if challb is None:
            raise ACMEFailure(f"the CA offers no {kind} challenge for {domain}")
        key_authorization = challb.chall.key_authorization(key)
        token = challb.chall.encode("token")
        if kind == "http-01":
            pending.add_http(token, key_authorization)
        else:
            pending.add_alpn(domain, key_authorization)
        answered.append((token, domain))
        acme.answer_challenge(challb, challb.chall.response(key))  # RFC 8555 7.5.1
    return answered


def issue(config: ACMEConfig, data_dir: Path, names: Iterable[str], pending: Challenges) -> Issued:
    """Order a certificate for ``names`` (the first is the subject), answer the challenges,
    finalize with a fresh P-256 key; raises ACMEFailure or the acme package's errors."""
    names = list(dict.fromkeys(n.lower() for n in names))
    acme, key = _client(config, data_dir)
    cert_key = ec.generate_private_key(ec.SECP256R1())
    key_pem = cert_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption())
    csr = crypto_util.make_csr(key_pem, names)
    order = acme.new_order(csr)  # RFC 8555 7.4
    answered = _answer(acme, key, config.challenge, order, pending)
    try:
        deadline = datetime.datetime.now() + ORDER_TIMEOUT
        try:
            order = acme.poll_and_finalize(order, deadline)  # RFC 8555 7.5.1, 7.4
        except errors.ValidationError as exc:
            problems = [f"{a.body.identifier.value}: {c.error}" for a in exc.failed_authzrs
                        for c in a.body.challenges if c.error]
            raise ACMEFailure("validation failed: " + "; ".join(problems)) from None
    finally:
        for token, domain in answered:
            pending.remove(token, domain)
    if not order.fullchain_pem:
        raise ACMEFailure("the CA returned no certificate")
    return Issued(order.fullchain_pem.encode("ascii"), key_pem)
