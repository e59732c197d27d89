"""The compliance checks, pure: each broken state fails exactly the check meant for it."""

from __future__ import annotations

import base64
import datetime
import struct
import uuid

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from credroam.compliance.access import CONFIDENTIAL_READ, SELF, confidential_readable
from credroam.compliance.checks import (
    CHECKS,
    GpoFacts,
    Result,
    Sizing,
    Subject,
    SysvolFacts,
    UserFacts,
    blocking,
    gpo_results,
    replication_results,
    schema_results,
    user_results,
    user_stats,
)
from credroam.compliance.keyscan import scan_values
from credroam.compliance.read import PAGE_SIZE, USER_FILTER, users
from credroam.gpo.secdesc import Ace, SecurityDescriptor, sid_bytes
from credroam.gpo.settings import CREDENTIAL_ROAMING, policy_entries
from credroam.roaming.certelement import certificate_token
from credroam.roaming.directory import ACCOUNT_CREDENTIALS, KEY_ENVELOPES, decode_record
from credroam.roaming.envelope import (
    ScryptParams,
    new_roaming_key,
    wrap_with_password,
    wrap_with_recovery_key,
)
from credroam.roaming.model import Policy
from credroam.roaming.roamingkey import encode_wrapped_key, roaming_key_id
from credroam.roaming.sync import READ_LIMITS
from credroam.schema.definitions import PRIVATE_INFORMATION
from credroam.timestamps import TICKS_PER_DAY, to_filetime
from credroam.tokens import Token, TokenFlags, TokenType, encode_token, format_dn_binary

DN = "CN=alice,OU=Roaming,DC=lab,DC=example"
NOW = to_filetime(datetime.datetime(2026, 12, 1, tzinfo=datetime.UTC))
POLICY = Policy(tombstone_days=60, max_tokens=20, max_token_size=4000)
SIZING = Sizing(certificates=2, renewals=2, machines=2, bytes_per_token=500)  # 8 tokens, 4000 B
ADMINS = "S-1-5-32-544"
FAST_SCRYPT = ScryptParams(log2_n=10)


def value(token: Token) -> bytes:
    return format_dn_binary(encode_token(token, READ_LIMITS), DN).encode()


def cert_value(der: bytes, modified: int = NOW - TICKS_PER_DAY, **kwargs) -> bytes:
    return value(certificate_token(der, modified, **kwargs))


def user(values: dict[str, list[bytes]], readable: bool = True) -> UserFacts:
    raw = {name.lower(): list(vals) for name, vals in values.items()}
    raw.setdefault("objectguid", [uuid.UUID(int=7).bytes_le])
    return UserFacts(DN, decode_record(DN, raw, READ_LIMITS), raw, readable, "no right")


def failing(results: list[Result]) -> set[str]:
    return {r.check for r in results if r.status != "pass"}


def run(values: dict[str, list[bytes]], require_recovery: bool = False) -> list[Result]:
    return user_results(user(values), POLICY, SIZING, NOW, require_recovery)


@pytest.fixture(scope="module")
def der(make_certificate_der) -> bytes:
    return make_certificate_der("alice")


# --- users: one broken state, one check ------------------------------------------------------


def test_a_healthy_user_passes_every_check(der):
    results = run({ACCOUNT_CREDENTIALS: [cert_value(der)]})
    assert {r.check for r in results} == {c for c in CHECKS if c.startswith("user.")}
    assert failing(results) == set()


def test_a_user_over_the_token_count_fails_the_limits_and_not_the_sizing(make_certificate_der):
    values = [cert_value(make_certificate_der(f"c{i}")) for i in range(POLICY.max_tokens + 1)]
    results = run({ACCOUNT_CREDENTIALS: values})
    assert failing(results) == {"user.limits"}
    [limits] = [r for r in results if r.check == "user.limits"]
    assert "21 tokens, over DIMSRoamingMaxNumTokens 20" in limits.message


def test_a_token_over_the_size_limit_fails_the_limits(der):
    big = Token(TokenType.CERTIFICATE, "A" * 40, NOW, TokenFlags(0), b"x" * 5000)
    results = run({ACCOUNT_CREDENTIALS: [cert_value(der), value(big)]})
    assert "user.limits" in failing(results)
    assert "over DIMSRoamingMaxTokenSize 4000" in next(
        r.message for r in results if r.check == "user.limits"
    )


def test_a_user_over_the_estimate_but_within_the_limits_fails_only_the_sizing(
    make_certificate_der,
):
    values = [cert_value(make_certificate_der(f"c{i}")) for i in range(SIZING.tokens + 1)]
    assert failing(run({ACCOUNT_CREDENTIALS: values})) == {"user.sizing"}


