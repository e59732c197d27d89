"""Enrollment: outstanding requests go to the site's command; what it issues lands in MY."""

from __future__ import annotations

import hashlib

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from credroam.roaming.fsutil import atomic_write, ensure_private_dir
from credroam.roaming.store.file import FileStore
from credroam_agent.enroll import enroll_outstanding
from tests.unit.agent.agent_fixtures import signer

NOW = 134_000_000_000_000_000


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


@pytest.fixture
def store_with_request(tmp_path):
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(_name("alice"))
        .sign(key, hashes.SHA256())
    )
    der = csr.public_bytes(serialization.Encoding.DER)
    identifier = hashlib.sha1(der).hexdigest().upper()
    root = tmp_path / "store"
    folder = ensure_private_dir(str(root / "REQUEST"))
    atomic_write(f"{folder}/{identifier}.csr.pem", csr.public_bytes(serialization.Encoding.PEM))
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    atomic_write(f"{folder}/{identifier}.key.pem", key_pem)
    return FileStore(str(root)), identifier, key


def test_an_issued_certificate_lands_in_my_with_its_key_and_the_request_leaves(
    ca, tmp_path, store_with_request
):
    store, request_id, key = store_with_request
    result = enroll_outstanding(store, signer(ca, tmp_path), lambda: NOW)
    ((request_key, cert_key),) = result.issued
    assert request_key == f"%4\\{request_id}"
    items = store.items()
    assert set(items) == {cert_key, cert_key.replace("%3", "%9")}
    assert items[cert_key.replace("%3", "%9")].owner == cert_key
    certificate = x509.load_der_x509_certificate(store.read(cert_key))
    assert certificate.issuer == _name("Lab CA")
    held = serialization.load_der_private_key(store.read(cert_key.replace("%3", "%9")), None)
    spki = {
        k.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        for k in (held.public_key(), key.public_key(), certificate.public_key())
    }
    assert len(spki) == 1  # (cryptography 38 keys have no ==)


def test_a_non_zero_exit_means_not_now_and_keeps_the_request(ca, tmp_path, store_with_request):
    store, request_id, _ = store_with_request
    result = enroll_outstanding(store, signer(ca, tmp_path, exit_code=75), lambda: NOW)
    assert result.deferred == [(f"%4\\{request_id}", "enrollment command exited 75 (not now)")]
    assert f"%4\\{request_id}" in store.items()


def test_a_certificate_for_another_key_is_refused_and_the_request_kept(
    ca, tmp_path, store_with_request
):
    store, request_id, _ = store_with_request
    result = enroll_outstanding(store, signer(ca, tmp_path, other_key=True), lambda: NOW)
    ((_, why),) = result.failed
    assert "public key" in why
    assert set(store.items()) == {f"%4\\{request_id}", f"%9\\{request_id}"}
