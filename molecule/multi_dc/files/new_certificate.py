"""Put new self-signed certificates with their keys in the calling user's credroam store.

    new_certificate.py NAME...     # one certificate (EC P-256) per common name; prints thumbprints

What an enrollment or an import leaves behind: MY/<THUMBPRINT>.cert.pem and .key.pem, 0600 in
0700 folders. Runs on a lab host as the user, on Debian's python3 and python3-cryptography.
"""

import datetime
import hashlib
import os
import sys

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

STORE_MY = os.path.expanduser("~/.local/share/credroam/store/MY")


def new_certificate(common_name: str) -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=365))
        .sign(key, hashes.SHA256())
    )
    thumbprint = hashlib.sha1(certificate.public_bytes(serialization.Encoding.DER)).hexdigest()
    base = os.path.join(STORE_MY, thumbprint.upper())
    with open(base + ".cert.pem", "wb") as handle:
        handle.write(certificate.public_bytes(serialization.Encoding.PEM))
    with open(base + ".key.pem", "wb") as handle:
        handle.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    return thumbprint.upper()


if __name__ == "__main__":
    os.umask(0o077)
    os.makedirs(STORE_MY, mode=0o700, exist_ok=True)
    for common_name in sys.argv[1:]:
        print(new_certificate(common_name))
