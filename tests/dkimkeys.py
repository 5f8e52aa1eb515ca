"""DKIM key pairs for the tests and benches that sign with dkimpy: the private key in the
form ``dkim.sign`` takes, and the public key as the ``p=`` tag of the selector's TXT record
(RFC 6376 3.6.1; ed25519 as RFC 8463 3 has it, the raw 32 bytes)."""

from __future__ import annotations

import base64

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa


def rsa_pair(bits: int = 2048) -> tuple[bytes, str]:
    """(PEM private key, base64 SubjectPublicKeyInfo)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                            serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return pem, base64.b64encode(public).decode()


def ed25519_pair() -> tuple[bytes, str]:
    """(base64 raw private key, base64 raw public key)."""
    key = ed25519.Ed25519PrivateKey.generate()
    private = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(private), base64.b64encode(public).decode()
