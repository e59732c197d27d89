"""Shared fixtures for the core unit tests: the public DSInternals tokens and test certificates."""

from __future__ import annotations

import datetime
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

# Fixtures are read where they live, beside the project (never copied into it).
SHARED_FIXTURES = (Path(__file__).resolve().parents[2] / ".." / "shared" / "fixtures").resolve()
DSINTERNALS_BLOBS = SHARED_FIXTURES / "dsinternals-roaming-blobs.json"


@pytest.fixture(scope="session")
def dsinternals_blobs() -> dict[str, bytes]:
    """The five native tokens published by DSInternals, by that project's test name."""
    if not DSINTERNALS_BLOBS.is_file():
        pytest.skip(f"shared fixture {DSINTERNALS_BLOBS} is absent")
    raw = json.loads(DSINTERNALS_BLOBS.read_text())
    return {name: bytes.fromhex(value) for name, value in raw.items()}


@pytest.fixture(scope="session")
def make_certificate_der() -> Callable[..., bytes]:
    """A factory of small self-signed DER certificates (EC P-256, fast to make)."""
    key = ec.generate_private_key(ec.SECP256R1())

    def make(
        common_name: str = "credroam test",
        not_valid_after: datetime.datetime | None = None,
    ) -> bytes:
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        not_before = datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC)
        certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_valid_after or datetime.datetime(2034, 1, 1, tzinfo=datetime.UTC))
            .sign(key, hashes.SHA256())
        )
        return certificate.public_bytes(serialization.Encoding.DER)

    return make


@pytest.fixture(scope="session")
def with_invalid_x509_version() -> Callable[[bytes], bytes]:
    """The DER certificate with its version field set to 7 (only 0, 1 and 2 are valid).

    cryptography refuses it with ``x509.InvalidVersion``, which is not a ValueError.
    """

    def rewrite(der: bytes) -> bytes:
        version_v3 = bytes.fromhex("a003020102")  # [0] EXPLICIT INTEGER 2, first in the TBS
        offset = der.index(version_v3)
        return der[:offset] + bytes.fromhex("a003020107") + der[offset + len(version_v3) :]

    return rewrite
