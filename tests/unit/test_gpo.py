"""GPO model: settings table validation, registry merge, versions, GPT.INI, gPLink."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from credroam.gpo import model as gpo
from credroam.gpo import preg, settings
from credroam.gpo.model import GpLink, GpoError, GpoVersion
from credroam.gpo.settings import CREDENTIAL_ROAMING

KEY = CREDENTIAL_ROAMING.key
GUID = "{31B2F340-016D-11D2-945F-00C04FB984F9}"
OTHER = "{6AC1786C-016F-11D2-945F-00C04FB984F9}"
DOMAIN = "DC=lab,DC=example"


def dn(guid: str) -> str:
    return f"cn={guid},cn=policies,cn=system,{DOMAIN}"


# --- settings --------------------------------------------------------------------------------


def test_credential_roaming_options_map_to_the_documented_values():
    entries = settings.policy_entries(
        CREDENTIAL_ROAMING,
        {
            "enabled": True,
            "tombstone_days": 60,
            "max_tokens": 2000,
            "max_token_size": 65535,
            "roam_unaffiliated_keys": False,
            "roam_unused_dpapi_keys": True,
            "roam_smartcard_certificates": None,
        },
    )
    assert [(e.key, e.name, e.type_name, e.value()) for e in entries] == [
        (KEY, "DIMSRoaming", "REG_DWORD", 1),
        (KEY, "DIMSRoamingTombstoneDays", "REG_DWORD", 60),
        (KEY, "DIMSRoamingMaxNumTokens", "REG_DWORD", 2000),
        (KEY, "DIMSRoamingMaxTokenSize", "REG_DWORD", 65535),
        (KEY, "RoamUnaffiliatedKeys", "REG_DWORD", 0),
        (KEY, "RoamUnusedDpapiKeys", "REG_DWORD", 1),
    ]


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("tombstone_days", 0, "between 1 and 3650, not 0"),
        ("tombstone_days", 3651, "between 1 and 3650"),
        ("max_tokens", 10001, "between 1 and 10000"),
        ("max_token_size", 100001, "between 1 and 100000"),
        ("max_token_size", "big", "must be an integer"),
        ("enabled", 1, "true or false"),
        ("colour", 1, "unknown CredentialRoaming option 'colour'"),
    ],
)
def test_out_of_range_settings_are_refused_naming_the_option(option, value, message):
    with pytest.raises(GpoError, match=message) as caught:
        settings.policy_entries(CREDENTIAL_ROAMING, {option: value})
    assert option in str(caught.value)


def test_range_edges_are_accepted():
    entries = settings.policy_entries(
        CREDENTIAL_ROAMING, {"tombstone_days": 1, "max_tokens": 10000}
    )
    assert [e.value() for e in entries] == [1, 10000]


def test_agent_fingerprint_is_a_string_with_a_length_limit():
    setting = settings.AGENT_POLICY.setting("recovery_key_fingerprint")
    assert setting.to_entry(settings.AGENT_POLICY.key, "ab" * 32).value() == "ab" * 32
    with pytest.raises(GpoError, match="longer than 64"):
        setting.to_entry(settings.AGENT_POLICY.key, "a" * 65)


def test_registry_value_items():
    entry = settings.registry_value_entry(
        {"key": "HKCU\\Software\\Policies\\X", "value": "V", "type": "REG_MULTI_SZ", "data": ["a"]}
    )
    assert (entry.key, entry.name, entry.value()) == ("Software\\Policies\\X", "V", ["a"])
    deleted = settings.registry_value_entry({"key": "Software\\X", "value": "V", "state": "absent"})
    assert deleted.name == "**del.V"
    with pytest.raises(GpoError, match="only user"):
        settings.registry_value_entry({"key": "HKLM\\Software\\X", "value": "V", "type": "REG_SZ"})
    with pytest.raises(GpoError, match="needs type and data"):
        settings.registry_value_entry({"key": "Software\\X", "value": "V"})
    with pytest.raises(GpoError, match=r"0\.\.4294967295"):
        settings.registry_value_entry(
            {"key": "S\\X", "value": "V", "type": "REG_DWORD", "data": -1}
        )


# --- merge -----------------------------------------------------------------------------------


def dword(name: str, value: int, key: str = KEY) -> preg.PolEntry:
    return preg.make_entry(key, name, "REG_DWORD", value)


def test_merge_same_content_is_no_change_even_with_other_case():
    current = [dword("DIMSRoaming", 1, KEY.upper()), dword("Other", 5)]
    change = gpo.merge_registry(current, [dword("dimsroaming", 1)])
    assert not change.changed
    assert change.entries == current


def test_merge_replaces_in_place_and_appends_new():
    current = [dword("A", 1), dword("B", 2)]
    change = gpo.merge_registry(current, [dword("A", 3), dword("C", 4)])
    assert change.changed
    assert [(e.name, e.value()) for e in change.entries] == [("A", 3), ("B", 2), ("C", 4)]
    assert change.before[0]["data"] == 1 and change.after[0]["data"] == 3


def test_merge_delete_supersedes_the_value_and_exclusive_drops_the_rest():
    current = [dword("A", 1), dword("B", 2)]
    change = gpo.merge_registry(current, [preg.delete_value_entry(KEY, "A")], exclusive=True)
    assert [e.name for e in change.entries] == ["**del.A"]
    assert change.after == [{"key": KEY, "value": "A", "state": "absent"}]


def test_merge_collapses_duplicates_of_a_managed_value():
    current = [dword("A", 1), dword("A", 2)]
    change = gpo.merge_registry(current, [dword("A", 1)])
    assert change.changed and change.entries == [dword("A", 1)]


# --- versions --------------------------------------------------------------------------------


def test_version_halves_and_signed_ldap_value():
    version = GpoVersion.from_number(0x0003_0002)
    assert (version.user, version.computer) == (3, 2)
    high = GpoVersion(0x8000, 1)
    assert high.ldap_value < 0
    assert GpoVersion.from_number(high.ldap_value) == high


def test_user_version_wraps_to_one_never_zero():
    assert GpoVersion(0xFFFF, 7).bump_user() == GpoVersion(1, 7)
    assert GpoVersion(4, 7).bump_user() == GpoVersion(5, 7)


@given(st.integers(0, 0xFFFF), st.integers(0, 0xFFFF))
def test_version_number_round_trips(user, computer):
    version = GpoVersion(user, computer)
    assert GpoVersion.from_number(version.number) == version
    assert GpoVersion.from_number(version.ldap_value) == version
    assert version.bump_user().user != 0


def test_gpt_ini_parse_and_update_keep_other_lines():
    raw = b"[General]\r\nVersion=65538\r\ndisplayName=Roaming\r\n"
    assert gpo.parse_gpt_ini_version(raw) == GpoVersion(1, 2)
    updated = gpo.update_gpt_ini(raw, GpoVersion(2, 2))
    assert updated == b"[General]\r\nVersion=131074\r\ndisplayName=Roaming\r\n"
    assert gpo.update_gpt_ini(None, GpoVersion(1, 0)) == b"[General]\r\nVersion=65536\r\n"
    assert gpo.update_gpt_ini(b"[General]\r\n", GpoVersion(1, 0)) == (
        b"[General]\r\nVersion=65536\r\n"
    )
    assert gpo.parse_gpt_ini_version(b"[General]\r\n") == GpoVersion()


def test_gpt_ini_garbage_is_an_error():
    with pytest.raises(GpoError, match=r"GPT\.INI"):
        gpo.parse_gpt_ini_version(b"\x00\x01junk")


# --- names and extension names ---------------------------------------------------------------


def test_guid_normalisation_and_paths():
    assert gpo.normalize_guid("31b2f340-016d-11d2-945f-00c04fb984f9") == GUID
    with pytest.raises(GpoError, match="not a GPO GUID"):
        gpo.normalize_guid("nope")
    assert gpo.gpt_unc_path(GUID, "lab.example") == (
        "\\\\lab.example\\SysVol\\lab.example\\Policies\\" + GUID
    )
    assert gpo.gpc_dn(GUID.lower(), DOMAIN) == f"CN={GUID},CN=Policies,CN=System,{DOMAIN}"
    assert gpo.new_gpo_guid() != gpo.new_gpo_guid()


def test_extension_names_are_added_once_and_sorted():
    ours = f"[{gpo.REGISTRY_CSE}{gpo.REGISTRY_TOOL_USER}]"
    assert gpo.add_extension_names("", gpo.REGISTRY_CSE, gpo.REGISTRY_TOOL_USER) == ours
    assert gpo.add_extension_names(ours.lower(), gpo.REGISTRY_CSE, gpo.REGISTRY_TOOL_USER) == ours
    other = "[{00000000-0000-0000-0000-000000000001}{00000000-0000-0000-0000-000000000002}]"
    assert gpo.add_extension_names(other, gpo.REGISTRY_CSE, gpo.REGISTRY_TOOL_USER) == other + ours
    with pytest.raises(GpoError):
        gpo.parse_extension_names("[not-a-guid]")


# --- links -----------------------------------------------------------------------------------


def test_gplink_round_trip_and_options():
    raw = f"[LDAP://{dn(GUID)};0][LDAP://{dn(OTHER)};3]"
    links = gpo.parse_gplink(raw)
    assert links == [GpLink(dn(GUID)), GpLink(dn(OTHER), enabled=False, enforced=True)]
    assert gpo.format_gplink(links) == raw
    assert gpo.parse_gplink(" ") == []
    with pytest.raises(GpoError, match="gPLink"):
        gpo.parse_gplink("[LDAP://x;0]garbage")


def test_link_order_one_is_the_last_stored_entry():
    links = [GpLink(dn(OTHER))]
    new = GpLink(dn(GUID))
    assert gpo.place_link(links, new) == [new, GpLink(dn(OTHER))]  # lowest precedence
    first = gpo.place_link(links, new, order=1)
    assert first == [GpLink(dn(OTHER)), new]
    assert gpo.link_order(first, GUID) == 1
    assert gpo.place_link(links, new, order=9) == [new, GpLink(dn(OTHER))]


def test_with_link_order_counts_from_the_last_stored_entry():
    links = [GpLink(dn(OTHER)), GpLink(dn(GUID))]
    assert gpo.with_link_order(links) == [(2, GpLink(dn(OTHER))), (1, GpLink(dn(GUID)))]
    assert gpo.with_link_order([]) == []


def test_existing_link_keeps_its_place_when_only_options_change():
    third = "{11111111-2222-3333-4444-555555555555}"
    links = [GpLink(dn(OTHER)), GpLink(dn(GUID)), GpLink(dn(third))]
    enforced = GpLink(dn(GUID.lower()), enforced=True)
    assert gpo.place_link(links, enforced) == [links[0], enforced, links[2]]
    assert gpo.remove_link(links, GUID) == [links[0], links[2]]


# --- several SYSVOLs -------------------------------------------------------------------------

V1, V2, V3 = GpoVersion(1, 0), GpoVersion(2, 0), GpoVersion(3, 0)
OLD = (preg.make_entry(KEY, "DIMSRoamingTombstoneDays", "REG_DWORD", 60),)
NEW = (preg.make_entry(KEY, "DIMSRoamingTombstoneDays", "REG_DWORD", 90),)


def copy(server: str, version: GpoVersion | None, entries=NEW) -> gpo.SysvolCopy:
    return gpo.SysvolCopy(server, version, entries)


def test_a_copy_lags_on_version_missing_gpt_or_other_content_than_the_first():
    reference = copy("dc1", V2)
    assert gpo.sysvol_copy_problem(V2, reference, reference) is None
    assert gpo.sysvol_copy_problem(V2, copy("dc2", V2), reference) is None
    assert gpo.sysvol_copy_problem(V2, copy("dc2", None), reference) == "GPT.INI missing on dc2"
    assert gpo.sysvol_copy_problem(V2, copy("dc2", V1, OLD), reference) == (
        "GPT.INI version 65536 on dc2, versionNumber 131072 in AD"
    )
    assert gpo.sysvol_copy_problem(V2, copy("dc2", V2, OLD), reference) == (
        "User\\Registry.pol on dc2 differs from dc1's"
    )
    assert "on dc1" in gpo.sysvol_copy_problem(V3, reference, reference)


def test_content_change_bumps_past_every_version_seen():
    copies = [copy("dc1", V1), copy("dc2", V2)]
    assert gpo.target_version(V1, copies, NEW, content_changed=True, repair=False) == V3
    assert gpo.target_version(V1, copies, NEW, content_changed=False, repair=False) == V1


def test_repair_takes_the_highest_version_and_bumps_only_for_other_content_at_it():
    same = [copy("dc1", V2), copy("dc2", V1, OLD)]
    assert gpo.target_version(V2, same, NEW, content_changed=False, repair=True) == V2
    other_at_top = [copy("dc1", V1), copy("dc2", V2, OLD)]
    assert gpo.target_version(V1, other_at_top, NEW, content_changed=False, repair=True) == V3
    missing = [copy("dc1", V2), copy("dc2", None, ())]
    assert gpo.target_version(V2, missing, NEW, content_changed=False, repair=True) == V2


def test_same_registry_compares_content_and_order():
    a, b = OLD[0], preg.make_entry(KEY, "DIMSRoaming", "REG_DWORD", 1)
    assert gpo.same_registry([a, b], preg.decode(preg.encode([a, b])))
    assert not gpo.same_registry([a, b], [b, a])
    assert not gpo.same_registry([a], [a, b])
    assert not gpo.same_registry(OLD, NEW)