def test_a_malformed_token_fails_only_the_token_check(der):
    broken = bytearray(encode_token(certificate_token(der, NOW), READ_LIMITS))
    broken[-1] ^= 0xFF  # the SHA-1 of the data no longer matches
    values = [cert_value(der), format_dn_binary(bytes(broken), DN).encode()]
    results = run({ACCOUNT_CREDENTIALS: values})
    assert failing(results) == {"user.tokens"}
    assert "msPKIAccountCredentials" in next(r.message for r in results if r.status == "fail")


def test_a_tombstone_past_its_days_fails_only_the_tombstone_check(der, make_certificate_der):
    old = NOW - 61 * TICKS_PER_DAY
    dead = Token(TokenType.CERTIFICATE, "B" * 40, old, TokenFlags.TOMBSTONE, b"")
    recent = Token(TokenType.CERTIFICATE, "C" * 40, NOW - TICKS_PER_DAY, TokenFlags.TOMBSTONE, b"")
    results = run({ACCOUNT_CREDENTIALS: [cert_value(der), value(dead), value(recent)]})
    assert failing(results) == {"user.tombstones"}
    message = next(r.message for r in results if r.status == "fail")
    assert "B" * 40 in message and "61 days old" in message and "C" * 40 not in message


def test_an_expired_certificate_not_archived_fails_only_the_expiry_check(make_certificate_der):
    expired = make_certificate_der("old", datetime.datetime(2025, 1, 1, tzinfo=datetime.UTC))
    archived = make_certificate_der("kept", datetime.datetime(2025, 1, 2, tzinfo=datetime.UTC))
    values = [cert_value(expired), cert_value(archived, archived=True)]
    results = run({ACCOUNT_CREDENTIALS: values})
    assert failing(results) == {"user.expired"}
    assert len(next(r for r in results if r.status == "fail").message.split(";")) == 1


def plaintext_keys() -> dict[str, bytes]:
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    none = serialization.NoEncryption()
    der = serialization.Encoding.DER
    return {
        "PEM PRIVATE KEY": rsa_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, none
        ),
        "PKCS#8 DER": rsa_key.private_bytes(der, serialization.PrivateFormat.PKCS8, none),
        "PKCS#1 DER": rsa_key.private_bytes(
            der, serialization.PrivateFormat.TraditionalOpenSSL, none
        ),
        "SEC1 DER": ec_key.private_bytes(der, serialization.PrivateFormat.TraditionalOpenSSL, none),
    }


@pytest.mark.parametrize("form", sorted(plaintext_keys()))
def test_a_plaintext_key_in_any_attribute_fails_only_the_key_check(der, form):
    key = plaintext_keys()[form]
    results = run({ACCOUNT_CREDENTIALS: [cert_value(der)], "description": [b"x " + key]})
    assert failing(results) == {"user.plaintext_keys"}
    assert f"{form} private key in description value 0" in next(
        r.message for r in results if r.status == "fail"
    )


def test_a_plaintext_key_inside_a_token_is_found_through_the_hex_of_its_dn_binary(der):
    key = plaintext_keys()["PKCS#8 DER"]
    token = Token(TokenType.CNG_KEY, "D" * 40, NOW, TokenFlags(0), key)
    hits = scan_values({KEY_ENVELOPES: [value(token)]})
    assert [(h.form, h.encoding) for h in hits] == [("PKCS#8 DER", "hex")]


def test_keys_hidden_in_base64_and_encrypted_keys_are_told_apart():
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    pkcs8 = plaintext_keys()["PKCS#8 DER"]
    encrypted = rsa_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret"),
    )
    hits = scan_values({"info": [base64.b64encode(pkcs8)], "comment": [encrypted]})
    assert [(h.attribute, h.form, h.encoding) for h in hits] == [("info", "PKCS#8 DER", "base64")]


def test_certificates_and_sealed_keys_are_not_taken_for_plaintext_keys(der):
    sealed = Token(TokenType.CNG_KEY, "E" * 40, NOW, TokenFlags(0), bytes(range(256)) * 4)
    assert (
        scan_values({ACCOUNT_CREDENTIALS: [cert_value(der)], KEY_ENVELOPES: [value(sealed)]}) == []
    )


@pytest.fixture(scope="module")
def wrapped_keys() -> dict[str, bytes]:
    """A password-wrapped and a recovery-wrapped roaming key, as credroamRoamingKeys values."""
    key = new_roaming_key()
    recovery = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    pem = recovery.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    user_id = str(uuid.UUID(int=7))
    envelopes = {
        "password": wrap_with_password(key, "pw", user_id=user_id, scrypt_params=FAST_SCRYPT),
        "recovery": wrap_with_recovery_key(key, pem, user_id=user_id),
    }
    key_id = roaming_key_id(key)
    return {
        kind: format_dn_binary(encode_wrapped_key(key_id, envelope), DN).encode()
        for kind, envelope in envelopes.items()
    }


