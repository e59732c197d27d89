"""The main job, run the way a platform team runs it: playbooks/site.yml against the lab forest.

The inventory is the lab's dynamic inventory (CREDROAM_LAB selects the lab), so these tests also
prove that one forest description in the inventory feeds every role.
"""

from __future__ import annotations

import json

import ldap3
import pytest

from tests.integration.rollout import roaming_gpo, site

pytestmark = pytest.mark.integration


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


def test_check_diff_on_the_rolled_out_forest_shows_only_a_policy_change_and_writes_nothing(
    rolled_out, lab
):
    conn = lab.ldap_connection()
    before = roaming_gpo(conn, lab)
    override = {"roaming_gpo_credential_roaming": {"enabled": True, "tombstone_days": 30}}
    run = site(lab, "--check", "--diff", "-e", json.dumps(override))
    # Nothing else is reported: the rolled-out forest and hosts are as site.yml wants them.
    assert run.changed == 1
    assert run.changed_tasks == ["roaming_gpo : Credential roaming GPO (Credential Roaming)"]
    assert "DIMSRoamingTombstoneDays" in run.output
    assert roaming_gpo(conn, lab) == before
