"""The LDAP edge without a DC: record decoding, change and modlist construction, conflicts.

A small fake connection stands in for ldap3 (it records every operation and answers with canned
raw attributes); the real behaviour against Samba is in tests/integration/test_directory.py.
"""

from __future__ import annotations

import struct
import uuid

import ldap3
import pytest

from credroam.errors import DirectoryError
from credroam.roaming.directory import (
    ACCOUNT_CREDENTIALS,
    KEY_ENVELOPES,
    ROAMING_KEYS,
    ROAMING_TIMESTAMP,
    ConcurrentModification,
    RoamingRecord,
    ValueChange,
    apply_changes,
    build_modifications,
    decode_record,
    find_user,
    put_blob,
    put_token,
    read_roaming,
    remove_token,
)
from credroam.timestamps import RoamingTimestamp, encode_roaming_timestamp
from credroam.tokens import Token, TokenFlags, TokenType, encode_token, format_dn_binary

USER_DN = "CN=Alice,OU=Roaming,DC=lab,DC=example"
GUID = uuid.UUID("6f1c9a52-0a5e-4d8b-9b1e-1d2c3b4a5f60")
THUMB_A = "A" * 40
THUMB_B = "B" * 40
NOW = 134_000_000_000_000_000


def cert_token(identifier: str = THUMB_A, data: bytes = b"cert", modified: int = NOW - 10) -> Token:
    return Token(TokenType.CERTIFICATE, identifier, modified, TokenFlags(0), data)


def dn_binary(blob: bytes, dn: str = USER_DN) -> bytes:
    return format_dn_binary(blob, dn).encode()


def raw_token(token: Token, dn: str = USER_DN) -> bytes:
    return dn_binary(encode_token(token), dn)


def cve_token_blob() -> bytes:
    """A well-formed token whose identifier is the CVE-2022-30170 path escape."""
    name = rb"..\..\Windows\Start Menu\Programs\Startup\x.bat"
    return struct.pack("<3s93sQHH20sI", b"%3\\", name, NOW, 0, 0, bytes(20), 0)


def stamp_raw(last: int = NOW - 100) -> bytes:
    return encode_roaming_timestamp(RoamingTimestamp(first=1, last_change=last))


def record(**raw_values) -> RoamingRecord:
    raw = {"objectguid": [GUID.bytes_le]}
    raw.update({name.lower(): values for name, values in raw_values.items()})
    return decode_record(USER_DN, raw)


# --- decoding what was read ----------------------------------------------------------------


def test_valid_values_become_tokens_with_their_exact_raw_value():
    value = raw_token(cert_token())
    got = record(msPKIAccountCredentials=[value], msPKIRoamingTimeStamp=[stamp_raw()])
    assert [s.token.key for s in got.tokens] == [f"%3\\{THUMB_A}"]
    assert got.tokens[0].raw == value
    assert got.timestamp == RoamingTimestamp(1, NOW - 100)
    assert got.object_guid == GUID
    assert got.rejected == ()


@pytest.mark.parametrize(
    ("value", "check"),
    [
        (b"B:4:\xff\xfe:" + USER_DN.encode(), "dn-binary"),  # not UTF-8
        (dn_binary(cve_token_blob()), "identifier"),  # the CVE exploit's name
        (dn_binary(b"%3\\" + bytes(200)), "identifier"),  # empty identifier
        (dn_binary(encode_token(cert_token())[:-1]), "length"),  # truncated
        (raw_token(cert_token(), dn="CN=Administrator,CN=Users,DC=lab,DC=example"), "dn-binary"),
        (b"garbage", "dn-binary"),
    ],
)
def test_hostile_values_are_rejected_and_the_rest_is_kept(value, check):
    good = raw_token(cert_token(THUMB_B))
    got = record(msPKIAccountCredentials=[value, good])
    assert [s.token.identifier for s in got.tokens] == [THUMB_B]
    assert [(r.attribute, r.check, r.raw) for r in got.rejected] == [
        (ACCOUNT_CREDENTIALS, check, value)
    ]


def test_a_bad_sha1_is_rejected():
    blob = bytearray(encode_token(cert_token()))
    blob[-1] ^= 1  # data no longer matches the stored SHA-1
    got = record(msPKIAccountCredentials=[dn_binary(bytes(blob))])
    assert [r.check for r in got.rejected] == ["sha1"]


