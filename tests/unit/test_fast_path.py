"""The sync's fast path: a sync that proves nothing changed stops after one small search.

A fake DC with exact-value LDAP semantics that also answers what the fast path reads (rootDSE,
its NTDS Settings' invocationId, the user's uSNChanged, moved by every change of the object as
Samba does, also for values that replicate in), the real FileStore and StateFile in tmp_path.
"""

from __future__ import annotations

import datetime
import os
import uuid

import ldap3
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from credroam.gpo.resolve import GpoSettings
from credroam.gpo.settings import AGENT_POLICY
from credroam.roaming.certelement import certificate_token, thumbprint
from credroam.roaming.directory import ACCOUNT_CREDENTIALS, MARK_ATTRIBUTES, ROAMING_TIMESTAMP
from credroam.roaming.envelope import new_roaming_key
from credroam.roaming.model import Item, ItemKind, Policy, ReconcileError, StoreName, content_hash
from credroam.roaming.state import StateFile
from credroam.roaming.store.file import FileStore
from credroam.roaming.sync import FullSyncReason, sync_user
from credroam.timestamps import TICKS_PER_SECOND, filetime_now, to_filetime
from credroam.tokens import Token, TokenFlags, TokenType, encode_token, format_dn_binary

USER_DN = "CN=alice,OU=Roaming,DC=lab,DC=example"
GUID = uuid.UUID("6f1c9a52-0a5e-4d8b-9b1e-1d2c3b4a5f60")
ALLOWED = [b"msPKIAccountCredentials", b"credroamKeyEnvelopes", b"credroamRoamingKeys"]
HOUR = 3600 * TICKS_PER_SECOND
DEFAULT_POLICY = Policy()
NTDS = "CN=NTDS Settings,CN=DC1,CN=Servers,CN=Site,CN=Sites,CN=Configuration,DC=lab,DC=example"


class FakeDC:
    """One user entry on one DC: every change of the object moves its uSNChanged."""

    def __init__(self, service_name: str = NTDS, invocation_id: bytes = b"\x01" * 16) -> None:
        self.server = type("Server", (), {"host": "dc1.lab.example"})()
        self.service_name, self.invocation_id = service_name, invocation_id
        self.values: dict[str, list[bytes]] = {}
        self.usn = 4000
        self.searches: list[tuple[str, tuple[str, ...]]] = []
        self.writes = 0
        self.result, self.response = {}, []

    def search(self, base, search_filter, search_scope=None, attributes=None):
        self.searches.append((base, tuple(attributes or ())))
        if base == "":
            raw = {"dsServiceName": [self.service_name.encode()], "dnsHostName": [b"dc1"]}
        elif base == self.service_name:
            raw = {"invocationId": [self.invocation_id]}
        else:
            raw = {name: list(values) for name, values in self.values.items() if values}
            raw |= {"objectGUID": [GUID.bytes_le], "allowedAttributes": ALLOWED}
            raw["uSNChanged"] = [str(self.usn).encode()]
            wanted = {name.lower() for name in attributes or ()}
            raw = {name: values for name, values in raw.items() if name.lower() in wanted}
        self.result = {"result": 0}
        self.response = [{"type": "searchResEntry", "dn": base, "raw_attributes": raw}]
        return True

    def modify(self, dn, changes):
        self.writes += 1
        for attribute, operations in changes.items():
            current = self.values.setdefault(attribute, [])
            for operation, values in operations:
                for value in values:
                    if operation == ldap3.MODIFY_DELETE:
                        current.remove(value)
                    else:
                        current.append(value)
        self.usn += 1
        self.result = {"result": 0}
        return True

    def replicate_in(self, attribute: str, value: bytes) -> None:
        """A value written through another DC arrives: the timestamp stays, uSNChanged moves."""
        self.values.setdefault(attribute, []).append(value)
        self.usn += 1


class Host:
    """One host: the real file store and state file; times settled unless ``settled=False``."""

    def __init__(self, tmp_path, name: str = "a") -> None:
        self.clock_offset = 60 * TICKS_PER_SECOND  # the store's files are a minute old
        self.store = FileStore(str(tmp_path / name / "store"), clock=self.now)
        self.state = StateFile(str(tmp_path / name / "state.json"))

    def now(self) -> int:
        return filetime_now() + self.clock_offset


@pytest.fixture
def certificate(make_certificate_der):
    der = make_certificate_der("alice")
    item = Item(
        f"%3\\{thumbprint(der)}",
        StoreName.MY,
        ItemKind.CERTIFICATE,
        filetime_now() - HOUR,
        content_hash(der),
        len(der),
        expires=to_filetime(datetime.datetime(2034, 1, 1, tzinfo=datetime.UTC)),
    )
    return item, der


def put(store: FileStore, item: Item, payload: bytes) -> None:
    with store.lock():
        store.write(item, payload)


