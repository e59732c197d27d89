"""Writes the recorded-output fixtures of test_store_windows.py (run once; output committed).

The shape is what Windows PowerShell 5.1 prints for SCRIPTS in
module_utils/credroam/roaming/store/windows.py: ``ConvertTo-Json -Compress`` of a pipeline
(nothing for no object, a bare object for one, an array for more), ``'`` escaped as
``\\u0027`` as 5.1 escapes it, other non-ASCII text as UTF-8 (the scripts set
[Console]::OutputEncoding), errors as one line on stderr or as a CLIXML error stream. The
certificates are test certificates made here; none of this was captured on a Windows host.

    .venv/bin/python tests/unit/windows_store/make_fixtures.py
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import json
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID

HERE = Path(__file__).resolve().parent
EXPORT_PASSWORD = "Zq3-recorded-export-password"


def _key(number: int) -> ec.EllipticCurvePrivateKey:
    return ec.derive_private_key(number, ec.SECP256R1())


def _certificate(key, name: x509.Name, not_after: datetime.datetime) -> x509.Certificate:
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(0x1000 + len(name.rfc4514_string()))
        .not_valid_before(datetime.datetime(2025, 1, 1, tzinfo=datetime.UTC))
        .not_valid_after(not_after)
        .sign(key, hashes.SHA256())
    )


def _name(*parts: tuple) -> x509.Name:
    return x509.Name([x509.NameAttribute(oid, value) for oid, value in parts])


def _record(store, certificate, subject, has_key, archived, exportable, smartcard=False):
    der = certificate.public_bytes(serialization.Encoding.DER)
    return {
        "Store": store,
        "Thumbprint": hashlib.sha1(der).hexdigest().upper(),
        "Subject": subject,
        "RawData": base64.b64encode(der).decode(),
        "HasPrivateKey": has_key,
        "Archived": archived,
        "Exportable": exportable,
        "SmartCard": smartcard,
    }


def convert_to_json(records: list[dict]) -> bytes:
    """ConvertTo-Json -Compress of a pipeline, as Windows PowerShell 5.1 writes it."""
    if not records:
        return b""
    value = records[0] if len(records) == 1 else records
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return (text.replace("'", "\\u0027") + "\r\n").encode("utf-8")


def main() -> None:
    later = datetime.datetime(2035, 1, 1, tzinfo=datetime.UTC)
    expired = datetime.datetime(2025, 6, 1, tzinfo=datetime.UTC)
    alice_key = _key(0xA11CE)
    alice = _certificate(
        alice_key,
        _name((NameOID.COMMON_NAME, "alice"), (NameOID.ORGANIZATIONAL_UNIT_NAME, "Roaming")),
        later,
    )
    jurgen = _certificate(
        _key(0x1E6E),
        _name((NameOID.COMMON_NAME, "Jürgen Müller"), (NameOID.ORGANIZATION_NAME, "Zoë's Café")),
        later,
    )
    old = _certificate(_key(0x01D), _name((NameOID.COMMON_NAME, "alice (renewed away)")), expired)
    tpm = _certificate(_key(0x7B3), _name((NameOID.COMMON_NAME, "alice TPM")), later)
    card = _certificate(_key(0xCA4D), _name((NameOID.COMMON_NAME, "alice smart card")), later)
    dummy = _certificate(_key(0xD0), _name((NameOID.COMMON_NAME, "REQUEST")), later)
    single = [_record("My", alice, "CN=alice, OU=Roaming", True, False, True)]
    many = [
        *single,
        _record("My", jurgen, "O=Zoë's Café, CN=Jürgen Müller", False, False, None),
        _record("My", old, "CN=alice (renewed away)", True, True, True),
        _record("My", tpm, "CN=alice TPM", True, False, False),
        _record("My", card, "CN=alice smart card", True, False, False, smartcard=True),
        _record("REQUEST", dummy, "CN=REQUEST", True, False, True),
    ]
    (HERE / "list_empty.out").write_bytes(convert_to_json([]))
    (HERE / "list_single.json").write_bytes(convert_to_json(single))
    (HERE / "list_many.json").write_bytes(convert_to_json(many))
    # What the listing prints without [Console]::OutputEncoding: the OEM code page (437).
    (HERE / "list_oem.out").write_bytes(convert_to_json(many[1:2]).decode().encode("cp437"))
    encryption = (
        serialization.PrivateFormat.PKCS12.encryption_builder()
        .key_cert_algorithm(pkcs12.PBES.PBESv1SHA1And3KeyTripleDESCBC)
        .hmac_hash(hashes.SHA1())
        .build(EXPORT_PASSWORD.encode())
    )
    pfx = pkcs12.serialize_key_and_certificates(None, alice_key, alice, None, encryption)
    export = {"Thumbprint": single[0]["Thumbprint"], "Pfx": base64.b64encode(pfx).decode()}
    (HERE / "export_key.json").write_bytes(convert_to_json([export]))
    (HERE / "export_password.txt").write_text(EXPORT_PASSWORD + "\n")
    (HERE / "alice_key.pk8").write_bytes(
        alice_key.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    (HERE / "stderr_access_denied.txt").write_bytes(b"Access is denied.\r\n")
    (HERE / "stderr_clixml.txt").write_bytes(
        b'#< CLIXML\r\n<Objs Version="1.1.0.1" xmlns="http://schemas.microsoft.com/powershell/'
        b'2004/04"><S S="Error">Exception calling "Open" with "1" argument(s): "The system '
        b'cannot find the file specified._x000D__x000A_"_x000D__x000A_</S><S S="Error">At '
        b"line:1 char:1_x000D__x000A_</S></Objs>"
    )


if __name__ == "__main__":
    main()
