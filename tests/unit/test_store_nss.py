"""The NSS database mirror, with Debian's real certutil and pk12util on temporary databases.

What NSS holds is read back independently of the mirror, from its SQLite tables
(tests/nss_oracle.py).
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import os
import shutil
import sqlite3
import stat
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from credroam.roaming.model import Item, ItemKind, StoreName
from credroam.roaming.store.file import FileStore
from credroam.roaming.store.nss import NssMirror
from credroam_agent.triggers import Inbox, InotifyWatcher
from tests.credentials import self_signed
from tests.nss_oracle import ec_key_id as _key_id
from tests.nss_oracle import nss_certificates as _nss_certificates
from tests.nss_oracle import nss_key_ids as _nss_key_ids
from tests.nss_oracle import thumbprint as _thumbprint

pytestmark = pytest.mark.skipif(
    shutil.which("certutil") is None or shutil.which("pk12util") is None,
    reason="needs certutil and pk12util (Debian's libnss3-tools)",
)

T0 = 133_000_000_000_000_000
NOT_AFTER = datetime.datetime(2034, 1, 1, tzinfo=datetime.UTC)
EXPIRED = datetime.datetime(2024, 6, 1, tzinfo=datetime.UTC)


def _credential(name: str = "alice", not_after: datetime.datetime = NOT_AFTER):
    """(certificate DER, PKCS#8 DER, private key) of a fresh self-signed EC certificate."""
    return self_signed(name, datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC), not_after)


def _item(key: str, payload: bytes, kind: ItemKind, **extra) -> Item:
    return Item(
        key=key,
        store=StoreName.MY,
        kind=kind,
        modified=T0,
        content_hash=hashlib.sha256(payload).hexdigest(),
        size=len(payload),
        **extra,
    )


def _write(store: FileStore, cert: bytes, key: bytes | None, archived: bool = False) -> str:
    thumb = _thumbprint(cert)
    cert_item = _item(f"%3\\{thumb}", cert, ItemKind.CERTIFICATE, archived=archived)
    store.write(cert_item, cert)
    if key is not None:
        store.write(_item(f"%9\\{thumb}", key, ItemKind.KEY, owner=cert_item.key), key)
    return thumb


def _tool(*arguments: str, db: Path) -> None:
    subprocess.run([*arguments, "-d", f"sql:{db}"], check=True, capture_output=True)


def _nickname_of(thumb: str) -> str:
    """The nickname the mirror gives a certificate whose subject NSS did not know yet."""
    return "credroam-" + thumb


@pytest.fixture
def store(tmp_path: Path) -> FileStore:
    return FileStore(str(tmp_path / "store"))


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "home" / ".pki" / "nssdb"


@pytest.fixture
def mirror(tmp_path: Path, db: Path) -> NssMirror:
    return NssMirror(str(db), str(tmp_path / "state" / "nss-mirror.json"))


def test_every_certificate_is_exported_with_its_key(store, db, mirror, tmp_path) -> None:
    live, live_key, _ = _credential("alice")
    old, old_key, _ = _credential("alice old", EXPIRED)
    public_only, _, _ = _credential("bob")
    thumbs = {_write(store, live, live_key), _write(store, old, old_key, archived=True)}
    bob = _write(store, public_only, None)

    report = mirror.sync_with(store)

    assert report.ok, report.problems
    assert set(report.written) == thumbs | {bob}
    assert set(_nss_certificates(db)) == thumbs | {bob}
    assert _nss_key_ids(db) == {_key_id(live), _key_id(old)}
    state = tmp_path / "state" / "nss-mirror.json"
    assert stat.S_IMODE(state.stat().st_mode) == 0o600
    assert json.loads(state.read_text())["items"][_thumbprint(old)]["archived"] is True
    assert not [p for p in state.parent.iterdir() if p.name != state.name]  # no PKCS#12 left


def test_a_second_sync_changes_nothing_and_keeps_the_marker(store, mirror) -> None:
    cert, key, _ = _credential()
    _write(store, cert, key)
    mirror.sync_with(store)
    marker = mirror.change_marker()

    report = mirror.sync_with(store)

    assert (report.written, report.removed, report.pulled, report.deleted) == ([], [], [], [])
    assert mirror.change_marker() == marker


def test_marker_changes_when_an_application_imports(store, db, mirror, tmp_path) -> None:
    mirror.sync_with(store)
    marker = mirror.change_marker()
    cert, _, key = _credential("imported")
    _import_with_pk12util(db, tmp_path, cert, key)
    assert mirror.change_marker() != marker


