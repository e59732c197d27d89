"""Valid inputs the targets start from, the same bytes on every run (seeds must not vary, so a
run with a fixed ``-seed`` is repeatable): the certificate and request are signed with the
fixed Ed25519 key of tests/hostile_certificates.py, the EC key is derived from a fixed number
and the RSA key is built from fixed primes.

Import after the target's ``instrumented()`` block (this module imports credroam)."""

from __future__ import annotations

import functools
import json

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from credroam.roaming.certelement import build_cert_element, certificate_token, thumbprint
from credroam.tokens import Token, TokenFlags, TokenType, encode_token, format_dn_binary
from tests import hostile_certificates

USER_DN = "CN=alice,CN=Users,DC=lab,DC=example"
WHEN = 133_500_000_000_000_000  # a FILETIME in 2024
certificate_der = functools.cache(hostile_certificates.certificate_der)


@functools.cache
def request_der() -> bytes:
    builder = x509.CertificateSigningRequestBuilder().subject_name(hostile_certificates.NAME)
    request = builder.sign(hostile_certificates.SIGNER, None)
    return request.public_bytes(serialization.Encoding.DER)


def _pkcs8(key) -> bytes:
    return key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _is_probable_prime(n: int) -> bool:
    if n % 2 == 0:
        return n == 2
    d, r = n - 1, 0
    while d % 2 == 0:
        d, r = d // 2, r + 1
    for witness in (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37):  # deterministic below 3.3e24
        x = pow(witness, d, n)
        if x in (1, n - 1):
            continue
        for _ in range(r - 1):
            x = pow(x, 2, n)
            if x == n - 1:
                break
        else:
            return False
    return True


def _next_prime(n: int) -> int:
    while not _is_probable_prime(n):
        n += 1
    return n


@functools.cache
def private_keys_der() -> tuple[bytes, ...]:
    """PKCS#8 DER of an Ed25519, an EC P-256 and an RSA-1024 key (fixed)."""
    p = _next_prime(2**511 + 2**500 + 1)
    q = _next_prime(2**511 + 2**499 + 1)
    e = 65537
    d = pow(e, -1, (p - 1) * (q - 1))
    numbers = rsa.RSAPrivateNumbers(
        p,
        q,
        d,
        rsa.rsa_crt_dmp1(d, p),
        rsa.rsa_crt_dmq1(d, q),
        rsa.rsa_crt_iqmp(p, q),
        rsa.RSAPublicNumbers(e, p * q),
    )
    return (
        _pkcs8(hostile_certificates.SIGNER),
        _pkcs8(ec.derive_private_key(0x1234567890ABCDEF, ec.SECP256R1())),
        _pkcs8(numbers.private_key(unsafe_skip_rsa_key_validation=True)),
    )


def cert_elements() -> list[bytes]:
    der = certificate_der()
    return [
        build_cert_element(der),
        build_cert_element(der, archived=True, friendly_name="alice's cert"),
    ]


def token_blobs() -> list[bytes]:
    """Encoded tokens of several types, as a directory would hold them."""
    der = certificate_der()
    tokens = [
        certificate_token(der, WHEN),
        certificate_token(der, WHEN, archived=True, token_type=TokenType.CNG_CERTIFICATE),
        Token(TokenType.CERTIFICATE, thumbprint(der), WHEN, TokenFlags.TOMBSTONE, b""),
        Token(TokenType.CNG_KEY, thumbprint(der), WHEN, TokenFlags(0), b"sealed", b"provider"),
        Token(
            TokenType.DPAPI_MASTER_KEY,
            "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0",
            WHEN,
            TokenFlags.KNOWN_TYPE,
            b"master key",
        ),
        Token(TokenType.UNKNOWN_5, "Preferred", WHEN, TokenFlags(0), b"opaque"),
    ]
    return [encode_token(token) for token in tokens]


def dn_binary_values() -> list[bytes]:
    return [format_dn_binary(blob, USER_DN).encode() for blob in token_blobs()[:3]]


def state_documents() -> list[bytes]:
    der = certificate_der()
    key = f"%3\\{thumbprint(der)}"
    entry = {
        "key": key,
        "store": "MY",
        "kind": "certificate",
        "modified": WHEN,
        "content_hash": "ab" * 32,
        "tombstone": False,
        "archived": False,
        "last_seen_in_directory": WHEN,
        "owner": None,
    }
    key_entry = dict(entry, key=f"%9\\{thumbprint(der)}", kind="key", owner=key)
    empty = {
        "format": "credroam-state",
        "version": 1,
        "last_sync": None,
        "directory_timestamp": None,
        "entries": [],
    }
    full = dict(empty, last_sync=WHEN, directory_timestamp=WHEN, entries=[entry, key_entry])
    return [json.dumps(document).encode() for document in (empty, full)]
