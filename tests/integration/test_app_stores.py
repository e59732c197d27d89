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

Cross-host roaming on the lab forest, by the real agent (the zipapp under /usr/bin/python3, as
alice, ``stores = ["file", "nss"]``) on two client hosts: a certificate and key imported with
``pk12util`` into alice's ``sql:$HOME/.pki/nssdb`` on client 1 end, after the agent's logins on
client 1 then client 2, in client 2's database, where Chromium authenticates with them; a
deletion there (``certutil -D``) removes them from the other host's database after the agents'
syncs; and a ``watch``ing agent syncs when pk12util changes the database.
"""

from __future__ import annotations

import contextlib
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
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from credroam.roaming.model import Item, ItemKind, StoreName
from credroam.roaming.store.file import FileStore
from credroam.roaming.store.nss import NssMirror
from tests.integration import test_agent
from tests.integration.test_agent import (
    WITH_NSS,
    agent,
    directory_keys,
    events,
    put,
    store_files,
    watching,
)
from tests.lab import Account, ClientHost, Lab
from tests.nss_oracle import ec_key_id, nss_certificates, nss_key_ids, thumbprint

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
    expired: bool = False,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    issuer_name, signing_key = issuer or (_name(subject), key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_NOW - datetime.timedelta(days=60 if expired else 1))
        .not_valid_after(_NOW + datetime.timedelta(days=-30 if expired else 30))
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
        if peer:
            subject = ", ".join(f"{k}={v}" for rdn in peer["subject"] for k, v in rdn)
            text = f"authenticated: {subject}"
        else:
            text = "no client certificate"
        body = f"<html><body><p id=subject>{html.escape(text)}</p>"
        body += "</body></html>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextlib.contextmanager
def _serving(
    tmp_path: Path, verify_mode: ssl.VerifyMode
) -> Iterator[tuple[str, x509.Certificate, tuple]]:
    """(URL, CA certificate, (CA key, CA name)) of a local server whose clients the CA issues."""
    ca_cert, ca_key = _issue(CA_NAME, None, ca=True)
    server_cert, server_key = _issue("127.0.0.1", (ca_cert.subject, ca_key), server=True)
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
    context.verify_mode = verify_mode
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _ShowSubject)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}/", ca_cert, (ca_cert.subject, ca_key)
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def client_auth_server(tmp_path: Path) -> Iterator[tuple[str, x509.Certificate, tuple]]:
    """(URL, CA certificate, (client certificate, key)) of a server requiring a client cert."""
    with _serving(tmp_path, ssl.CERT_REQUIRED) as (url, ca_cert, issuer):
        yield url, ca_cert, _issue(USER_NAME, issuer)


@pytest.fixture
def optional_auth_server(tmp_path: Path) -> Iterator[tuple[str, x509.Certificate, tuple]]:
    """(URL, CA certificate, issuer) of a server that asks for a client certificate.

    It refuses a certificate that does not verify (an expired one) and shows "no client
    certificate" when none was sent, so the page says which happened.
    """
    with _serving(tmp_path, ssl.CERT_OPTIONAL) as served:
        yield served


def _store_with(
    root: Path, certificate: x509.Certificate, key, archived: bool = False
) -> FileStore:
    store = FileStore(str(root))
    der = certificate.public_bytes(serialization.Encoding.DER)
    pkcs8 = key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    thumb = hashlib.sha1(der).hexdigest().upper()
    common = {"store": StoreName.MY, "modified": 133_000_000_000_000_000, "archived": archived}
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


def _trust(home: Path, ca_cert: x509.Certificate, tmp_path: Path) -> None:
    """Trust the server's CA in the user's database, as the user (or the site) would have it."""
    ca_file = tmp_path / "ca.der"
    ca_file.write_bytes(ca_cert.public_bytes(serialization.Encoding.DER))
    database = f"sql:{home}/.pki/nssdb"
    subprocess.run(
        ["certutil", "-A", "-d", database, "-n", CA_NAME, "-t", "C,,", "-i", str(ca_file)],
        check=True,
        capture_output=True,
    )


def _assert_chromium_authenticates(home: Path, tmp_path: Path, url: str, artifact: str) -> None:
    """Chromium as that HOME's user shows the authenticated subject; its screenshot is kept."""
    etc = _private_etc_chromium(tmp_path, url)
    page = _chromium(home, etc, url, "--dump-dom")
    assert f"authenticated: commonName={USER_NAME}" in page.stdout, page.stderr[-3000:]
    ARTIFACTS.mkdir(exist_ok=True)
    screenshot = ARTIFACTS / artifact
    screenshot.unlink(missing_ok=True)
    shot = _chromium(home, etc, url, f"--screenshot={screenshot}", "--window-size=900,300")
    assert screenshot.is_file(), shot.stderr[-3000:]


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
    _trust(home, ca_cert, tmp_path)
    _assert_chromium_authenticates(home, tmp_path, url, "chromium-client-auth.png")


