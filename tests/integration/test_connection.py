"""The shared connection against the lab's real DC: what TLS accepts and what it refuses.

The lab DC's certificate names its FQDN, short name and address, so connecting by address
passes the name check by itself; `tls_server_name` must then still be checked on its own.
"""

from __future__ import annotations

import datetime
from dataclasses import replace
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from credroam.connection import close, connect
from credroam.errors import DirectoryError
from tests.lab import Lab

pytestmark = pytest.mark.integration

TLS_MODES = ["ldaps", "starttls"]


@pytest.fixture(scope="module")
def wrong_ca(tmp_path_factory) -> str:
    """A CA certificate that did not issue the lab DC's certificate."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "not the lab CA")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    path = Path(tmp_path_factory.mktemp("ca")) / "wrong-ca.pem"
    path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return str(path)


@pytest.mark.parametrize("tls_mode", TLS_MODES)
def test_an_untrusted_dc_certificate_is_reported_as_such_naming_the_dc(
    lab: Lab, wrong_ca, tls_mode
):
    target = replace(lab.ldap_target(ca_cert=wrong_ca), tls_mode=tls_mode)
    with pytest.raises(DirectoryError) as caught:
        connect(target)
    assert str(caught.value).startswith(
        f"certificate verification failed for the domain controller {target.describe()}: "
    )
    assert wrong_ca in str(caught.value)


@pytest.mark.parametrize("tls_mode", TLS_MODES)
def test_a_tls_server_name_the_certificate_lacks_is_refused(lab: Lab, tls_mode):
    wrong = f"wrong.{lab.realm.lower()}"
    target = replace(lab.ldap_target(), tls_mode=tls_mode, tls_server_name=wrong)
    with pytest.raises(DirectoryError, match=rf"it does not name {wrong} \(tls_server_name\)"):
        connect(target)


@pytest.mark.parametrize("tls_mode", TLS_MODES)
def test_a_tls_server_name_the_certificate_carries_is_accepted(lab: Lab, tls_mode):
    target = replace(lab.ldap_target(), tls_mode=tls_mode, tls_server_name=lab.dc(0).fqdn)
    conn = connect(target)
    try:
        assert conn.bound
    finally:
        close(conn)
