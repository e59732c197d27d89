"""NetworkManager's 802.1X files (PEM certificate and key per certificate, kept in step), and
the mirrors the agent config names."""

from __future__ import annotations

import datetime
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from credroam.roaming.store import StoreError
from credroam.roaming.store.file import FileStore
from credroam.roaming.store.mirror import make_mirrors
from credroam.roaming.store.networkmanager import NetworkManagerMirror
from credroam.roaming.store.nss import NssMirror
from tests.unit.test_store_nss import EXPIRED, _credential, _write

LATER = datetime.datetime(2035, 1, 1, tzinfo=datetime.UTC)


@pytest.fixture
def store(tmp_path: Path) -> FileStore:
    return FileStore(str(tmp_path / "store"))


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return tmp_path / "home" / ".local" / "share" / "credroam" / "networkmanager"


def _spki(public_key) -> bytes:
    """Comparable on every cryptography release (key equality came after Debian 12's 38)."""
    return public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _files(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}


def test_keys_and_certificates_are_private_pem_files(store, folder) -> None:
    cert, pkcs8, key = _credential()
    thumb = _write(store, cert, pkcs8)

    report = NetworkManagerMirror(str(folder)).sync_with(store)

    assert report.ok, report.problems
    loaded_key = serialization.load_pem_private_key(
        (folder / f"{thumb}.key.pem").read_bytes(), None
    )
    loaded_cert = x509.load_pem_x509_certificate((folder / f"{thumb}.cert.pem").read_bytes())
    assert _spki(loaded_cert.public_key()) == _spki(loaded_key.public_key())
    assert _spki(loaded_key.public_key()) == _spki(key.public_key())
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    for path in folder.rglob("*"):
        assert stat.S_IMODE(path.stat().st_mode) == (0o700 if path.is_dir() else 0o600), path


def test_latest_names_the_live_certificate_that_expires_last(store, folder) -> None:
    cert, pkcs8, _ = _credential()
    newer, newer_key, _ = _credential("renewed", LATER)
    old, old_key, _ = _credential("old", EXPIRED)
    thumbs = [_write(store, cert, pkcs8), _write(store, newer, newer_key)]
    old_thumb = _write(store, old, old_key, archived=True)
    _write(store, _credential("no key")[0], None)

    NetworkManagerMirror(str(folder)).sync_with(store)

    assert (folder / "latest.cert.pem").read_bytes() == (
        folder / f"{thumbs[1]}.cert.pem"
    ).read_bytes()
    assert (folder / "latest.key.pem").read_bytes() == (
        folder / f"{thumbs[1]}.key.pem"
    ).read_bytes()
    assert _files(folder) == {
        *(f"{t}.{kind}.pem" for t in thumbs for kind in ("cert", "key")),
        f"archive/{old_thumb}.cert.pem",
        f"archive/{old_thumb}.key.pem",
        "latest.cert.pem",
        "latest.key.pem",
    }


def test_removed_items_go_and_a_second_sync_writes_nothing(store, folder) -> None:
    cert, pkcs8, _ = _credential()
    thumb = _write(store, cert, pkcs8)
    mirror = NetworkManagerMirror(str(folder))
    mirror.sync_with(store)
    marker = mirror.change_marker()
    assert mirror.sync_with(store).written == [] and mirror.change_marker() == marker

    store.delete(f"%9\\{thumb}")
    store.delete(f"%3\\{thumb}")
    report = mirror.sync_with(store)

    assert _files(folder) == set() and len(report.removed) == 4
    assert mirror.change_marker() != marker


def test_a_file_changed_by_hand_is_written_again(store, folder) -> None:
    cert, pkcs8, _ = _credential()
    thumb = _write(store, cert, pkcs8)
    mirror = NetworkManagerMirror(str(folder))
    mirror.sync_with(store)
    original = (folder / f"{thumb}.key.pem").read_bytes()
    (folder / f"{thumb}.key.pem").write_bytes(b"damaged")

    assert mirror.sync_with(store).written == [f"{thumb}.key.pem"]
    assert (folder / f"{thumb}.key.pem").read_bytes() == original


def test_the_config_names_the_mirrors_and_file_is_required(tmp_path) -> None:
    home, state = str(tmp_path / "home"), str(tmp_path / "state")
    made = make_mirrors(["file", "nss", "networkmanager"], home=home, state_dir=state)

    assert [type(m) for m in made] == [NssMirror, NetworkManagerMirror]
    assert made[0].directory == f"{home}/.pki/nssdb"
    with pytest.raises(StoreError, match="'nsss'"):
        make_mirrors(["file", "nsss"], home=home, state_dir=state)
    with pytest.raises(StoreError, match="'file'"):
        make_mirrors(["nss"], home=home, state_dir=state)
