"""The helpdesk's key recovery against the fake directory: a one-time record that the user's
next login replaces, and rotating the organisation's recovery key (check mode, idempotence,
the old key no longer opening)."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from credroam.roaming.envelope import public_key_id, unwrap_with_password
from credroam.roaming.roamingkey import (
    RecordKind,
    RoamingKeyError,
    RoamingKeyUnavailable,
    recover_with_recovery_key,
    rotate_recovery_key,
)
from tests.unit.test_roamingkey import CHEAP, USER_ID, obtain, public_pem, values, wrapped_in
from tests.unit.test_sync import NOW, USER_DN, FakeDirectory

SECRET = "7QK4-M2XD-9PLA-WW3R"


@pytest.fixture(scope="module")
def old_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def new_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def reset_user(tmp_path, old_key):
    """A user whose key has password and recovery records; then the helpdesk's one-time record
    replaced the password record after a reset. Returns (directory, key)."""
    directory = FakeDirectory()
    host1 = str(tmp_path / "host1" / "roaming.key")
    key, _ = obtain(
        directory, host1, password="forgotten", recovery_public_keys=[public_pem(old_key)]
    )
    recover_with_recovery_key(
        directory,
        USER_DN,
        recovery_private_key=old_key,
        new_password=SECRET,
        now=NOW,
        scrypt_params=CHEAP,
    )
    return directory, key


def test_the_next_login_opens_the_one_time_record_and_replaces_it(reset_user, tmp_path):
    directory, key = reset_user
    host2 = str(tmp_path / "host2" / "roaming.key")
    with pytest.raises(RoamingKeyUnavailable):  # the new password alone opens nothing
        obtain(directory, host2, password="chosen by the user", password_verified=True)
    got, changes = obtain(
        directory,
        host2,
        password="chosen by the user",
        password_verified=True,
        one_time_secret=SECRET,
    )
    assert got == key and changes.cache_written
    assert changes.actions == (
        "opened the one-time record the helpdesk set",
        "rewrapped the password record for the current password",
    )
    (password_record,) = [w for w in wrapped_in(directory) if w.kind is RecordKind.PASSWORD]
    assert unwrap_with_password(password_record.envelope, "chosen by the user", user_id=USER_ID)
    # The secret was one-time: it opens nothing any more; the user's password does.
    with pytest.raises(RoamingKeyUnavailable, match="one-time secret opens none"):
        obtain(directory, str(tmp_path / "h3" / "k"), password="x", one_time_secret=SECRET)
    assert obtain(directory, str(tmp_path / "h4" / "k"), password="chosen by the user")[0] == key


def test_a_one_time_secret_with_a_password_not_proven_current_is_used_but_not_consumed(
    reset_user, tmp_path
):
    directory, key = reset_user
    before = values(directory)
    got, changes = obtain(
        directory, str(tmp_path / "h" / "k"), password="typo", one_time_secret=SECRET
    )
    assert got == key and values(directory) == before
    assert any("not rewrapped" in problem for problem in changes.problems)


def test_a_wrong_one_time_secret_writes_nothing(reset_user, tmp_path):
    directory, _ = reset_user
    before = values(directory)
    with pytest.raises(RoamingKeyUnavailable, match="one-time secret"):
        obtain(
            directory,
            str(tmp_path / "h" / "k"),
            password="chosen",
            password_verified=True,
            one_time_secret="not it",
        )
    assert values(directory) == before


def rotate(directory, old_key, new_key, **kwargs):
    return rotate_recovery_key(
        directory,
        USER_DN,
        old_private_key=old_key,
        new_public_key=public_pem(new_key),
        now=NOW,
        **kwargs,
    )


def recovery_ids(directory) -> list[str]:
    return [w.recovery_key_id for w in wrapped_in(directory) if w.kind is RecordKind.RECOVERY]


def test_rotation_check_mode_plans_one_modify_and_writes_nothing(reset_user, old_key, new_key):
    directory, _ = reset_user
    before, writes = values(directory), directory.writes
    planned = rotate(directory, old_key, new_key, check_mode=True)
    assert planned.changed and len(planned.operations) == 1 and planned.check_mode
    assert values(directory) == before and directory.writes == writes


def test_rotation_rewraps_for_the_new_key_once_and_the_old_key_no_longer_opens(
    reset_user, old_key, new_key
):
    directory, key = reset_user
    done = rotate(directory, old_key, new_key)
    assert done.changed and [a.split()[0] for a in done.actions] == ["added", "removed"]
    assert recovery_ids(directory) == [public_key_id(public_pem(new_key))]
    again = rotate(directory, old_key, new_key)
    assert not again.changed and again.operations == ()
    recover = dict(new_password="s", now=NOW, scrypt_params=CHEAP)
    with pytest.raises(RoamingKeyUnavailable, match="no recovery record"):
        recover_with_recovery_key(directory, USER_DN, recovery_private_key=old_key, **recover)
    got, _ = recover_with_recovery_key(directory, USER_DN, recovery_private_key=new_key, **recover)
    assert got == key


def test_rotation_where_the_new_record_exists_only_removes_the_old(tmp_path, old_key, new_key):
    directory = FakeDirectory()
    both = [public_pem(old_key), public_pem(new_key)]
    obtain(directory, str(tmp_path / "k"), recovery_public_keys=both)
    done = rotate(directory, old_key, new_key)
    assert [a.split()[0] for a in done.actions] == ["removed"]
    assert recovery_ids(directory) == [public_key_id(public_pem(new_key))]


def test_rotation_reports_a_user_without_any_recovery_record(tmp_path, old_key, new_key):
    directory = FakeDirectory()
    obtain(directory, str(tmp_path / "k"))
    result = rotate(directory, old_key, new_key)
    assert not result.changed
    assert result.problems == (
        f"{USER_DN} holds no recovery record: the helpdesk cannot recover its key",
    )


def test_rotating_to_the_same_key_is_refused(reset_user, old_key):
    directory, _ = reset_user
    with pytest.raises(RoamingKeyError, match="is the old one"):
        rotate(directory, old_key, old_key)
