"""Credential roaming end to end on the lab forest with credroam's schema installed.

Two hosts of alice (two file stores, state files and key caches) sync through DC1 and DC2:
the roaming key is obtained (created on first use, unwrapped elsewhere), certificates roam as
native type-3 tokens, private keys only sealed in credroamKeyEnvelopes, deletions as
tombstones, expired certificates are archived on both sides. Plus the roaming key's life cycle
in the directory (password change, wrong password, recovery) and what another user can see.
"""

from __future__ import annotations

import datetime

import ldap3
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from credroam.roaming.certelement import parse_certificate_token
from credroam.roaming.directory import (
    ACCOUNT_CREDENTIALS,
    KEY_ENVELOPES,
    ROAMING_KEYS,
    read_roaming,
)
from credroam.roaming.envelope import ScryptParams, read_key_cache
from credroam.roaming.model import Policy
from credroam.roaming.roamingkey import (
    RecordKind,
    RoamingKeyUnavailable,
    obtain_roaming_key,
    parse_wrapped_keys,
    recover_with_recovery_key,
)
from credroam.roaming.sync import SyncReport, sync_user
from credroam.timestamps import filetime_now
from credroam.tokens import TokenType, parse_dn_binary
from tests.integration.roaming_lab import (
    ALL_ATTRIBUTES,
    CountingConnection,
    SimulatedHost,
    clear_everywhere,
    connect_as,
    install,
    replicate,
    self_signed,
)
from tests.integration.test_schema import run_schema_playbook
from tests.lab import Account, Lab

pytestmark = pytest.mark.integration

HOUR = 36_000_000_000  # FILETIME ticks
CHEAP = ScryptParams(log2_n=12)  # the tests exercise the life cycle, not the cost


@pytest.fixture(scope="module")
def schema_lab(lab: Lab) -> Lab:
    """The lab with credroam's schema applied by the real role (idempotent, so cheap again)."""
    applied = run_schema_playbook(lab)
    assert applied.returncode == 0, applied.stdout[-4000:] + applied.stderr[-2000:]
    return lab


@pytest.fixture
def alice(schema_lab: Lab) -> Account:
    account = schema_lab.user("alice")
    clear_everywhere(schema_lab, account)
    return account


@pytest.fixture
def hosts(tmp_path) -> tuple[SimulatedHost, SimulatedHost]:
    return SimulatedHost(tmp_path / "host-a"), SimulatedHost(tmp_path / "host-b")


def roam(
    lab: Lab, account: Account, host: SimulatedHost, dc: int, now: int, conn=None
) -> SyncReport:
    """What a host does at logon: obtain the roaming key, then sync, through DC ``dc``."""
    conn = conn or connect_as(lab, account, dc)
    key, _ = obtain_roaming_key(
        conn,
        account.dn,
        password=account.password,
        cache_path=host.key_cache,
        now=now,
        scrypt_params=CHEAP,
    )
    return sync_user(conn, account.dn, host.store, host.state, Policy(), key, lambda: now)


def raw_values(lab: Lab, account: Account) -> list[bytes]:
    """Every roaming value of ``account`` as stored, read as the administrator."""
    conn = lab.ldap_connection()
    try:
        conn.search(account.dn, "(objectClass=*)", ldap3.BASE, attributes=list(ALL_ATTRIBUTES))
        raw = conn.response[0]["raw_attributes"]
        return [bytes(value) for values in raw.values() for value in values]
    finally:
        conn.unbind()


def key_matches_certificate(key_pem: bytes, certificate_der: bytes) -> bool:
    key = serialization.load_pem_private_key(key_pem, password=None)
    certificate = x509.load_der_x509_certificate(certificate_der)
    return key.public_key() == certificate.public_key()


