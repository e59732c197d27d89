"""The Linux file store: layout, permissions, atomic writes, locking, hostile identifiers."""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import pickle
import stat
import subprocess
import sys
import threading
from dataclasses import replace
from pathlib import Path

import hypothesis
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from hypothesis import strategies as st

from credroam.roaming import fsutil
from credroam.roaming.fsutil import LockHeld
from credroam.roaming.model import Item, ItemKind, Policy, StoreName
from credroam.roaming.reconcile import reconcile
from credroam.roaming.store import StoreError
from credroam.roaming.store import file as store_module
from credroam.roaming.store.file import FileStore
from credroam.timestamps import to_filetime
from tests.credentials import self_signed
from tests.hypothesis_profiles import examples

T0 = 133_000_000_000_000_000
NOT_AFTER = datetime.datetime(2030, 1, 1, tzinfo=datetime.UTC)


def _certificate(name: str = "alice") -> tuple[bytes, bytes]:
    """(DER certificate, PKCS#8 DER key) of a fresh self-signed EC certificate."""
    der, pkcs8, _ = self_signed(name, datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC), NOT_AFTER)
    return der, pkcs8


def _request() -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "request")])
    csr = x509.CertificateSigningRequestBuilder().subject_name(subject).sign(key, hashes.SHA256())
    return csr.public_bytes(serialization.Encoding.DER)


def _thumbprint(der: bytes) -> str:
    return hashlib.sha1(der).hexdigest().upper()


def _item(key: str, payload: bytes, kind: ItemKind, store: StoreName = StoreName.MY, **extra):
    return Item(
        key=key,
        store=store,
        kind=kind,
        modified=T0,
        content_hash=hashlib.sha256(payload).hexdigest(),
        size=len(payload),
        **extra,
    )


@pytest.fixture
def store(tmp_path: Path) -> FileStore:
    return FileStore(str(tmp_path / "store"))


@pytest.fixture(scope="module")
def cert_and_key() -> tuple[bytes, bytes]:
    return _certificate()


def _write_pair(store: FileStore, cert: bytes, key: bytes, **extra) -> tuple[Item, Item]:
    thumb = _thumbprint(cert)
    cert_item = _item(f"%3\\{thumb}", cert, ItemKind.CERTIFICATE, **extra)
    key_item = _item(f"%9\\{thumb}", key, ItemKind.KEY, owner=cert_item.key, **extra)
    store.write(cert_item, cert)
    store.write(key_item, key)
    return cert_item, key_item


def _tree(path: Path) -> dict[str, bytes | str]:
    """Every file and link under ``path`` (content, or link target)."""
    result: dict[str, bytes | str] = {}
    for entry in sorted(path.rglob("*")):
        name = str(entry.relative_to(path))
        if entry.is_symlink():
            result[name] = "-> " + os.readlink(entry)
        elif entry.is_file():
            result[name] = entry.read_bytes()
    return result


# --- layout and listing -----------------------------------------------------------------------


def test_written_items_are_listed_back_with_their_versions(store, cert_and_key) -> None:
    cert, key = cert_and_key
    cert_item, key_item = _write_pair(store, cert, key)
    request = _request()
    request_item = _item(
        f"%4\\{_thumbprint(request)}", request, ItemKind.REQUEST, StoreName.REQUEST
    )
    store.write(request_item, request)

    listed = store.items()
    expires = to_filetime(NOT_AFTER)
    assert listed == {
        cert_item.key: cert_item.__class__(**{**_fields(cert_item), "expires": expires}),
        key_item.key: key_item.__class__(**{**_fields(key_item), "expires": expires}),
        request_item.key: request_item,
    }
    assert store.read(cert_item) == cert
    assert store.read(key_item.key) == key
    assert store.read(request_item) == request
    assert store.problems == []


def _fields(item: Item) -> dict:
    return {name: getattr(item, name) for name in Item.__slots__}


def test_files_are_pem_in_their_folders(store, cert_and_key, tmp_path) -> None:
    cert, key = cert_and_key
    _write_pair(store, cert, key)
    thumb = _thumbprint(cert)
    my = tmp_path / "store" / "MY"
    assert sorted(os.listdir(my)) == [f"{thumb}.cert.pem", f"{thumb}.key.pem"]
    assert (my / f"{thumb}.cert.pem").read_bytes().startswith(b"-----BEGIN CERTIFICATE-----\n")
    pem_key = (my / f"{thumb}.key.pem").read_bytes()
    assert serialization.load_pem_private_key(pem_key, None) is not None  # PKCS#8 PEM