def test_a_malformed_timestamp_is_rejected_but_kept_for_an_exact_replace():
    got = record(msPKIRoamingTimeStamp=[b"short"])
    assert got.timestamp is None
    assert got.timestamp_raw == b"short"
    assert [(r.attribute, r.check) for r in got.rejected] == [(ROAMING_TIMESTAMP, "timestamp")]


def test_own_dn_is_compared_without_regard_to_case_or_spacing():
    value = raw_token(cert_token(), dn="cn=alice, ou=roaming, dc=LAB, dc=example")
    assert record(msPKIAccountCredentials=[value]).rejected == ()


def test_values_over_the_count_limit_are_rejected_not_read():
    from credroam.tokens import TokenLimits

    values = [raw_token(cert_token(f"{i:040X}")) for i in range(3)]
    got = decode_record(USER_DN, {ACCOUNT_CREDENTIALS.lower(): values}, TokenLimits(max_tokens=2))
    assert len(got.tokens) == 2
    assert [r.check for r in got.rejected] == ["size-limit"]


def test_duplicate_keys_resolve_to_the_newest_and_all_are_replaced_on_write():
    old = raw_token(cert_token(data=b"old", modified=NOW - 50))
    new = raw_token(cert_token(data=b"new", modified=NOW - 20))
    got = record(msPKIAccountCredentials=[new, old])
    assert got.stored(ACCOUNT_CREDENTIALS)[f"%3\\{THUMB_A}"].token.data == b"new"
    change = put_token(got, ACCOUNT_CREDENTIALS, cert_token(data=b"newest", modified=NOW))
    assert set(change.delete) == {old, new}


def test_credroam_schema_is_detected_from_allowed_attributes():
    assert not record(allowedAttributes=[b"msPKIAccountCredentials"]).credroam_schema
    allowed = [b"msPKIAccountCredentials", b"credroamKeyEnvelopes", b"credroamRoamingKeys"]
    assert record(allowedAttributes=allowed).credroam_schema


def test_roaming_key_values_are_kept_as_blobs():
    got = record(credroamRoamingKeys=[dn_binary(b"wrapped-key")])
    assert [(b.attribute, b.blob) for b in got.blobs_in(ROAMING_KEYS)] == [
        (ROAMING_KEYS, b"wrapped-key")
    ]


# --- building changes ----------------------------------------------------------------------


def test_put_token_is_none_when_the_directory_already_holds_it():
    token = cert_token()
    assert (
        put_token(record(msPKIAccountCredentials=[raw_token(token)]), ACCOUNT_CREDENTIALS, token)
        is None
    )


def test_put_token_replaces_the_exact_old_value():
    old = raw_token(cert_token(data=b"v1"))
    change = put_token(
        record(msPKIAccountCredentials=[old]), ACCOUNT_CREDENTIALS, cert_token(data=b"v2")
    )
    assert change.delete == (old,)
    assert change.add == encode_token(cert_token(data=b"v2"))


def test_remove_token_and_put_blob():
    value = raw_token(cert_token())
    got = record(msPKIAccountCredentials=[value], credroamRoamingKeys=[dn_binary(b"k1")])
    assert remove_token(got, ACCOUNT_CREDENTIALS, f"%3\\{THUMB_A}").delete == (value,)
    assert remove_token(got, ACCOUNT_CREDENTIALS, f"%3\\{THUMB_B}") is None
    existing = got.blobs_in(ROAMING_KEYS)
    assert put_blob(got, ROAMING_KEYS, b"k1", existing) is None
    assert put_blob(got, ROAMING_KEYS, b"k2", existing).delete == (dn_binary(b"k1"),)


def test_a_change_that_does_nothing_is_refused():
    with pytest.raises(ValueError, match="neither deletes nor adds"):
        ValueChange(ACCOUNT_CREDENTIALS)


# --- modlists ------------------------------------------------------------------------------


def test_no_changes_means_no_modify():
    assert build_modifications(record(), [], NOW) == ([], None)


