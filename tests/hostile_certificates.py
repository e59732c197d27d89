"""Certificates for hostile-input tests and fuzz seeds, the same bytes on every run (Ed25519
signatures are deterministic), and the damaged forms the fuzzers and reviews turned up."""

from __future__ import annotations

from datetime import UTC, datetime

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

SIGNER = ed25519.Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
NAME = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "credroam hostile input")])
_NOT_AFTER = datetime(2150, 1, 1, tzinfo=UTC)  # past 2049: written as GeneralizedTime
_V3 = b"\xa0\x03\x02\x01\x02"  # TBSCertificate's [0] EXPLICIT INTEGER 2: version v3


def certificate_der(serial: int = 1) -> bytes:
    certificate = (
        x509.CertificateBuilder()
        .subject_name(NAME)
        .issuer_name(NAME)
        .public_key(SIGNER.public_key())
        .serial_number(serial)
        .not_valid_before(datetime(2024, 1, 1, tzinfo=UTC))
        .not_valid_after(_NOT_AFTER)
        .sign(SIGNER, None)
    )
    return certificate.public_bytes(Encoding.DER)


def with_unknown_version(der: bytes) -> bytes:
    """``der`` claiming X.509 version 61, as fuzz_certelement wrote it (cryptography refuses
    it with InvalidVersion, which is no ValueError)."""
    assert der.count(_V3) == 1
    return der.replace(_V3, b"\xa0\x03\x02\x01\x3d")


def expiring_in_year(year: bytes) -> bytes:
    """A certificate whose expiry says ``year`` (four digits). X.509 can write any year as
    GeneralizedTime, and cryptography reads the certificate; its builder refuses dates before
    1950, so the year of one it accepts is overwritten (the signature no longer matches:
    nothing checks it). b"1500" is before the FILETIME epoch (1601); b"0000", found by
    fuzz_certelement, is no year Python's datetime can hold."""
    der = certificate_der()
    written = str(_NOT_AFTER.year).encode()
    assert len(year) == 4 and der.count(written + b"0101") == 1
    return der.replace(written + b"0101", year + b"0101")


def expired_before_1601() -> bytes:
    return expiring_in_year(b"1500")
