#!/usr/bin/python3
"""The embedded lab's certificate enrollment command (the agent's [enrollment] command).

Samba has no certificate authority: this signs the CSR (PEM) on stdin with the lab CA and prints
the certificate (PEM), valid for a year, for client authentication. It reads the CA from
/etc/credroam/ca.pem and its key from /etc/credroam/lab-ca.key (readable by the lab users on
the lab host that enrolls, and nowhere else). Lab only; Debian's python3-cryptography.
"""

import datetime
import sys
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import ExtendedKeyUsageOID

CA_CERT = Path("/etc/credroam/ca.pem")
CA_KEY = Path("/etc/credroam/lab-ca.key")


def issue(csr: x509.CertificateSigningRequest) -> x509.Certificate:
    ca = x509.load_pem_x509_certificate(CA_CERT.read_bytes())
    ca_key = serialization.load_pem_private_key(CA_KEY.read_bytes(), None)
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(csr.subject)
        .issuer_name(ca.subject)
        .public_key(csr.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=365))
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )


def main() -> int:
    csr = x509.load_pem_x509_csr(sys.stdin.buffer.read())
    if not csr.is_signature_valid:
        sys.exit("request signature invalid")
    sys.stdout.buffer.write(issue(csr).public_bytes(serialization.Encoding.PEM))
    return 0


if __name__ == "__main__":
    sys.exit(main())
