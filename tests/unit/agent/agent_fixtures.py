"""A user's host for the agent's unit tests: a home with a file store, a runtime folder, a
config file, a fake directory (exact-value LDAP semantics, from the sync engine's tests)
behind ``credroam.connection.connect``, and the user's Group Policy as ``Host.gpo`` (what
``policy.read_policy`` finds; its real reading is tested with policy.py)."""

from __future__ import annotations

import datetime
import io
import os
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from credroam.gpo.resolve import GpoSettings
from credroam.roaming.certelement import thumbprint
from credroam.roaming.fsutil import atomic_write, ensure_private_dir
from credroam_agent import cli, dcs, policy
from credroam_agent.identity import LocalUser
from credroam_agent.policy import ResolvedPolicy
from tests.credentials import self_signed
from tests.unit.test_sync import FakeDirectory

PASSWORD = "Alice-Pass-1!"


class Directory(FakeDirectory):
    """The fake directory of the sync tests, reachable as a DC the agent binds to."""

    def __init__(self) -> None:
        super().__init__()
        self.binds: list[tuple[str, str, str | None]] = []  # (dc, method, password)
        self.down: set[str] = set()  # DCs that do not answer
        self.password = PASSWORD
        self.kerberos = False  # whether the user holds a ticket (GSSAPI binds succeed)

    def connect(self, target):
        if target.server in self.down:
            raise dcs.DirectoryError(
                f"cannot reach or trust the domain controller {target.describe()}: timed out"
            )
        if target.bind_method == "gssapi" and not self.kerberos:
            raise dcs.DirectoryError("no Kerberos credentials of alice@LAB.EXAMPLE: run kinit")
        if target.bind_method == "simple" and target.bind_password != self.password:
            raise dcs.DirectoryError(f"bind as {target.bind_user} to {target.server} failed")
        self.binds.append((target.server, target.bind_method, target.bind_password))
        self.server = type("Server", (), {"host": target.server})()
        return self

    def unbind(self) -> None:
        pass


@dataclass
class Host:
    """One host of alice, with the agent's command line wired to ``directory``."""

    root: Path
    directory: Directory
    monkeypatch: object
    config_text: str = ""
    store_setting: str = "~/store"
    stores: tuple[str, ...] = ("file",)  # the config's stores: the file store and its mirrors
    has_runtime: bool = True  # whether the session has its private runtime folder
    gpo: GpoSettings = field(default_factory=GpoSettings)  # what the user's GPOs set
    policy_reads: list = field(default_factory=list)  # (DN, SMB credentials) per GPO read
    asked_for: list = field(default_factory=list)  # the user names given to become_user

    @property
    def home(self) -> Path:
        return self.root / "home"

    @property
    def runtime(self) -> Path:
        return self.root / "run"

    @property
    def store(self) -> Path:
        return self.home / "store"

    @property
    def state(self) -> Path:
        return self.home / "state.json"

    @property
    def nssdb(self) -> Path:
        return self.home / ".pki" / "nssdb"

    @property
    def networkmanager(self) -> Path:
        return self.home / ".local" / "share" / "credroam" / "networkmanager"

    @property
    def key_cache(self) -> Path:
        return self.runtime / "credroam" / "roaming.key"

    def write_config(self, extra: str = "") -> Path:
        path = self.root / "agent.toml"
        path.write_text(
            f"stores = {list(self.stores)!r}\n"
            '[directory]\ndomain = "lab.example"\ndcs = ["dc1.lab.example", "dc2.lab.example"]\n'
            f'[paths]\nstore = "{self.store_setting}"\nstate = "~/state.json"\n{extra}'
        )
        return path

    def run(self, *argv: str, stdin: bytes = b"", capsys=None) -> tuple[int, str, str]:
        config = self.write_config(self.config_text)
        runtime = str(self.runtime) if self.has_runtime else None
        user = LocalUser("alice", os.getuid(), os.getgid(), str(self.home), runtime)

        def become_user(name, make_runtime_dir=False):
            self.asked_for.append(name)
            return user

        def read_policy(conn, user_dn, smb, cache_dir, **kwargs):
            self.policy_reads.append((user_dn, smb))
            resolved = ResolvedPolicy(user_dn, self.gpo, (), (), {}, smb.server, 0.0)
            policy._UserCache(cache_dir, user_dn).save_policy(resolved)
            return resolved

        self.monkeypatch.setattr(cli, "become_user", become_user)
        self.monkeypatch.setattr(policy, "read_policy", read_policy)
        self.monkeypatch.setattr(dcs, "connect", self.directory.connect)
        self.monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin)))
        code = cli.main([*argv, "--config", str(config)])
        out, err = capsys.readouterr() if capsys else ("", "")
        return code, out, err


def make_host(root: Path, directory: Directory, monkeypatch) -> Host:
    for folder in (root / "home", root / "run"):
        ensure_private_dir(str(folder))
    return Host(root, directory, monkeypatch)


def certificate_and_key(common_name: str = "alice") -> tuple[bytes, bytes]:
    """(PEM certificate, PEM PKCS#8 key) of a fresh self-signed EC certificate, valid from a
    day ago for a year."""
    now = datetime.datetime.now(datetime.UTC)
    der, _, key = self_signed(
        common_name, now - datetime.timedelta(days=1), now + datetime.timedelta(days=365)
    )
    pem_key = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return x509.load_der_x509_certificate(der).public_bytes(serialization.Encoding.PEM), pem_key


def install(store: Path, certificate_pem: bytes, key_pem: bytes | None = None) -> str:
    """Put a certificate (and its key) in the store's MY folder, as a user or a tool would."""
    folder = Path(ensure_private_dir(str(store / "MY")))
    der = x509.load_pem_x509_certificate(certificate_pem).public_bytes(serialization.Encoding.DER)
    thumb = thumbprint(der)
    atomic_write(str(folder / f"{thumb}.cert.pem"), certificate_pem)
    if key_pem is not None:
        atomic_write(str(folder / f"{thumb}.key.pem"), key_pem)
    return thumb


def files(root: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(root)): path.read_bytes() for path in root.rglob("*") if path.is_file()
    }


def signer(ca, tmp_path, *, exit_code: int = 0, other_key: bool = False) -> list[str]:
    """An enrollment command that signs the CSR on stdin with the CA (a real CA's contract)."""
    script = tmp_path / "enroll.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import datetime, sys
            from cryptography import x509
            from cryptography.hazmat.primitives import hashes, serialization
            from cryptography.hazmat.primitives.asymmetric import ec
            if {exit_code}:
                sys.exit({exit_code})
            csr = x509.load_pem_x509_csr(sys.stdin.buffer.read())
            ca_key = serialization.load_pem_private_key(open("{ca}/ca.key", "rb").read(), None)
            ca = x509.load_pem_x509_certificate(open("{ca}/ca.pem", "rb").read())
            public = ec.generate_private_key(ec.SECP256R1()).public_key() if {other_key} \\
                else csr.public_key()
            now = datetime.datetime.now(datetime.timezone.utc)
            cert = (x509.CertificateBuilder().subject_name(csr.subject)
                .issuer_name(ca.subject).public_key(public).serial_number(x509.random_serial_number())
                .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=365))
                .sign(ca_key, hashes.SHA256()))
            sys.stdout.buffer.write(cert.public_bytes(serialization.Encoding.PEM))
            """
        )
    )
    return [sys.executable, str(script)]
