"""ad_schema and the roaming_schema role against the real lab forest (Samba DCs).

The module runs the way users run it (ansible ad-hoc / ansible-playbook from the venv), so the
argument spec, check mode and diff mode are what is tested. AD schema objects can never be
deleted, so tests that must see a first run add something use definitions with names and OIDs
unique to the test run; the credroam preset itself is applied through the role.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
from typing import Any

import ldap3
import pytest
from ldap3.core.exceptions import LDAPInsufficientAccessRightsResult

from credroam.schema.definitions import CREDROAM_OID_BASE
from tests.lab import REPO, Lab

pytestmark = pytest.mark.integration

VENV = REPO / ".venv" / "bin"
NATIVE = [
    "msPKIRoamingTimeStamp",
    "msPKIDPAPIMasterKeys",
    "msPKIAccountCredentials",
    "msPKI-CredentialRoamingTokens",
]


def ansible_env() -> dict[str, str]:
    return {
        **os.environ,
        "ANSIBLE_LOAD_CALLBACK_PLUGINS": "1",
        "ANSIBLE_STDOUT_CALLBACK": "ansible.builtin.json",
    }


def connection_args(lab: Lab) -> dict[str, Any]:
    return {
        "server": lab.dc(0).ip,
        "tls_server_name": lab.dc(0).fqdn,
        "ca_cert": lab.ca_cert,
        "bind_user": lab.admin.upn,
        "bind_password": lab.admin.password,
        "dc_addresses": {dc.fqdn: dc.ip for dc in lab.dcs},
    }


def run_module(lab: Lab, check: bool = False, **params: Any) -> dict[str, Any]:
    """`ansible localhost -m ad_schema` with --diff (and --check); the host's result dict."""
    argv = [
        str(VENV / "ansible"), "localhost", "-i", "localhost,", "-c", "local",
        "-e", f"ansible_python_interpreter={VENV / 'python'}",
        "-m", "ad_schema", "-a", json.dumps({**connection_args(lab), **params}), "--diff",
    ]  # fmt: skip
    if check:
        argv.append("--check")
    done = subprocess.run(
        argv, cwd=REPO, env=ansible_env(), capture_output=True, text=True, timeout=300
    )
    output = json.loads(done.stdout[done.stdout.index("{") :])
    return output["plays"][0]["tasks"][0]["hosts"]["localhost"]


def run_schema_playbook(lab: Lab, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(VENV / "ansible-playbook"), "playbooks/schema.yml", *extra],
        cwd=REPO, capture_output=True, text=True, timeout=600,
        env={**os.environ, "CREDROAM_LAB": lab.name},
    )  # fmt: skip


def recap_changed(output: str) -> int:
    recap = output.rsplit("PLAY RECAP", 1)[-1]
    return int(recap.split("changed=", 1)[1].split()[0])


