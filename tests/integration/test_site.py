"""The main job, run the way a platform team runs it: playbooks/site.yml against the lab forest.

The inventory is the lab's dynamic inventory (CREDROAM_LAB selects the lab), so these tests also
prove that one forest description in the inventory feeds every role.
"""

from __future__ import annotations

import json

import ldap3
import pytest

from tests.lab import Lab, PlaybookRun, ansible_playbook

pytestmark = pytest.mark.integration


def site(lab: Lab, *args: str) -> PlaybookRun:
    return playbook(lab, "playbooks/site.yml", *args)


def playbook(lab: Lab, path: str, *args: str) -> PlaybookRun:
    """Run the playbook at ``path`` (from the repository root) on ``lab``; it must succeed."""
    result = ansible_playbook(lab, path, *args)
    assert result.returncode == 0, result.output[-5000:]
    return result


def roaming_gpo(conn: ldap3.Connection, lab: Lab) -> dict:
    conn.search(
        f"CN=Policies,CN=System,{lab.base_dn}",
        "(&(objectClass=groupPolicyContainer)(displayName=Credential Roaming))",
        attributes=["cn", "versionNumber"],
    )
    assert len(conn.entries) == 1, "exactly one GPO named Credential Roaming"
    entry = conn.entries[0]
    return {"guid": str(entry.cn), "version": int(entry.versionNumber.value)}


@pytest.fixture(scope="module")
def rolled_out(lab: Lab) -> PlaybookRun:
    return site(lab)


def test_site_extends_the_schema_and_links_the_policy_to_the_roaming_ou(rolled_out, lab):
    conn = lab.ldap_connection()
    conn.search(
        f"CN=User,CN=Schema,CN=Configuration,{lab.base_dn}",
        "(objectClass=classSchema)",
        search_scope=ldap3.BASE,
        attributes=["auxiliaryClass"],
    )
    assert "credroamUser" in conn.entries[0].auxiliaryClass.values
    gpo = roaming_gpo(conn, lab)
    conn.search(lab.roaming_ou_dn, "(objectClass=*)", ldap3.BASE, attributes=["gPLink"])
    assert gpo["guid"].lower() in str(conn.entries[0].gPLink.value).lower()


def test_a_second_run_changes_nothing(rolled_out, lab):
    assert site(lab).changed == 0


def test_check_diff_on_the_rolled_out_forest_reports_no_change(rolled_out, lab):
    assert site(lab, "--check", "--diff").changed == 0


def test_check_diff_shows_a_policy_change_and_writes_nothing(rolled_out, lab):
    conn = lab.ldap_connection()
    before = roaming_gpo(conn, lab)
    override = {"roaming_gpo_credential_roaming": {"enabled": True, "tombstone_days": 30}}
    run = site(lab, "--check", "--diff", "-e", json.dumps(override))
    assert run.changed == 1
    assert "DIMSRoamingTombstoneDays" in run.output
    assert roaming_gpo(conn, lab) == before
