"""Token operations planned without a DC: what an administrator's list, remove, prune, purge,
export and import would write, and what the hosts' reconciliation then does with it."""

from __future__ import annotations

import datetime
import json
import uuid

import pytest

from credroam.roaming.certelement import certificate_token, thumbprint
from credroam.roaming.directory import (
    ACCOUNT_CREDENTIALS,
    DPAPI_MASTER_KEYS,
    KEY_ENVELOPES,
    ROAMING_KEYS,
    ROAMING_TIMESTAMP,
    RoamingRecord,
    build_modifications,
    decode_record,
)
from credroam.roaming.model import Base, BaseEntry, Item, ItemKind, Policy, StoreName, content_hash
from credroam.roaming.reconcile import reconcile
from credroam.roaming.sync import map_record
from credroam.roaming.tokenops import (
    ADMIN_LIMITS,
    EXPORT_FORMAT,
    TokenOpsError,
    after_changes,
    describe_record,
    diff_lines,
    export_document,
    import_changes,
    prune_changes,
    purge_changes,
    remove_changes,
    same_export,
)
from credroam.timestamps import TICKS_PER_DAY, RoamingTimestamp, encode_roaming_timestamp
from credroam.tokens import Token, TokenFlags, TokenType, encode_token, format_dn_binary

USER_DN = "CN=Alice,OU=Roaming,DC=lab,DC=example"
GUID = uuid.UUID("6f1c9a52-0a5e-4d8b-9b1e-1d2c3b4a5f60")
NOW = 134_000_000_000_000_000  # 2025-08-20
DAY = TICKS_PER_DAY
STAMP = encode_roaming_timestamp(RoamingTimestamp(first=1, last_change=NOW - 100))


def value(token: Token) -> bytes:
    return format_dn_binary(encode_token(token, ADMIN_LIMITS), USER_DN).encode()


def sealed_key(identifier: str, modified: int = NOW - 10 * DAY) -> Token:
    return Token(TokenType.CNG_KEY, identifier, modified, TokenFlags(0), b"sealed" * 20)


def tombstone(token_type: TokenType, identifier: str, modified: int) -> Token:
    return Token(token_type, identifier, modified, TokenFlags.TOMBSTONE, b"")


def record_of(*values: tuple[str, bytes], guid: uuid.UUID = GUID) -> RoamingRecord:
    raw: dict[str, list[bytes]] = {
        "objectguid": [guid.bytes_le],
        ROAMING_TIMESTAMP.lower(): [STAMP],
        "allowedattributes": [KEY_ENVELOPES.encode(), ROAMING_KEYS.encode()],
    }
    for attribute, raw_value in values:
        raw.setdefault(attribute.lower(), []).append(raw_value)
    return decode_record(USER_DN, raw, ADMIN_LIMITS)


@pytest.fixture
def certificate(make_certificate_der) -> tuple[Token, bytes]:
    der = make_certificate_der("alice")
    return certificate_token(der, NOW - 10 * DAY), der


@pytest.fixture
def alice(certificate) -> RoamingRecord:
    """A certificate with its sealed key and a wrapped roaming key."""
    token, _ = certificate
    return record_of(
        (ACCOUNT_CREDENTIALS, value(token)),
        (KEY_ENVELOPES, value(sealed_key(token.identifier))),
        (ROAMING_KEYS, format_dn_binary(b"CRKV-record", USER_DN).encode()),
    )


def keys_by_state(record: RoamingRecord) -> dict[str, str]:
    return {
        info.key: "tombstone" if info.tombstone else "live"
        for info in describe_record(record)
        if info.key is not None
    }


# --- list ------------------------------------------------------------------------------------