def test_sealed_keys_without_a_password_wrapped_roaming_key_fail_only_that_check(der, wrapped_keys):
    sealed = Token(TokenType.CNG_KEY, "F" * 40, NOW, TokenFlags(0), b"sealed" * 20)
    values = {ACCOUNT_CREDENTIALS: [cert_value(der)], KEY_ENVELOPES: [value(sealed)]}
    assert failing(run(values)) == {"user.roaming_key"}
    values["credroamRoamingKeys"] = [wrapped_keys["password"]]
    assert failing(run(values)) == set()
    assert failing(run(values, require_recovery=True)) == {"user.roaming_key"}
    values["credroamRoamingKeys"].append(wrapped_keys["recovery"])
    assert failing(run(values, require_recovery=True)) == set()


def test_a_user_whose_confidential_attributes_are_unreadable_is_unknown_never_passed():
    results = user_results(user({}, readable=False), POLICY, SIZING, NOW, False)
    assert {r.status for r in results} == {"unknown"}
    assert {r.check for r in results} == {c for c in CHECKS if c.startswith("user.")}
    assert all("could not read the confidential roaming attributes" in r.message for r in results)


def test_user_stats_count_every_token_value_and_its_encoded_size(der):
    token = certificate_token(der, NOW)
    record = user({ACCOUNT_CREDENTIALS: [value(token), b"B:4:zz:" + DN.encode()]}).record
    assert user_stats(record) == {"tokens": 2, "bytes": token.encoded_size + 7 + len(DN)}


# --- schema, GPO, replication ----------------------------------------------------------------


def test_schema_results_name_what_a_dc_lacks_and_what_differs():
    results = schema_results("dc2.lab", ["credroamKeyEnvelopes"], [])
    assert failing(results) == {"schema.present"}
    assert "dc2.lab lacks credroamKeyEnvelopes" in results[0].message
    assert failing(schema_results("dc1.lab", [], ["attribute x: differs"])) == {
        "schema.definitions"
    }
    unread = schema_results("dc3.lab", None, None, "unreachable")
    assert {r.status for r in unread} == {"unknown"}


WANTED = [
    e.describe()
    for e in policy_entries(CREDENTIAL_ROAMING, {"enabled": True, "tombstone_days": 60})
]
LINK = "OU=Roaming,DC=lab,DC=example"


def gpo(**sysvol) -> GpoFacts:
    good = {"gpt_version": 65536, "registry": tuple(WANTED), "acl_in_sync": True}
    return GpoFacts(
        "Credential Roaming",
        True,
        "{GUID}",
        65536,
        {LINK: {"linked": True, "enabled": True}},
        (SysvolFacts("dc1", **good), SysvolFacts("dc2", **{**good, **sysvol})),
    )


def gpo_failing(facts: GpoFacts) -> set[tuple[str, str]]:
    return {
        (r.check, r.subject.name)
        for r in gpo_results("lab", facts, WANTED, [LINK])
        if r.status != "pass"
    }


def test_a_healthy_gpo_passes():
    assert gpo_failing(gpo()) == set()


def test_gpo_versions_out_of_sync_fail_only_the_version_check_on_that_dc():
    assert gpo_failing(gpo(gpt_version=0)) == {("gpo.version", "dc2")}


def test_a_setting_other_than_wanted_fails_only_the_settings_check():
    changed = [dict(e, data=30) if e["value"] == "DIMSRoamingTombstoneDays" else e for e in WANTED]
    assert gpo_failing(gpo(registry=tuple(changed))) == {("gpo.settings", "dc2")}


def test_a_registry_pol_that_does_not_parse_fails_its_check_and_leaves_settings_unknown():
    found = gpo_results("lab", gpo(registry=None, registry_error="bad"), WANTED, [LINK])
    assert {(r.check, r.status) for r in found if r.status != "pass"} == {
        ("gpo.registry_pol", "fail"),
        ("gpo.settings", "unknown"),
    }


def test_acl_drift_and_missing_links_fail_their_own_checks():
    assert gpo_failing(gpo(acl_in_sync=False)) == {("gpo.acl", "dc2")}
    unlinked = GpoFacts("Credential Roaming", True, "{GUID}", 65536, {}, ())
    assert gpo_failing(unlinked) == {("gpo.linked", "lab")}
    assert gpo_failing(GpoFacts("Credential Roaming", False)) == {("gpo.present", "lab")}