def sync(dc, host: Host, policy: Policy = DEFAULT_POLICY, roaming_key=b"k" * 32, at=None, **kwargs):
    clock = (lambda: at) if at is not None else host.now
    return sync_user(dc, USER_DN, host.store, host.state, policy, roaming_key, clock, **kwargs)


@pytest.fixture
def settled(tmp_path, certificate):
    """A host whose certificate is in the directory and whose last full sync left a head."""
    dc, host = FakeDC(), Host(tmp_path)
    put(host.store, *certificate)
    assert sync(dc, host).uploaded == (certificate[0].key,)
    assert sync(dc, host).full_sync_reason == FullSyncReason.NO_HEADER  # writes the head
    dc.searches.clear()
    dc.writes = 0
    return dc, host


def test_a_no_change_sync_is_one_small_search_and_reads_neither_store_nor_base(settled):
    dc, host = settled

    def untouchable(*args, **kwargs):
        raise AssertionError("the fast path must not list the store or read the base")

    host.store.items = host.state.load = untouchable
    report = sync(dc, host)
    assert report.full_sync_reason is None and not report.changed
    assert dc.searches == [(USER_DN, MARK_ATTRIBUTES)] and dc.writes == 0


def test_a_new_connection_first_asks_which_dc_it_is(settled):
    dc, host = settled
    fresh = FakeDC()
    fresh.values, fresh.usn = dc.values, dc.usn
    assert sync(fresh, host).full_sync_reason is None
    assert [base for base, _ in fresh.searches] == ["", NTDS, USER_DN]


def test_a_value_replicated_in_through_another_dc_is_not_missed(settled, make_certificate_der):
    dc, host = settled
    der = make_certificate_der("bob")
    token = certificate_token(der, filetime_now() - HOUR)
    dc.replicate_in(ACCOUNT_CREDENTIALS, format_dn_binary(encode_token(token), USER_DN).encode())
    report = sync(dc, host)
    assert report.full_sync_reason == FullSyncReason.DIRECTORY
    assert report.downloaded == (f"%3\\{thumbprint(der)}",)


def test_another_writer_on_the_same_dc_is_seen(settled):
    dc, host = settled
    stamp = dc.values[ROAMING_TIMESTAMP]
    dc.modify(USER_DN, {ROAMING_TIMESTAMP: [(ldap3.MODIFY_DELETE, stamp), (ldap3.MODIFY_ADD,
              [b"\x01" * 16])]})  # fmt: skip
    assert sync(dc, host).full_sync_reason == FullSyncReason.DIRECTORY


def test_another_dc_or_a_restored_one_means_a_full_sync(settled):
    dc, host = settled
    for other in (
        FakeDC(service_name=NTDS.replace("DC1", "DC2")),
        FakeDC(invocation_id=b"\2" * 16),
    ):
        other.values, other.usn = dc.values, dc.usn  # even the same uSNChanged proves nothing
        assert sync(other, host).full_sync_reason == FullSyncReason.OTHER_DC


def test_a_local_change_means_a_full_sync(settled, make_certificate_der):
    dc, host = settled
    der = make_certificate_der("new")
    # Copied in by hand, as an enrolment tool would write it.
    with open(os.path.join(host.store.root, "MY", f"{thumbprint(der)}.cert.pem"), "wb") as f:
        f.write(x509.load_der_x509_certificate(der).public_bytes(Encoding.PEM))
    report = sync(dc, host)
    assert report.full_sync_reason == FullSyncReason.LOCAL
    assert report.uploaded == (f"%3\\{thumbprint(der)}",)


def test_a_deleted_file_means_a_full_sync(settled, certificate):
    dc, host = settled
    os.unlink(os.path.join(host.store.root, "MY", f"{certificate[0].key[3:]}.cert.pem"))
    report = sync(dc, host)
    assert report.full_sync_reason == FullSyncReason.LOCAL and report.tombstoned


def test_a_store_change_too_fresh_to_tell_means_a_full_sync(settled):
    dc, host = settled
    host.clock_offset = 0  # the store's files changed less than SETTLE_TICKS ago
    report = sync(dc, host, at=filetime_now() + 120 * TICKS_PER_SECOND)
    assert report.full_sync_reason == FullSyncReason.LOCAL


def test_a_mirror_marker_that_changed_means_a_full_sync(tmp_path, certificate):
    dc, host = FakeDC(), Host(tmp_path)
    put(host.store, *certificate)
    mirror = [("cert9.db", 1, 2)]  # as a Mirror.change_marker gives it
    sync(dc, host, local_markers=[lambda: mirror[0]])
    sync(dc, host, local_markers=[lambda: mirror[0]])
    assert sync(dc, host, local_markers=[lambda: mirror[0]]).full_sync_reason is None
    mirror[0] = ("cert9.db", 1, 3)
    report = sync(dc, host, local_markers=[lambda: mirror[0]])
    assert report.full_sync_reason == FullSyncReason.LOCAL
    assert sync(dc, host, local_markers=[lambda: None]).full_sync_reason == FullSyncReason.LOCAL