def test_the_listing_names_type_identifier_subject_expiry_size_and_state(alice, certificate):
    token, der = certificate
    listed = {info.key: info.as_dict() for info in describe_record(alice) if info.key}
    shown = listed[token.key]
    assert shown["type"] == "CERTIFICATE" and shown["identifier"] == thumbprint(der)
    assert shown["subject"] == "CN=alice" and shown["expires"].startswith("2034-01-01")
    assert shown["size"] == token.encoded_size
    assert shown["tombstone"] is False and shown["archived"] is False
    key = listed[f"%9\\{token.identifier}"]
    assert key["attribute"] == KEY_ENVELOPES and key["subject"] is None
    assert [i.attribute for i in describe_record(alice) if i.key is None] == [ROAMING_KEYS]
    json.dumps([info.as_dict() for info in describe_record(alice)])  # a module can return it


def test_a_value_that_fails_its_checks_is_listed_with_the_check():
    raw = b"B:4:ABCD:" + USER_DN.encode()
    (info,) = describe_record(record_of((ACCOUNT_CREDENTIALS, raw)))
    assert info.key is None and "length" in info.problem and info.size == len(raw)


# --- remove ----------------------------------------------------------------------------------


def test_removing_a_certificate_tombstones_it_and_its_sealed_key_after_every_value(
    alice, certificate
):
    token, _ = certificate
    changes = remove_changes(alice, token.identifier, NOW)
    after = after_changes(alice, changes)
    assert keys_by_state(after) == {token.key: "tombstone", f"%9\\{token.identifier}": "tombstone"}
    assert all(s.token.last_modified == NOW for s in after.tokens)
    assert after.blobs_in(ROAMING_KEYS) == alice.blobs_in(ROAMING_KEYS)
    assert remove_changes(after, token.key, NOW + 5) == []  # a second run changes nothing


def test_a_tombstone_is_dated_after_a_value_from_a_clock_ahead_of_ours(certificate):
    token, der = certificate
    ahead = certificate_token(der, NOW + DAY)
    changes = remove_changes(record_of((ACCOUNT_CREDENTIALS, value(ahead))), token.key, NOW)
    (stored,) = after_changes(record_of((ACCOUNT_CREDENTIALS, value(ahead))), changes).tokens
    assert stored.token.is_tombstone and stored.token.last_modified == NOW + DAY + 1


def test_every_host_deletes_its_copy_at_its_next_sync_after_a_remove(alice, certificate):
    token, der = certificate
    after = after_changes(alice, remove_changes(alice, token.key, NOW))
    local = Item(token.key, StoreName.MY, ItemKind.CERTIFICATE, token.last_modified,
                 content_hash(der), len(der))  # fmt: skip
    base = Base({token.key: BaseEntry.of(local, NOW - DAY)}, last_sync=NOW - DAY)
    directory = map_record(after, None, now=NOW).items
    plan = reconcile({token.key: local}, directory, base, Policy(), NOW + 1)
    assert [d.item.key for d in plan.delete_local] == [token.key]
    assert not plan.upload


def test_a_token_is_named_by_its_item_key_or_identifier_and_nothing_else(alice):
    assert remove_changes(alice, "%3\\" + "F" * 40, NOW) == []  # not there: nothing to do
    with pytest.raises(TokenOpsError, match="neither an item key"):
        remove_changes(alice, "../../x.bat", NOW)
    with pytest.raises(TokenOpsError, match="identifier"):
        remove_changes(alice, "%3\\..\\x", NOW)


def test_removing_a_windows_master_key_touches_only_that_attribute(alice):
    guid = "0b7e2a9c-1d3f-4a5b-8c6d-7e8f9a0b1c2d"
    master = Token(TokenType.DPAPI_MASTER_KEY, guid, NOW - DAY, TokenFlags(0), b"mk")
    record = record_of((DPAPI_MASTER_KEYS, value(master)))
    (change,) = remove_changes(record, guid, NOW)
    assert change.attribute == DPAPI_MASTER_KEYS and change.label == master.key


# --- prune -----------------------------------------------------------------------------------