def _import_with_pk12util(db: Path, tmp_path: Path, cert: bytes, key) -> None:
    """What Chromium's certificate manager does: a PKCS#12 imported into the database."""
    bundle = pkcs12.serialize_key_and_certificates(
        b"imported by hand",
        key,
        x509.load_der_x509_certificate(cert),
        None,
        serialization.BestAvailableEncryption(b"secret"),
    )
    path = tmp_path / "import.p12"
    path.write_bytes(bundle)
    _tool("pk12util", "-i", str(path), "-W", "secret", db=db)


def test_a_certificate_imported_into_nss_is_pulled_into_the_store(
    store, db, mirror, tmp_path
) -> None:
    mirror.sync_with(store)  # creates the database, as Chromium would have
    cert, pkcs8, key = _credential("imported")
    _import_with_pk12util(db, tmp_path, cert, key)

    report = mirror.sync_with(store)

    thumb = _thumbprint(cert)
    assert report.ok, report.problems
    assert report.pulled == [thumb] and report.changed_store
    items = store.items()
    assert store.read(f"%3\\{thumb}") == cert
    assert store.read(f"%9\\{thumb}") == pkcs8
    assert items[f"%9\\{thumb}"].owner == f"%3\\{thumb}"


def test_a_certificate_without_its_key_in_nss_is_not_pulled(store, db, mirror, tmp_path) -> None:
    mirror.sync_with(store)
    ca, _, _ = _credential("some CA")
    (tmp_path / "ca.der").write_bytes(ca)
    _tool("certutil", "-A", "-n", "some CA", "-t", "C,,", "-i", str(tmp_path / "ca.der"), db=db)

    report = mirror.sync_with(store)

    assert report.pulled == [] and store.items() == {}
    assert _thumbprint(ca) in _nss_certificates(db)  # and it is left alone


def test_deleting_in_nss_deletes_from_the_store_with_a_copy(store, db, mirror, tmp_path) -> None:
    cert, key, _ = _credential()
    thumb = _write(store, cert, key)
    mirror.sync_with(store)
    _tool("certutil", "-F", "-n", _nickname_of(thumb), db=db)

    report = mirror.sync_with(store)

    assert report.deleted == [thumb]
    assert store.items() == {}
    recovered = {p.name.split(".")[0] for p in (tmp_path / "store" / "recovery").iterdir()}
    assert recovered == {thumb}


def test_deleting_canonically_removes_from_nss(store, db, mirror) -> None:
    cert, key, _ = _credential()
    kept, kept_key, _ = _credential("kept")
    thumb = _write(store, cert, key)
    _write(store, kept, kept_key)
    mirror.sync_with(store)
    store.delete(f"%9\\{thumb}")
    store.delete(f"%3\\{thumb}")

    report = mirror.sync_with(store)

    assert report.removed == [thumb]
    assert set(_nss_certificates(db)) == {_thumbprint(kept)}
    assert _nss_key_ids(db) == {_key_id(kept)}


def test_certificates_sharing_a_subject_are_kept_apart(store, db, mirror) -> None:
    """NSS gives both one nickname; removing the replaced one keeps its successor."""
    old, old_key, _ = _credential("alice", EXPIRED)
    new, new_key, _ = _credential("alice")
    old_thumb = _write(store, old, old_key, archived=True)
    _write(store, new, new_key)
    mirror.sync_with(store)
    store.delete(f"%9\\{old_thumb}")
    store.delete(f"%3\\{old_thumb}")

    report = mirror.sync_with(store)

    assert report.ok, report.problems
    assert set(_nss_certificates(db)) == {_thumbprint(new)}
    assert _nss_key_ids(db) == {_key_id(new)}


def test_archiving_keeps_the_certificate_and_key_in_nss(store, db, mirror, tmp_path) -> None:
    cert, key, _ = _credential("alice", EXPIRED)
    thumb = _write(store, cert, key)
    mirror.sync_with(store)
    store.archive(f"%3\\{thumb}")
    store.archive(f"%9\\{thumb}")

    report = mirror.sync_with(store)

    assert report.ok and report.removed == []
    assert thumb in _nss_certificates(db) and _key_id(cert) in _nss_key_ids(db)
    state = json.loads((tmp_path / "state" / "nss-mirror.json").read_text())
    assert state["items"][thumb]["archived"] is True


