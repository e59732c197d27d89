"""The sync engine with a fake directory (exact-value LDAP semantics) and a fake local store."""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import struct
import uuid

import ldap3
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.x509.oid import NameOID

from credroam.roaming.certelement import certificate_token, thumbprint
from credroam.roaming.directory import ACCOUNT_CREDENTIALS, KEY_ENVELOPES
from credroam.roaming.envelope import new_roaming_key
from credroam.roaming.model import (
    MAX_PLAN_AGE,
    TICKS_PER_DAY,
    Base,
    Item,
    ItemKind,
    Policy,
    StoreName,
)
from credroam.roaming.state import StateFile
from credroam.roaming.store.file import FileStore
from credroam.roaming.sync import SyncBusy, SyncError, SyncStep, sync_user
from credroam.tokens import (
    Token,
    TokenError,
    TokenFlags,
    TokenType,
    decode_token,
    encode_token,
    format_dn_binary,
    parse_dn_binary,
)
from tests.credentials import certificate_items, new_pkcs8

USER_DN = "CN=alice,OU=Roaming,DC=lab,DC=example"
GUID = uuid.UUID("6f1c9a52-0a5e-4d8b-9b1e-1d2c3b4a5f60")
NOW = 134_000_000_000_000_000
ALLOWED = [b"msPKIAccountCredentials", b"credroamKeyEnvelopes", b"credroamRoamingKeys"]


class FakeDirectory:
    """One user entry; modifies are atomic and fail like AD on a missing or duplicate value."""

    def __init__(self):
        self.server = type("Server", (), {"host": "dc1.lab.example"})()
        self.values: dict[str, list[bytes]] = {}
        self.searches = 0
        self.writes = 0
        self.before_modify = []  # callables run before a modify (a concurrent writer)
        self.result, self.response = {}, []

    def search(self, base, search_filter, search_scope=None, attributes=None):
        self.searches += 1
        raw = {name: list(values) for name, values in self.values.items() if values}
        raw.update({"objectGUID": [GUID.bytes_le], "allowedAttributes": ALLOWED})
        self.result = {"result": 0}
        self.response = [{"type": "searchResEntry", "dn": USER_DN, "raw_attributes": raw}]
        return True

    def modify(self, dn, changes):
        if self.before_modify:
            self.before_modify.pop(0)()
        self.writes += 1
        staged = {name: list(values) for name, values in self.values.items()}
        for attribute, operations in changes.items():
            current = staged.setdefault(attribute, [])
            for operation, values in operations:
                for value in values:
                    if operation == ldap3.MODIFY_DELETE and value not in current:
                        self.result = {"result": 16, "message": "gone"}
                        return False
                    if operation == ldap3.MODIFY_ADD and value in current:
                        self.result = {"result": 20, "message": "exists"}
                        return False
                    if operation == ldap3.MODIFY_DELETE:
                        current.remove(value)
                    else:
                        current.append(value)
        self.values = staged
        self.result = {"result": 0}
        return True


class FakeStore:
    """An in-memory store that insists on being used under its own lock, as sync must."""

    def __init__(self, entries=()):
        self.entries = {item.key: (item, payload) for item, payload in entries}
        self.writes, self.fail_on = [], set()
        self.locked = False
        self.lock_timeouts = []
        self.problems = []

    def _check_locked(self):
        assert self.locked, "store used outside its lock"

    def items(self):
        self._check_locked()
        return {key: item for key, (item, _) in self.entries.items()}

    def read(self, item):
        self._check_locked()
        return self.entries[item.key][1]

    def write(self, item, payload):
        self._check_locked()
        if item.key in self.fail_on:
            raise OSError("disk full")
        self.writes.append(item.key)
        self.entries[item.key] = (item, payload)

    def delete(self, item, *, keep_copy=False, undecided=False):
        self._check_locked()
        self.writes.append(("delete", item.key))
        del self.entries[item.key]

    def tend_recovery(self, roaming_key, user_id, retention_ticks, now):
        self._check_locked()
        return []

    def archive(self, item):
        raise AssertionError("sync archives by writing the archived version")

    @contextlib.contextmanager
    def batch(self):
        self._check_locked()
        yield

    @contextlib.contextmanager
    def lock(self, timeout=0):
        self.lock_timeouts.append(timeout)
        assert not self.locked, "store locked twice"
        self.locked = True
        try:
            yield
        finally:
            self.locked = False


