#!/usr/bin/python
# Copyright: credroam contributors
from __future__ import annotations

DOCUMENTATION = r"""
module: lab_forest_pki
short_description: Issue the lab forest's CA, the DCs' TLS certificates and the lab SSH key
description:
  - Creates, once, a lab CA (C(ca.pem), C(ca.key)) in O(state_dir), a TLS certificate per DC
    whose subject alternative names are the DC's FQDN, short name and IP address (so LDAPS
    clients validate by name or by IP), and an ed25519 SSH key pair used to reach the client
    hosts as root.
  - Existing files are kept when they still match (same CA, same SANs); nothing is rewritten
    otherwise, so a second run reports no change.
options:
  state_dir:
    description: The lab's state folder.
    type: path
    required: true
  realm:
    description: The AD realm; DC FQDNs are C(<name>.<realm lowercased>).
    type: str
    required: true
  dcs:
    description: The DCs, each a dict with C(name) and C(ip).
    type: list
    elements: dict
    required: true
extends_documentation_fragment: [ansible.builtin.action_common_attributes]
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
  platform:
    platforms: posix
seealso:
  - module: lab_forest_network
  - module: lab_forest_dc
author: credroam contributors
"""

EXAMPLES = r"""
- name: Issue the lab CA, the DC certificates and the lab SSH key
  lab_forest_pki:
    state_dir: /srv/credroam/.lab/mine
    realm: LAB.EXAMPLE
    dcs:
      - {name: dc1, ip: 172.29.7.10}
  register: lab_pki
"""

RETURN = r"""
ca_cert:
  description: Path of the lab CA certificate (PEM).
  type: str
  returned: always
dc_certs:
  description: Per DC name, the paths of its certificate and key.
  type: dict
  returned: always
ssh_private_key:
  description: Path of the lab SSH private key.
  type: str
  returned: always
ssh_public_key:
  description: The lab SSH public key line.
  type: str
  returned: when the key exists
"""

import datetime
import ipaddress
from pathlib import Path

from ansible.module_utils.basic import AnsibleModule

try:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    HAS_CRYPTOGRAPHY = True
except ImportError:
    HAS_CRYPTOGRAPHY = False

from ansible.module_utils.lab_forest_common import write_private

VALIDITY = datetime.timedelta(days=3650)


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "credroam lab"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,  # Samba's GnuTLS reads this
        serialization.NoEncryption(),
    )


def issue_ca(realm: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = _new_key()
    now = datetime.datetime.now(datetime.UTC)
    subject = _name(f"credroam lab CA {realm}")
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def dc_sans(fqdn: str, ip: str) -> x509.SubjectAlternativeName:
    short = fqdn.split(".", 1)[0]
    return x509.SubjectAlternativeName(
        [x509.DNSName(fqdn), x509.DNSName(short), x509.IPAddress(ipaddress.ip_address(ip))]
    )


def issue_dc_cert(
    ca_cert: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey, fqdn: str, ip: str
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = _new_key()
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(fqdn))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(dc_sans(fqdn, ip), critical=False)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    return cert, key


def cert_matches(path: Path, ca_cert: x509.Certificate, fqdn: str, ip: str) -> bool:
    """True when the existing DC certificate is issued by this CA with the wanted SANs."""
    try:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (OSError, ValueError, x509.ExtensionNotFound):
        return False
    return cert.issuer == ca_cert.subject and sans == dc_sans(fqdn, ip)


def ssh_keypair() -> tuple[bytes, bytes]:
    key = ed25519.Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    return private, public + b" credroam-lab\n"


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "state_dir": {"type": "path", "required": True},
            "realm": {"type": "str", "required": True},
            "dcs": {"type": "list", "elements": "dict", "required": True},
        },
        supports_check_mode=True,
    )
    if not HAS_CRYPTOGRAPHY:
        module.fail_json(msg="the 'cryptography' Python library is missing: run `make deps`")
    state_dir = Path(module.params["state_dir"])
    domain = module.params["realm"].lower()
    ca_path, ca_key_path = state_dir / "ca.pem", state_dir / "ca.key"
    ssh_key_path = state_dir / "ssh" / "id_ed25519"
    result = {
        "changed": False,
        "ca_cert": str(ca_path),
        "ssh_private_key": str(ssh_key_path),
        "dc_certs": {},
    }
    created: list[str] = []

    if ca_path.exists() and ca_key_path.exists():
        ca_cert = x509.load_pem_x509_certificate(ca_path.read_bytes())
        ca_key = serialization.load_pem_private_key(ca_key_path.read_bytes(), None)
    else:
        ca_cert, ca_key = issue_ca(module.params["realm"])
        created.append(str(ca_path))
        if not module.check_mode:
            write_private(ca_key_path, _pem_key(ca_key))
            ca_path.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
            ca_path.chmod(0o644)

    for dc in module.params["dcs"]:
        tls_dir = state_dir / dc["name"] / "tls"
        cert_path, key_path = tls_dir / "cert.pem", tls_dir / "key.pem"
        fqdn = f"{dc['name']}.{domain}"
        result["dc_certs"][dc["name"]] = {"cert": str(cert_path), "key": str(key_path)}
        if cert_matches(cert_path, ca_cert, fqdn, dc["ip"]) and key_path.exists():
            continue
        created.append(str(cert_path))
        if not module.check_mode:
            cert, key = issue_dc_cert(ca_cert, ca_key, fqdn, dc["ip"])
            write_private(key_path, _pem_key(key))
            cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))

    public_path = ssh_key_path.with_suffix(".pub")
    if not (ssh_key_path.exists() and public_path.exists()):
        created.append(str(ssh_key_path))
        if not module.check_mode:
            private, public = ssh_keypair()
            write_private(ssh_key_path, private)
            public_path.write_bytes(public)
    if public_path.exists():
        result["ssh_public_key"] = public_path.read_text().strip()

    result["changed"] = bool(created)
    result["created"] = created
    module.exit_json(**result)


if __name__ == "__main__":
    main()