def test_modify_deletes_exact_old_values_then_adds_and_replaces_the_timestamp():
    old = raw_token(cert_token(data=b"v1"))
    got = record(msPKIAccountCredentials=[old], msPKIRoamingTimeStamp=[stamp_raw()])
    change = put_token(got, ACCOUNT_CREDENTIALS, cert_token(data=b"v2"))
    envelope = ValueChange(KEY_ENVELOPES, add=b"sealed", label="key")
    (modlist,), stamp = build_modifications(got, [change, envelope], NOW)
    assert modlist[ACCOUNT_CREDENTIALS] == [
        (ldap3.MODIFY_DELETE, [old]),
        (ldap3.MODIFY_ADD, [raw_token(cert_token(data=b"v2"))]),
    ]
    assert modlist[KEY_ENVELOPES] == [(ldap3.MODIFY_ADD, [dn_binary(b"sealed")])]
    assert stamp == RoamingTimestamp(first=1, last_change=NOW)
    assert modlist[ROAMING_TIMESTAMP] == [
        (ldap3.MODIFY_DELETE, [stamp_raw()]),
        (ldap3.MODIFY_ADD, [encode_roaming_timestamp(stamp)]),
    ]


def test_a_pure_delete_never_sends_an_empty_value_list():
    value = raw_token(cert_token())
    got = record(msPKIAccountCredentials=[value])
    (modlist,), _ = build_modifications(
        got, [remove_token(got, ACCOUNT_CREDENTIALS, f"%3\\{THUMB_A}")], NOW
    )
    assert modlist[ACCOUNT_CREDENTIALS] == [(ldap3.MODIFY_DELETE, [value])]
    # No timestamp was read, so the first one is added (an add conflicts if someone raced us).
    assert modlist[ROAMING_TIMESTAMP] == [
        (ldap3.MODIFY_ADD, [encode_roaming_timestamp(RoamingTimestamp(NOW, NOW))])
    ]


def test_the_timestamp_moves_forward_even_when_this_clock_is_behind():
    got = record(msPKIRoamingTimeStamp=[stamp_raw(last=NOW + 1000)])
    _, stamp = build_modifications(got, [ValueChange(KEY_ENVELOPES, add=b"x")], NOW)
    assert stamp.last_change == NOW + 1001


def test_big_uploads_are_split_with_a_chained_timestamp_and_no_item_split():
    got = record(msPKIRoamingTimeStamp=[stamp_raw()])
    changes = [ValueChange(KEY_ENVELOPES, add=bytes([i]) * 600, label=str(i)) for i in range(5)]
    modifications, stamp = build_modifications(got, changes, NOW, max_request_bytes=2500)
    assert len(modifications) == 3
    added = [v for m in modifications for _, values in m[KEY_ENVELOPES] for v in values]
    assert added == [dn_binary(bytes([i]) * 600) for i in range(5)]
    # Each modify deletes the timestamp the previous one wrote: one optimistic chain.
    previous = stamp_raw()
    for modlist in modifications:
        (delete_op, (deleted,)), (add_op, (added_stamp,)) = modlist[ROAMING_TIMESTAMP]
        assert (delete_op, add_op) == (ldap3.MODIFY_DELETE, ldap3.MODIFY_ADD)
        assert deleted == previous
        previous = added_stamp
    assert previous == encode_roaming_timestamp(stamp)


# --- the fake connection -------------------------------------------------------------------


class FakeConnection:
    """Records operations; answers searches from ``entries``, modifies from ``modify_results``."""

    def __init__(self, entries=None, modify_results=()):
        self.server = type("Server", (), {"host": "dc1.lab.example"})()
        self.entries = entries or {}
        self.modify_results = list(modify_results)
        self.operations = []
        self.result = {}
        self.response = []

    def search(self, base, search_filter, search_scope=None, attributes=None):
        self.operations.append(("search", base, search_filter, tuple(attributes or ())))
        key = attributes[0] if len(attributes or ()) == 1 else base
        found = self.entries.get(key)
        if found is None:
            self.result, self.response = {"result": 32, "description": "noSuchObject"}, []
            return False
        self.result = {"result": 0, "description": "success"}
        self.response = [
            {"type": "searchResEntry", "dn": dn, "raw_attributes": raw} for dn, raw in found
        ]
        return True

    def modify(self, dn, changes):
        self.operations.append(("modify", dn, changes))
        code = self.modify_results.pop(0) if self.modify_results else 0
        message = getattr(self, "modify_message", "msg")
        self.result = {"result": code, "description": f"code{code}", "message": message}
        return code == 0