class FakeState:
    def __init__(self):
        self.base: Base | None = None
        self.saves = 0

    def load(self):
        return self.base

    def save(self, base):
        self.base, self.saves = base, self.saves + 1


@pytest.fixture
def cert_and_key(make_certificate_der):
    der, key = make_certificate_der("alice"), new_pkcs8()
    cert_item, key_item = certificate_items(der, key, NOW - 100, NOW * 2)
    return (cert_item, der), (key_item, key)


def run(directory, store, state, roaming_key, now=NOW, **kwargs):
    return sync_user(directory, USER_DN, store, state, Policy(), roaming_key, lambda: now, **kwargs)


def test_first_sync_uploads_and_a_second_costs_one_search_and_no_write(cert_and_key):
    directory, store, state, roaming_key = (
        FakeDirectory(),
        FakeStore(cert_and_key),
        FakeState(),
        new_roaming_key(),
    )
    report = run(directory, store, state, roaming_key)
    (cert_item, _), (key_item, key) = cert_and_key
    assert set(report.uploaded) == {cert_item.key, key_item.key}
    assert directory.writes == 1 and len(directory.values[KEY_ENVELOPES]) == 1
    assert key not in directory.values[KEY_ENVELOPES][0]  # only the sealed key leaves the host
    directory.searches = directory.writes = 0
    again = run(directory, store, state, roaming_key, now=NOW + 10)
    assert (directory.searches, directory.writes) == (1, 0)
    assert not again.changed and again.operations == ()


def test_a_plan_gone_stale_before_its_write_is_made_again_at_the_current_time(cert_and_key):
    # R32: the base records "seen in the directory" at the plan's time, so a plan must not be
    # written long after it was made (a slow DC, a suspended host): re-read and re-plan instead.
    directory, store, state = FakeDirectory(), FakeStore(cert_and_key), FakeState()
    late = NOW + MAX_PLAN_AGE + 1
    times = iter([NOW, late, late, late])
    report = sync_user(
        directory, USER_DN, store, state, Policy(), new_roaming_key(), lambda: next(times)
    )
    assert report.attempts == 2 and directory.searches == 2 and directory.writes == 1
    assert {entry.last_seen_in_directory for entry in state.base.entries.values()} == {late}


def test_a_new_host_downloads_certificate_and_key(cert_and_key):
    directory, roaming_key = FakeDirectory(), new_roaming_key()
    run(directory, FakeStore(cert_and_key), FakeState(), roaming_key)
    fresh = FakeStore()
    report = run(directory, fresh, FakeState(), roaming_key, now=NOW + 5)
    (cert_item, der), (key_item, key) = cert_and_key
    assert set(report.downloaded) == {cert_item.key, key_item.key}
    assert fresh.entries[cert_item.key][1] == der and fresh.entries[key_item.key][1] == key


def test_a_concurrent_writer_makes_sync_reread_and_converge(cert_and_key, make_certificate_der):
    directory, roaming_key = FakeDirectory(), new_roaming_key()
    other_host = FakeStore([cert_and_key[0]])
    other_der = make_certificate_der("other")
    other_item = Item(
        f"%3\\{thumbprint(other_der)}",
        StoreName.MY,
        ItemKind.CERTIFICATE,
        NOW - 50,
        hashlib.sha256(other_der).hexdigest(),
        len(other_der),
    )
    racing = FakeStore([(other_item, other_der)])
    directory.before_modify.append(lambda: run(directory, racing, FakeState(), roaming_key))
    report = run(directory, other_host, FakeState(), roaming_key)
    assert report.attempts == 2
    assert len(directory.values[ACCOUNT_CREDENTIALS]) == 2  # nothing lost
    assert other_item.key in report.downloaded


