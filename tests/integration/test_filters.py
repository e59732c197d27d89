"""credroam's filters in a playbook against the lab's real DC.

The test writes values it knows into the directory (a user's msPKIRoamingTimeStamp and two
roaming tokens, a GPO's versionNumber, an OU's gPLink), then runs
tests/integration/playbooks/read_roaming_data.yml, which reads them back on the DC and decodes
them with the filters. What the playbook decoded must be what was written. Everything written
lives in an OU of its own and is removed afterwards.
"""

from __future__ import annotations

import json
import struct
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import ldap3
import pytest

from credroam.tokens import Token, TokenFlags, TokenType, encode_token, format_dn_binary
from tests.lab import REPO, Lab, ansible_playbook

pytestmark = pytest.mark.integration

PLAYBOOK = REPO / "tests" / "integration" / "playbooks" / "read_roaming_data.yml"
DEFAULT_DOMAIN_POLICY = "{31B2F340-016D-11D2-945F-00C04FB984F9}"
THUMBPRINT = "00112233445566778899AABBCCDDEEFF00112233"
REQUEST = "FFEEDDCCBBAA99887766554433221100FFEEDDCC"
# 2024-05-01 12:00:00.1234567 UTC and a day later, as FILETIMEs (Unix time + 11644473600 s).
CREATED = (1714564800 + 11644473600) * 10_000_000 + 1234567
DELETED = CREATED + 86400 * 10_000_000
# User version 0x8000 and computer version 5: LDAP stores versionNumber signed, so it is negative.
VERSION_NUMBER = (0x8000 << 16 | 5) - 2**32


@dataclass(frozen=True)
class Written:
    ou_dn: str
    user_dn: str
    gpo_dn: str


def gpo_dn(lab: Lab, guid: str) -> str:
    return f"CN={guid},CN=Policies,CN=System,{lab.base_dn}"


def tokens(user_dn: str) -> list[str]:
    certificate = Token(TokenType.CERTIFICATE, THUMBPRINT, CREATED, TokenFlags.KNOWN_TYPE, b"der")
    deleted_request = Token(TokenType.REQUEST, REQUEST, DELETED, TokenFlags.TOMBSTONE, b"")
    return [format_dn_binary(encode_token(t), user_dn) for t in (certificate, deleted_request)]


def delete_tree(conn: ldap3.Connection, dn: str) -> None:
    """Remove dn and what is below it, deepest first; absent is fine."""
    conn.search(dn, "(objectClass=*)", ldap3.SUBTREE, attributes=[])
    for child in sorted((e.entry_dn for e in conn.entries), key=len, reverse=True):
        conn.delete(child)


@pytest.fixture
def written(lab: Lab, lab_admin_ldap: ldap3.Connection) -> Iterator[Written]:
    conn = lab_admin_ldap
    guid = "{" + str(uuid.uuid4()).upper() + "}"
    spot = Written(
        ou_dn=f"OU=FilterTest,{lab.base_dn}",
        user_dn=f"CN=filtertest,OU=FilterTest,{lab.base_dn}",
        gpo_dn=gpo_dn(lab, guid),
    )
    conn.raise_exceptions = False
    delete_tree(conn, spot.ou_dn)  # left over by an interrupted run
    conn.raise_exceptions = True
    try:
        conn.add(spot.ou_dn, "organizationalUnit")
        conn.add(spot.user_dn, "user", {"sAMAccountName": "filtertest"})
        conn.modify(
            spot.user_dn,
            {
                "msPKIRoamingTimeStamp": [
                    (ldap3.MODIFY_REPLACE, [struct.pack("<QQ", CREATED, DELETED)])
                ],
                "msPKIAccountCredentials": [(ldap3.MODIFY_ADD, tokens(spot.user_dn))],
            },
        )
        conn.add(
            spot.gpo_dn,
            "groupPolicyContainer",
            {"displayName": "credroam filter test", "versionNumber": VERSION_NUMBER, "flags": 0},
        )
        # Stored lowest precedence first: ours (enforced) is order 2, the default policy
        # (link disabled) is order 1.
        gplink = f"[LDAP://{spot.gpo_dn};2][LDAP://{gpo_dn(lab, DEFAULT_DOMAIN_POLICY).lower()};1]"
        conn.modify(spot.ou_dn, {"gPLink": [(ldap3.MODIFY_REPLACE, [gplink])]})
        yield spot
    finally:
        conn.raise_exceptions = False
        conn.delete(spot.gpo_dn)
        delete_tree(conn, spot.ou_dn)


def read_with_filters(lab: Lab, spot: Written, output: Path) -> dict:
    extra = {
        "filters_user_dn": spot.user_dn,
        "filters_gpo_dn": spot.gpo_dn,
        "filters_ou_dn": spot.ou_dn,
        "filters_output": str(output),
    }
    done = ansible_playbook(lab, PLAYBOOK, "-e", json.dumps(extra), timeout=300)
    assert done.returncode == 0, done.output[-5000:]
    return json.loads(output.read_text())


def test_a_playbook_decodes_roaming_values_gpo_version_and_links_with_the_filters(
    lab, written, tmp_path
):
    decoded = read_with_filters(lab, written, tmp_path / "decoded.json")

    assert decoded["timestamp"] == {
        "first": "2024-05-01T12:00:00.123456+00:00",
        "first_filetime": CREATED,
        "last_change": "2024-05-02T12:00:00.123456+00:00",
        "last_change_filetime": DELETED,
    }
    certificate, request = decoded["tokens"]
    assert {k: certificate[k] for k in ("key", "type_name", "tombstone", "time", "size", "dn")} == {
        "key": f"%3\\{THUMBPRINT}",
        "type_name": "certificate",
        "tombstone": False,
        "time": "2024-05-01T12:00:00.123456+00:00",
        "size": 132 + 3,
        "dn": written.user_dn,
    }
    assert (request["key"], request["tombstone"], request["flag_names"], request["filetime"]) == (
        f"%4\\{REQUEST}",
        True,
        ["tombstone"],
        DELETED,
    )
    assert decoded["version"] == {"user": 0x8000, "computer": 5, "number": 0x80000005}
    assert decoded["version_number"] == VERSION_NUMBER
    ours, default_policy = sorted(decoded["links"], key=lambda link: link["order"], reverse=True)
    assert (ours["order"], ours["enabled"], ours["enforced"]) == (2, True, True)
    assert ours["dn"].lower() == written.gpo_dn.lower()
    assert (default_policy["order"], default_policy["enabled"]) == (1, False)
    assert default_policy["guid"] == DEFAULT_DOMAIN_POLICY
