"""The sync's fast path against the two Samba DCs: what it relies on, and that it misses nothing.

Hosts use the real file store and state file. Their store's files are seconds old in a test,
younger than the change marker's settle time (changemark.SETTLE_TICKS, unit-tested), so the
store's clock runs a minute ahead here: it stands for "a while later".
"""

from __future__ import annotations

import ldap3
import pytest

from credroam.roaming.certelement import certificate_token
from credroam.roaming.directory import (
    ACCOUNT_CREDENTIALS,
    MARK_ATTRIBUTES,
    ROAMING_TIMESTAMP,
    USN_CHANGED,
)
from credroam.roaming.envelope import new_roaming_key
from credroam.roaming.model import Policy
from credroam.roaming.store.file import FileStore
from credroam.roaming.sync import FullSyncReason, sync_user
from credroam.timestamps import TICKS_PER_SECOND, filetime_now
from credroam.tokens import encode_token, format_dn_binary
from tests.integration.roaming_lab import (
    CountingConnection,
    clear_everywhere,
    connect_as,
    hostile_token,
    install,
    replicate,
    self_signed,
)
from tests.integration.roaming_lab import SimulatedHost as Host

pytestmark = pytest.mark.integration
ROAMING_KEY = new_roaming_key()


@pytest.fixture
def alice(lab):
    account = lab.user("alice")
    clear_everywhere(lab, account)
    return account


class RecordingConnection(CountingConnection):
    """Counts operations and records what each search asked for."""

    def __init__(self, conn: ldap3.Connection) -> None:
        super().__init__(conn)
        self.asked: list[tuple[str, tuple[str, ...]]] = []

    def search(self, base, *args, attributes=None, **kwargs):
        self.asked.append((base, tuple(attributes or ())))
        return super().search(base, *args, attributes=attributes, **kwargs)


def host_at(path) -> Host:
    host = Host(path)
    host.store = FileStore(str(host.root), clock=lambda: filetime_now() + 60 * TICKS_PER_SECOND)
    return host


def sync(conn, account, host: Host):
    return sync_user(conn, account.dn, host.store, host.state, Policy(), ROAMING_KEY, filetime_now)


def user_object(lab, account, dc: int) -> dict[str, list[bytes]]:
    conn = connect_as(lab, account, dc)
    try:
        attributes = [USN_CHANGED, ROAMING_TIMESTAMP, ACCOUNT_CREDENTIALS]
        conn.search(account.dn, "(objectClass=*)", ldap3.BASE, attributes=attributes)
        return conn.response[0]["raw_attributes"]
    finally:
        conn.unbind()


def test_samba_moves_uSNChanged_when_a_linked_value_replicates_in(lab, alice):
    # What the fast path relies on: the timestamp does not move, the object's uSNChanged does.
    value = format_dn_binary(hostile_token(b"R" * 40, when=1), alice.dn).encode()
    before = user_object(lab, alice, 0)
    through_dc2 = connect_as(lab, alice, 1)
    assert through_dc2.modify(alice.dn, {ACCOUNT_CREDENTIALS: [(ldap3.MODIFY_ADD, [value])]})
    replicate(lab, 1, 0)
    added = user_object(lab, alice, 0)
    assert value in added[ACCOUNT_CREDENTIALS]
    assert added[ROAMING_TIMESTAMP] == before[ROAMING_TIMESTAMP]
    assert int(added[USN_CHANGED][0]) > int(before[USN_CHANGED][0])
    assert through_dc2.modify(alice.dn, {ACCOUNT_CREDENTIALS: [(ldap3.MODIFY_DELETE, [value])]})
    replicate(lab, 1, 0)
    removed = user_object(lab, alice, 0)
    assert value not in removed.get(ACCOUNT_CREDENTIALS, [])
    assert int(removed[USN_CHANGED][0]) > int(added[USN_CHANGED][0])


def test_a_no_change_sync_is_one_small_search_on_its_connection(lab, alice, tmp_path):
    host = host_at(tmp_path / "a")
    install(host.root, self_signed("alice")[0])
    sync(connect_as(lab, alice), alice, host)  # uploads
    assert sync(connect_as(lab, alice), alice, host).full_sync_reason is not None  # the head
    counting = RecordingConnection(connect_as(lab, alice))
    first = sync(counting, alice, host)
    assert first.full_sync_reason is None and not first.changed
    assert [base for base, _ in counting.asked] == ["", counting.asked[1][0], alice.dn]
    counting.asked.clear()
    counting.searches = 0
    again = sync(counting, alice, host)
    assert again.full_sync_reason is None
    assert counting.asked == [(alice.dn, MARK_ATTRIBUTES)]
    assert (counting.searches, counting.writes) == (1, 0)


def test_a_value_replicated_in_behind_our_own_timestamp_is_not_missed(lab, alice, tmp_path):
    a = host_at(tmp_path / "a")
    install(a.root, self_signed("alice")[0])
    assert sync(connect_as(lab, alice), alice, a).uploaded
    assert sync(connect_as(lab, alice), alice, a).full_sync_reason is not None  # writes the head
    head = a.state.load_header()
    assert head is not None
    # Another writer's certificate merges in through DC2 as one linked value, leaving the
    # single-valued timestamp as it was: what a DC that already holds our own timestamp sees
    # after replication (which value wins the timestamp is Samba's to decide; not this test's).
    other = certificate_token(self_signed("alice elsewhere")[0], filetime_now())
    through_dc2 = connect_as(lab, alice, 1)
    value = format_dn_binary(encode_token(other), alice.dn)
    assert through_dc2.modify(alice.dn, {ACCOUNT_CREDENTIALS: [(ldap3.MODIFY_ADD, [value])]})
    through_dc2.unbind()
    replicate(lab, 1, 0)
    dc1 = user_object(lab, alice, 0)
    assert dc1[ROAMING_TIMESTAMP][0] == head.directory_timestamp  # our own timestamp still
    report = sync(connect_as(lab, alice), alice, a)
    assert report.full_sync_reason == FullSyncReason.DIRECTORY
    assert report.downloaded == (other.key,)


def test_the_other_dc_means_a_full_sync(lab, alice, tmp_path):
    host = host_at(tmp_path / "a")
    install(host.root, self_signed("alice")[0])
    sync(connect_as(lab, alice), alice, host)
    sync(connect_as(lab, alice), alice, host)
    replicate(lab, 0, 1)
    report = sync(connect_as(lab, alice, dc=1), alice, host)
    assert report.full_sync_reason == FullSyncReason.OTHER_DC and not report.changed
