"""The roaming key life cycle against a fake directory (exact-value LDAP semantics) and real
cache files: every branch of obtain_roaming_key, recovery, and what is never overwritten."""

from __future__ import annotations

import os
import stat

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from credroam.errors import DirectoryError
from credroam.roaming.directory import ROAMING_KEYS, apply_changes, decode_record, read_roaming
from credroam.roaming.envelope import (
    ScryptParams,
    new_roaming_key,
    password_record_cost,
    public_key_id,
    read_key_cache,
    recovery_key_id,
    unwrap_with_password,
    unwrap_with_recovery_key,
    wrap_with_password,
    wrap_with_recovery_key,
    write_key_cache,
)
from credroam.roaming.roamingkey import (
    RecordKind,
    RoamingKeyError,
    RoamingKeyUnavailable,
    encode_wrapped_key,
    obtain_roaming_key,
    parse_wrapped_keys,
    recover_with_recovery_key,
    roaming_key_id,
)
from credroam.tokens import format_dn_binary
from tests.unit.test_sync import GUID, NOW, USER_DN, FakeDirectory

CHEAP = ScryptParams(log2_n=10, r=8, p=1)  # production keeps the default cost
USER_ID = str(GUID)


@pytest.fixture(scope="module")
def recovery_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def public_pem(private_key: rsa.RSAPrivateKey) -> bytes:
    return private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


@pytest.fixture
def cache(tmp_path) -> str:
    return str(tmp_path / "cache" / "roaming.key")


def obtain(directory, cache_path, password="Passw0rd!", **kwargs):
    kwargs.setdefault("scrypt_params", CHEAP)
    return obtain_roaming_key(
        directory, USER_DN, password=password, cache_path=cache_path, now=NOW, **kwargs
    )


def wrapped_in(directory):
    return parse_wrapped_keys(read_roaming(directory, USER_DN))[0]


def values(directory) -> list[bytes]:
    return sorted(directory.values.get(ROAMING_KEYS, []))


def counts(directory) -> tuple[int, int]:
    return directory.searches, directory.writes


# --- first use, cache, new host ----------------------------------------------------------------


def test_first_use_creates_wraps_writes_and_caches_the_key(cache):
    directory = FakeDirectory()
    key, changes = obtain(directory, cache)
    assert counts(directory) == (1, 1)
    assert changes.actions == ("first use: created the roaming key", "added the password record")
    (record,) = wrapped_in(directory)
    assert record.kind is RecordKind.PASSWORD and record.key_id == roaming_key_id(key)
    assert unwrap_with_password(record.envelope, "Passw0rd!", user_id=USER_ID) == key
    assert read_key_cache(cache) == key and changes.cache_written
    assert stat.S_IMODE(os.stat(cache).st_mode) == 0o600
    assert key not in b"".join(values(directory))  # the key itself never goes to the directory


def test_a_valid_matching_cache_is_used_without_password_search_only(cache):
    directory = FakeDirectory()
    key, _ = obtain(directory, cache)
    directory.searches = directory.writes = 0
    again, changes = obtain(directory, cache, password=None)
    assert again == key and counts(directory) == (1, 0)
    assert not changes.changed and changes.operations == ()


def test_the_same_password_with_a_matching_cache_writes_nothing(cache):
    directory = FakeDirectory()
    key, _ = obtain(directory, cache)
    before = values(directory)
    again, changes = obtain(directory, cache)
    assert again == key and not changes.changed and values(directory) == before


def test_a_new_host_unwraps_the_directory_record_and_caches_it(cache, tmp_path):
    directory = FakeDirectory()
    key, _ = obtain(directory, cache)
    other_cache = str(tmp_path / "host-b" / "roaming.key")
    directory.writes = 0
    got, changes = obtain(directory, other_cache)
    assert got == key and directory.writes == 0
    assert changes.cache_written and read_key_cache(other_cache) == key


# --- password change, wrong password, distrusted cache --------------------------------------


