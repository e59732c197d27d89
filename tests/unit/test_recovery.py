"""Recovery copies: kept aside when sync deletes an item locally, sealed under the roaming key,
removed after the policy's retention unless the deletion's order could not be decided (R18)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from credroam.gpo.resolve import GpoSettings
from credroam.gpo.settings import AGENT_POLICY
from credroam.roaming.envelope import WrongUser, new_roaming_key
from credroam.roaming.model import Item, Policy, ReconcileError
from credroam.roaming.store import recovery
from credroam.roaming.store.file import FileStore
from credroam.roaming.sync import sync_user
from credroam.timestamps import TICKS_PER_DAY
from tests.credentials import certificate_items, new_pkcs8
from tests.unit.test_sync import GUID, NOW, USER_DN, FakeDirectory, FakeState

KEPT = NOW - 10  # the store clock when a copy is kept
USER_ID = str(GUID)
RETENTION = 30 * TICKS_PER_DAY


@pytest.fixture
def pair(make_certificate_der) -> tuple[tuple[Item, bytes], tuple[Item, bytes]]:
    """(certificate item, DER), (its key's item, PKCS#8 DER)."""
    der, key = make_certificate_der("alice"), new_pkcs8()
    cert_item, key_item = certificate_items(der, key, NOW - 100, NOW * 2)
    return (cert_item, der), (key_item, key)


@pytest.fixture
def store(tmp_path: Path, pair) -> FileStore:
    store = FileStore(str(tmp_path / "store"), clock=lambda: KEPT)
    for item, payload in pair:
        store.write(item, payload)
    return store


def recovery_files(store: FileStore) -> dict[str, bytes]:
    root = Path(store.root) / "recovery"
    return {
        str(path.relative_to(root)): path.read_bytes()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def tend(store: FileStore, roaming_key: bytes | None, now: int = NOW) -> list[str]:
    return store.tend_recovery(roaming_key, USER_ID, RETENTION, now)


# --- the store's recovery area ----------------------------------------------------------------


def test_a_deleted_key_is_kept_aside_unlisted_then_sealed_under_the_roaming_key(store, pair):
    (cert_item, _), (key_item, key) = pair
    roaming_key = new_roaming_key()
    store.delete(key_item, keep_copy=True)
    store.delete(cert_item)
    assert store.items() == {}
    [(name, content)] = recovery_files(store).items()
    assert name.startswith(f"{key_item.key[3:]}.key.pem.{KEPT}.") and name.endswith(".unsealed")

    notes = tend(store, roaming_key)

    assert notes == [f"sealed the recovery copy of {key_item.key[3:]}.key.pem"]
    [(name, sealed)] = recovery_files(store).items()
    assert name.startswith(f"{key_item.key[3:]}.key.pem.{KEPT}.") and name.endswith(".sealed")
    assert content not in sealed and b"PRIVATE KEY" not in sealed  # no plaintext left
    path = Path(store.root) / "recovery" / name
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    [copy] = recovery.copies(store.root, [])
    assert store_module_unpem(recovery.open_copy(copy, roaming_key, USER_ID)) == key
    with pytest.raises(WrongUser):
        recovery.open_copy(copy, roaming_key, "another user")


def store_module_unpem(pem: bytes) -> bytes:
    from credroam.roaming.store.file import _unpem

    return _unpem("PRIVATE KEY", pem)


def test_without_a_roaming_key_a_copy_stays_private_and_is_reported(store, pair):
    (_, _), (key_item, _) = pair
    store.delete(key_item, keep_copy=True)
    notes = tend(store, None)
    assert any("1 recovery copy" in note and "not sealed" in note for note in notes)
    [(name, _)] = recovery_files(store).items()
    assert name.endswith(".unsealed")
    assert stat.S_IMODE((Path(store.root) / "recovery" / name).stat().st_mode) == 0o600
    tend(store, new_roaming_key())  # the next sync that has the key seals it
    [name] = recovery_files(store)
    assert name.endswith(".sealed")


def test_ordinary_copies_go_after_the_retention_and_undecided_ones_stay(store, pair):
    (cert_item, _), (key_item, _) = pair
    roaming_key = new_roaming_key()
    store.delete(cert_item, keep_copy=True)
    store.delete(key_item, keep_copy=True, undecided=True)  # R18: order unknown
    tend(store, roaming_key)
    assert len(recovery_files(store)) == 2

    tend(store, roaming_key, now=KEPT + RETENTION - 1)
    assert len(recovery_files(store)) == 2  # not yet
    notes = tend(store, roaming_key, now=KEPT + RETENTION)

    [name] = recovery_files(store)
    assert name.startswith(f"{recovery.UNDECIDED}/{key_item.key[3:]}.key.pem.")
    assert any(note.startswith("removed the recovery copy") for note in notes)
    assert any("wait for the user or an admin" in note for note in notes)
    tend(store, roaming_key, now=KEPT + 100 * RETENTION)
    assert list(recovery_files(store)) == [name]  # until someone decides


def test_each_deletion_keeps_its_own_copy(store, pair):
    (cert_item, cert), _ = pair
    store.delete(cert_item, keep_copy=True)
    store.write(cert_item, cert)  # the same version again
    store.delete(cert_item, keep_copy=True)
    tend(store, new_roaming_key())
    assert len(recovery_files(store)) == 2


def test_plaintext_copies_of_earlier_releases_are_sealed_and_then_expire(store, pair):
    (_, _), (key_item, _) = pair
    folder = Path(store.root) / "recovery"
    folder.mkdir(mode=0o700)
    legacy = folder / f"{key_item.key[3:]}.key.pem.{key_item.modified}.0a1b2c3d"
    legacy.write_bytes(b"-----BEGIN PRIVATE KEY-----\n...\n-----END PRIVATE KEY-----\n")
    legacy.chmod(0o600)
    (folder / "notes.txt").write_text("left by hand")

    notes = tend(store, new_roaming_key(), now=NOW)

    sealed = [name for name in recovery_files(store) if name.endswith(".sealed")]
    assert len(sealed) == 1 and f".key.pem.{NOW}." in sealed[0]  # retention counts from now
    assert not legacy.exists()
    assert any("notes.txt: not a recovery copy; left alone" in note for note in notes)
    tend(store, new_roaming_key(), now=NOW + RETENTION)
    assert list(recovery_files(store)) == ["notes.txt"]


def test_a_symlink_planted_in_the_recovery_area_is_left_alone(store, tmp_path):
    folder = Path(store.root) / "recovery"
    folder.mkdir(mode=0o700)
    target = tmp_path / "elsewhere"
    target.write_bytes(b"secret")
    planted = folder / f"{'A' * 40}.key.pem.{KEPT}.0a1b2c3d.unsealed"
    os.symlink(target, planted)
    notes = tend(store, new_roaming_key())
    assert planted.is_symlink() and target.read_bytes() == b"secret"
    assert any(str(planted) in note for note in notes)


def test_a_recovery_folder_replaced_by_a_symlink_is_not_followed(store, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    outside = elsewhere / f"{'A' * 40}.key.pem.{KEPT}.0a1b2c3d.unsealed"
    outside.write_bytes(b"not the store's")
    os.symlink(elsewhere, Path(store.root) / "recovery")
    notes = tend(store, new_roaming_key(), now=KEPT + 2 * RETENTION)
    assert outside.read_bytes() == b"not the store's"  # neither sealed nor removed
    assert any("not a real directory" in note for note in notes)


# --- the policy -------------------------------------------------------------------------------


def test_the_retention_defaults_to_the_tombstone_days_and_can_be_set():
    assert Policy().recovery_retention_ticks == 60 * TICKS_PER_DAY
    assert Policy(tombstone_days=90).recovery_retention_ticks == 90 * TICKS_PER_DAY
    assert Policy(recovery_retention_days=7).recovery_retention_ticks == 7 * TICKS_PER_DAY
    with pytest.raises(ReconcileError, match="recovery_retention_days"):
        Policy(recovery_retention_days=0)


def test_the_gpo_agent_settings_carry_the_retention_into_the_policy():
    setting = AGENT_POLICY.setting("recovery_retention_days")
    assert (setting.value_name, setting.kind) == ("RecoveryRetentionDays", "int")
    assert (setting.minimum, setting.maximum, setting.default) == (1, 3650, None)
    unset = GpoSettings(values={"tombstone_days": 90}).roaming_policy()
    assert unset.recovery_retention_ticks == 90 * TICKS_PER_DAY  # not configured: tombstone days
    configured = GpoSettings(values={"recovery_retention_days": 14}).roaming_policy()
    assert configured.recovery_retention_ticks == 14 * TICKS_PER_DAY


# --- through a sync ---------------------------------------------------------------------------


def test_a_key_deleted_elsewhere_leaves_a_sealed_copy_that_goes_after_the_retention(tmp_path, pair):
    directory, roaming_key = FakeDirectory(), new_roaming_key()
    laptop = FileStore(str(tmp_path / "laptop"), clock=lambda: NOW)
    desktop = FileStore(str(tmp_path / "desktop"), clock=lambda: NOW + 20)
    for item, payload in pair:
        laptop.write(item, payload)
    laptop_state, desktop_state = FakeState(), FakeState()
    policy = Policy(recovery_retention_days=30)

    def sync(store, state, now):
        return sync_user(directory, USER_DN, store, state, policy, roaming_key, lambda: now)

    sync(laptop, laptop_state, NOW)
    sync(desktop, desktop_state, NOW + 10)  # downloads both
    for item, _ in pair:
        laptop.delete(item)  # deleted by the user on the laptop
    sync(laptop, laptop_state, NOW + 20)  # tombstones

    report = sync(desktop, desktop_state, NOW + 30)

    assert desktop.items() == {}
    assert len(report.recovery) == 2 and all(n.startswith("sealed") for n in report.recovery)
    copies = recovery.copies(desktop.root, [])
    assert len(copies) == 2 and all(c.sealed and not c.undecided for c in copies)
    later = sync(desktop, desktop_state, NOW + 20 + 30 * TICKS_PER_DAY)
    assert recovery.copies(desktop.root, []) == []
    assert sum(note.startswith("removed the recovery copy") for note in later.recovery) == 2
