"""Test credentials shared by the unit and integration tests: fresh EC keys, self-signed
certificates and the store items (a certificate and its key) that name them."""

from __future__ import annotations

import datetime

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from credroam.roaming.certelement import thumbprint
from credroam.roaming.model import Item, ItemKind, StoreName, content_hash


def new_pkcs8() -> bytes:
    """A fresh EC P-256 private key as unencrypted PKCS#8 DER."""
    return ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


def self_signed(
    name: str,
    not_before: datetime.datetime,
    not_after: datetime.datetime,
    key: PrivateKey | None = None,
) -> tuple[bytes, bytes, PrivateKey]:
    """(DER certificate, PKCS#8 DER key, private key) of a fresh self-signed certificate, for
    ``key`` (a fresh EC P-256 key when None)."""
    key = key if key is not None else ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .sign(key, hashes.SHA256())
    )
    pkcs8 = key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return certificate.public_bytes(serialization.Encoding.DER), pkcs8, key


def certificate_items(der: bytes, key: bytes, modified: int, expires: int) -> tuple[Item, Item]:
    """The MY store's items of a certificate (DER) and its key (PKCS#8 DER), named by the
    certificate's thumbprint, the key owned by the certificate."""
    thumb = thumbprint(der)
    certificate = Item(
        f"%3\\{thumb}",
        StoreName.MY,
        ItemKind.CERTIFICATE,
        modified,
        content_hash(der),
        len(der),
        expires=expires,
    )
    private_key = Item(
        f"%9\\{thumb}",
        StoreName.MY,
        ItemKind.KEY,
        modified,
        content_hash(key),
        len(key),
        expires=expires,
        owner=certificate.key,
    )
    return certificate, private_key
