"""A private key follows its certificate through real syncs (issue 8 item 3, rules R35, R36).

Several hosts, each a ``FileStore`` of its own, share one fake directory (exact-value LDAP
semantics, from ``test_sync``). What is checked is what a user would find on disk: no private
key file in ``MY/`` without its certificate, on any host, after any sync.
"""

from __future__ import annotations

import datetime
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from credroam.roaming.certelement import thumbprint
from credroam.roaming.directory import ACCOUNT_CREDENTIALS
from credroam.roaming.envelope import new_roaming_key
from credroam.roaming.model import Item, Policy
from credroam.roaming.store.file import FileStore
from credroam.roaming.sync import SyncReport, sync_user
from credroam.timestamps import to_filetime
from tests.credentials import certificate_items, new_pkcs8
from tests.unit.test_sync import NOW, USER_DN, FakeDirectory, FakeState

ROAMING_KEY = new_roaming_key()
EXPIRES = to_filetime(datetime.datetime(2034, 1, 1, tzinfo=datetime.UTC))


def _items(der: bytes, key: bytes, modified: int) -> tuple[Item, Item]:
    return certificate_items(der, key, modified, EXPIRES)


class Host:
    def __init__(self, root: Path) -> None:
        self.store, self.state = FileStore(str(root)), FakeState()
        self.my = root / "MY"

    def sync(self, directory: FakeDirectory, now: int) -> SyncReport:
        return sync_user(
            directory, USER_DN, self.store, self.state, Policy(), ROAMING_KEY, lambda: now
        )

    def key_files(self) -> list[str]:
        return sorted(p.name for p in self.my.glob("*.key.pem")) if self.my.exists() else []

    def cert_files(self) -> list[str]:
        return sorted(p.name for p in self.my.glob("*.cert.pem")) if self.my.exists() else []


def test_a_key_replaced_after_its_certificate_was_deleted_elsewhere_goes_with_it(
    tmp_path: Path, make_certificate_der
) -> None:
    """Issue 8: host A deletes a certificate and its key; host B then replaces the key (newer
    than the deletion). B's sync must delete the key with the certificate instead of uploading
    it alone, and no host may be left with the key in MY/."""
    der, key = make_certificate_der("alice"), new_pkcs8()
    cert, key_item = _items(der, key, NOW - 100)
    directory = FakeDirectory()
    a, b, c = (Host(tmp_path / name) for name in "abc")
    a.store.write(cert, der)
    a.store.write(key_item, key)
    a.sync(directory, NOW)
    assert set(b.sync(directory, NOW + 1).downloaded) == {cert.key, key_item.key}
    assert set(c.sync(directory, NOW + 2).downloaded) == {cert.key, key_item.key}

    with a.store.lock():
        a.store.delete(cert)
        a.store.delete(key_item)
    assert set(a.sync(directory, NOW + 10).tombstoned) == {cert.key, key_item.key}

    replaced = new_pkcs8()
    _, replaced_item = _items(der, replaced, NOW + 20)  # newer than A's deletion
    b.store.write(replaced_item, replaced)
    report = b.sync(directory, NOW + 30)
    assert report.uploaded == ()
    assert set(report.deleted_local) == {cert.key, key_item.key}
    assert [key for key, _ in report.conflicts] == [key_item.key]
    assert b.key_files() == [] and b.cert_files() == []

    report = c.sync(directory, NOW + 40)
    assert set(report.deleted_local) == {cert.key, key_item.key}
    assert c.key_files() == []
    # Nothing left to roam: a new host gets nothing, and every host is settled.
    new_host = Host(tmp_path / "new")
    assert new_host.sync(directory, NOW + 50).downloaded == ()
    for host in (a, b, c):
        assert not host.sync(directory, NOW + 60).changed


def test_a_key_without_its_certificate_is_never_downloaded(
    tmp_path: Path, make_certificate_der
) -> None:
    """The key's value reached the DC before its certificate's (linked values replicate one
    by one): nothing is downloaded until the certificate is there too."""
    der, key = make_certificate_der("bob"), new_pkcs8()
    cert, key_item = _items(der, key, NOW - 100)
    directory = FakeDirectory()
    a, b = Host(tmp_path / "a"), Host(tmp_path / "b")
    a.store.write(cert, der)
    a.store.write(key_item, key)
    a.sync(directory, NOW)
    certificates = directory.values.pop(ACCOUNT_CREDENTIALS)  # not replicated yet

    report = b.sync(directory, NOW + 1)
    assert report.downloaded == () and b.key_files() == []
    assert any(key_item.key in warning for warning in report.warnings)

    directory.values[ACCOUNT_CREDENTIALS] = certificates  # replication caught up
    assert set(b.sync(directory, NOW + 2).downloaded) == {cert.key, key_item.key}


def test_a_private_key_file_without_its_certificate_is_reported(
    tmp_path: Path, make_certificate_der
) -> None:
    der, key = make_certificate_der("carol"), new_pkcs8()
    _, key_item = _items(der, key, NOW - 100)
    host = Host(tmp_path / "a")
    host.my.mkdir(parents=True, mode=0o700)
    pem = serialization.load_der_private_key(key, None).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    orphan = host.my / f"{thumbprint(der)}.key.pem"
    orphan.write_bytes(pem)
    orphan.chmod(0o600)

    report = host.sync(FakeDirectory(), NOW)
    assert report.uploaded == ()
    assert any(
        str(orphan) in problem and "private key without its certificate" in problem
        for problem in report.store_problems
    ), report.store_problems
    assert key_item.key not in report.uploaded
