"""The sync engine against a real Samba DC. The local side is the in-memory store of the unit
tests until the file store lands; the directory side is real."""

from __future__ import annotations

import datetime
import hashlib
import struct

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from credroam.certelement import thumbprint
from credroam.connection import DirectoryError, connect
from credroam.directory import ACCOUNT_CREDENTIALS, read_roaming
from credroam.envelope import new_roaming_key
from credroam.reconcile import Item, ItemKind, Policy, StoreName
from credroam.sync import sync_user
from credroam.tokens import format_dn_binary
from tests.integration.roaming_lab import (
    CountingConnection,
    clear_roaming,
    connect_as,
    plant,
    replicate,
    target_for,
)
from tests.unit.test_sync import FakeState, FakeStore

pytestmark = pytest.mark.integration

NOW = 134_000_000_000_000_000


@pytest.fixture
def alice(lab):
    account = lab.user("alice")
    clear_roaming(lab, account)
    return account


@pytest.fixture
def certificate():
    """(Item, DER) of a fresh self-signed certificate. Only a certificate: keys go to
    credroamKeyEnvelopes, which needs credroam's schema (tested once ad_schema is applied)."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "alice")])
    key = ec.generate_private_key(ec.SECP256R1())
    der = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC))
        .not_valid_after(datetime.datetime(2034, 1, 1, tzinfo=datetime.UTC))
        .sign(key, hashes.SHA256())
        .public_bytes(serialization.Encoding.DER)
    )
    item = Item(
        f"%3\\{thumbprint(der)}",
        StoreName.MY,
        ItemKind.CERTIFICATE,
        NOW - 100,
        hashlib.sha256(der).hexdigest(),
        len(der),
        expires=NOW * 2,
    )
    return item, der


def sync(conn, account, store, state, now=NOW, **kwargs):
    return sync_user(conn, account.dn, store, state, Policy(), new_roaming_key(), now, **kwargs)


def test_upload_then_a_no_change_sync_is_one_search_and_no_write(lab, alice, certificate):
    store, state = FakeStore([certificate]), FakeState()
    first = sync(connect_as(lab, alice), alice, store, state)
    assert first.uploaded == (certificate[0].key,)
    counting = CountingConnection(connect_as(lab, alice))
    again = sync(counting, alice, store, state, now=NOW + 10)
    assert (counting.searches, counting.writes) == (1, 0)
    assert not again.changed


def test_another_host_downloads_through_the_other_dc(lab, alice, certificate):
    sync(connect_as(lab, alice), alice, FakeStore([certificate]), FakeState())
    replicate(lab, 0, 1)
    fresh = FakeStore()
    report = sync(connect_as(lab, alice, dc=1), alice, fresh, FakeState(), now=NOW + 5)
    assert report.downloaded == (certificate[0].key,)
    assert fresh.entries[certificate[0].key][1] == certificate[1]


def test_planted_hostile_values_are_rejected_and_the_sync_goes_on(lab, alice, certificate):
    exploit = rb"..\..\Windows\Start Menu\Programs\Startup\x.bat"
    blob = struct.pack("<3s93sQHH20sI", b"%3\\", exploit, NOW, 0, 0, bytes(20), 0)
    plant(lab, alice, ACCOUNT_CREDENTIALS, format_dn_binary(blob, alice.dn).encode())
    store = FakeStore([certificate])
    report = sync(connect_as(lab, alice), alice, store, FakeState())
    assert [r.check for r in report.rejected] == ["identifier"]
    assert report.uploaded == (certificate[0].key,)
    assert store.writes == []  # nothing written locally, least of all under the hostile name
    record = read_roaming(connect_as(lab, alice), alice.dn)
    assert len(record.rejected) == 1  # reported, never deleted


def test_a_dc_that_is_down_is_named_and_nothing_local_is_lost(lab, alice, certificate):
    store = FakeStore([certificate])
    before = dict(store.entries)
    dead = target_for(lab, alice, port=1, timeout=2)
    with pytest.raises(DirectoryError, match=f"{lab.dc(0).ip}:1"):
        sync(connect(dead), alice, store, FakeState())
    assert store.entries == before and store.writes == []