def test_every_file_is_0600_and_every_directory_0700(tmp_path, cert_and_key) -> None:
    old_umask = os.umask(0)  # modes must not depend on the caller's umask
    try:
        store = FileStore(str(tmp_path / "store"))
        cert, key = cert_and_key
        cert_item, _ = _write_pair(store, cert, key)
        store.archive(cert_item)
        store.delete(cert_item, keep_copy=True)
        with store.lock():
            pass
    finally:
        os.umask(old_umask)
    root = tmp_path / "store"
    for entry in [root, *root.rglob("*")]:
        mode = stat.S_IMODE(entry.lstat().st_mode)
        assert mode == (0o700 if entry.is_dir() else 0o600), f"{entry} has mode {oct(mode)}"


def test_key_without_its_certificate_is_not_roamed(store, cert_and_key, tmp_path) -> None:
    cert, key = cert_and_key
    cert_item, _key_item = _write_pair(store, cert, key)
    store.delete(cert_item)
    assert store.items() == {}
    assert "without its certificate" in store.problems[0]


def test_file_changed_by_hand_is_newer_than_recorded(store, cert_and_key, tmp_path) -> None:
    cert, key = cert_and_key
    _, key_item = _write_pair(store, cert, key)
    _, other_key = _certificate("other")
    path = tmp_path / "store" / "MY" / f"{_thumbprint(cert)}.key.pem"
    path.write_bytes(
        serialization.load_der_private_key(other_key, None).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    os.utime(path, ns=(0, 0))  # even an mtime far in the past
    listed = store.items()[key_item.key]
    assert listed.content_hash == hashlib.sha256(other_key).hexdigest()
    assert listed.modified > key_item.modified


def test_copied_store_keeps_recorded_times(store, cert_and_key, tmp_path) -> None:
    cert, key = cert_and_key
    cert_item, _ = _write_pair(store, cert, key)
    for path in (tmp_path / "store").rglob("*.pem"):
        os.utime(path)  # a restore or copy touches every mtime
    assert store.items()[cert_item.key].modified == T0


def test_file_whose_name_does_not_match_its_content_is_skipped(store, tmp_path) -> None:
    cert, _ = _certificate("liar")
    my = tmp_path / "store" / "MY"
    my.mkdir(mode=0o700)
    (my / ("A" * 40 + ".cert.pem")).write_bytes(
        x509.load_der_x509_certificate(cert).public_bytes(serialization.Encoding.PEM)
    )
    (my / "notes.txt").write_text("hello")
    assert store.items() == {}
    assert any("SHA-1 of the content" in problem for problem in store.problems)
    assert any("notes.txt" in problem for problem in store.problems)


def test_payload_that_does_not_match_the_item_is_refused(store, cert_and_key) -> None:
    cert, _key = cert_and_key
    wrong_id = _item("%3\\" + "B" * 40, cert, ItemKind.CERTIFICATE)
    with pytest.raises(StoreError, match="SHA-1 of the content"):
        store.write(wrong_id, cert)
    right = _item(f"%3\\{_thumbprint(cert)}", cert, ItemKind.CERTIFICATE)
    with pytest.raises(StoreError, match="content hash"):
        store.write(right, cert + b"\0")
    not_a_key = _item(f"%9\\{_thumbprint(cert)}", cert, ItemKind.KEY, owner=right.key)
    with pytest.raises(StoreError, match="payload refused"):
        store.write(not_a_key, cert)


# --- archive and delete -----------------------------------------------------------------------


def test_archive_moves_the_item_and_keeps_it_listed(store, cert_and_key, tmp_path) -> None:
    cert, key = cert_and_key
    cert_item, key_item = _write_pair(store, cert, key)
    store.archive(cert_item)
    store.archive(key_item.key)
    listed = store.items()
    assert listed[cert_item.key].archived and listed[key_item.key].archived
    assert os.listdir(tmp_path / "store" / "MY") == []
    assert len(os.listdir(tmp_path / "store" / "archive" / "MY")) == 2
    # Writing the item unarchived (a newer edit won) moves it back.
    store.write(cert_item, cert)
    assert not store.items()[cert_item.key].archived
    assert os.listdir(tmp_path / "store" / "MY") == [f"{_thumbprint(cert)}.cert.pem"]


def test_writing_an_archived_version_archives(store, cert_and_key, tmp_path) -> None:
    cert, key = cert_and_key
    cert_item, _ = _write_pair(store, cert, key, archived=True)
    assert store.items()[cert_item.key].archived
    assert not (tmp_path / "store" / "MY").exists()


# (recovery copies: tests/unit/test_recovery.py)


# --- hostile identifiers and planted links ----------------------------------------------------

HOSTILE_KEYS = [
    "%3\\..\\..\\Windows\\Start Menu\\Programs\\Startup\\x.bat",
    "%3\\../../../../tmp/evil",
    "%3\\/etc/passwd",
    "%9\\..",
    "%3\\" + "A" * 39 + ":",
    "%3\\" + "A" * 39 + "\0",
    "%3\\" + "a" * 40,  # lower case is not a thumbprint
    "%9\\" + "A" * 200,
    "%3\\",
    "%5\\anything",  # a type the store does not hold
    "../x",
]


@pytest.mark.parametrize("key", HOSTILE_KEYS, ids=repr)
def test_hostile_identifier_never_touches_the_filesystem(tmp_path, key, cert_and_key) -> None:
    cert, _ = cert_and_key
    store = FileStore(str(tmp_path / "home" / "store"))
    before = _tree(tmp_path)
    item = _item(key, cert, ItemKind.CERTIFICATE, owner="%3\\" + "A" * 40)
    with pytest.raises(StoreError):
        store.write(item, cert)
    with pytest.raises(StoreError):
        store.read(key)
    with pytest.raises(StoreError):
        store.delete(key)
    with pytest.raises(StoreError):
        store.archive(key)
    assert _tree(tmp_path) == before
    assert not Path("/tmp/evil").exists()


def test_key_cannot_be_filed_under_another_identifier(store, cert_and_key) -> None:
    cert, key = cert_and_key
    item = _item("%9\\" + "C" * 40, key, ItemKind.KEY, owner=f"%3\\{_thumbprint(cert)}")
    with pytest.raises(StoreError, match="cannot belong"):
        store.write(item, key)


def test_symlink_planted_at_an_item_path_is_refused(tmp_path, cert_and_key) -> None:
    cert, _key = cert_and_key
    store = FileStore(str(tmp_path / "store"))
    outside = tmp_path / "victim"
    outside.write_bytes(b"precious")
    my = tmp_path / "store" / "MY"
    my.mkdir(mode=0o700)
    thumb = _thumbprint(cert)
    os.symlink(outside, my / f"{thumb}.cert.pem")
    with pytest.raises(StoreError, match="symbolic link"):
        store.write(_item(f"%3\\{thumb}", cert, ItemKind.CERTIFICATE), cert)
    with pytest.raises(StoreError, match="symbolic link"):
        store.read(f"%3\\{thumb}")
    assert store.items() == {}
    assert any("symbolic link" in problem for problem in store.problems)
    assert outside.read_bytes() == b"precious"


def test_symlinked_store_folder_is_refused(tmp_path, cert_and_key) -> None:
    cert, _ = cert_and_key
    store = FileStore(str(tmp_path / "store"))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    os.symlink(elsewhere, tmp_path / "store" / "MY")
    with pytest.raises(StoreError, match="MY"):
        store.write(_item(f"%3\\{_thumbprint(cert)}", cert, ItemKind.CERTIFICATE), cert)
    assert os.listdir(elsewhere) == []
    assert store.items() == {}


# --- atomicity --------------------------------------------------------------------------------


def test_crash_mid_write_leaves_the_old_file_intact(store, tmp_path, monkeypatch) -> None:
    cert, key = _certificate()
    cert_item, key_item = _write_pair(store, cert, key)
    path = tmp_path / "store" / "MY" / f"{_thumbprint(cert)}.key.pem"
    old = path.read_bytes()
    _, new_key = _certificate("new")
    real_write = os.write

    def write_half_then_crash(fd: int, data) -> int:
        real_write(fd, bytes(data[: len(data) // 2]))
        raise OSError("power cut")

    monkeypatch.setattr(fsutil.os, "write", write_half_then_crash)
    new_item = _item(key_item.key, new_key, ItemKind.KEY, owner=cert_item.key)
    with pytest.raises(StoreError, match="power cut"):
        store.write(new_item, new_key)
    monkeypatch.undo()
    assert path.read_bytes() == old
    assert sorted(os.listdir(path.parent)) == sorted([path.name, f"{_thumbprint(cert)}.cert.pem"])
    assert store.items()[key_item.key].content_hash == key_item.content_hash


# --- locking ----------------------------------------------------------------------------------


def test_second_sync_of_the_same_user_fails_cleanly(tmp_path) -> None:
    first = FileStore(str(tmp_path / "store"))
    second = FileStore(str(tmp_path / "store"))
    with first.lock():
        with pytest.raises(LockHeld) as caught, second.lock():
            pass
        assert "another credroam sync holds the lock" in str(caught.value)
        assert str(tmp_path / "store" / ".lock") in str(caught.value)
    with second.lock():  # free again once the first sync ended
        pass


def test_lock_excludes_another_process(tmp_path) -> None:
    root = str(tmp_path / "store")
    FileStore(root)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from credroam.roaming.store.file import FileStore\n"
            f"with FileStore({root!r}).lock():\n"
            "    print('locked', flush=True); sys.stdin.readline()\n",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(LockHeld), FileStore(root).lock():
            pass
    finally:
        holder.communicate("done\n", timeout=30)
    with FileStore(root).lock():  # released when the holder exited
        pass


def test_waiting_lock_gets_it_only_after_release(tmp_path) -> None:
    root = str(tmp_path / "store")
    order: list[str] = []
    holding = threading.Event()

    def second_sync() -> None:
        holding.wait()
        with FileStore(root).lock(timeout=None):
            order.append("second acquired")

    thread = threading.Thread(target=second_sync)
    thread.start()
    with FileStore(root).lock():
        holding.set()
        order.append("first releasing")
    thread.join(timeout=30)
    assert order == ["first releasing", "second acquired"]


# --- the store under reconciliation -----------------------------------------------------------


def test_two_hosts_roam_a_certificate_and_its_key_through_reconcile(tmp_path) -> None:
    """Listings, writes and plans fit together: what one host has, the other gets, exactly."""
    directory: dict[str, Item] = {}
    payloads: dict[str, bytes] = {}

    def sync(store: FileStore, base, now: int):
        plan = reconcile(store.items(), directory, base, Policy(), now)
        for i in (*plan.upload, *plan.archive_directory):
            directory[i.key], payloads[i.key] = i, store.read(i)
        for i in plan.tombstone_directory:
            directory[i.key] = i
        for i in (*plan.download, *plan.archive_local):
            store.write(i, payloads[i.key])
        for deletion in plan.delete_local:
            store.delete(deletion.item, keep_copy=deletion.keep_copy)
        return plan.base

    laptop, desktop = FileStore(str(tmp_path / "laptop")), FileStore(str(tmp_path / "desktop"))
    cert, key = _certificate()
    cert_item, key_item = _write_pair(laptop, cert, key)
    laptop_base = sync(laptop, None, T0 + 10)
    desktop_base = sync(desktop, None, T0 + 20)
    assert desktop.items() == laptop.items()
    assert desktop.read(key_item) == key
    assert reconcile(desktop.items(), directory, desktop_base, Policy(), T0 + 30).is_empty

    desktop.delete(cert_item)
    desktop.delete(key_item)
    desktop_base = sync(desktop, desktop_base, T0 + 40)
    assert directory[cert_item.key].tombstone and directory[key_item.key].tombstone
    sync(laptop, laptop_base, T0 + 50)
    assert laptop.items() == {}
    assert len(os.listdir(tmp_path / "laptop" / "recovery")) == 2  # policy keeps copies


# --- listing cost: what was checked once is not parsed again ----------------------------------


@pytest.fixture
def parses(monkeypatch) -> list[str]:
    """Keys of every payload the store parses and checks, in order."""
    calls: list[str] = []
    real = store_module._check_payload

    def counting(token_type, identifier, der):
        calls.append(f"%{token_type.value}\\{identifier}")
        return real(token_type, identifier, der)

    monkeypatch.setattr(store_module, "_check_payload", counting)
    return calls


def test_unchanged_files_are_not_parsed_again(store, cert_and_key, tmp_path, parses) -> None:
    cert, key = cert_and_key
    _, key_item = _write_pair(store, cert, key)
    parses.clear()
    listed = store.items()
    assert parses == []
    assert listed[key_item.key].expires == to_filetime(NOT_AFTER)  # from the index, unparsed
    # A file changed by hand is parsed (and checked) again; only that one.
    _, other_key = _certificate("other")
    path = tmp_path / "store" / "MY" / f"{_thumbprint(cert)}.key.pem"
    path.write_bytes(store_module._pem("PRIVATE KEY", other_key))
    assert store.items()[key_item.key].content_hash == hashlib.sha256(other_key).hexdigest()
    assert parses == [key_item.key]


def test_damaged_file_behind_a_matching_name_is_still_refused(store, tmp_path, parses) -> None:
    cert, key = _certificate()
    _, key_item = _write_pair(store, cert, key)
    path = tmp_path / "store" / "MY" / f"{_thumbprint(cert)}.key.pem"
    path.write_bytes(store_module._pem("PRIVATE KEY", key[:-8]))  # content hash changes
    assert key_item.key not in store.items()
    assert any(problem.startswith(str(path)) for problem in store.problems)


def test_files_added_by_hand_are_parsed_once_and_keep_their_time(tmp_path, parses) -> None:
    cert, key = _certificate()
    my = tmp_path / "store" / "MY"
    my.mkdir(parents=True, mode=0o700)
    (my / f"{_thumbprint(cert)}.cert.pem").write_bytes(store_module._pem("CERTIFICATE", cert))
    (my / f"{_thumbprint(cert)}.key.pem").write_bytes(store_module._pem("PRIVATE KEY", key))
    store = FileStore(str(tmp_path / "store"))
    with store.lock():  # one sync: it lists, then writes (nothing here) in a batch
        first = store.items()
        with store.batch():
            pass
    assert len(parses) == 2
    for path in my.iterdir():
        os.utime(path)  # a copy or restore: later mtimes, same content
    assert store.items() == first
    assert len(parses) == 2


def test_a_listing_outside_a_sync_writes_nothing(tmp_path, cert_and_key) -> None:
    cert, _ = cert_and_key
    my = tmp_path / "store" / "MY"
    my.mkdir(parents=True, mode=0o700)
    (my / f"{_thumbprint(cert)}.cert.pem").write_bytes(store_module._pem("CERTIFICATE", cert))
    store = FileStore(str(tmp_path / "store"))
    with store.lock():  # check mode: listed under the lock, no batch
        store.items()
    store.items()
    assert not (tmp_path / "store" / "index.json").exists()


def test_index_entries_of_an_older_version_are_used_and_upgraded(store, tmp_path, parses) -> None:
    cert, key = _certificate()
    cert_item, key_item = _write_pair(store, cert, key)
    index_path = tmp_path / "store" / "index.json"
    document = json.loads(index_path.read_bytes())
    for entry in document["items"].values():
        del entry["expires"]  # as written before entries recorded what was checked
    index_path.write_text(json.dumps(document))
    parses.clear()
    with store.lock():
        listed = store.items()
        with store.batch():
            pass
    assert listed[cert_item.key].modified == T0 and listed[key_item.key].modified == T0
    assert sorted(parses) == sorted([cert_item.key, key_item.key])
    parses.clear()
    assert store.items() == listed
    assert parses == []


# --- batches: the index is written once; a crash inside one loses nothing --------------------


def _items_to_download(count: int) -> list[tuple[Item, bytes]]:
    writes = []
    for number in range(count):
        cert, key = _certificate(f"user {number}")
        thumb = _thumbprint(cert)
        cert_item = _item(f"%3\\{thumb}", cert, ItemKind.CERTIFICATE)
        key_item = _item(f"%9\\{thumb}", key, ItemKind.KEY, owner=cert_item.key)
        writes += [(cert_item, cert), (key_item, key)]
    return writes


def _index_writes(monkeypatch) -> list[str]:
    written: list[str] = []
    real = store_module.atomic_write

    def recording(path, data, *args, **kwargs):
        if os.path.basename(path) == "index.json":
            written.append(path)
        return real(path, data, *args, **kwargs)

    monkeypatch.setattr(store_module, "atomic_write", recording)
    return written


def test_a_batch_writes_the_index_once(store, monkeypatch) -> None:
    writes = _items_to_download(5)
    index_writes = _index_writes(monkeypatch)
    with store.lock(), store.batch():
        for item, payload in writes:
            store.write(item, payload)
        store.delete(writes[1][0])  # the first certificate's key
    assert len(index_writes) == 1
    kept = [item for item, _ in writes if item is not writes[1][0]]
    listed = store.items()
    assert {key: item.modified for key, item in listed.items()} == {i.key: T0 for i in kept}
    assert store.problems == []


def _crash_at_the_end_of_every_batch(monkeypatch) -> None:
    """The process dies before a batch records its index (no code after that point runs)."""
    monkeypatch.setattr(FileStore, "_flush", lambda self, batch: None)


def test_crash_before_the_index_is_written_lists_every_item_at_its_version(
    store, tmp_path, monkeypatch
) -> None:
    cert, key = _certificate()
    cert_item, key_item = _write_pair(store, cert, key)
    _, newer_key = _certificate("newer")
    newer = replace(
        _item(key_item.key, newer_key, ItemKind.KEY, owner=cert_item.key), modified=T0 + 5
    )
    new_pairs = [
        (replace(item, modified=T0 + 7), payload) for item, payload in _items_to_download(2)
    ]
    index_before = (tmp_path / "store" / "index.json").read_bytes()

    _crash_at_the_end_of_every_batch(monkeypatch)
    with store.lock(), store.batch():
        store.write(newer, newer_key)  # a download of a newer version
        for item, payload in new_pairs:  # downloads of new items
            store.write(item, payload)
    monkeypatch.undo()

    assert (tmp_path / "store" / "index.json").read_bytes() == index_before
    listed = FileStore(str(tmp_path / "store")).items()  # the next sync
    expected = {key_item.key: newer, cert_item.key: cert_item}
    expected.update({item.key: item for item, _ in new_pairs})
    assert {key: (i.modified, i.content_hash) for key, i in listed.items()} == {
        key: (i.modified, i.content_hash) for key, i in expected.items()
    }


def test_a_process_killed_inside_a_batch_leaves_a_store_that_lists_correctly(tmp_path) -> None:
    root = str(tmp_path / "store")
    writes = [(replace(item, modified=T0 + 9), payload) for item, payload in _items_to_download(2)]
    script = (
        "import os, pickle, sys\n"
        "from credroam.roaming.store.file import FileStore\n"
        "store, writes = FileStore(sys.argv[1]), pickle.loads(sys.stdin.buffer.read())\n"
        "with store.lock(), store.batch():\n"
        "    for item, payload in writes:\n"
        "        store.write(item, payload)\n"
        "    os._exit(9)  # killed before the batch records its index\n"
    )
    killed = subprocess.run(
        [sys.executable, "-c", script, root],
        input=pickle.dumps(writes),
        capture_output=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        timeout=60,
        check=False,
    )
    assert killed.returncode == 9, killed.stderr
    assert not os.path.exists(os.path.join(root, "index.json"))
    assert stat.S_IMODE(os.lstat(os.path.join(root, "index.journal")).st_mode) == 0o600
    listed = FileStore(root).items()
    assert {key: (i.modified, i.content_hash) for key, i in listed.items()} == {
        item.key: (T0 + 9, item.content_hash) for item, _ in writes
    }


def test_crash_after_the_intent_before_the_file_keeps_the_old_version(
    store, tmp_path, monkeypatch
) -> None:
    cert, key = _certificate()
    cert_item, key_item = _write_pair(store, cert, key)
    _, newer_key = _certificate("newer")
    newer = replace(
        _item(key_item.key, newer_key, ItemKind.KEY, owner=cert_item.key), modified=T0 + 5
    )

    def die(*_args, **_kwargs):
        raise OSError("killed")

    _crash_at_the_end_of_every_batch(monkeypatch)
    monkeypatch.setattr(store_module, "atomic_write", die)
    with store.lock(), store.batch(), pytest.raises(StoreError, match="killed"):
        store.write(newer, newer_key)
    monkeypatch.undo()

    assert (tmp_path / "store" / "index.journal").exists()  # the intent was recorded
    listed = FileStore(str(tmp_path / "store")).items()
    assert (listed[key_item.key].modified, listed[key_item.key].content_hash) == (
        T0,
        key_item.content_hash,
    )


def test_the_next_batch_folds_a_crashed_journal_into_the_index(
    store, tmp_path, monkeypatch
) -> None:
    writes = [(replace(item, modified=T0 + 3), payload) for item, payload in _items_to_download(2)]
    _crash_at_the_end_of_every_batch(monkeypatch)
    with store.lock(), store.batch():
        for item, payload in writes[:3]:
            store.write(item, payload)
    monkeypatch.undo()
    journal = tmp_path / "store" / "index.journal"
    with journal.open("ab") as torn:  # the crash also tore a last, unfinished line
        torn.write(b'\n{"key": "%3\\\\AB')

    with store.lock():
        store.items()
        with store.batch():
            store.write(*writes[3])
    assert not journal.exists()
    index = json.loads((tmp_path / "store" / "index.json").read_bytes())["items"]
    assert {key: entry["modified"] for key, entry in index.items()} == {
        item.key: T0 + 3 for item, _ in writes
    }


def test_a_write_that_fails_after_replacing_the_file_is_recorded_by_content(
    store, tmp_path, monkeypatch
) -> None:
    cert, key = _certificate()
    cert_item, key_item = _write_pair(store, cert, key)
    _, newer_key = _certificate("newer")
    newer = replace(
        _item(key_item.key, newer_key, ItemKind.KEY, owner=cert_item.key), modified=T0 + 5
    )
    my = os.path.join(store.root, "MY")
    real_fsync_dir = fsutil._fsync_dir

    def failing_for_my(directory: str) -> None:
        if directory == my:
            raise OSError("I/O error")  # after the rename: the new file is in place
        real_fsync_dir(directory)

    monkeypatch.setattr(fsutil, "_fsync_dir", failing_for_my)
    with store.lock():
        store.items()  # a sync lists first: the old version
        with store.batch(), pytest.raises(StoreError, match="I/O error"):
            store.write(newer, newer_key)
    monkeypatch.undo()
    listed = store.items()[key_item.key]
    assert (listed.modified, listed.content_hash) == (T0 + 5, newer.content_hash)


# --- RSA keys ----------------------------------------------------------------------------------


def _rsa_pair() -> tuple[bytes, rsa.RSAPrivateKey]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    start = datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC)
    certificate, _, _ = self_signed("rsa", start, NOT_AFTER, key)
    return certificate, key


def _pkcs8(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def test_rsa_key_is_stored_and_listed(store) -> None:
    cert, key = _rsa_pair()
    _, key_item = _write_pair(store, cert, _pkcs8(key))
    assert store.items()[key_item.key].content_hash == key_item.content_hash


def _der(tag: int, content: bytes) -> bytes:
    if len(content) < 0x80:
        return bytes([tag, len(content)]) + content
    length = len(content).to_bytes((len(content).bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(length)]) + length + content


def _der_int(value: int) -> bytes:
    return _der(0x02, value.to_bytes(value.bit_length() // 8 + 1, "big"))


def _rsa_pkcs8(n: int, e: int, d: int, p: int, q: int, dmp1: int, dmq1: int, iqmp: int) -> bytes:
    """PKCS#8 DER of these RSA numbers as they are, consistent or not (RFC 8017, RFC 5208)."""
    rsa_key = _der(0x30, b"".join(_der_int(v) for v in (0, n, e, d, p, q, dmp1, dmq1, iqmp)))
    rsa_encryption = _der(0x30, bytes.fromhex("06092a864886f70d010101") + b"\x05\x00")
    return _der(0x30, _der_int(0) + rsa_encryption + _der(0x04, rsa_key))


def test_the_pkcs8_encoder_of_these_tests_is_right() -> None:
    _, key = _rsa_pair()
    numbers = key.private_numbers()
    n, e = numbers.public_numbers.n, numbers.public_numbers.e
    fields = (numbers.d, numbers.p, numbers.q, numbers.dmp1, numbers.dmq1, numbers.iqmp)
    assert _rsa_pkcs8(n, e, *fields) == _pkcs8(key)


@pytest.mark.parametrize(
    "damage", ["modulus", "public exponent", "private exponent", "crt exponent", "coefficient"]
)
def test_rsa_key_whose_numbers_do_not_belong_together_is_refused(store, tmp_path, damage) -> None:
    cert, key = _rsa_pair()
    numbers = key.private_numbers()
    values = {
        "n": numbers.public_numbers.n,
        "e": numbers.public_numbers.e,
        "d": numbers.d,
        "p": numbers.p,
        "q": numbers.q,
        "dmp1": numbers.dmp1,
        "dmq1": numbers.dmq1,
        "iqmp": numbers.iqmp,
    }
    field = {
        "modulus": "n",
        "public exponent": "e",
        "private exponent": "d",
        "crt exponent": "dmq1",
        "coefficient": "iqmp",
    }[damage]
    values[field] += 2
    damaged = _rsa_pkcs8(**values)
    thumb = _thumbprint(cert)
    cert_item = _item(f"%3\\{thumb}", cert, ItemKind.CERTIFICATE)
    store.write(cert_item, cert)
    key_item = _item(f"%9\\{thumb}", damaged, ItemKind.KEY, owner=cert_item.key)
    with pytest.raises(StoreError, match="payload refused"):
        store.write(key_item, damaged)
    (tmp_path / "store" / "MY" / f"{thumb}.key.pem").write_bytes(
        store_module._pem("PRIVATE KEY", damaged)
    )
    assert key_item.key not in store.items()
    assert len(store.problems) == 1 and f"{thumb}.key.pem" in store.problems[0]


# --- untrusted files: any defect is a reported problem, never an exception -------------------


def _plant(store: FileStore, folder: str, name: str, pem: bytes) -> Path:
    path = Path(store.root) / folder / name
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.write_bytes(pem)
    path.chmod(0o600)
    return path


def _pem(label: str, der: bytes) -> bytes:
    return store_module._pem(label, der)


def test_a_certificate_with_an_invalid_version_is_skipped_and_the_rest_still_works(
    store, cert_and_key, with_invalid_x509_version
) -> None:
    cert, key = cert_and_key
    cert_item, key_item = _write_pair(store, cert, key)
    bad = with_invalid_x509_version(_certificate("bad")[0])
    planted = _plant(store, "MY", f"{_thumbprint(bad)}.cert.pem", _pem("CERTIFICATE", bad))

    listed = store.items()  # cryptography raises x509.InvalidVersion, not a ValueError

    assert set(listed) == {cert_item.key, key_item.key}
    [problem] = store.problems
    assert str(planted) in problem and "InvalidVersion" in problem
    other, other_key = _certificate("other")
    _write_pair(store, other, other_key)  # writes go on beside the bad file
    assert len(store.items()) == 4


def test_writing_a_certificate_with_an_invalid_version_is_a_store_error(
    store, with_invalid_x509_version
) -> None:
    bad = with_invalid_x509_version(_certificate("bad")[0])
    item = _item(f"%3\\{_thumbprint(bad)}", bad, ItemKind.CERTIFICATE)
    with pytest.raises(StoreError, match="InvalidVersion"):
        store.write(item, bad)
    assert store.items() == {}


@pytest.fixture(scope="module")
def fuzz_files() -> dict[str, tuple[str, bytes]]:
    """One real file of each kind: name -> (folder, PEM bytes)."""
    cert, key = _certificate("fuzz")
    request = _request()
    return {
        f"{_thumbprint(cert)}.cert.pem": ("MY", _pem("CERTIFICATE", cert)),
        f"{_thumbprint(cert)}.key.pem": ("MY", _pem("PRIVATE KEY", key)),
        f"{_thumbprint(request)}.csr.pem": ("REQUEST", _pem("CERTIFICATE REQUEST", request)),
    }


def _decoded_and_mutated(pem: bytes, changes: list[tuple[int, int]], base64: bool) -> bytes:
    """``pem`` with bytes changed in its text (``base64`` False) or in the DER inside it."""
    label = pem.splitlines()[0][len(b"-----BEGIN ") : -len(b"-----")].decode()
    data = bytearray(store_module._unpem(label, pem) if base64 else pem)
    for offset, value in changes:
        data[offset % len(data)] = value
    return _pem(label, bytes(data)) if base64 else bytes(data)


@hypothesis.settings(
    max_examples=examples(150),
    deadline=None,
    suppress_health_check=[hypothesis.HealthCheck.too_slow],
)
@hypothesis.given(data=st.data())
def test_fuzzed_store_files_never_break_a_listing_or_a_write(
    tmp_path_factory, fuzz_files, data
) -> None:
    """Fuzz: a real certificate, key and request file, one of them with bytes changed in its
    PEM text or in the DER inside it. Each damaged file is reported, the rest listed; writes go
    on."""
    store = FileStore(str(tmp_path_factory.mktemp("fuzz") / "store"))
    damaged = data.draw(st.sampled_from(sorted(fuzz_files)))
    changes = data.draw(
        st.lists(st.tuples(st.integers(0, 4000), st.integers(0, 255)), min_size=1, max_size=4)
    )
    in_der = data.draw(st.booleans())
    for name, (folder, pem) in fuzz_files.items():
        _plant(
            store,
            folder,
            name,
            _decoded_and_mutated(pem, changes, in_der) if name == damaged else pem,
        )

    listed = store.items()
    assert len(listed) + len(store.problems) == len(fuzz_files)  # listed or reported, each
    cert, key = _certificate("beside")
    _write_pair(store, cert, key)
    assert {f"%3\\{_thumbprint(cert)}", f"%9\\{_thumbprint(cert)}"} <= set(store.items())