def adds(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The LDAP adds among a run's operations."""
    return [op for op in result["operations"] if op["kind"] == "ldap_add"]


def schema_dn(lab: Lab) -> str:
    return f"CN=Schema,CN=Configuration,{lab.base_dn}"


def read_schema_object(lab: Lab, name: str, dc: int = 0) -> dict[str, list] | None:
    conn = lab.ldap_connection(dc=dc)
    try:
        conn.search(
            schema_dn(lab),
            f"(lDAPDisplayName={name})",
            search_scope=ldap3.LEVEL,
            attributes=["*"],
        )
        entries = [e for e in conn.response if e.get("type") == "searchResEntry"]
        return {k.lower(): v for k, v in entries[0]["attributes"].items()} if entries else None
    finally:
        conn.unbind()


def unique_definitions() -> dict[str, Any]:
    """A linked, confidential DN-Binary attribute on an aux class added to user, never seen
    before by any lab (AD keeps schema objects forever)."""
    tag = secrets.token_hex(4)
    attribute = f"credroamT{tag}Tokens"
    klass = f"credroamT{tag}User"
    return {
        "oid_base": f"{CREDROAM_OID_BASE}.99.{int(tag, 16)}",
        "attributes": [
            {
                "name": attribute,
                "cn": f"credroam-T{tag}-Tokens",
                "oid_index": 1,
                "syntax": "dn-binary",
                "linked": True,
                "confidential": True,
                "security_guid": "private-information",
            }
        ],
        "classes": [{"name": klass, "oid_index": 1, "may_contain": [attribute]}],
        "extend": [{"class": "user", "auxiliary": [klass]}],
    }


@pytest.fixture(scope="module")
def credroam_schema(lab: Lab) -> Lab:
    """The lab with credroam's schema applied through the role (idempotent)."""
    applied = run_schema_playbook(lab)
    assert applied.returncode == 0, applied.stdout[-4000:] + applied.stderr[-2000:]
    return lab


def test_check_mode_shows_the_exact_adds_and_adds_nothing(lab: Lab):
    defs = unique_definitions()
    attribute, klass = defs["attributes"][0]["name"], defs["classes"][0]["name"]

    result = run_module(lab, check=True, **defs)

    assert result["changed"] is True, result
    added = {a["attributes"]["lDAPDisplayName"][0]: a for a in adds(result)}
    assert set(added) == {attribute, klass}
    assert added[attribute]["attributes"]["linkID"] == ["1.2.840.113556.1.2.50"]
    assert added[attribute]["attributes"]["attributeID"] == [f"{defs['oid_base']}.1.1"]
    assert [m["changes"] for m in result["operations"] if m["kind"] == "ldap_modify"] == [
        {"auxiliaryClass": {"op": "add", "values": [klass]}}
    ]
    assert result["diff"]["before"][added[klass]["target"]] is None
    assert result["diff"]["after"][added[klass]["target"]]["objectClass"] == "classSchema"
    assert read_schema_object(lab, attribute) is None
    assert read_schema_object(lab, klass) is None
    assert klass not in (read_schema_object(lab, "user") or {}).get("auxiliaryclass", [])


def test_first_run_adds_on_every_dc_and_second_run_changes_nothing(lab: Lab):
    defs = unique_definitions()
    attribute, klass = defs["attributes"][0]["name"], defs["classes"][0]["name"]

    first = run_module(lab, wait_for_replication=True, replication_timeout=120, **defs)

    assert first["changed"] is True, first
    assert first["schema_master"] == lab.dc(0).fqdn
    assert sorted(first["replication"]["dcs"]) == sorted(dc.fqdn for dc in lab.dcs)
    for dc in range(len(lab.dcs)):
        live = read_schema_object(lab, attribute, dc=dc)
        assert live is not None, f"{attribute} missing on {lab.dc(dc).name}"
        assert live["searchflags"] == ["128"]
        assert int(live["linkid"][0]) % 2 == 0, "the DC must have allocated a forward link ID"
        assert klass in read_schema_object(lab, "user", dc=dc)["auxiliaryclass"]

    second = run_module(lab, **defs)

    assert second["changed"] is False, second
    assert second["operations"] == []
    assert second["verified"] == [attribute, klass, "user.auxiliaryClass"]


def test_pointed_at_another_dc_the_module_writes_to_the_schema_master(lab: Lab):
    """dc2 refuses schema writes (it is not the FSMO owner): the module finds dc1 from dc2 and
    writes there, reaching it by the address dc_addresses gives its name."""
    defs = unique_definitions()
    attribute = defs["attributes"][0]["name"]

    result = run_module(lab, server=lab.dc(1).ip, tls_server_name=lab.dc(1).fqdn, **defs)

    assert result["changed"] is True, result
    assert result["schema_master"] == lab.dc(0).fqdn
    assert read_schema_object(lab, attribute, dc=0) is not None


def test_role_applies_credroam_schema_and_a_second_run_reports_no_change(credroam_schema: Lab):
    again = run_schema_playbook(credroam_schema)
    assert again.returncode == 0, again.stdout[-4000:]
    assert recap_changed(again.stdout) == 0
    check = run_schema_playbook(credroam_schema, "--check", "--diff")
    assert check.returncode == 0 and recap_changed(check.stdout) == 0
    for name in ("credroamKeyEnvelopes", "credroamRoamingKeys", "credroamUser"):
        assert read_schema_object(credroam_schema, name) is not None, name
    assert "credroamUser" in read_schema_object(credroam_schema, "user")["auxiliaryclass"]


def test_native_roaming_attributes_verify_as_matching(lab: Lab):
    result = run_module(lab, check=True, preset="credroam")
    assert [name for name in result["verified"] if name in NATIVE] == NATIVE
    added = [a["attributes"]["lDAPDisplayName"][0] for a in adds(result)]
    assert not set(added) & set(NATIVE)


def test_user_writes_and_reads_own_value_but_not_another_users(credroam_schema: Lab):
    lab = credroam_schema
    alice, bob = lab.user("alice"), lab.user("bob")
    value = f"B:8:{secrets.token_hex(4).upper()}:{alice.dn}"
    as_alice = lab.ldap_connection(alice.upn, alice.password)
    as_bob = lab.ldap_connection(bob.upn, bob.password)
    try:
        as_alice.modify(alice.dn, {"credroamKeyEnvelopes": [(ldap3.MODIFY_ADD, [value])]})
        as_alice.search(
            alice.dn, "(objectClass=*)", ldap3.BASE, attributes=["credroamKeyEnvelopes"]
        )
        assert value in as_alice.response[0]["attributes"]["credroamKeyEnvelopes"]

        as_bob.search(alice.dn, "(objectClass=*)", ldap3.BASE, attributes=["credroamKeyEnvelopes"])
        assert not as_bob.response[0]["attributes"].get("credroamKeyEnvelopes")
        with pytest.raises(LDAPInsufficientAccessRightsResult):
            as_bob.modify(
                alice.dn,
                {"credroamKeyEnvelopes": [(ldap3.MODIFY_ADD, [f"B:2:00:{alice.dn}"])]},
            )
    finally:
        as_alice.modify(alice.dn, {"credroamKeyEnvelopes": [(ldap3.MODIFY_DELETE, [value])]})
        as_alice.unbind()
        as_bob.unbind()


def test_conflicting_definition_fails_showing_both_and_changes_nothing(credroam_schema: Lab):
    lab = credroam_schema
    fresh = unique_definitions()["attributes"][0]
    conflicting = {
        "name": "credroamKeyEnvelopes",
        "cn": "credroam-Key-Envelopes",
        "attribute_id": f"{CREDROAM_OID_BASE}.1.1",
        "syntax": "dn-binary",
        "single_valued": True,  # ours is multi-valued
        "linked": True,
        "confidential": True,
        "security_guid": "private-information",
    }
    before = read_schema_object(lab, "credroamKeyEnvelopes")

    result = run_module(lab, attributes=[conflicting, fresh], oid_base=CREDROAM_OID_BASE + ".98")

    assert result.get("failed") is True
    assert "attribute credroamKeyEnvelopes" in result["msg"]
    assert "isSingleValued differ" in result["msg"]
    assert "ours:     " in result["msg"] and "isSingleValued=True" in result["msg"]
    assert "existing: dn=CN=credroam-Key-Envelopes" in result["msg"]
    assert "isSingleValued=False" in result["msg"]
    assert read_schema_object(lab, "credroamKeyEnvelopes") == before
    assert read_schema_object(lab, fresh["name"]) is None


def test_state_absent_is_refused_without_defunct(credroam_schema: Lab):
    result = run_module(credroam_schema, preset="credroam", state="absent")
    assert result.get("failed") is True
    assert "can only be made defunct" in result["msg"]
    assert "isdefunct" not in read_schema_object(credroam_schema, "credroamUser")


def test_wait_for_replication_times_out_naming_the_lagging_dc(credroam_schema: Lab):
    lab = credroam_schema
    unreachable = {**connection_args(lab)["dc_addresses"], lab.dc(1).fqdn: "127.0.0.9"}
    result = run_module(
        lab,
        preset="credroam",
        wait_for_replication=True,
        replication_timeout=3,
        timeout=2,
        dc_addresses=unreachable,
    )
    assert result.get("failed") is True
    assert f"{lab.dc(1).fqdn} lacks unreachable" in result["msg"]
    assert lab.dc(0).fqdn not in result["msg"].split("s:", 1)[1]


def test_defunct_on_request_unlinks_and_defuncts_once(lab: Lab):
    defs = unique_definitions()
    attribute, klass = defs["attributes"][0]["name"], defs["classes"][0]["name"]
    assert run_module(lab, **defs)["changed"] is True

    refused = run_module(lab, state="absent", **defs)
    assert refused.get("failed") is True and read_schema_object(lab, klass) is not None

    defunct = run_module(lab, state="absent", defunct=True, **defs)

    assert defunct["changed"] is True, defunct
    assert klass not in read_schema_object(lab, "user").get("auxiliaryclass", [])
    assert read_schema_object(lab, klass)["isdefunct"] == ["TRUE"]
    assert read_schema_object(lab, attribute)["isdefunct"] == ["TRUE"]
    assert run_module(lab, state="absent", defunct=True, **defs)["changed"] is False
    # A defunct definition is never silently revived.
    revived = run_module(lab, **defs)
    assert revived.get("failed") is True and "it is defunct" in revived["msg"]
