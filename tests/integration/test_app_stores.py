"""Roamed credentials where applications find them: real headless Chromium and the NSS mirror.

A certificate and key in the file store are mirrored into a HOME's ``.pki/nssdb``; Debian's
Chromium (current headless mode), run with that HOME and the certificate selected by policy
(``AutoSelectCertificateForUrls``), completes TLS client authentication to a Python ``ssl``
server on 127.0.0.1 that requires a certificate from a test CA, and the page shows the
authenticated subject. The screenshot is kept as tests/artifacts/chromium-client-auth.png.

Chromium reads managed policies only from /etc/chromium/policies/managed, which is global on
the machine. The test gives Chromium its own: it runs in a private mount namespace
(``unshare --mount``, root) where a temporary copy of /etc/chromium, holding the policy, is
bound over /etc/chromium. Nothing outside the namespace sees it.

Cross-host roaming (import with pk12util on client 1, present in client 2's NSS database after
its sync; a deletion on one host removed on the others) needs the agent's CLI to run a sync on
a lab client; it is not on main yet, so those tests are still to be written.
"""

from __future__ import annotations

import datetime
import hashlib
import html
import http.server
import ipaddress
import json
import os
import shutil
import ssl
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from credroam.roaming.model import Item, ItemKind, StoreName
from credroam.roaming.store.file import FileStore
from credroam.roaming.store.nss import NssMirror

CHROMIUM = shutil.which("chromium")
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
CA_NAME = "credroam test client CA"
USER_NAME = "alice roamed"

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium"),
    pytest.mark.skipif(shutil.which("certutil") is None, reason="needs libnss3-tools"),
    pytest.mark.skipif(
        os.geteuid() != 0 or shutil.which("unshare") is None,
        reason="a private /etc/chromium needs root and unshare (util-linux)",
    ),
]

_NOW = datetime.datetime.now(datetime.UTC)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _issue(
    subject: str,
    issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None,
    *,
    ca: bool = False,
    server: bool = False,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    issuer_name, signing_key = issuer or (_name(subject), key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_NOW - datetime.timedelta(days=1))
        .not_valid_after(_NOW + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        ).add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    elif not ca:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
        )
    return builder.sign(signing_key, hashes.SHA256()), key


def _pem(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)


class _ShowSubject(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        peer = self.connection.getpeercert()  # type: ignore[attr-defined]
        subject = ", ".join(f"{k}={v}" for rdn in peer["subject"] for k, v in rdn)
        body = f"<html><body><p id=subject>authenticated: {html.escape(subject)}</p>"
        body += "</body></html>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def client_auth_server(tmp_path: Path) -> Iterator[tuple[str, x509.Certificate, tuple]]:
    """(URL, CA certificate, (client certificate, key)) of a server requiring a client cert."""
    ca_cert, ca_key = _issue(CA_NAME, None, ca=True)
    server_cert, server_key = _issue("127.0.0.1", (ca_cert.subject, ca_key), server=True)
    client = _issue(USER_NAME, (ca_cert.subject, ca_key))
    (tmp_path / "ca.pem").write_bytes(_pem(ca_cert))
    (tmp_path / "server.pem").write_bytes(
        _pem(server_cert)
        + server_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / "server.pem")
    context.load_verify_locations(tmp_path / "ca.pem")
    context.verify_mode = ssl.CERT_REQUIRED
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _ShowSubject)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}/", ca_cert, client
    finally:
        server.shutdown()
        server.server_close()


def _store_with(root: Path, certificate: x509.Certificate, key) -> FileStore:
    store = FileStore(str(root))
    der = certificate.public_bytes(serialization.Encoding.DER)
    pkcs8 = key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    thumb = hashlib.sha1(der).hexdigest().upper()
    common = {"store": StoreName.MY, "modified": 133_000_000_000_000_000}
    cert_item = Item(
        f"%3\\{thumb}",
        kind=ItemKind.CERTIFICATE,
        content_hash=hashlib.sha256(der).hexdigest(),
        size=len(der),
        **common,
    )
    key_item = Item(
        f"%9\\{thumb}",
        kind=ItemKind.KEY,
        content_hash=hashlib.sha256(pkcs8).hexdigest(),
        size=len(pkcs8),
        owner=cert_item.key,
        **common,
    )
    store.write(cert_item, der)
    store.write(key_item, pkcs8)
    return store


def _private_etc_chromium(tmp_path: Path, url: str) -> Path:
    """A copy of /etc/chromium whose managed policy auto-selects the test CA's certificates."""
    etc = tmp_path / "etc-chromium"
    shutil.copytree("/etc/chromium", etc)
    managed = etc / "policies" / "managed"
    managed.mkdir(parents=True)
    rule = {"pattern": url.rstrip("/"), "filter": {"ISSUER": {"CN": CA_NAME}}}
    policy = {"AutoSelectCertificateForUrls": [json.dumps(rule)]}
    (managed / "credroam-test.json").write_text(json.dumps(policy))
    return etc


def _chromium(home: Path, etc: Path, url: str, *extra: str) -> subprocess.CompletedProcess:
    """Headless Chromium as a user whose HOME holds the mirrored NSS database."""
    command = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        f"--user-data-dir={home / 'chromium-profile'}",
        *extra,
        url,
    ]
    script = 'mount --bind "$0" /etc/chromium && exec "$@"'
    return subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, str(etc), *command],
        env={"HOME": str(home), "PATH": os.environ["PATH"], "LANG": "C.UTF-8"},
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def test_chromium_authenticates_with_the_mirrored_certificate(
    tmp_path: Path, client_auth_server
) -> None:
    url, ca_cert, (client_cert, client_key) = client_auth_server
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    store = _store_with(tmp_path / "store", client_cert, client_key)
    mirror = NssMirror(str(home / ".pki" / "nssdb"), str(tmp_path / "state" / "nss.json"))

    report = mirror.sync_with(store)
    assert report.ok, report.problems
    # The server's CA is trusted in that database too, as a user (or the site) would have it.
    (tmp_path / "ca.der").write_bytes(ca_cert.public_bytes(serialization.Encoding.DER))
    subprocess.run(
        ["certutil", "-A", "-d", f"sql:{home}/.pki/nssdb", "-n", CA_NAME, "-t", "C,,"]
        + ["-i", str(tmp_path / "ca.der")],
        check=True,
        capture_output=True,
    )
    etc = _private_etc_chromium(tmp_path, url)

    page = _chromium(home, etc, url, "--dump-dom")

    assert f"authenticated: commonName={USER_NAME}" in page.stdout, page.stderr[-3000:]
    ARTIFACTS.mkdir(exist_ok=True)
    screenshot = ARTIFACTS / "chromium-client-auth.png"
    screenshot.unlink(missing_ok=True)
    shot = _chromium(home, etc, url, f"--screenshot={screenshot}", "--window-size=900,300")
    assert screenshot.is_file(), shot.stderr[-3000:]
