"""playbooks/rollback.yml on the lab after a rollout by playbooks/site.yml: the GPO unlinked, the
agent gone from every client host, alice's roaming values purged; check mode changes nothing and
a second rollback changes nothing."""

from __future__ import annotations

import json

import ldap3
import pytest

from tests.integration.roaming_lab import clear_everywhere, plant
from tests.integration.rollout import roaming_gpo
from tests.integration.test_agent import directory_keys
from tests.integration.test_sync_agent_role import COMMAND, PREFIX
from tests.integration.test_tokens import certificate_value
from tests.lab import Lab, PlaybookRun, ansible_playbook

pytestmark = pytest.mark.integration
PURGE_ALICE = json.dumps(
    {"roaming_rollback_purge_users": ["alice"], "roaming_rollback_confirm_purge": True}
)


def rollback(lab: Lab, *args: str) -> PlaybookRun:
    result = ansible_playbook(lab, "playbooks/rollback.yml", "-e", PURGE_ALICE, *args, timeout=900)
    assert result.returncode == 0, result.output[-5000:]
    return result


def linked(lab: Lab) -> bool:
    conn = lab.ldap_connection()
    try:
        guid = roaming_gpo(conn, lab)["guid"].lower()
        conn.search(lab.roaming_ou_dn, "(objectClass=*)", ldap3.BASE, attributes=["gPLink"])
        return guid in str(conn.entries[0].gPLink.value or "").lower()
    finally:
        conn.unbind()


def agent_installed(lab: Lab) -> list[bool]:
    return [
        host.ssh(f"test -e {PREFIX}/VERSION || test -e {COMMAND}", check=False).returncode == 0
        for host in lab.clients
    ]


def test_rollback_unlinks_the_gpo_removes_the_agents_and_purges_alice(rolled_out, lab: Lab):
    alice = lab.user("alice")
    clear_everywhere(lab, alice)
    value, key = certificate_value(alice)
    plant(lab, alice, "msPKIAccountCredentials", value)
    assert linked(lab) and all(agent_installed(lab))

    planned = rollback(lab, "--check", "--diff")
    assert planned.changed > 0
    assert linked(lab) and all(agent_installed(lab)) and directory_keys(lab, alice) == {key}

    rollback(lab)
    assert not linked(lab)
    assert not any(agent_installed(lab))
    for host in lab.clients:
        assert "pam-hook" not in host.ssh("cat /etc/pam.d/sshd /etc/pam.d/login").stdout
    assert directory_keys(lab, alice) == set()

    assert rollback(lab).changed == 0