def test_sync_gives_up_after_bounded_retries(cert_and_key):
    directory = FakeDirectory()
    directory.modify = lambda dn, changes: setattr(directory, "result", {"result": 16}) or False
    with pytest.raises(SyncError, match="after 3 attempts"):
        run(directory, FakeStore(cert_and_key), FakeState(), new_roaming_key(), max_attempts=3)


def test_a_cve_named_token_is_rejected_and_nothing_is_written_locally():
    name = rb"..\..\Windows\Start Menu\Programs\Startup\x.bat"
    blob = struct.pack("<3s93sQHH20sI", b"%3\\", name, NOW, 0, 0, bytes(20), 0)
    directory = FakeDirectory()
    directory.values[ACCOUNT_CREDENTIALS] = [format_dn_binary(blob, USER_DN).encode()]
    store = FakeStore()
    report = run(directory, store, FakeState(), new_roaming_key())
    assert [r.check for r in report.rejected] == ["identifier"]
    assert store.writes == [] and directory.writes == 0


def test_a_key_sealed_for_another_user_is_rejected(cert_and_key):
    directory, roaming_key = FakeDirectory(), new_roaming_key()
    run(directory, FakeStore(cert_and_key), FakeState(), roaming_key)
    report = run(directory, FakeStore(), FakeState(), new_roaming_key())  # wrong roaming key
    assert [r.check for r in report.rejected] == ["envelope"]
    assert report.downloaded == (cert_and_key[0][0].key,)


def test_check_mode_writes_nothing_anywhere(cert_and_key):
    directory, store, state = FakeDirectory(), FakeStore(cert_and_key), FakeState()
    report = run(directory, store, state, new_roaming_key(), check_mode=True)
    assert report.check_mode and len(report.directory_changes) == 2
    # The planned modify, in the shape ad_gpo and ad_schema report theirs, with no key bytes.
    (operation,) = report.operations
    assert (operation["kind"], operation["target"]) == ("ldap_modify", USER_DN)
    assert json.loads(json.dumps(operation)) == operation
    assert operation["changes"][ACCOUNT_CREDENTIALS] == [{"op": "add", "values": 1}]
    assert (directory.writes, state.saves, store.writes) == (0, 0, [])


def test_a_local_failure_keeps_the_old_base_and_the_next_sync_completes(cert_and_key):
    directory, roaming_key = FakeDirectory(), new_roaming_key()
    run(directory, FakeStore(cert_and_key), FakeState(), roaming_key)
    store, state = FakeStore(), FakeState()
    store.fail_on = {cert_and_key[1][0].key}
    report = run(directory, store, state, roaming_key, now=NOW + 5)
    assert [key for key, _ in report.local_errors] == [cert_and_key[1][0].key]
    assert state.saves == 0
    store.fail_on = set()
    report = run(directory, store, state, roaming_key, now=NOW + 6)
    assert report.downloaded == (cert_and_key[1][0].key,) and state.saves == 1


class Killed(Exception):
    """The process died at a checkpoint (what the agent's test hook does with SIGKILL)."""


def killed_at(step: str):
    def checkpoint(reached: str) -> None:
        if reached == step:
            raise Killed(step)

    return checkpoint


def test_a_sync_passes_its_write_steps_in_order(cert_and_key):
    directory, roaming_key = FakeDirectory(), new_roaming_key()
    run(directory, FakeStore(cert_and_key), FakeState(), roaming_key)
    steps: list[str] = []
    run(directory, FakeStore(), FakeState(), roaming_key, now=NOW + 5, checkpoint=steps.append)
    # Two downloads: the store is half written after the first.
    assert steps == list(SyncStep.ALL)


