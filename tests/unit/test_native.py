"""Where Windows roams natively: credroam leaves native tokens to Windows and brings only its
sealed keys, Linux to Windows (roaming/native.py, rules N1-N5), as a pure plan and in a sync
of a Linux host and a Windows host (the Windows store over its fake PowerShell)."""

from __future__ import annotations

import pytest

from credroam.roaming.directory import ACCOUNT_CREDENTIALS, KEY_ENVELOPES
from credroam.roaming.envelope import new_roaming_key
from credroam.roaming.model import Base, BaseEntry, Item, ItemKind, Policy, StoreName
from credroam.roaming.native import KEY_ROAMING_OFF, native_plan, native_roaming_on
from credroam.roaming.reconcile import reconcile
from credroam.roaming.store.windows import WindowsStore
from credroam.roaming.sync import sync_user
from tests.credentials import certificate_items
from tests.unit.test_store_windows import FakeWindows, make_credential, thumb
from tests.unit.test_sync import NOW, USER_DN, FakeDirectory, FakeState, FakeStore

T = "A" * 40
CERT = f"%3\\{T}"
KEY = f"%9\\{T}"


def certificate(modified=NOW - 100, archived=False, smartcard=False, key=CERT) -> Item:
    return Item(
        key, StoreName.MY, ItemKind.CERTIFICATE, modified, "c" * 64, 500,
        archived=archived, expires=NOW * 2, smartcard=smartcard,
    )  # fmt: skip


def private_key(modified=NOW - 100, tombstone=False, owner=CERT) -> Item:
    return Item(
        KEY, StoreName.MY, ItemKind.KEY, modified, "" if tombstone else "k" * 64,
        0 if tombstone else 120, tombstone=tombstone, expires=NOW * 2, owner=owner,
    )  # fmt: skip


def plan(local, directory, base=None, owners=(), hold=()):
    return native_plan(
        local, directory, base, NOW, private_key_owners=owners, hold_keys=hold,
        directory_timestamp=NOW - 7,
    )  # fmt: skip


# --- the pure plan -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("enabled", "disabled", "windows", "expected"),
    [
        (True, None, True, True),
        (True, 0, True, True),
        (True, 1, True, True),  # self-healing still roams
        (True, KEY_ROAMING_OFF, True, False),
        (False, None, True, False),
        (True, None, False, False),  # a Linux host has no native client
    ],
)
def test_native_roaming_is_on_where_windows_policy_turns_it_on(
    enabled, disabled, windows, expected
):
    on = native_roaming_on(windows=windows, policy_enabled=enabled, key_roaming_disabled=disabled)
    assert on is expected


def test_n3_a_sealed_key_comes_to_the_certificate_windows_brought_without_it():
    local = {CERT: certificate(archived=True)}
    directory = {CERT: certificate(), KEY: private_key()}
    (download,) = plan(local, directory).download
    assert download.key == KEY
    assert download.archived  # archived as the certificate here is: Windows' flag stays


def test_n1_certificates_and_requests_are_left_to_windows_whichever_side_has_them():
    request = Item("%4\\" + "B" * 40, StoreName.REQUEST, ItemKind.REQUEST, NOW, "r" * 64, 300)
    newer_here = certificate(modified=NOW - 1)
    tombstone = Item(
        "%3\\" + "C" * 40, StoreName.MY, ItemKind.CERTIFICATE, NOW, "", 0, tombstone=True
    )
    local = {CERT: newer_here, request.key: request}
    directory = {CERT: certificate(), tombstone.key: tombstone}
    result = plan(local, directory, Base({tombstone.key: BaseEntry.of(certificate(), NOW - 9)}))
    assert result.is_empty and not result.conflicts and not result.refused
    # What reconcile would do with the same inputs: upload, tombstone, download.
    assert not reconcile(local, directory, None, Policy(), NOW).is_empty


def test_n2_windows_own_keys_are_never_uploaded():
    local = {CERT: certificate(), KEY: private_key()}
    assert plan(local, {CERT: certificate()}, owners={CERT}).is_empty


@pytest.mark.parametrize(
    ("local", "directory", "owners", "hold"),
    [
        ({}, {KEY: private_key()}, (), ()),  # the certificate has not roamed in yet
        ({CERT: certificate()}, {KEY: private_key()}, {CERT}, ()),  # Windows' (or a TPM's) key
        ({CERT: certificate(smartcard=True)}, {KEY: private_key()}, (), ()),  # the card's
        ({CERT: certificate()}, {KEY: private_key(tombstone=True)}, (), ()),  # Windows deletes
        ({CERT: certificate()}, {KEY: private_key()}, (), {KEY}),  # unusable envelope
        ({CERT: certificate(), KEY: private_key(modified=1)}, {KEY: private_key()}, (), ()),
    ],
    ids=["no certificate", "has a key", "smart card", "tombstone", "held", "already here"],
)
def test_n4_a_key_is_left_alone_unless_its_certificate_here_lacks_one(
    local, directory, owners, hold
):
    assert plan(local, directory, owners=owners, hold=hold).download == ()