def test_prune_removes_only_tombstones_past_their_days():
    old = tombstone(TokenType.CERTIFICATE, "1" * 40, NOW - 61 * DAY)
    fresh = tombstone(TokenType.CERTIFICATE, "2" * 40, NOW - 59 * DAY)
    record = record_of((ACCOUNT_CREDENTIALS, value(old)), (ACCOUNT_CREDENTIALS, value(fresh)))
    (change,) = prune_changes(record, NOW, ["tombstones"], tombstone_days=60)
    assert change.delete == (value(old),) and change.add is None
    assert prune_changes(after_changes(record, [change]), NOW, ["tombstones"]) == []


def test_prune_tombstones_archived_certificates_expired_longer_ago_with_their_keys(
    make_certificate_der,
):
    def archived(expiry: datetime.datetime) -> Token:
        der = make_certificate_der("old", not_valid_after=expiry)
        return certificate_token(der, NOW - 400 * DAY, archived=True)

    long_ago = archived(datetime.datetime(2024, 3, 1, tzinfo=datetime.UTC))
    recently = archived(datetime.datetime(2025, 8, 1, tzinfo=datetime.UTC))
    record = record_of(
        (ACCOUNT_CREDENTIALS, value(long_ago)),
        (KEY_ENVELOPES, value(sealed_key(long_ago.identifier))),
        (ACCOUNT_CREDENTIALS, value(recently)),
    )
    changes = prune_changes(record, NOW, ["archived"], archived_older_than_days=365)
    assert sorted(c.label for c in changes) == [long_ago.key, f"%9\\{long_ago.identifier}"]
    assert keys_by_state(after_changes(record, changes))[recently.key] == "live"
    with pytest.raises(TokenOpsError, match="archived_older_than_days"):
        prune_changes(record, NOW, ["archived"])


def test_prune_handles_oversize_and_malformed_values_only_when_asked(certificate):
    big = Token(TokenType.CERTIFICATE, "3" * 40, NOW - DAY, TokenFlags(0), b"x" * 70000)
    damaged = b"B:4:ABCD:" + USER_DN.encode()
    record = record_of((ACCOUNT_CREDENTIALS, value(big)), (ACCOUNT_CREDENTIALS, damaged))
    (oversize,) = prune_changes(record, NOW, ["oversize"], max_token_size=65535)
    assert oversize.label == big.key and oversize.add is not None  # a tombstone, hosts delete
    (malformed,) = prune_changes(record, NOW, ["malformed"])
    assert malformed.delete == (damaged,) and malformed.add is None
    with pytest.raises(TokenOpsError, match="unknown prune"):
        prune_changes(record, NOW, ["everything"])


# --- purge -----------------------------------------------------------------------------------


def test_purge_as_tombstones_keeps_the_roaming_key_and_a_second_run_does_nothing(alice):
    after = after_changes(alice, purge_changes(alice, "tombstone", NOW))
    assert set(keys_by_state(after).values()) == {"tombstone"}
    assert len(after.tokens) == len(alice.tokens)
    assert after.blobs_in(ROAMING_KEYS) == alice.blobs_in(ROAMING_KEYS)
    assert purge_changes(after, "tombstone", NOW + 1) == []


def test_purge_by_clearing_deletes_every_value_and_a_second_run_does_nothing(alice):
    damaged = (ACCOUNT_CREDENTIALS, b"B:4:ABCD:" + USER_DN.encode())
    record = record_of(*[(v.attribute, v.raw) for v in (*alice.tokens, *alice.blobs)], damaged)
    after = after_changes(record, purge_changes(record, "clear", NOW))
    assert describe_record(after) == []
    assert purge_changes(after, "clear", NOW) == []


def test_after_a_clear_a_host_with_its_base_keeps_its_copy_until_the_tombstone_days(
    alice, certificate
):
    token, der = certificate
    cleared = after_changes(alice, purge_changes(alice, "clear", NOW))
    local = Item(token.key, StoreName.MY, ItemKind.CERTIFICATE, token.last_modified,
                 content_hash(der), len(der))  # fmt: skip
    base = Base({token.key: BaseEntry.of(local, NOW - DAY)}, last_sync=NOW - DAY)
    soon = reconcile({token.key: local}, {}, base, Policy(), NOW)
    assert not soon.delete_local and not soon.upload  # taken for replication lag
    later = reconcile({token.key: local}, {}, base, Policy(), NOW + 61 * DAY)
    assert [d.item.key for d in later.delete_local] == [token.key]
    assert map_record(cleared, None).items == {}


