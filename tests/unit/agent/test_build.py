"""The zipapp: reproducible, holding only what a host needs, running on Debian's Python with
the distribution's packages (cryptography 38, ldap3 2.9.1) and nothing from the venv."""

from __future__ import annotations

import datetime
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import credroam_agent
from credroam.timestamps import to_filetime

REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO / "agent"))
import build_zipapp

SYSTEM_PYTHON = "/usr/bin/python3"
debian_python = pytest.mark.skipif(
    not Path(SYSTEM_PYTHON).exists(), reason="Debian's /usr/bin/python3 is not here"
)


@pytest.fixture(scope="module")
def pyz(tmp_path_factory) -> Path:
    try:
        return build_zipapp.build(tmp_path_factory.mktemp("dist") / "credroam-agent.pyz")
    except build_zipapp.BuildError as exc:  # e.g. run by a Python without the pinned venv
        pytest.skip(f"cannot build the zipapp here: {exc}")


def test_two_builds_of_the_same_sources_are_byte_identical(pyz, tmp_path):
    again = build_zipapp.build(tmp_path / "again.pyz")
    assert again.read_bytes() == pyz.read_bytes()


def test_a_build_replaces_the_zipapp_by_rename_so_no_reader_sees_half_a_file(
    pyz, tmp_path, monkeypatch
):
    """Parallel or sliced rollouts build the same file while others copy it to their hosts."""
    target = tmp_path / "credroam-agent.pyz"
    target.write_bytes(pyz.read_bytes())
    seen = []

    def interrupted(source, path, interpreter):
        with open(path, "wb") as half:
            half.write(b"#!/usr/bin/python3\nPK")
        seen.append(target.read_bytes() == pyz.read_bytes())  # the old file, whole, meanwhile
        raise OSError("disk full")

    monkeypatch.setattr(build_zipapp.zipapp, "create_archive", interrupted)
    with pytest.raises(OSError, match="disk full"):
        build_zipapp.build(target)
    assert seen == [True]
    assert target.read_bytes() == pyz.read_bytes()
    assert [p.name for p in tmp_path.iterdir()] == ["credroam-agent.pyz"]  # no leftover


def test_it_holds_the_agent_the_hosts_core_and_the_vendored_libraries_with_licences(pyz):
    names = zipfile.ZipFile(pyz).namelist()
    assert names == sorted(names)
    assert "__main__.py" in names and "credroam_agent/cli.py" in names
    assert "credroam/roaming/sync.py" in names and "credroam/gpo/preg.py" in names
    assert not [n for n in names if n.startswith("credroam/schema/")]
    assert "credroam/gpo/engine.py" not in names and "credroam/gpo/sysvol.py" not in names
    assert "smbprotocol/connection.py" in names and "spnego/__init__.py" in names
    assert {n for n in names if n.startswith("LICENSES/")} == {
        "LICENSES/smbprotocol-1.17.0-LICENSE",
        "LICENSES/pyspnego-0.12.4-LICENSE",
    }
    assert not [n for n in names if n.endswith(".pyc") or "__pycache__" in n]
    assert pyz.read_bytes().startswith(b"#!/usr/bin/python3\n")
    assert pyz.stat().st_mode & 0o777 == 0o755


def _system(*argv: str, **kwargs) -> subprocess.CompletedProcess[str]:
    # -I: isolated (no user site, no PYTHONPATH): only the distribution's packages.
    return subprocess.run(
        [SYSTEM_PYTHON, "-I", *argv], capture_output=True, text=True, timeout=60, **kwargs
    )


@debian_python
def test_it_runs_on_debians_python_with_the_distributions_packages(pyz):
    done = _system(str(pyz), "--help")
    assert done.returncode == 0, done.stderr
    for command in ("login", "sync", "status", "watch", "purge"):
        assert command in done.stdout
    missing = _system(str(pyz), "--config", "/nonexistent/agent.toml", "status")
    assert missing.returncode == 2
    assert "/nonexistent/agent.toml" in missing.stderr


@debian_python
def test_the_file_store_lists_a_certificate_and_its_key_under_debians_cryptography(pyz, tmp_path):
    script = f"""
import sys
sys.path.insert(0, {str(pyz)!r})
import datetime, cryptography
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from credroam.roaming.certelement import thumbprint
from credroam.roaming.store.file import FileStore
from credroam.roaming.fsutil import atomic_write, ensure_private_dir
key = ec.generate_private_key(ec.SECP256R1())
name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "alice")])
cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(1)
        .not_valid_before(datetime.datetime(2024, 1, 1))
        .not_valid_after(datetime.datetime(2034, 1, 1)).sign(key, hashes.SHA256()))
der = cert.public_bytes(serialization.Encoding.DER)
folder = ensure_private_dir({str(tmp_path / "store" / "MY")!r})
atomic_write(folder + "/" + thumbprint(der) + ".cert.pem",
             cert.public_bytes(serialization.Encoding.PEM))
atomic_write(folder + "/" + thumbprint(der) + ".key.pem", key.private_bytes(
    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
items = FileStore({str(tmp_path / "store")!r}).items()
(certificate,) = [i for i in items.values() if i.kind == "certificate"]
print(cryptography.__version__, certificate.expires, len(items))
"""
    done = _system("-c", script)
    assert done.returncode == 0, done.stderr
    expiry = to_filetime(datetime.datetime(2034, 1, 1, tzinfo=datetime.UTC))
    assert done.stdout.split()[1:] == [str(expiry), "2"]  # the certificate and its key


@debian_python
def test_it_reports_its_version_which_the_sync_agent_role_records(pyz):
    done = _system(str(pyz), "--version")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"credroam-agent {credroam_agent.__version__}"