def test_a_sync_killed_after_its_directory_write_remembers_what_it_uploaded(cert_and_key):
    # Before the interim base, the base stayed the old one (none): the user's deletion of the
    # uploaded pair before the next sync read as "new elsewhere", and both came back.
    directory, store, state, roaming_key = (
        FakeDirectory(),
        FakeStore(cert_and_key),
        FakeState(),
        new_roaming_key(),
    )
    with pytest.raises(Killed):
        run(directory, store, state, roaming_key, checkpoint=killed_at(SyncStep.DIRECTORY_WRITTEN))
    assert not store.locked and set(state.base.entries) == set(store.entries)
    store.entries.clear()  # the user deletes the certificate and its key
    report = run(directory, store, state, roaming_key, now=NOW + 5)
    assert set(report.tombstoned) == {item.key for item, _ in cert_and_key}
    assert report.downloaded == ()


def test_a_sync_killed_while_writing_the_store_leaves_it_to_the_next_one(cert_and_key):
    directory, roaming_key = FakeDirectory(), new_roaming_key()
    run(directory, FakeStore(cert_and_key), FakeState(), roaming_key)
    store, state = FakeStore(), FakeState()
    with pytest.raises(Killed):
        run(directory, store, state, roaming_key, now=NOW + 5,
            checkpoint=killed_at(SyncStep.STORE_HALF_WRITTEN))  # fmt: skip
    assert len(store.entries) == 1 and state.base is None
    report = run(directory, store, state, roaming_key, now=NOW + 6)
    assert len(report.downloaded) == 1 and set(store.entries) == {i.key for i, _ in cert_and_key}


def test_sync_holds_the_store_lock_throughout_and_releases_it(cert_and_key):
    store = FakeStore(cert_and_key)  # every store call asserts it is made under the lock
    run(FakeDirectory(), store, FakeState(), new_roaming_key())
    assert store.lock_timeouts == [0] and not store.locked


def test_a_second_sync_of_the_same_store_is_refused_while_one_runs(tmp_path, cert_and_key):
    store, directory, state = FileStore(str(tmp_path / "store")), FakeDirectory(), FakeState()
    busy = pytest.raises(SyncBusy, match=r"another credroam sync of CN=alice.*\.lock held")
    with store.lock(), busy:  # the lock held as another sync process would hold it
        run(directory, store, state, new_roaming_key())
    assert (directory.searches, directory.writes, state.saves) == (0, 0, 0)
    report = run(directory, store, state, new_roaming_key())  # released: the next sync runs
    assert directory.searches == 1 and not report.changed


def test_the_lock_is_released_when_the_sync_fails(cert_and_key):
    directory, store = FakeDirectory(), FakeStore(cert_and_key)
    directory.modify = lambda dn, changes: setattr(directory, "result", {"result": 16}) or False
    with pytest.raises(SyncError):
        run(directory, store, FakeState(), new_roaming_key(), max_attempts=1)
    assert not store.locked


def test_a_key_the_directory_holds_but_cannot_open_is_never_deleted_locally(cert_and_key):
    # R34: without the roaming key the sealed key is unusable, not absent; after the tombstone
    # days R16 would otherwise delete the local copy as "deleted elsewhere, tombstone purged".
    directory, store, state, roaming_key = (
        FakeDirectory(),
        FakeStore(cert_and_key),
        FakeState(),
        new_roaming_key(),
    )
    run(directory, store, state, roaming_key)
    later = NOW + 61 * TICKS_PER_DAY
    for other_key in (None, new_roaming_key()):
        report = run(directory, store, state, other_key, now=later)
        key_item = cert_and_key[1][0]
        assert report.deleted_local == () and key_item.key in store.entries
        assert report.held == (key_item.key,) and report.uploaded == ()
        assert [r.check for r in report.rejected] == ["envelope"]