def test_every_write_replaces_the_timestamp_it_read(alice, certificate):
    token, _ = certificate
    (modify,), stamp = build_modifications(alice, remove_changes(alice, token.key, NOW), NOW)
    delete, add = modify[ROAMING_TIMESTAMP]
    assert delete[1] == [STAMP]
    assert add[1] == [encode_roaming_timestamp(stamp)] and stamp.last_change == NOW


# --- export and import -----------------------------------------------------------------------


def test_an_export_holds_every_value_as_read_and_imports_back_after_a_clear(alice):
    document = json.loads(json.dumps(export_document(alice, server="dc1", exported_at="t")))
    assert document["format"] == EXPORT_FORMAT and document["version"] == 1
    assert len(document["values"]) == 3
    cleared = after_changes(alice, purge_changes(alice, "clear", NOW))
    changes, notes = import_changes(cleared, document, NOW + 1)
    restored = after_changes(cleared, changes)
    assert notes == []
    assert {(s.attribute, s.token.data) for s in restored.tokens} == {
        (s.attribute, s.token.data) for s in alice.tokens
    }
    assert restored.blobs_in(ROAMING_KEYS)[0].blob == alice.blobs_in(ROAMING_KEYS)[0].blob
    assert import_changes(restored, document, NOW + 2) == ([], [])  # idempotent


def test_an_import_after_a_remove_wins_over_the_tombstone_so_hosts_download_it_again(
    alice, certificate
):
    token, _ = certificate
    document = export_document(alice, server="dc1", exported_at="t")
    removed = after_changes(alice, remove_changes(alice, token.key, NOW))
    restored = after_changes(removed, import_changes(removed, document, NOW + 1)[0])
    newest = restored.stored(ACCOUNT_CREDENTIALS)[token.key].token
    assert not newest.is_tombstone and newest.last_modified == NOW + 1
    assert newest.data == token.data
    assert len(restored.tokens) == 2  # the tombstones were replaced, not kept beside


def test_an_import_leaves_other_content_alone_and_refuses_another_users_export(
    alice, certificate, make_certificate_der
):
    token, _ = certificate
    document = export_document(alice, server="dc1", exported_at="t")
    edited = Token(token.type, token.identifier, NOW, TokenFlags(0), token.data + b"\0")
    other = record_of((ACCOUNT_CREDENTIALS, value(edited)))
    changes, notes = import_changes(other, document, NOW)
    assert token.key not in {c.label for c in changes}
    assert notes == [
        f"{ACCOUNT_CREDENTIALS} {token.key}: the directory holds other content, left alone"
    ]
    stranger = record_of(guid=uuid.UUID(int=1))
    with pytest.raises(TokenOpsError, match="bound to their own user"):
        import_changes(stranger, document, NOW)
    with pytest.raises(TokenOpsError, match="version"):
        import_changes(alice, {**document, "version": 2}, NOW)


def test_two_exports_of_the_same_values_are_the_same_export(alice):
    first = export_document(alice, server="dc1", exported_at="then")
    again = export_document(alice, server="dc2", exported_at="now")
    assert same_export(first, again)
    removed = after_changes(alice, purge_changes(alice, "tombstone", NOW))
    assert not same_export(first, export_document(removed, server="dc1", exported_at="t"))


def test_the_diff_shows_each_value_before_and_after(alice, certificate):
    token, _ = certificate
    after = after_changes(alice, remove_changes(alice, token.key, NOW))
    assert f"{ACCOUNT_CREDENTIALS} {token.key} live" in diff_lines(alice)
    assert f"{ACCOUNT_CREDENTIALS} {token.key} tombstone" in diff_lines(after)
