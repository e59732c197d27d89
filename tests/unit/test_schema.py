"""Schema definitions, live-schema comparison and plans, without a DC."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from credroam.schema.definitions import (
    CREDROAM_OID_BASE,
    LINK_ID_AUTO_FORWARD,
    PRIVATE_INFORMATION,
    SchemaDefinitionError,
    ber_to_oid,
    definitions_from_params,
    guid_from_bytes,
    guid_to_bytes,
    oid_from_guid,
    oid_to_ber,
)
from credroam.schema.plan import (
    LdapAdd,
    SchemaConflict,
    missing_on_dc,
    normalize_entry,
    plan_defunct,
    plan_present,
    read_filter,
    to_wire,
)

SCHEMA_DN = "CN=Schema,CN=Configuration,DC=lab,DC=example"
CREDROAM = definitions_from_params(preset="credroam")
OWN_ATTRIBUTE_OID = f"{CREDROAM_OID_BASE}.1.1"


def user_class(aux: list[str] | None = None) -> dict[str, Any]:
    return {
        "dn": f"CN=User,{SCHEMA_DN}",
        "objectclass": ["top", "classSchema"],
        "cn": ["User"],
        "ldapdisplayname": ["user"],
        "governsid": ["1.2.840.113556.1.5.9"],
        "objectclasscategory": ["1"],
        "subclassof": ["organizationalPerson"],
        "systemauxiliaryclass": ["securityPrincipal", "mailRecipient"],
        **({"auxiliaryclass": aux} if aux else {}),
    }


def live(add: LdapAdd, link_id: int = 2000) -> dict[str, Any]:
    """What a DC returns (normalized) for an object we added: linkID allocated, text values."""
    entry = {k.lower(): list(v) for k, v in add.attributes.items()}
    entry["dn"] = add.dn
    entry["objectclass"] = ["top", add.object_class]
    if entry.get("linkid") == [LINK_ID_AUTO_FORWARD]:
        entry["linkid"] = [str(link_id)]
    return entry


def fully_extended_schema() -> list[dict[str, Any]]:
    plan = plan_present(CREDROAM, [user_class()], SCHEMA_DN)
    entries = [live(a, 2000 + 2 * i) for i, a in enumerate(plan.attribute_adds + plan.class_adds)]
    return [*entries, user_class(aux=["credroamUser"])]


def entry_named(entries: list[dict[str, Any]], name: str) -> dict[str, Any]:
    return next(e for e in entries if e["ldapdisplayname"] == [name])


# ---------------------------------------------------------------------------- OIDs and values


def test_oid_from_guid_splits_hex_digits_4_4_4_4_4_6_6_like_oidgen():
    assert (
        oid_from_guid("00000001-0002-0003-0004-00000a00000f")
        == "1.2.840.113556.1.8000.2554.0.1.2.3.4.10.15"
    )


def test_credroam_oid_base_is_stable_across_releases():
    # Forests already extended carry these OIDs: changing them would make every run conflict.
    assert CREDROAM_OID_BASE == (
        "1.2.840.113556.1.8000.2554.14961.60581.17011.18982.45240.13776553.9048911"
    )
    assert OWN_ATTRIBUTE_OID in [a.attribute_id for a in CREDROAM.attributes]


@pytest.mark.parametrize(
    ("oid", "ber_hex"),
    [
        ("1.2.840.113556.1.1.1.11", "2a864886f7140101010b"),  # DN-Binary oMObjectClass
        ("1.3.12.2.1011.28.0.714", "2b0c0287731c00854a"),  # DN oMObjectClass
    ],
)
def test_om_object_class_ber_matches_what_ad_stores(oid, ber_hex):
    assert oid_to_ber(oid).hex() == ber_hex
    assert ber_to_oid(bytes.fromhex(ber_hex)) == oid


def test_security_guid_uses_ads_little_endian_layout():
    data = guid_to_bytes(PRIVATE_INFORMATION)
    assert data.hex() == "de47e6916fd9704b9557d63ff4f3ccd8"
    assert guid_from_bytes(data) == PRIVATE_INFORMATION


def test_normalize_entry_decodes_binary_schema_values_to_text():
    entry = normalize_entry(
        "CN=x",
        {
            "attributeSecurityGUID": [bytes.fromhex("de47e6916fd9704b9557d63ff4f3ccd8")],
            "oMObjectClass": [bytes.fromhex("2a864886f7140101010b")],
            "isSingleValued": [b"FALSE"],
        },
    )
    assert entry == {
        "dn": "CN=x",
        "attributesecurityguid": [PRIVATE_INFORMATION],
        "omobjectclass": ["1.2.840.113556.1.1.1.11"],
        "issinglevalued": ["FALSE"],
    }


def test_to_wire_encodes_binary_attributes_and_leaves_text_alone():
    assert to_wire("attributeSecurityGUID", [PRIVATE_INFORMATION]) == [
        guid_to_bytes(PRIVATE_INFORMATION)
    ]
    assert to_wire("isSingleValued", ["TRUE"]) == ["TRUE"]


# ---------------------------------------------------------------------------- definitions


def test_credroam_preset_defines_linked_confidential_private_dn_binary_attributes():
    own = {a.name: a for a in CREDROAM.attributes if not a.native}
    assert set(own) == {"credroamKeyEnvelopes", "credroamRoamingKeys"}
    for attribute in own.values():
        assert attribute.syntax == "dn-binary"
        assert attribute.linked and attribute.link_id is None
        assert not attribute.single_valued
        assert attribute.search_flags & 128
        assert attribute.security_guid == PRIVATE_INFORMATION
    assert [e.auxiliary for e in CREDROAM.extensions if e.class_name == "user"] == [
        ("credroamUser",)
    ]


def test_own_oids_follow_the_configured_base():
    defs = definitions_from_params(preset="credroam", oid_base="1.3.6.1.4.1.99999")
    assert "1.3.6.1.4.1.99999.1.2" in [a.attribute_id for a in defs.attributes]
    assert [c.governs_id for c in defs.classes] == ["1.3.6.1.4.1.99999.2.1"]


def attribute(**fields: Any) -> dict[str, Any]:
    return {"name": "exampleAttr", "oid_index": 7, "syntax": "unicode-string", **fields}


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (attribute(syntax="blob"), "syntax must be one of"),
        (attribute(linked=True), "cannot be linked"),
        (attribute(syntax="dn-binary", link_id=2047), "is odd"),
        (attribute(oid_index=None), "needs attribute_id or a positive integer oid_index"),
        (attribute(attribute_id="1.2.x"), "is not a dotted OID"),
        (attribute(name="bad name"), "may hold only letters"),
        (attribute(security_guid="secret"), "security_guid must be a GUID"),
        (attribute(search_flags=-1), "search_flags must be a non-negative integer"),
        (attribute(colour="red"), "unknown field(s) colour"),
    ],
)
def test_bad_attribute_definitions_are_refused_naming_the_field(spec, message):
    with pytest.raises(SchemaDefinitionError) as raised:
        definitions_from_params(attributes=[spec])
    assert str(raised.value).startswith(f"attribute {spec['name']!r}")
    assert message in str(raised.value)


def test_a_name_defined_twice_is_refused():
    with pytest.raises(SchemaDefinitionError, match="'credroamKeyEnvelopes' is defined twice"):
        definitions_from_params(
            preset="credroam", attributes=[attribute(name="credroamKeyEnvelopes")]
        )


def test_unknown_preset_is_refused():
    with pytest.raises(SchemaDefinitionError, match="unknown preset 'other'"):
        definitions_from_params(preset="other")


def test_confidential_and_rodc_filtered_set_their_search_flags():
    (defined,) = definitions_from_params(
        attributes=[attribute(confidential=True, rodc_filtered=True, search_flags=1)]
    ).attributes
    assert defined.search_flags == 1 | 128 | 512


# ---------------------------------------------------------------------------- plans


def test_plan_on_a_schema_without_credroam_adds_attributes_then_class_then_user_link():
    # Natives carry their fixed linkIDs in the definitions, as a 2008 R2+ schema has them.
    natives = [
        live(a) for a in plan_present(CREDROAM, [user_class()], SCHEMA_DN).attribute_adds[:4]
    ]
    plan = plan_present(CREDROAM, [*natives, user_class()], SCHEMA_DN)

    assert plan.verified == [a.name for a in CREDROAM.attributes if a.native]
    envelopes, roaming_keys = plan.attribute_adds
    assert envelopes.dn == f"CN=credroam-Key-Envelopes,{SCHEMA_DN}"
    assert envelopes.object_class == "attributeSchema"
    assert envelopes.attributes == {
        "cn": ["credroam-Key-Envelopes"],
        "lDAPDisplayName": ["credroamKeyEnvelopes"],
        "attributeID": [OWN_ATTRIBUTE_OID],
        "attributeSyntax": ["2.5.5.7"],
        "oMSyntax": ["127"],
        "oMObjectClass": ["1.2.840.113556.1.1.1.11"],
        "isSingleValued": ["FALSE"],
        "searchFlags": ["128"],
        "linkID": [LINK_ID_AUTO_FORWARD],
        "attributeSecurityGUID": [PRIVATE_INFORMATION],
        "adminDescription": [envelopes.attributes["adminDescription"][0]],
    }
    assert roaming_keys.attributes["lDAPDisplayName"] == ["credroamRoamingKeys"]
    (klass,) = plan.class_adds
    assert klass.attributes["objectClassCategory"] == ["3"]
    assert klass.attributes["mayContain"] == ["credroamKeyEnvelopes", "credroamRoamingKeys"]
    (user_link,) = plan.class_modifies
    assert user_link.as_dict() == {
        "dn": f"CN=User,{SCHEMA_DN}",
        "changes": {"auxiliaryClass": {"op": "add", "values": ["credroamUser"]}},
    }
    assert plan.phases() == [plan.attribute_adds, plan.class_adds, plan.class_modifies]
    assert plan.before[envelopes.dn] is None
    assert plan.after[f"CN=User,{SCHEMA_DN}"] == {"auxiliaryClass": ["credroamUser"]}


def test_a_fully_extended_schema_needs_no_change_and_everything_verifies():
    plan = plan_present(CREDROAM, fully_extended_schema(), SCHEMA_DN)
    assert not plan.changed
    assert plan.phases() == []
    assert plan.verified == [
        *(a.name for a in CREDROAM.attributes),
        "credroamUser",
        "user.auxiliaryClass",
    ]


def test_names_are_compared_case_insensitively():
    entries = fully_extended_schema()
    for entry in entries:
        entry["ldapdisplayname"] = [entry["ldapdisplayname"][0].upper()]
    entries[-1]["auxiliaryclass"] = ["CREDROAMUSER"]
    assert not plan_present(CREDROAM, entries, SCHEMA_DN).changed


def test_a_differing_definition_fails_showing_both_and_plans_nothing():
    entries = fully_extended_schema()
    entry_named(entries, "credroamKeyEnvelopes")["issinglevalued"] = ["TRUE"]
    with pytest.raises(SchemaConflict) as raised:
        plan_present(CREDROAM, entries, SCHEMA_DN)
    (message,) = raised.value.conflicts
    assert message.startswith("attribute credroamKeyEnvelopes:")
    assert "isSingleValued differ" in message
    ours, existing = message.splitlines()[1:]
    assert "ours:" in ours and "isSingleValued=False" in ours
    assert "existing:" in existing and "isSingleValued=True" in existing
    assert f"dn=CN=credroam-Key-Envelopes,{SCHEMA_DN}" in existing


def test_an_object_with_our_oid_under_another_name_is_a_conflict():
    entries = fully_extended_schema()
    squatter = entry_named(entries, "credroamRoamingKeys")
    squatter.update({"ldapdisplayname": ["someoneElsesAttr"], "cn": ["Someone-Else"]})
    with pytest.raises(SchemaConflict, match="lDAPDisplayName differ"):
        plan_present(CREDROAM, entries, SCHEMA_DN)


def test_a_native_attribute_with_another_syntax_is_a_conflict_not_a_fix():
    entries = fully_extended_schema()
    entry_named(entries, "msPKIAccountCredentials").update(
        {"attributesyntax": ["2.5.5.10"], "omsyntax": ["4"], "omobjectclass": []}
    )
    with pytest.raises(SchemaConflict, match="syntax=octet-string"):
        plan_present(CREDROAM, entries, SCHEMA_DN)


def test_extra_search_flags_are_accepted_but_missing_confidential_is_a_conflict():
    entries = fully_extended_schema()
    entry_named(entries, "credroamKeyEnvelopes")["searchflags"] = ["129"]  # + index
    assert not plan_present(CREDROAM, entries, SCHEMA_DN).changed
    entry_named(entries, "credroamKeyEnvelopes")["searchflags"] = ["1"]
    with pytest.raises(SchemaConflict, match="searchFlags \\(lacks required bits\\)"):
        plan_present(CREDROAM, entries, SCHEMA_DN)


def test_a_wrong_property_set_is_a_conflict():
    entries = fully_extended_schema()
    entry_named(entries, "credroamRoamingKeys")["attributesecurityguid"] = [
        "00000000-0000-0000-0000-000000000001"
    ]
    with pytest.raises(SchemaConflict, match="attributeSecurityGUID"):
        plan_present(CREDROAM, entries, SCHEMA_DN)


def test_an_unlinked_existing_attribute_is_a_conflict_for_a_linked_definition():
    entries = fully_extended_schema()
    del entry_named(entries, "credroamKeyEnvelopes")["linkid"]
    with pytest.raises(SchemaConflict, match="not a forward link"):
        plan_present(CREDROAM, entries, SCHEMA_DN)


def test_every_conflict_is_reported_at_once():
    entries = fully_extended_schema()
    entry_named(entries, "credroamKeyEnvelopes")["issinglevalued"] = ["TRUE"]
    entry_named(entries, "credroamUser")["objectclasscategory"] = ["1"]
    with pytest.raises(SchemaConflict) as raised:
        plan_present(CREDROAM, entries, SCHEMA_DN)
    assert len(raised.value.conflicts) == 2


def test_a_new_attribute_of_ours_is_added_to_our_class_may_contain():
    entries = fully_extended_schema()
    entry_named(entries, "credroamUser")["maycontain"] = ["credroamKeyEnvelopes"]
    plan = plan_present(CREDROAM, entries, SCHEMA_DN)
    (modify,) = plan.class_modifies
    assert modify.changes == {"mayContain": ("add", ["credroamRoamingKeys"])}


def test_a_defunct_object_of_ours_is_a_conflict():
    entries = fully_extended_schema()
    entry_named(entries, "credroamRoamingKeys")["isdefunct"] = ["TRUE"]
    with pytest.raises(SchemaConflict, match="it is defunct"):
        plan_present(CREDROAM, entries, SCHEMA_DN)


def test_extending_a_class_that_is_not_in_the_schema_is_a_conflict():
    entries = [e for e in fully_extended_schema() if e["ldapdisplayname"] != ["user"]]
    with pytest.raises(SchemaConflict, match="class user to extend is not in the schema"):
        plan_present(CREDROAM, entries, SCHEMA_DN)


def test_defunct_plan_unlinks_the_class_then_defuncts_only_our_own_objects():
    entries = fully_extended_schema()
    plan = plan_defunct(CREDROAM, copy.deepcopy(entries), SCHEMA_DN)
    ops = [op.as_dict() for op in plan.class_modifies]
    assert ops[0] == {
        "dn": f"CN=User,{SCHEMA_DN}",
        "changes": {"auxiliaryClass": {"op": "delete", "values": ["credroamUser"]}},
    }
    defuncted = [op["dn"].split(",")[0] for op in ops[1:]]
    assert defuncted == [
        "CN=credroam-User",
        "CN=credroam-Key-Envelopes",
        "CN=credroam-Roaming-Keys",
    ]
    assert all(op["changes"] == {"isDefunct": {"op": "replace", "values": ["TRUE"]}}
               for op in ops[1:])  # fmt: skip


def test_defunct_plan_is_empty_once_done():
    entries = fully_extended_schema()
    entries[-1].pop("auxiliaryclass")
    for entry in entries:
        if entry["ldapdisplayname"][0].startswith("credroam"):
            entry["isdefunct"] = ["TRUE"]
    assert not plan_defunct(CREDROAM, entries, SCHEMA_DN).changed


# ---------------------------------------------------------------------------- replication


def test_missing_on_dc_names_what_has_not_replicated_yet():
    entries = [
        e for e in fully_extended_schema() if e["ldapdisplayname"] != ["credroamRoamingKeys"]
    ]
    entries[-1].pop("auxiliaryclass")
    assert missing_on_dc(CREDROAM, entries) == [
        "credroamRoamingKeys",
        "user.auxiliaryClass=credroamUser",
    ]
    assert missing_on_dc(CREDROAM, fully_extended_schema()) == []


def test_extending_with_an_existing_class_of_someone_else_needs_only_the_link():
    defs = definitions_from_params(extend=[{"class": "user", "auxiliary": ["shadowAccount"]}])
    assert "(lDAPDisplayName=shadowAccount)" in read_filter(defs)
    shadow = {
        "dn": f"CN=ShadowAccount,{SCHEMA_DN}",
        "objectclass": ["top", "classSchema"],
        "ldapdisplayname": ["shadowAccount"],
    }
    plan = plan_present(defs, [user_class(), shadow], SCHEMA_DN)
    assert [m.changes for m in plan.class_modifies] == [
        {"auxiliaryClass": ("add", ["shadowAccount"])}
    ]
    with pytest.raises(SchemaConflict, match="shadowAccount are neither defined here nor"):
        plan_present(defs, [user_class()], SCHEMA_DN)