def test_chromium_does_not_offer_an_archived_expired_certificate(
    tmp_path: Path, optional_auth_server
) -> None:
    """How an archived certificate is told apart in NSS: kept with its key, never offered."""
    url, ca_cert, issuer = optional_auth_server
    expired, key = _issue(USER_NAME, issuer, expired=True)
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    store = _store_with(tmp_path / "store", expired, key, archived=True)
    mirror = NssMirror(str(home / ".pki" / "nssdb"), str(tmp_path / "state" / "nss.json"))
    assert mirror.sync_with(store).ok
    der = expired.public_bytes(serialization.Encoding.DER)
    assert thumbprint(der) in nss_certificates(home / ".pki" / "nssdb")
    assert ec_key_id(der) in nss_key_ids(home / ".pki" / "nssdb")
    _trust(home, ca_cert, tmp_path)

    page = _chromium(home, _private_etc_chromium(tmp_path, url), url, "--dump-dom")

    assert "no client certificate" in page.stdout, page.stderr[-3000:]


# --- across hosts: the real agent on the lab's client hosts ----------------------------------

# The agent's lab (tests/integration/test_agent.py): alice a local user on each client host,
# configurations in /etc/credroam (WITH_NSS: stores = ["file", "nss"]), the zipapp.
agent_lab, alice, pyz = test_agent.agent_lab, test_agent.alice, test_agent.pyz


def _nssdb(lab: Lab, host: ClientHost) -> Path:
    """alice's NSS database on ``host``, as the machine sees the host's /home."""
    return lab.state_dir / host.name / "home" / "alice" / ".pki" / "nssdb"


def _login(host: ClientHost, account: Account) -> None:
    """alice logs on to ``host``: the agent's login syncs the NSS database with the directory."""
    login = agent(host, "login", password=account.password, config=WITH_NSS)
    assert login.returncode == 0, login.stderr
    assert events(login) == [1], login.stderr


def _pk12util_import(host: ClientHost, certificate, key) -> None:
    """What Chromium's certificate manager does on that host, as alice, into her database."""
    bundle = pkcs12.serialize_key_and_certificates(
        b"alice's certificate", key, certificate, None, serialization.BestAvailableEncryption(b"pw")
    )
    put(host, "alice", "alice.p12", bundle)
    host.ssh("runuser -u alice -- pk12util -i ~alice/alice.p12 -W pw -d sql:/home/alice/.pki/nssdb")


def _certutil_delete(host: ClientHost, der: bytes) -> None:
    """The certificate deleted from alice's database on ``host`` (``certutil -D``), by its
    key's CKA_ID (every certificate of one subject shares one nickname)."""
    uri = f"pkcs11:id={_percent(ec_key_id(der))}"
    host.ssh(f"runuser -u alice -- certutil -D -n '{uri}' -d sql:/home/alice/.pki/nssdb")


def test_a_certificate_imported_into_nss_roams_to_the_other_hosts_nss_and_chromium(
    agent_lab, alice, tmp_path, client_auth_server
) -> None:
    lab = agent_lab
    first, second = lab.client(0), lab.client(1)
    url, ca_cert, (client_cert, client_key) = client_auth_server
    _login(first, alice)  # the agent makes the database, as Chromium does at its first start
    _pk12util_import(first, client_cert, client_key)
    der = client_cert.public_bytes(serialization.Encoding.DER)

    _login(first, alice)
    _login(second, alice)

    assert thumbprint(der) in nss_certificates(_nssdb(lab, second))
    assert ec_key_id(der) in nss_key_ids(_nssdb(lab, second))
    # Chromium on the machine, with a copy of the database client 2's agent wrote.
    home = tmp_path / "client-2-home"
    shutil.copytree(_nssdb(lab, second), home / ".pki" / "nssdb")
    _trust(home, ca_cert, tmp_path)
    _assert_chromium_authenticates(home, tmp_path, url, "chromium-client-auth-roamed.png")


def test_a_deletion_in_one_hosts_nss_removes_it_from_the_others(agent_lab, alice):
    lab = agent_lab
    first, second = lab.client(0), lab.client(1)
    certificate, key = _issue(USER_NAME, None)
    _login(first, alice)
    _pk12util_import(first, certificate, key)
    der = certificate.public_bytes(serialization.Encoding.DER)
    _login(first, alice)
    _login(second, alice)
    assert thumbprint(der) in nss_certificates(_nssdb(lab, second))

    _certutil_delete(first, der)
    _login(first, alice)
    _login(second, alice)

    assert thumbprint(der) not in nss_certificates(_nssdb(lab, second))
    assert ec_key_id(der) not in nss_key_ids(_nssdb(lab, second))
    assert not [name for name in store_files(lab, second, "alice") if name.startswith("MY/")]
    assert not directory_keys(lab, alice)


def test_in_watch_mode_an_import_into_nss_triggers_a_sync(agent_lab, alice):
    lab = agent_lab
    first = lab.client(0)
    certificate, key = _issue(USER_NAME, None)
    der = certificate.public_bytes(serialization.Encoding.DER)
    with watching(first, alice, WITH_NSS) as watch:
        _pk12util_import(first, certificate, key)

        watch.wait_for_sync("2 uploaded", "the sync of what pk12util imported")

    assert {f"%3\\{thumbprint(der)}", f"%9\\{thumbprint(der)}"} <= directory_keys(lab, alice)


def _percent(hex_id: str) -> str:
    return "".join(f"%{hex_id[i : i + 2]}" for i in range(0, len(hex_id), 2))