def test_a_changed_password_rewraps_the_record_in_place(cache, tmp_path):
    directory = FakeDirectory()
    key, _ = obtain(directory, cache, password="old password")
    got, changes = obtain(directory, cache, password="new password", password_verified=True)
    assert got == key
    assert changes.actions == ("rewrapped the password record for the current password",)
    (record,) = wrapped_in(directory)  # replaced, not added beside the old one
    assert unwrap_with_password(record.envelope, "new password", user_id=USER_ID) == key
    fresh_host = str(tmp_path / "fresh" / "roaming.key")
    assert obtain(directory, fresh_host, password="new password")[0] == key
    with pytest.raises(RoamingKeyUnavailable):
        obtain(directory, str(tmp_path / "stale" / "roaming.key"), password="old password")


def test_a_wrong_password_without_cache_fails_naming_the_user_and_overwrites_nothing(
    cache, tmp_path
):
    directory = FakeDirectory()
    obtain(directory, cache)
    before, directory.writes = values(directory), 0
    no_cache = str(tmp_path / "other" / "roaming.key")
    with pytest.raises(RoamingKeyUnavailable, match=f"{USER_DN}.*opens none.*nothing was over"):
        obtain(directory, no_cache, password="wrong")
    assert values(directory) == before and directory.writes == 0
    assert not os.path.exists(no_cache)


@pytest.mark.parametrize("has_records", [True, False])
def test_no_password_and_no_cache_is_unavailable(cache, tmp_path, has_records):
    directory = FakeDirectory()
    if has_records:
        obtain(directory, cache)
    with pytest.raises(RoamingKeyUnavailable, match="no password"):
        obtain(directory, str(tmp_path / "none" / "roaming.key"), password=None)
    assert directory.writes == int(has_records)


def test_a_cache_that_matches_no_record_is_distrusted_and_replaced(cache):
    directory = FakeDirectory()
    key, _ = obtain(directory, cache)
    stale = new_roaming_key()  # e.g. the key of an earlier directory that was since reset
    write_key_cache(cache, stale)
    with pytest.raises(RoamingKeyUnavailable, match="matches no record"):
        obtain(directory, cache, password=None)
    got, changes = obtain(directory, cache)
    assert got == key and read_key_cache(cache) == key and directory.writes == 1
    assert changes.actions[0] == "cached key matched no record: replaced by the directory's"
    assert changes.retired == (stale,)  # what it may have sealed is re-sealed by the sync


def test_a_cached_key_is_wrapped_when_the_directory_holds_no_record(cache):
    key = new_roaming_key()
    os.makedirs(os.path.dirname(cache))
    write_key_cache(cache, key)
    directory = FakeDirectory()
    got, changes = obtain(directory, cache)
    assert got == key and directory.writes == 1 and not changes.cache_written
    assert [w.key_id for w in wrapped_in(directory)] == [roaming_key_id(key)]


def test_an_unsafe_cache_is_not_used_and_the_reason_is_reported(cache):
    directory = FakeDirectory()
    key, _ = obtain(directory, cache)
    os.chmod(cache, 0o644)
    with pytest.raises(RoamingKeyUnavailable):
        obtain(directory, cache, password=None)
    got, changes = obtain(directory, cache)
    assert got == key and any("0644" in problem for problem in changes.problems)


# --- recovery records ------------------------------------------------------------------------


def test_a_configured_recovery_key_gets_a_record_once(cache, recovery_key):
    directory = FakeDirectory()
    key, _ = obtain(directory, cache)
    pem = public_pem(recovery_key)
    _, changes = obtain(directory, cache, password=None, recovery_public_keys=[pem])
    assert changes.actions == (
        f"added a recovery record for recovery key {public_key_id(pem)[:16]}",
    )
    recovery = [w for w in wrapped_in(directory) if w.kind is RecordKind.RECOVERY]
    assert [w.recovery_key_id for w in recovery] == [public_key_id(pem)]
    assert unwrap_with_recovery_key(recovery[0].envelope, recovery_key, user_id=USER_ID) == key
    directory.writes = 0
    assert not obtain(directory, cache, recovery_public_keys=[pem])[1].changed
    assert directory.writes == 0


def test_public_key_id_is_the_id_envelope_records_carry(recovery_key):
    pem = public_pem(recovery_key)
    record = wrap_with_recovery_key(new_roaming_key(), pem, user_id=USER_ID)
    assert public_key_id(pem) == recovery_key_id(record)