def test_a_certificate_and_its_key_roam_sealed_between_hosts_through_two_dcs(
    schema_lab, alice, hosts
):
    lab, (a, b) = schema_lab, hosts
    certificate, pkcs8 = self_signed("alice")
    thumb = install(a.root, certificate, pkcs8)
    now = filetime_now()

    uploaded = roam(lab, alice, a, dc=0, now=now)
    assert set(uploaded.uploaded) == {f"%3\\{thumb}", f"%9\\{thumb}"}
    record = read_roaming(connect_as(lab, alice), alice.dn)
    (token,) = [s.token for s in record.stored(ACCOUNT_CREDENTIALS).values()]
    assert token.type is TokenType.CERTIFICATE and token.identifier == thumb
    assert parse_certificate_token(token).der == certificate  # native layout, as Windows reads
    (sealed,) = record.stored(KEY_ENVELOPES).values()
    assert sealed.token.type is TokenType.CNG_KEY and sealed.token.identifier == thumb
    # The private key is nowhere in the directory in plaintext: not raw, not in a DN-Binary's
    # hex, not even the bare private scalar.
    scalar = serialization.load_der_private_key(pkcs8, None).private_numbers().private_value
    secrets_ = (pkcs8, scalar.to_bytes(32, "big"))
    for value in raw_values(lab, alice):
        blob = parse_dn_binary(value)[0] if value.startswith(b"B:") else value
        for secret in secrets_:
            assert secret not in value and secret not in blob
            assert secret.hex().encode() not in value.lower()

    replicate(lab, 0, 1)
    downloaded = roam(lab, alice, b, dc=1, now=now + 1)
    assert set(downloaded.downloaded) == {f"%3\\{thumb}", f"%9\\{thumb}"}
    assert not downloaded.rejected
    assert (
        x509.load_pem_x509_certificate(b.path(thumb, "cert.pem").read_bytes()).public_bytes(
            serialization.Encoding.DER
        )
        == certificate
    )
    assert key_matches_certificate(b.path(thumb, "key.pem").read_bytes(), certificate)
    assert read_key_cache(a.key_cache) == read_key_cache(b.key_cache)

    # A background sync with nothing to do: the key from the cache (one search to check it
    # against the directory), then the sync itself (one search), no write at all.
    counting = CountingConnection(connect_as(lab, alice, dc=1))
    key, checked = obtain_roaming_key(
        counting, alice.dn, password=None, cache_path=b.key_cache, now=now + 2
    )
    assert (counting.searches, counting.writes) == (1, 0) and not checked.changed
    idle = sync_user(counting, alice.dn, b.store, b.state, Policy(), key, lambda: now + 2)
    assert (counting.searches, counting.writes) == (2, 0) and not idle.changed


def test_bob_cannot_read_alices_envelopes_or_key_records(schema_lab, alice, hosts):
    lab = schema_lab
    certificate, pkcs8 = self_signed("alice")
    install(hosts[0].root, certificate, pkcs8)
    roam(lab, alice, hosts[0], dc=0, now=filetime_now())
    as_alice = read_roaming(connect_as(lab, alice), alice.dn)
    assert as_alice.stored(KEY_ENVELOPES) and as_alice.blobs_in(ROAMING_KEYS)
    as_bob = read_roaming(connect_as(lab, lab.user("bob")), alice.dn)
    assert not as_bob.stored(KEY_ENVELOPES) and not as_bob.blobs_in(ROAMING_KEYS)


def test_a_deletion_on_one_host_becomes_a_tombstone_and_removes_it_on_the_other(
    schema_lab, alice, hosts
):
    lab, (a, b) = schema_lab, hosts
    certificate, pkcs8 = self_signed("alice")
    thumb = install(a.root, certificate, pkcs8)
    now = filetime_now()
    roam(lab, alice, a, dc=0, now=now)
    replicate(lab, 0, 1)
    roam(lab, alice, b, dc=1, now=now + 1)

    a.path(thumb, "cert.pem").unlink()
    a.path(thumb, "key.pem").unlink()
    deleted = roam(lab, alice, a, dc=0, now=now + HOUR)
    assert set(deleted.tombstoned) == {f"%3\\{thumb}", f"%9\\{thumb}"}
    record = read_roaming(connect_as(lab, alice), alice.dn)
    tokens = [*record.stored(ACCOUNT_CREDENTIALS).values(), *record.stored(KEY_ENVELOPES).values()]
    assert [s.token.is_tombstone for s in tokens] == [True, True]

    replicate(lab, 0, 1)
    removed = roam(lab, alice, b, dc=1, now=now + HOUR + 1)
    assert set(removed.deleted_local) == {f"%3\\{thumb}", f"%9\\{thumb}"}
    assert not b.path(thumb, "cert.pem").exists() and not b.path(thumb, "key.pem").exists()
    assert b.store.items() == {}