def test_the_full_sync_interval_is_a_safety_net(settled):
    dc, host = settled
    later = host.now() + Policy().full_sync_interval_ticks
    assert sync(dc, host, at=later - HOUR).full_sync_reason is None
    assert sync(dc, host, at=later).full_sync_reason == FullSyncReason.INTERVAL
    shorter = Policy(full_sync_interval_hours=1)
    reason = sync(dc, host, policy=shorter, at=later + 1).full_sync_reason
    assert reason == FullSyncReason.SETTINGS


def test_a_certificate_due_to_expire_means_a_full_sync_which_archives_it(
    tmp_path, make_certificate_der
):
    dc, host = FakeDC(), Host(tmp_path)
    soon = datetime.datetime.now(datetime.UTC) + datetime.timedelta(hours=2)
    der = make_certificate_der("short-lived", not_valid_after=soon.replace(microsecond=0))
    item = Item(f"%3\\{thumbprint(der)}", StoreName.MY, ItemKind.CERTIFICATE,
                filetime_now() - HOUR, content_hash(der), len(der))  # fmt: skip
    put(host.store, item, der)
    sync(dc, host)
    sync(dc, host)
    assert sync(dc, host, at=host.now() + HOUR).full_sync_reason is None
    report = sync(dc, host, at=host.now() + 3 * HOUR)  # expired, the interval not yet over
    assert report.full_sync_reason == FullSyncReason.DUE
    assert set(report.archived) == {item.key}  # in the directory and here


def test_another_policy_or_roaming_key_means_a_full_sync(settled):
    dc, host = settled
    reason = sync(dc, host, policy=Policy(tombstone_days=30)).full_sync_reason
    assert reason == FullSyncReason.SETTINGS
    assert sync(dc, host, roaming_key=new_roaming_key()).full_sync_reason == FullSyncReason.SETTINGS
    assert sync(dc, host, roaming_key=None).full_sync_reason == FullSyncReason.SETTINGS


def test_force_full_skips_the_fast_path(settled):
    dc, host = settled
    report = sync(dc, host, force_full=True)
    assert report.full_sync_reason == FullSyncReason.FORCED
    assert dc.searches[0][1] != MARK_ATTRIBUTES


def test_a_damaged_or_outdated_head_means_a_full_sync(settled):
    dc, host = settled
    with open(host.state.head_path, "r+b") as head:
        head.write(b"{garbage")
    assert sync(dc, host).full_sync_reason == FullSyncReason.NO_HEADER
    assert sync(dc, host).full_sync_reason is None  # the full sync wrote a new head
    host.state.save(host.state.load())  # the state file replaced: its head describes another
    assert sync(dc, host).full_sync_reason == FullSyncReason.NO_HEADER


def test_a_sync_that_writes_the_directory_leaves_no_head(settled, make_certificate_der):
    dc, host = settled
    der = make_certificate_der("new")
    item = Item(f"%3\\{thumbprint(der)}", StoreName.MY, ItemKind.CERTIFICATE,
                filetime_now() - HOUR, content_hash(der), len(der))  # fmt: skip
    put(host.store, item, der)
    host.clock_offset += 60 * TICKS_PER_SECOND
    assert sync(dc, host).uploaded == (item.key,)
    assert host.state.load_header() is None  # its uSNChanged could cover a value replicated in
    assert sync(dc, host).full_sync_reason == FullSyncReason.NO_HEADER
    assert sync(dc, host).full_sync_reason is None


def test_check_mode_takes_the_fast_path_and_writes_nothing(settled):
    dc, host = settled
    report = sync(dc, host, check_mode=True)
    assert report.full_sync_reason is None and report.check_mode and dc.writes == 0


def test_the_full_sync_interval_is_a_policy_and_an_agent_gpo_setting():
    assert Policy().full_sync_interval_hours == 4
    with pytest.raises(ReconcileError, match="full_sync_interval_hours"):
        Policy(full_sync_interval_hours=0)
    setting = AGENT_POLICY.setting("full_sync_interval_hours")
    assert (setting.value_name, setting.default) == ("FullSyncIntervalHours", 4)
    resolved = GpoSettings(values={"full_sync_interval_hours": 12}).roaming_policy()
    assert resolved.full_sync_interval_hours == 12


def test_tokens_of_another_kind_need_no_decoding_on_the_fast_path(settled):
    # A DPAPI master key token added on this DC moves uSNChanged like any value: a full sync,
    # which leaves the token alone, then the fast path again.
    dc, host = settled
    token = Token(TokenType.DPAPI_MASTER_KEY, str(GUID), filetime_now(), TokenFlags(0), b"x")
    value = format_dn_binary(encode_token(token), USER_DN).encode()
    dc.replicate_in("msPKIDPAPIMasterKeys", value)
    assert sync(dc, host).full_sync_reason == FullSyncReason.DIRECTORY
    assert sync(dc, host).full_sync_reason is None