def test_a_newer_damaged_duplicate_does_not_hide_the_good_value(cert_and_key):
    directory, roaming_key = FakeDirectory(), new_roaming_key()
    run(directory, FakeStore(cert_and_key), FakeState(), roaming_key)
    (good,) = directory.values[KEY_ENVELOPES]
    key_item = cert_and_key[1][0]
    damaged = encode_token(Token(TokenType.CNG_KEY, key_item.key[3:], NOW + 1, TokenFlags(0), b"x"))
    directory.values[KEY_ENVELOPES] = [good, format_dn_binary(damaged, USER_DN).encode()]
    fresh = FakeStore()
    report = run(directory, fresh, FakeState(), roaming_key, now=NOW + 5)
    assert key_item.key in report.downloaded
    assert fresh.entries[key_item.key][1] == cert_and_key[1][1]
    assert [r.check for r in report.rejected] == ["envelope"] and report.held == ()


def test_without_a_roaming_key_keys_are_refused_with_their_certificate_and_all_else_syncs(
    cert_and_key, make_certificate_der
):
    other_der = make_certificate_der("other")
    other_item = Item(
        f"%3\\{thumbprint(other_der)}",
        StoreName.MY,
        ItemKind.CERTIFICATE,
        NOW - 50,
        hashlib.sha256(other_der).hexdigest(),
        len(other_der),
    )
    directory = FakeDirectory()
    store = FakeStore([*cert_and_key, (other_item, other_der)])
    report = run(directory, store, FakeState(), None)
    (cert_item, _), (key_item, _) = cert_and_key
    assert {refused.item.key for refused in report.refused} == {cert_item.key, key_item.key}
    assert report.uploaded == (other_item.key,)
    assert KEY_ENVELOPES not in directory.values


def test_a_second_host_without_a_roaming_key_syncs_what_it_can(cert_and_key):
    directory = FakeDirectory()
    run(directory, FakeStore(cert_and_key), FakeState(), new_roaming_key())
    report = run(directory, FakeStore(cert_and_key), FakeState(), None, now=NOW + 10)
    assert report.held == (cert_and_key[1][0].key,) and report.uploaded == ()
    assert report.deleted_local == () and directory.writes == 1


def test_a_token_dated_in_the_far_future_is_rejected_and_held(cert_and_key):
    # Dated near 2**64 it would enter the base, and the tombstone of a later local deletion
    # (base.modified + 1) would no longer fit in a token.
    directory, roaming_key = FakeDirectory(), new_roaming_key()
    (cert_item, der), _ = cert_and_key
    future = certificate_token(der, 2**64 - 1)
    value = format_dn_binary(encode_token(future), USER_DN).encode()
    directory.values[ACCOUNT_CREDENTIALS] = [value]
    store, state = FakeStore([cert_and_key[0]]), FakeState()
    report = run(directory, store, state, roaming_key)
    assert [r.check for r in report.rejected] == ["future"] and report.held == (cert_item.key,)
    assert report.uploaded == () and directory.writes == 0
    del store.entries[cert_item.key]  # a local deletion must not crash either
    report = run(directory, store, state, roaming_key, now=NOW + 10)
    assert report.tombstoned == () and report.held == (cert_item.key,)


def test_a_roaming_timestamp_at_the_largest_filetime_does_not_block_writes(cert_and_key):
    directory = FakeDirectory()
    stuck = struct.pack("<QQ", 2**64 - 1, 2**64 - 1)
    directory.values["msPKIRoamingTimeStamp"] = [stuck]
    report = run(directory, FakeStore(cert_and_key), FakeState(), new_roaming_key())
    assert len(report.uploaded) == 2 and directory.writes == 1
    assert directory.values["msPKIRoamingTimeStamp"] == [struct.pack("<QQ", NOW, NOW)]


def test_keys_are_not_sealed_when_the_object_guid_was_not_read(cert_and_key):
    directory = FakeDirectory()
    search = directory.search

    def search_without_guid(*args, **kwargs):
        search(*args, **kwargs)
        del directory.response[0]["raw_attributes"]["objectGUID"]

    directory.search = search_without_guid
    with pytest.raises(SyncError, match=r"CN=alice.*objectGUID"):
        run(directory, FakeStore(cert_and_key), FakeState(), new_roaming_key())
    assert directory.writes == 0