def test_read_roaming_is_one_base_search_of_every_roaming_attribute():
    value = raw_token(cert_token())
    conn = FakeConnection({USER_DN: [(USER_DN, {"msPKIAccountCredentials": [value]})]})
    got = read_roaming(conn, USER_DN)
    assert [op[0] for op in conn.operations] == ["search"]
    asked = {name.lower() for name in conn.operations[0][3]}
    assert {"mspkiaccountcredentials", "mspkiroamingtimestamp", "credroamkeyenvelopes"} <= asked
    assert got.tokens[0].raw == value


def test_read_roaming_follows_ad_ranged_retrieval():
    values = [raw_token(cert_token(f"{i:040X}")) for i in range(5)]
    conn = FakeConnection(
        {
            USER_DN: [(USER_DN, {"msPKIAccountCredentials;range=0-1": values[:2]})],
            "mspkiaccountcredentials;range=2-*": [
                (USER_DN, {"msPKIAccountCredentials;range=2-*": values[2:]})
            ],
        }
    )
    got = read_roaming(conn, USER_DN)
    assert len(got.tokens) == 5
    assert len(conn.operations) == 2


def test_read_roaming_of_a_missing_user_names_it():
    with pytest.raises(DirectoryError, match=r"CN=Nobody.*failed on dc1\.lab\.example: noSuchObj"):
        read_roaming(FakeConnection(), "CN=Nobody,DC=lab,DC=example")


def test_find_user_escapes_the_filter_and_needs_exactly_one_selector():
    conn = FakeConnection({"DC=lab,DC=example": [(USER_DN, {"objectGUID": [GUID.bytes_le]})]})
    user = find_user(conn, "DC=lab,DC=example", sam_account_name="al*ce)(x")
    assert user.dn == USER_DN and user.object_guid == GUID
    assert r"al\2ace\29\28x" in conn.operations[0][2]
    with pytest.raises(DirectoryError, match="exactly one"):
        find_user(conn, "DC=lab,DC=example", sam_account_name="a", upn="a@lab")


WITH_SCHEMA = {"allowedAttributes": [b"credroamKeyEnvelopes", b"credroamRoamingKeys"]}


def test_credroam_attributes_are_not_written_without_their_schema():
    conn = FakeConnection()
    with pytest.raises(DirectoryError, match=r"credroam's schema .* is not installed"):
        apply_changes(conn, record(), [ValueChange(KEY_ENVELOPES, add=b"x")], now=NOW)
    assert conn.operations == []


def test_an_attribute_missing_from_the_schema_is_no_conflict():
    conn = FakeConnection(modify_results=[16])
    conn.modify_message = "attribute 'credroamKeyEnvelopes' was not found in the schema!"
    with pytest.raises(DirectoryError) as caught:
        apply_changes(conn, record(**WITH_SCHEMA), [ValueChange(KEY_ENVELOPES, add=b"x")], now=NOW)
    assert not isinstance(caught.value, ConcurrentModification)


def test_apply_nothing_sends_nothing():
    conn = FakeConnection()
    applied = apply_changes(conn, record(), [], now=NOW)
    assert not applied.changed and conn.operations == []


def test_apply_returns_the_modlist_it_sent():
    conn = FakeConnection()
    change = ValueChange(KEY_ENVELOPES, add=b"sealed", label="%9\\" + THUMB_A)
    applied = apply_changes(conn, record(**WITH_SCHEMA), [change], now=NOW)
    assert [op[2] for op in conn.operations] == list(applied.modifications)
    assert applied.describe() == [f"add {KEY_ENVELOPES} %9\\{THUMB_A}"]


@pytest.mark.parametrize("code", [16, 20])
def test_a_vanished_or_existing_value_is_a_concurrent_modification(code):
    conn = FakeConnection(modify_results=[code])
    with pytest.raises(ConcurrentModification, match=r"changed on dc1\.lab\.example"):
        apply_changes(conn, record(**WITH_SCHEMA), [ValueChange(KEY_ENVELOPES, add=b"x")], now=NOW)


def test_other_write_errors_name_the_attribute_and_the_dc():
    conn = FakeConnection(modify_results=[50])
    with pytest.raises(DirectoryError, match=r"msPKIAccountCredentials.*dc1\.lab\.example.*50"):
        apply_changes(conn, record(), [ValueChange(ACCOUNT_CREDENTIALS, add=b"x")], now=NOW)
