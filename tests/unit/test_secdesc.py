"""Security filtering on GPO descriptors, checked with Samba's own SDDL codec both ways."""

from __future__ import annotations

import pytest

from credroam.secdesc import (
    AUTHENTICATED_USERS,
    SecurityDescriptor,
    SecurityDescriptorError,
    format_sid,
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