def test_an_item_key_that_is_not_a_valid_token_key_is_never_written():
    bad = Item("%3\\..\\..\\evil", StoreName.MY, ItemKind.CERTIFICATE, NOW - 1, "00", 1)
    directory = FakeDirectory()
    with pytest.raises(TokenError, match="evil"):
        run(directory, FakeStore([(bad, b"x")]), FakeState(), new_roaming_key())
    assert directory.writes == 0


def test_a_key_value_not_named_by_a_thumbprint_is_rejected_and_the_base_stays_loadable(
    tmp_path, cert_and_key
):
    # A user (or malware in the session) plants a key envelope named like a CAPI key file: it
    # has no certificate to belong to, and a base entry for it would make the state file
    # unloadable on every later sync.
    from credroam.roaming.state import StateFile

    directory, state = FakeDirectory(), StateFile(str(tmp_path / "state.json"))
    name = f"{'ab' * 16}_{uuid.UUID(int=7)}"
    planted = Token(TokenType.CNG_KEY, name, NOW - 5, TokenFlags(0), b"sealed?")
    directory.values[KEY_ENVELOPES] = [format_dn_binary(encode_token(planted), USER_DN).encode()]
    report = run(directory, FakeStore(cert_and_key), state, new_roaming_key())
    assert [value.check for value in report.rejected] == ["identifier"]
    assert state.load() is not None and state.problems == []


def test_a_certificate_with_an_invalid_version_is_rejected_and_the_rest_syncs(
    cert_and_key, make_certificate_der, with_invalid_x509_version
):
    # cryptography raises x509.InvalidVersion (not a ValueError) for such a certificate: one
    # value a user writes must not make every sync of that user fail.
    directory, roaming_key = FakeDirectory(), new_roaming_key()
    run(directory, FakeStore(cert_and_key), FakeState(), roaming_key)
    bad = with_invalid_x509_version(make_certificate_der("bad"))
    element = b"".join(
        struct.pack("<III", prop_id, 1, len(value)) + value
        for prop_id, value in ((3, hashlib.sha1(bad).digest()), (32, bad))
    )
    token = Token(TokenType.CERTIFICATE, thumbprint(bad), NOW - 5, TokenFlags(0), element)
    directory.values[ACCOUNT_CREDENTIALS].append(
        format_dn_binary(encode_token(token), USER_DN).encode()
    )
    store = FakeStore()
    report = run(directory, store, FakeState(), roaming_key)
    assert [r.check for r in report.rejected] == ["element"]
    assert "InvalidVersion" in str(report.rejected[0].error)
    assert set(report.downloaded) == {item.key for item, _ in cert_and_key}


# --- pending requests (token types 4 and 8) ---------------------------------------------------


@pytest.fixture
def request_and_key():
    """A pending request as the file store lists it: the DER CSR and its key, named by its SHA-1."""
    private = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "alice")])
    csr = x509.CertificateSigningRequestBuilder().subject_name(subject).sign(private, SHA256())
    der = csr.public_bytes(serialization.Encoding.DER)
    key = private.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    request_id = thumbprint(der)
    request_item = Item(
        f"%4\\{request_id}",
        StoreName.REQUEST,
        ItemKind.REQUEST,
        NOW - 100,
        hashlib.sha256(der).hexdigest(),
        len(der),
    )
    key_item = Item(
        f"%9\\{request_id}",
        StoreName.MY,
        ItemKind.KEY,
        NOW - 100,
        hashlib.sha256(key).hexdigest(),
        len(key),
        owner=request_item.key,
    )
    return (request_item, der), (key_item, key)