def test_dcs_that_disagree_on_the_roaming_timestamp_fail_replication():
    same = replication_results(DN, {"dc1": b"\x01" * 16, "dc2": b"\x01" * 16})
    differ = replication_results(DN, {"dc1": b"\x01" * 16, "dc2": None})
    assert [r.status for r in same + differ] == ["pass", "fail"]
    assert "dc1: " + "01" * 16 in differ[0].message and "dc2: none" in differ[0].message


# --- the verdict -----------------------------------------------------------------------------


def test_blocking_counts_failures_and_unknowns_at_or_above_the_threshold():
    subject = Subject("user", DN)
    results = [
        Result("user.tombstones", subject, "fail", "low"),  # low
        Result("user.limits", subject, "fail", "high"),  # high
        Result("user.plaintext_keys", subject, "unknown", "unread"),  # critical
        Result("gpo.acl", subject, "pass", "ok"),
    ]
    assert len(blocking(results, "info")) == 3
    assert len(blocking(results, "high")) == 2
    assert len(blocking(results, "high", unknown_blocks=False)) == 1
    assert blocking(results, "critical", unknown_blocks=False) == []
    with pytest.raises(ValueError, match="severity must be one of"):
        blocking(results, "severe")


# --- who may read confidential attributes -----------------------------------------------------


def object_ace(ace_type: int, sid: str, mask: int, object_type: uuid.UUID | None, flags=0) -> Ace:
    if object_type is None:
        return Ace(
            ace_type - 5 if ace_type >= 5 else ace_type,
            flags,
            struct.pack("<I", mask) + sid_bytes(sid),
        )
    body = struct.pack("<II", mask, 1) + object_type.bytes_le + sid_bytes(sid)
    return Ace(ace_type, flags, body)


def descriptor(*aces: Ace) -> SecurityDescriptor:
    return SecurityDescriptor(0x8004, None, None, None, 2, aces)


PI = uuid.UUID(PRIVATE_INFORMATION)
READ_ALL = 0x10 | 0x04  # Read Property + List: what Authenticated Users get on a user


def test_control_access_on_the_property_set_is_needed_to_read_confidential_attributes():
    everyone_reads = object_ace(0x00, "S-1-5-11", READ_ALL, None)
    self_ace = object_ace(0x05, SELF, CONFIDENTIAL_READ | 0x20, PI)
    sd = descriptor(everyone_reads, self_ace)
    assert not confidential_readable(sd, {"S-1-5-11"}, {PI})
    assert confidential_readable(sd, {"S-1-5-11", SELF}, {PI})
    delegated = descriptor(everyone_reads, object_ace(0x05, ADMINS, CONFIDENTIAL_READ, PI))
    assert confidential_readable(delegated, {ADMINS}, {PI})


def test_a_deny_before_the_allow_wins_and_inherit_only_aces_do_not_count():
    allow = object_ace(0x05, ADMINS, CONFIDENTIAL_READ, PI)
    deny = object_ace(0x06, ADMINS, 0x100, PI)
    assert not confidential_readable(descriptor(deny, allow), {ADMINS}, {PI})
    assert confidential_readable(descriptor(allow, deny), {ADMINS}, {PI})
    inherit_only = object_ace(0x05, ADMINS, CONFIDENTIAL_READ, PI, flags=0x08)
    assert not confidential_readable(descriptor(inherit_only), {ADMINS}, {PI})
    other_set = object_ace(0x05, ADMINS, CONFIDENTIAL_READ, uuid.UUID(int=1))
    assert not confidential_readable(descriptor(other_set), {ADMINS}, {PI})


# --- the paged read ----------------------------------------------------------------------------


class FakePagedConnection:
    """Records how users() asks for pages and how far it has pulled the generator."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.pulled = 0
        self.calls: list[dict] = []
        self.result = {"result": 0}
        self.extend = self
        self.standard = self

    def paged_search(self, base, search_filter, **kwargs):
        self.calls.append({"base": base, "filter": search_filter, **kwargs})
        for index in range(self.count):
            self.pulled += 1
            dn = f"CN=u{index},OU=Roaming,DC=lab,DC=example"
            yield {"type": "searchResEntry", "dn": dn, "raw_attributes": {"cn": [b"u"]}}


def test_users_are_read_lazily_through_the_paged_generator_1000_a_page():
    conn = FakePagedConnection(2500)
    found = users(conn, "OU=Roaming,DC=lab,DC=example", USER_FILTER, lambda *_: (True, ""))
    first = next(found)
    assert first.dn.startswith("CN=u0,") and conn.pulled == 1, "one entry at a time, not all"
    assert sum(1 for _ in found) == 2499
    [call] = conn.calls
    assert call["paged_size"] == PAGE_SIZE == 1000 and call["generator"] is True
    assert "nTSecurityDescriptor" in call["attributes"] and "*" in call["attributes"]
