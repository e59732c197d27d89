"""GPO descriptors (security filtering, the GPT folder ACL), checked with Samba's own code."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from credroam.gpo.secdesc import (
    AUTHENTICATED_USERS,
    SecurityDescriptor,
    SecurityDescriptorError,
    ds_to_file_mask,
    format_sid,
    gpt_folder_descriptor,
    same_access,
    security_filter,
    sid_bytes,
)

samba_ndr = pytest.importorskip("samba.ndr", reason="python3-samba is the independent codec")
from samba.dcerpc import security

DOMAIN = "S-1-5-21-526654454-889184608-1465157838"
DOMAIN_USERS = f"{DOMAIN}-513"
ROAMERS = f"{DOMAIN}-1105"
# Samba's default GPC DACL (groupPolicyContainer defaultSecurityDescriptor) plus an inherited ACE.
DEFAULT = (
    "O:DAG:DAD:P(A;CI;RPWPCCDCLCLORCWOWDSDDTSW;;;DA)(A;CI;RPLCLORC;;;AU)"
    "(OA;CI;CR;edacfd8f-ffb3-11d1-b41d-00a0c968f939;;AU)(A;CI;RPLCLORC;;;ED)(A;CIID;RPLCLORC;;;SY)"
)


def samba_pack(sddl: str) -> bytes:
    return samba_ndr.ndr_pack(security.descriptor.from_sddl(sddl, security.dom_sid(DOMAIN)))


def samba_sddl(raw: bytes) -> str:
    return samba_ndr.ndr_unpack(security.descriptor, raw).as_sddl(security.dom_sid(DOMAIN))


def test_parse_and_pack_round_trip_samba_bytes():
    raw = samba_pack(DEFAULT)
    sd = SecurityDescriptor.parse(raw)
    assert samba_sddl(sd.pack()) == samba_sddl(raw)
    assert sd.apply_trustees == [AUTHENTICATED_USERS]


def test_filter_moves_apply_to_the_groups_and_keeps_read_for_authenticated_users():
    sd = security_filter(SecurityDescriptor.parse(samba_pack(DEFAULT)), [DOMAIN_USERS, ROAMERS])
    assert sd.apply_trustees == sorted([DOMAIN_USERS, ROAMERS])
    assert samba_sddl(sd.pack()) == (
        "O:DAG:DAD:P(A;CI;RPWPCCDCLCLORCWOWDSDDTSW;;;DA)(A;CI;RPLCLORC;;;AU)"
        "(A;CI;RPLCLORC;;;ED)(A;CI;RPLCLORC;;;DU)(OA;CI;CR;edacfd8f-ffb3-11d1-b41d-00a0c968f939;;DU)"
        f"(A;CI;RPLCLORC;;;{ROAMERS})(OA;CI;CR;edacfd8f-ffb3-11d1-b41d-00a0c968f939;;{ROAMERS})"
        "(A;CIID;RPLCLORC;;;SY)"
    )


def test_filter_is_idempotent_and_can_go_back_to_authenticated_users():
    filtered = security_filter(SecurityDescriptor.parse(samba_pack(DEFAULT)), [DOMAIN_USERS])
    assert security_filter(filtered, [DOMAIN_USERS]).aces == filtered.aces
    back = security_filter(filtered, [AUTHENTICATED_USERS])
    assert back.apply_trustees == [AUTHENTICATED_USERS]


def test_sids_and_malformed_input():
    assert format_sid(sid_bytes(ROAMERS)) == ROAMERS
    with pytest.raises(SecurityDescriptorError, match="not a SID"):
        sid_bytes("Domain Users")
    with pytest.raises(SecurityDescriptorError):
        SecurityDescriptor.parse(samba_pack(DEFAULT)[:30])
    with pytest.raises(SecurityDescriptorError, match="no DACL"):
        SecurityDescriptor.parse(samba_pack("O:DAG:DA"))


# --- the GPT folder's NT ACL, checked against Samba's own dsacl2fsacl -----------------------

samba_ntacls = pytest.importorskip("samba.ntacls", reason="Samba's dsacl2fsacl is the reference")

# What Samba gives a new GPC (read from the lab after `samba-tool gpo create`).
NEW_GPC = (
    "O:DAG:DAD:P(A;CI;RPWPCCDCLCLORCWOWDSDDTSW;;;DA)(A;CI;RPWPCCDCLCLORCWOWDSDDTSW;;;EA)"
    "(A;CIIO;RPWPCCDCLCLORCWOWDSDDTSW;;;CO)(A;;RPWPCCDCLCLORCWOWDSDDTSW;;;DA)"
    "(A;CI;RPWPCCDCLCLORCWOWDSDDTSW;;;SY)(A;CI;RPLCLORC;;;AU)"
    "(OA;CI;CR;edacfd8f-ffb3-11d1-b41d-00a0c968f939;;AU)(A;CI;RPLCLORC;;;ED)"
)


@pytest.mark.parametrize(
    "ds_sddl",
    [
        pytest.param(NEW_GPC, id="new-gpc"),
        pytest.param(DEFAULT, id="with-inherited-ace"),
        pytest.param(
            "O:DAG:DAD:AI(A;;RPLCLORC;;;S-1-5-32-554)(D;;WP;;;AU)(A;;CCDC;;;BA)(A;;WP;;;DU)"
            "(A;CI;RPLC;;;AU)(A;CIIO;RP;;;CO)(A;CIID;LCRP;;;SY)",
            id="pre-w2k-deny-partial-rights",
        ),
        pytest.param("O:BAG:DUD:PAI(A;;GA;;;BA)(A;;RC;;;AU)", id="generic-and-standard-rights"),
    ],
)
def test_gpt_folder_acl_is_what_samba_derives_from_the_gpc_acl(ds_sddl):
    folder = gpt_folder_descriptor(SecurityDescriptor.parse(samba_pack(ds_sddl)))
    expected = samba_ntacls.dsacl2fsacl(ds_sddl, security.dom_sid(DOMAIN))
    assert samba_sddl(folder.pack()) == expected


def test_gpt_folder_acl_follows_security_filtering():
    filtered = security_filter(SecurityDescriptor.parse(samba_pack(NEW_GPC)), [DOMAIN_USERS])
    folder = gpt_folder_descriptor(filtered)
    assert samba_sddl(folder.pack()) == samba_ntacls.dsacl2fsacl(
        samba_sddl(filtered.pack()), security.dom_sid(DOMAIN)
    )
    assert "(A;OICI;0x001200a9;;;DU)" in samba_sddl(folder.pack()), "Domain Users may read"
    unfiltered = gpt_folder_descriptor(SecurityDescriptor.parse(samba_pack(NEW_GPC)))
    assert not same_access(folder, unfiltered)
    assert same_access(folder, SecurityDescriptor.parse(folder.pack()))


@given(st.integers(min_value=0, max_value=0xFFFFFFFF))
def test_every_directory_mask_maps_to_the_file_mask_samba_maps_it_to(mask):
    assert ds_to_file_mask(mask) == samba_ntacls.ldapmask2filemask(mask)


def test_same_access_ignores_layout_but_not_owner_or_dacl_flags():
    sd = SecurityDescriptor.parse(samba_pack(NEW_GPC))
    assert same_access(sd, dataclasses.replace(sd, dacl_revision=4, control=sd.control | 0x20))
    assert not same_access(sd, SecurityDescriptor.parse(samba_pack("O:BA" + NEW_GPC[4:])))
    assert not same_access(sd, SecurityDescriptor.parse(samba_pack(NEW_GPC.replace("D:P", "D:"))))
