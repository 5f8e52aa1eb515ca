"""RFC 7672 3.1's matching of a presented chain against TLSA records (queue/dane.py)."""

from __future__ import annotations

import datetime
import hashlib

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from mailhaven.queue.dane import TLSA, verify

NOW = datetime.datetime.now(datetime.UTC)
DER = serialization.Encoding.DER


def _cert(subject: str, key: ec.EllipticCurvePrivateKey, issuer: str, signer: ec.EllipticCurvePrivateKey, *,
          ca: bool, names: list[str] = (), days: int = 2) -> x509.Certificate:   # type: ignore[assignment]
    builder = (x509.CertificateBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
               .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(NOW - datetime.timedelta(days=10)).not_valid_after(NOW + datetime.timedelta(days=days))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), True))
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), False)
    if ca:
        builder = builder.add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), True)
    return builder.sign(signer, hashes.SHA256())


CA_KEY, KEY = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
CA = _cert("CA", CA_KEY, "CA", CA_KEY, ca=True)
LEAF = _cert("mx.example", KEY, "CA", CA_KEY, ca=False, names=["mx.example"])
EXPIRED = _cert("other", KEY, "CA", CA_KEY, ca=False, names=["other.example"], days=-1)
SPKI = KEY.public_key().public_bytes(DER, serialization.PublicFormat.SubjectPublicKeyInfo)
CHAIN = [LEAF.public_bytes(DER), CA.public_bytes(DER)]
NAMES = ("mx.example",)


def test_dane_ee_matches_the_key_or_certificate_whatever_the_names_and_dates() -> None:
    assert verify((TLSA(3, 1, 1, hashlib.sha256(SPKI).digest()),), CHAIN, NAMES) is None
    assert verify((TLSA(3, 1, 2, hashlib.sha512(SPKI).digest()),), CHAIN, NAMES) is None
    assert verify((TLSA(3, 0, 0, LEAF.public_bytes(DER)),), CHAIN, NAMES) is None
    # 3.1.1: the same key in an expired certificate for another name still matches 3 1 1.
    assert verify((TLSA(3, 1, 1, hashlib.sha256(SPKI).digest()),), [EXPIRED.public_bytes(DER)], NAMES) is None
    assert verify((TLSA(3, 0, 1, hashlib.sha256(b"x").digest()),), CHAIN, NAMES) is not None


def test_dane_ta_needs_the_anchor_in_the_chain_and_a_valid_chain_for_the_name() -> None:
    record = TLSA(2, 0, 1, hashlib.sha256(CA.public_bytes(DER)).digest())
    assert verify((record,), CHAIN, NAMES) is None
    assert verify((record,), CHAIN, ("elsewhere.example",)) is not None     # 3.2.2: the name counts
    assert verify((record,), CHAIN[:1], NAMES) is not None                  # anchor not sent
    assert verify((record,), [EXPIRED.public_bytes(DER), CA.public_bytes(DER)], ("other.example",)) is not None
    # The leaf itself is no trust anchor for DANE-TA.
    assert verify((TLSA(2, 1, 1, hashlib.sha256(SPKI).digest()),), CHAIN, NAMES) is not None


def test_unusable_records_leave_tls_unauthenticated() -> None:
    pkix = (TLSA(1, 1, 1, hashlib.sha256(b"x").digest()), TLSA(3, 1, 9, b"x"))
    assert verify(pkix, CHAIN, NAMES) is None
    # One usable record among them is what counts.
    assert verify(pkix + (TLSA(3, 1, 1, b"\0" * 32),), CHAIN, NAMES) is not None
