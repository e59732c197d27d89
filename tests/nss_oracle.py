"""What an NSS database holds, read straight from its SQLite tables (independent of credroam).

Certificates are the class-1 rows of cert9.db's nssPublic (CKA_VALUE, column a11, is the DER);
private keys the class-3 rows of key4.db's nssPrivate (CKA_ID, column a102).
"""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

_CERTIFICATE, _PRIVATE_KEY = b"\0\0\0\1", b"\0\0\0\3"


def thumbprint(der: bytes) -> str:
    return hashlib.sha1(der).hexdigest().upper()


def nss_certificates(db: Path) -> dict[str, bytes]:
    """Thumbprint -> DER of every certificate in the database."""
    with sqlite3.connect(f"file:{db / 'cert9.db'}?mode=ro", uri=True) as connection:
        rows = connection.execute("SELECT a0, a11 FROM nssPublic").fetchall()
    return {thumbprint(value): value for cls, value in rows if cls == _CERTIFICATE}


def nss_key_ids(db: Path) -> set[str]:
    """The CKA_ID (hex) of every private key in the database."""
    with sqlite3.connect(f"file:{db / 'key4.db'}?mode=ro", uri=True) as connection:
        rows = connection.execute("SELECT a0, a102 FROM nssPrivate").fetchall()
    return {ckaid.hex() for cls, ckaid in rows if cls == _PRIVATE_KEY}


def ec_key_id(certificate_der: bytes) -> str:
    """The CKA_ID NSS gives an EC certificate's key: SHA-1 of the uncompressed public point."""
    public_key = x509.load_der_x509_certificate(certificate_der).public_key()
    point = public_key.public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    return hashlib.sha1(point).hexdigest()