def test_a_database_that_cannot_be_written_is_reported_then_retried(store, db, mirror) -> None:
    mirror.sync_with(store)
    cert, key, _ = _credential()
    thumb = _write(store, cert, key)
    before = store.items()
    # A writer holding SQLite's reserved lock (as a busy application does): NSS can read but
    # not write, and gives up after its own short retry.
    holder = sqlite3.connect(str(db / "key4.db"), isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        report = mirror.sync_with(store)
    finally:
        holder.execute("ROLLBACK")
        holder.close()

    assert not report.ok
    assert str(db) in report.problems[0] and thumb in report.problems[0]
    assert store.items() == before and store.read(f"%9\\{thumb}") == key

    retried = mirror.sync_with(store)

    assert retried.ok and retried.written == [thumb] and retried.deleted == []
    assert _key_id(cert) in _nss_key_ids(db)


def test_an_unreadable_database_is_never_taken_for_deletions(store, db, mirror) -> None:
    cert, key, _ = _credential()
    _write(store, cert, key)
    mirror.sync_with(store)
    before = store.items()
    holder = sqlite3.connect(str(db / "cert9.db"), isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        report = mirror.sync_with(store)
    finally:
        holder.execute("ROLLBACK")
        holder.close()

    assert not report.ok and report.deleted == []
    assert store.items() == before


def test_a_database_made_again_is_filled_again_not_emptied(store, db, mirror) -> None:
    cert, key, _ = _credential()
    thumb = _write(store, cert, key)
    mirror.sync_with(store)
    shutil.rmtree(db)  # the user removed ~/.pki/nssdb; Chromium makes a new one
    os.makedirs(db, mode=0o700)
    _tool("certutil", "-N", "--empty-password", db=db)

    report = mirror.sync_with(store)

    assert report.deleted == [] and report.written == [thumb]
    assert thumb in _nss_certificates(db)


def test_a_key_imported_for_a_certificate_that_roamed_without_one_is_pulled(
    store, db, mirror, tmp_path
) -> None:
    """A certificate from Windows roams without its key; the user imports the key in Chromium."""
    cert, pkcs8, key = _credential()
    thumb = _write(store, cert, None)
    mirror.sync_with(store)
    _import_with_pk12util(db, tmp_path, cert, key)

    report = mirror.sync_with(store)

    assert report.ok and report.pulled == [thumb]
    assert store.read(f"%9\\{thumb}") == pkcs8
    assert store.items()[f"%9\\{thumb}"].owner == f"%3\\{thumb}"


def test_a_key_removed_canonically_leaves_nss_and_the_certificate_stays(store, db, mirror) -> None:
    cert, key, _ = _credential()
    thumb = _write(store, cert, key)
    mirror.sync_with(store)
    store.delete(f"%9\\{thumb}")

    report = mirror.sync_with(store)

    assert report.ok and report.removed == [thumb] and report.pulled == []
    assert thumb in _nss_certificates(db)
    assert _nss_key_ids(db) == set()
    assert mirror.sync_with(store).pulled == []  # and it is not taken for a new key later


@pytest.fixture
def small_disk(tmp_path: Path):
    """A 1 MiB tmpfs (root only), unmounted at the end."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small tmpfs needs root")
    mountpoint = tmp_path / "small-disk"
    mountpoint.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs", str(mountpoint)], check=True
    )
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], check=True)


def _fill(disk: Path) -> Path:
    """Take every free byte of ``disk``; the filler file, to remove later."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        with contextlib.suppress(OSError):  # ENOSPC: the disk is full
            while os.write(fd, b"\0" * 4096):
                pass
    finally:
        os.close(fd)
    return filler


def test_a_full_disk_is_reported_and_retried(store, small_disk, tmp_path) -> None:
    mirror = NssMirror(str(small_disk / "nssdb"), str(tmp_path / "state" / "nss-mirror.json"))
    assert mirror.sync_with(store).ok  # the database is made while there is room
    certs = [_credential(f"user {n}") for n in range(3)]
    thumbs = {_write(store, cert, key) for cert, key, _ in certs}
    before = store.items()
    filler = _fill(small_disk)

    report = mirror.sync_with(store)

    assert not report.ok and str(small_disk / "nssdb") in report.problems[0]
    assert report.deleted == [] and store.items() == before
    filler.unlink()
    retried = mirror.sync_with(store)
    assert retried.ok, retried.problems
    assert set(_nss_certificates(small_disk / "nssdb")) == thumbs


def test_an_import_into_nss_wakes_the_agent_s_store_watcher(store, db, mirror, tmp_path) -> None:
    """``watch`` syncs when an application changes the database (the paths the mirror names)."""
    mirror.sync_with(store)
    inbox = Inbox()
    watcher = InotifyWatcher(mirror.watch_paths(), log=lambda _message: None)
    watcher.start(inbox)
    try:
        cert, _, key = _credential("imported")
        _import_with_pk12util(db, tmp_path, cert, key)
        event = inbox.get(timeout=30)  # bounded wait for the watcher's thread, not a sleep
    finally:
        watcher.close()

    assert event is not None and event.kind == "store" and str(db) in event.detail