def test_recovery_sets_a_new_password_record_after_a_reset(cache, recovery_key, tmp_path):
    directory = FakeDirectory()
    pem = public_pem(recovery_key)
    key, _ = obtain(directory, cache, password="forgotten", recovery_public_keys=[pem])
    got, changes = recover_with_recovery_key(
        directory,
        USER_DN,
        recovery_private_key=recovery_key,
        new_password="reset by helpdesk",
        now=NOW,
        scrypt_params=CHEAP,
    )
    assert got == key and len(changes.operations) == 1
    kinds = sorted(w.kind for w in wrapped_in(directory))
    assert kinds == [RecordKind.PASSWORD, RecordKind.RECOVERY]  # replaced, recovery kept
    new_host = str(tmp_path / "new" / "roaming.key")
    assert obtain(directory, new_host, password="reset by helpdesk")[0] == key
    with pytest.raises(RoamingKeyUnavailable):
        obtain(directory, str(tmp_path / "x" / "roaming.key"), password="forgotten")


def test_recovery_from_a_pem_with_a_password(cache, recovery_key):
    directory = FakeDirectory()
    key, _ = obtain(directory, cache, recovery_public_keys=[public_pem(recovery_key)])
    encrypted = recovery_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"vault"),
    )
    recover = dict(new_password="n", now=NOW, scrypt_params=CHEAP, recovery_private_key=encrypted)
    with pytest.raises(RoamingKeyError, match="cannot load the recovery private key"):
        recover_with_recovery_key(directory, USER_DN, recovery_key_password=b"nope", **recover)
    got, _ = recover_with_recovery_key(
        directory, USER_DN, recovery_key_password=b"vault", **recover
    )
    assert got == key


def test_recovery_with_another_recovery_key_or_no_record_is_unavailable(cache, recovery_key):
    directory = FakeDirectory()
    obtain(directory, cache)  # no recovery record at all
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    for private_key in (recovery_key, other):
        with pytest.raises(RoamingKeyUnavailable, match="no recovery record"):
            recover_with_recovery_key(
                directory,
                USER_DN,
                recovery_private_key=private_key,
                new_password="n",
                now=NOW,
                scrypt_params=CHEAP,
            )
    assert directory.writes == 1


# --- hostile or damaged values, check mode, record mode, races ----------------------------------


def add_raw(directory, blob: bytes) -> bytes:
    raw = format_dn_binary(blob, USER_DN).encode()
    directory.values.setdefault(ROAMING_KEYS, []).append(raw)
    return raw


def test_a_password_not_proven_current_never_rewraps_the_record(cache, tmp_path):
    # A typo must not become the password every new host needs: only a proven password rewraps.
    directory = FakeDirectory()
    key, _ = obtain(directory, cache, password="right password")
    before = values(directory)
    got, changes = obtain(directory, cache, password="typo password")
    assert got == key and not changes.changed
    assert values(directory) == before
    assert any("not rewrapped" in problem for problem in changes.problems)
    fresh_host = str(tmp_path / "fresh" / "roaming.key")
    assert obtain(directory, fresh_host, password="right password")[0] == key


def test_foreign_values_are_ignored_reported_and_never_deleted(cache):
    directory = FakeDirectory()
    key, _ = obtain(directory, cache)
    garbage = add_raw(directory, b"not a credroam record at all")
    # rewrap the password record
    got, changes = obtain(directory, cache, password="changed", password_verified=True)
    assert got == key and directory.writes == 2
    assert any("unknown format" in p for p in changes.problems)
    assert garbage in directory.values[ROAMING_KEYS]


def test_a_record_whose_header_lies_about_its_key_is_not_used(cache):
    directory = FakeDirectory()
    claimed = new_roaming_key()
    liar = wrap_with_password(new_roaming_key(), "Passw0rd!", user_id=USER_ID, scrypt_params=CHEAP)
    lying = add_raw(directory, encode_wrapped_key(roaming_key_id(claimed), liar))
    with pytest.raises(RoamingKeyUnavailable):
        obtain(directory, cache)
    assert directory.values[ROAMING_KEYS] == [lying] and directory.writes == 0