def test_a_key_replaced_after_its_certificate_was_deleted_elsewhere_goes_with_it(
    schema_lab, alice, hosts
):
    """Issue 8: a deletes a certificate and its key; b then replaces the key (newer than the
    deletion). b's sync deletes both, uploads nothing, and no plaintext key stays in MY/."""
    lab, (a, b) = schema_lab, hosts
    certificate, pkcs8 = self_signed("alice")
    thumb = install(a.root, certificate, pkcs8)
    now = filetime_now()
    roam(lab, alice, a, dc=0, now=now)
    roam(lab, alice, b, dc=0, now=now + 1)
    a.path(thumb, "cert.pem").unlink()
    a.path(thumb, "key.pem").unlink()
    assert set(roam(lab, alice, a, dc=0, now=now + 2).tombstoned) == {
        f"%3\\{thumb}",
        f"%9\\{thumb}",
    }

    install(b.root, certificate, self_signed("alice")[1])  # by hand, after a's deletion
    replaced = roam(lab, alice, b, dc=0, now=now + HOUR)
    assert replaced.uploaded == ()
    assert set(replaced.deleted_local) == {f"%3\\{thumb}", f"%9\\{thumb}"}
    assert [key for key, _ in replaced.conflicts] == [f"%9\\{thumb}"]
    assert not b.path(thumb, "key.pem").exists() and not b.path(thumb, "cert.pem").exists()
    record = read_roaming(connect_as(lab, alice), alice.dn)
    keys = record.stored(KEY_ENVELOPES).values()
    assert [s.token.is_tombstone for s in keys] == [True]  # the key did not roam alone
    assert not roam(lab, alice, b, dc=0, now=now + HOUR + 1).changed


def test_an_expired_certificate_is_archived_on_both_hosts(schema_lab, alice, hosts):
    lab, (a, b) = schema_lab, hosts
    soon = datetime.datetime.now(datetime.UTC) + datetime.timedelta(hours=1)
    certificate, pkcs8 = self_signed("alice", not_after=soon)
    thumb = install(a.root, certificate, pkcs8)
    now = filetime_now()
    roam(lab, alice, a, dc=0, now=now)
    replicate(lab, 0, 1)
    roam(lab, alice, b, dc=1, now=now + 1)

    later = now + 2 * HOUR  # the certificate has expired
    archived = roam(lab, alice, a, dc=0, now=later)
    assert f"%3\\{thumb}" in archived.archived
    record = read_roaming(connect_as(lab, alice), alice.dn)
    (stored,) = record.stored(ACCOUNT_CREDENTIALS).values()
    assert parse_certificate_token(stored.token).archived  # kept in the directory, marked archived
    replicate(lab, 0, 1)
    roam(lab, alice, b, dc=1, now=later + 1)
    for host in (a, b):
        assert host.path(thumb, "cert.pem", archived=True).exists(), host.home
        assert host.path(thumb, "key.pem", archived=True).exists(), host.home
        assert not host.path(thumb, "cert.pem").exists()
        assert all(item.archived for item in host.store.items().values())


def test_the_roaming_key_life_cycle_in_the_directory(schema_lab, alice, tmp_path):
    lab = schema_lab
    recovery = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    recovery_pem = recovery.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    now = filetime_now()

    def obtain(cache: str, password: str | None, dc: int = 0):
        # The password is proven current here: the test sets it and binds with alice's own.
        return obtain_roaming_key(
            connect_as(lab, alice, dc),
            alice.dn,
            password=password,
            password_verified=True,
            cache_path=str(tmp_path / cache),
            recovery_public_keys=[recovery_pem],
            now=now,
            scrypt_params=CHEAP,
        )

    key, first = obtain("a.key", alice.password)
    assert first.actions[0] == "first use: created the roaming key" and first.operations
    record = read_roaming(connect_as(lab, alice), alice.dn)
    kinds = sorted(w.kind for w in parse_wrapped_keys(record)[0])
    assert kinds == [RecordKind.PASSWORD, RecordKind.RECOVERY]

    replicate(lab, 0, 1)
    got, on_b = obtain("b.key", alice.password, dc=1)  # a new host, through the other DC
    assert got == key and not on_b.changes and on_b.cache_written
    assert obtain("b.key", None, dc=1)[0] == key  # cached on host B, no password needed

    before = read_roaming(connect_as(lab, alice), alice.dn).blobs_in(ROAMING_KEYS)
    with pytest.raises(RoamingKeyUnavailable, match=alice.dn):
        obtain("c.key", "not the password")
    assert read_roaming(connect_as(lab, alice), alice.dn).blobs_in(ROAMING_KEYS) == before

    # The password changed: host A (cache) rewraps; a fresh host then opens with the new one.
    rewrapped = obtain("a.key", "a new password")[1]
    assert rewrapped.actions == ("rewrapped the password record for the current password",)
    assert obtain("d.key", "a new password")[0] == key

    # Forgotten password: the administrator recovers with the organisation's key.
    as_admin = connect_as(lab, lab.admin)
    recovered, _ = recover_with_recovery_key(
        as_admin,
        alice.dn,
        recovery_private_key=recovery,
        new_password="set by the helpdesk",
        now=now,
        scrypt_params=CHEAP,
    )
    assert recovered == key and obtain("e.key", "set by the helpdesk")[0] == key