def test_a_request_and_its_key_roam_to_another_host_and_back_unchanged(request_and_key):
    (request_item, der), (key_item, key) = request_and_key
    directory, roaming_key = FakeDirectory(), new_roaming_key()
    first = run(directory, FakeStore(request_and_key), FakeState(), roaming_key)
    assert set(first.uploaded) == {request_item.key, key_item.key}
    assert first.rejected == () and first.refused == ()
    (value,) = directory.values[ACCOUNT_CREDENTIALS]
    token = decode_token(parse_dn_binary(value)[0])
    assert (token.key, token.data) == (request_item.key, der)  # the DER PKCS#10 itself

    other = FakeStore()
    second = run(directory, other, FakeState(), roaming_key, now=NOW + 5)
    assert set(second.downloaded) == {request_item.key, key_item.key}
    assert other.entries[request_item.key][1] == der and other.entries[key_item.key][1] == key
    assert other.entries[request_item.key][0].content_hash == request_item.content_hash
    assert other.entries[key_item.key][0].owner == request_item.key
    again = run(directory, other, FakeState(), roaming_key, now=NOW + 10)
    assert again.uploaded == () and again.rejected == ()


def test_a_request_enrolled_on_one_host_is_tombstoned_in_the_directory(request_and_key):
    (request_item, _), (key_item, _) = request_and_key
    directory, store, state, roaming_key = (
        FakeDirectory(),
        FakeStore(request_and_key),
        FakeState(),
        new_roaming_key(),
    )
    run(directory, store, state, roaming_key)
    store.entries.clear()  # enrollment moved the key to MY and removed the request
    report = run(directory, store, state, roaming_key, now=NOW + 5)
    assert set(report.tombstoned) == {request_item.key, key_item.key}
    tokens = [
        decode_token(parse_dn_binary(value)[0])
        for attribute in (ACCOUNT_CREDENTIALS, KEY_ENVELOPES)
        for value in directory.values[attribute]
    ]
    assert {t.key for t in tokens if t.is_tombstone} == {request_item.key, key_item.key}


def test_a_pending_request_as_windows_keeps_it_is_held_and_the_rest_syncs(
    cert_and_key, make_certificate_der
):
    # Windows keeps a pending request as a dummy self-signed certificate element; it carries no
    # PKCS#10, so credroam cannot use it: refused with its reason and held, never a failed sync.
    dummy = certificate_token(make_certificate_der("dummy"), NOW - 50, token_type=TokenType.REQUEST)
    directory, roaming_key = FakeDirectory(), new_roaming_key()
    directory.values[ACCOUNT_CREDENTIALS] = [
        format_dn_binary(encode_token(dummy), USER_DN).encode()
    ]
    store = FakeStore(cert_and_key)
    report = run(directory, store, FakeState(), roaming_key)
    (rejected,) = report.rejected
    assert rejected.check == "element" and "as Windows keeps it" in str(rejected.error)
    assert report.held == (dummy.key,) and dummy.key not in store.entries
    assert set(report.uploaded) == {item.key for item, _ in cert_and_key}


def test_a_certificate_already_expired_when_first_seen_is_archived_on_both_sides_at_once(
    tmp_path, make_certificate_der
):
    """Found by the Molecule story: the upload went out archived but the local copy stayed
    in MY (its archiving looked for a directory payload there was none of), until the next
    sync archived it after a 501."""
    der = make_certificate_der("expired", datetime.datetime(2025, 1, 1, tzinfo=datetime.UTC))
    key = f"%3\\{thumbprint(der)}"
    (tmp_path / "store" / "MY").mkdir(parents=True)
    pem = x509.load_der_x509_certificate(der).public_bytes(serialization.Encoding.PEM)
    (tmp_path / "store" / "MY" / f"{thumbprint(der)}.cert.pem").write_bytes(pem)
    directory, state = FakeDirectory(), StateFile(str(tmp_path / "state.json"))

    first = run(directory, FileStore(str(tmp_path / "store")), state, new_roaming_key())

    assert first.local_errors == () and first.archived == (key,)
    assert FileStore(str(tmp_path / "store")).items()[key].archived
    (value,) = directory.values["msPKIAccountCredentials"]
    assert decode_token(parse_dn_binary(value)[0]).identifier == thumbprint(der)
    again = run(directory, FileStore(str(tmp_path / "store")), state, new_roaming_key())
    assert (again.archived, again.conflicts, directory.writes) == ((), (), 1)