def test_a_record_for_another_user_does_not_open(cache):
    directory = FakeDirectory()
    foreign = wrap_with_password(
        new_roaming_key(), "Passw0rd!", user_id="someone else", scrypt_params=CHEAP
    )
    add_raw(directory, encode_wrapped_key(roaming_key_id(b"x" * 32), foreign))
    with pytest.raises(RoamingKeyUnavailable):
        obtain(directory, cache)


def test_check_mode_plans_the_first_use_and_writes_nothing(cache):
    directory = FakeDirectory()
    _, changes = obtain(directory, cache, check_mode=True)
    assert changes.check_mode and changes.changed and len(changes.operations) == 1
    assert directory.writes == 0 and not os.path.exists(cache)


def test_with_a_record_the_caller_applies_the_changes(cache):
    directory = FakeDirectory()
    record = read_roaming(directory, USER_DN)
    key, changes = obtain(record, cache)
    assert directory.writes == 0 and changes.operations == ()
    assert not changes.cache_written  # the directory does not hold this key yet
    apply_changes(directory, record, changes.changes, now=NOW)
    again, later = obtain(read_roaming(directory, USER_DN), cache)
    assert again == key and later.cache_written and not later.changes


def test_a_concurrent_first_use_elsewhere_wins_and_this_host_adopts_its_key(cache, tmp_path):
    directory = FakeDirectory()
    other_cache = str(tmp_path / "other" / "roaming.key")
    directory.before_modify.append(lambda: obtain(directory, other_cache))
    key, _ = obtain(directory, cache)
    assert key == read_key_cache(other_cache) == read_key_cache(cache)
    assert len(wrapped_in(directory)) == 1  # one key, not two


def test_writers_that_never_stop_give_a_bounded_error(cache):
    directory = FakeDirectory()
    directory.modify = lambda dn, changes: setattr(directory, "result", {"result": 16}) or False
    with pytest.raises(DirectoryError, match="after 2 attempts"):
        obtain(directory, cache, max_attempts=2)
    assert not os.path.exists(cache)


def test_an_unreadable_object_guid_is_a_clear_error(cache):
    record = decode_record(USER_DN, {})
    with pytest.raises(RoamingKeyError, match="objectGUID"):
        obtain(record, cache)


# --- the scrypt cost of the password record is raised at the next logon -----------------------

WEAKER = ScryptParams(log2_n=8, r=8, p=1)  # stands for the old default, below CHEAP


@pytest.mark.parametrize("with_cache", [True, False], ids=["cached key", "new host"])
def test_a_password_record_below_the_current_cost_is_rewrapped_at_the_next_logon(
    cache, tmp_path, with_cache
):
    directory = FakeDirectory()
    key, _ = obtain(directory, cache, scrypt_params=WEAKER)
    cache_path = cache if with_cache else str(tmp_path / "other-host" / "roaming.key")

    again, changes = obtain(directory, cache_path)  # the logon: password given, default CHEAP

    assert again == key
    (record,) = wrapped_in(directory)  # replaced, not added beside the weak one
    assert password_record_cost(record.envelope) == CHEAP
    assert unwrap_with_password(record.envelope, "Passw0rd!", user_id=USER_ID) == key
    assert any("rewrapped the password record at scrypt n=2^10" in a for a in changes.actions)
    directory.writes = 0
    obtain(directory, cache_path)
    assert directory.writes == 0  # at the current cost now: nothing more to do


def test_a_background_sync_without_password_leaves_a_weak_record_for_the_logon(cache):
    directory = FakeDirectory()
    obtain(directory, cache, scrypt_params=WEAKER)
    _, changes = obtain(directory, cache, password=None)
    assert not changes.changes
    (record,) = wrapped_in(directory)
    assert password_record_cost(record.envelope) == WEAKER


def test_a_record_stronger_than_the_current_cost_is_left_as_it_is(cache):
    directory = FakeDirectory()
    obtain(directory, cache, scrypt_params=ScryptParams(log2_n=11, r=8, p=1))
    _, changes = obtain(directory, cache)
    assert not changes.changes