def test_n5_the_base_keeps_what_it_had_and_records_only_what_agrees():
    old = BaseEntry.of(certificate(modified=NOW - 900, key="%3\\" + "D" * 40), NOW - 800)
    gone_elsewhere = BaseEntry.of(private_key(modified=NOW - 900), NOW - 800)
    local = {CERT: certificate()}
    directory = {CERT: certificate(), KEY: private_key()}
    result = plan(local, directory, Base({old.key: old, KEY: gone_elsewhere}))
    entries = result.base.entries
    assert entries[old.key] == old  # untouched: nothing here says what became of it
    assert entries[CERT] == BaseEntry.of(certificate(), NOW)  # both sides hold it: agreed now
    assert entries[KEY] == BaseEntry.of(result.download[0], NOW)  # downloaded now
    assert (result.base.last_sync, result.base.directory_timestamp) == (NOW, NOW - 7)
    assert result.is_current(NOW)


def test_n5_a_certificate_that_differs_between_the_sides_gets_no_base_entry():
    result = plan({CERT: certificate(modified=NOW - 1)}, {CERT: certificate()})
    assert CERT not in result.base.entries


# --- a sync of a Linux host, then a Windows host -----------------------------------------------


@pytest.fixture
def linux_uploaded():
    """The directory after a Linux host uploaded a certificate and its sealed key."""
    der, pkcs8 = make_credential("alice")
    certificate, key = certificate_items(der, pkcs8, NOW - 100, NOW * 2)
    items = [(certificate, der), (key, pkcs8)]
    directory, roaming_key = FakeDirectory(), new_roaming_key()
    sync_user(directory, USER_DN, FakeStore(items), FakeState(), Policy(), roaming_key, lambda: NOW)
    assert len(directory.values[KEY_ENVELOPES]) == 1
    return directory, roaming_key, der, pkcs8


def windows_sync(directory, roaming_key, windows, tmp_path, state=None):
    store = WindowsStore(str(tmp_path / "windows-store"), windows, lambda: NOW + 50)
    return sync_user(
        directory, USER_DN, store, state or FakeState(), Policy(), roaming_key,
        lambda: NOW + 50, native_roaming=True,
    )  # fmt: skip


def test_a_windows_host_gets_the_linux_key_for_the_certificate_windows_roamed(
    linux_uploaded, tmp_path
):
    directory, roaming_key, der, pkcs8 = linux_uploaded
    windows = FakeWindows()
    windows.put(der)  # what Windows' own client brought from the native token
    before = {name: list(values) for name, values in directory.values.items()}
    report = windows_sync(directory, roaming_key, windows, tmp_path)
    assert report.downloaded == (f"%9\\{thumb(der)}",)
    assert windows.certificates[("My", thumb(der))]["key"] == pkcs8
    assert directory.writes == 1 and directory.values == before  # the Linux host's one write


def test_a_windows_host_writes_nothing_to_the_directory_whatever_it_holds(linux_uploaded, tmp_path):
    directory, roaming_key, _, _ = linux_uploaded
    mine, mine_key = make_credential("alice on Windows")
    windows = FakeWindows()
    windows.put(mine, mine_key)  # Windows' own certificate and key: Windows roams them
    report = windows_sync(directory, roaming_key, windows, tmp_path)  # and alice's is not here
    assert (report.uploaded, report.tombstoned, report.downloaded) == ((), (), ())
    assert directory.writes == 1 and len(directory.values[ACCOUNT_CREDENTIALS]) == 1


def test_a_windows_key_that_will_not_export_is_never_replaced_by_the_sealed_one(
    linux_uploaded, tmp_path
):
    directory, roaming_key, der, _ = linux_uploaded
    _, tpm_key = make_credential("another key pair")
    windows = FakeWindows()
    windows.put(der, tpm_key, exportable=False)  # e.g. a TPM key Windows enrolled
    report = windows_sync(directory, roaming_key, windows, tmp_path)
    assert report.downloaded == () and not windows.called("import-pfx")
    assert windows.certificates[("My", thumb(der))]["key"] == tpm_key


def test_without_native_roaming_a_key_the_store_cannot_list_is_held_not_tombstoned(
    linux_uploaded, tmp_path
):
    directory, roaming_key, der, _ = linux_uploaded
    windows, state = FakeWindows(), FakeState()
    store = WindowsStore(str(tmp_path / "s"), windows, lambda: NOW + 50, non_exportable_keys=True)
    first = sync_user(directory, USER_DN, store, state, Policy(), roaming_key, lambda: NOW + 50)
    assert set(first.downloaded) == {f"%3\\{thumb(der)}", f"%9\\{thumb(der)}"}
    envelopes = list(directory.values[KEY_ENVELOPES])
    (tmp_path / "s" / "index.json").unlink()  # the bookkeeping is lost
    again = sync_user(directory, USER_DN, store, state, Policy(), roaming_key, lambda: NOW + 60)
    assert again.tombstoned == () and directory.values[KEY_ENVELOPES] == envelopes
    assert any("there but cannot be used" in warning for warning in again.warnings)
