"""A real SSH password logon as alice, with the PAM hook in the host's /etc/pam.d/sshd, runs the
real agent (the zipapp) as alice: her certificate reaches the directory with no other step.

The PAM plumbing (a second sshd accepting passwords through the `sshd` PAM service, the hooked
service file, ssh with SSH_ASKPASS) is the trigger tests'; the agent and its lab setup are
test_agent's.
"""

from __future__ import annotations

import pytest

from tests.integration import test_agent, test_agent_triggers
from tests.integration.test_agent import directory_keys, new_certificate
from tests.integration.test_agent_triggers import (
    hooked_pam,
    password_sshd,
    ssh_with_password,
    wait_for,
)

# The fixtures this test shares (pytest finds fixtures by name in the module).
agent_lab, alice, pyz = test_agent.agent_lab, test_agent.alice, test_agent.pyz
host, alice_uid = test_agent_triggers.host, test_agent_triggers.alice_uid
shared_dir = test_agent_triggers.shared_dir

pytestmark = pytest.mark.integration


def test_an_ssh_password_logon_runs_the_agent_and_alices_certificate_roams(
    agent_lab, alice, alice_uid, shared_dir, pyz
):
    host = agent_lab.client(0)
    thumb, _ = new_certificate(host, "alice", "logged on over ssh")
    with hooked_pam(host, pyz), password_sshd(host, shared_dir):
        logon = ssh_with_password(host, shared_dir, alice.password, "id -un")
        assert logon.returncode == 0, logon.stderr
        assert logon.stdout.strip() == "alice"
        wait_for(
            lambda: f"%9\\{thumb}" in directory_keys(agent_lab, alice),
            "alice's certificate and key in the directory",
            timeout=120,
        )
    cache = host.ssh(f"stat -c '%a %U' /run/user/{alice_uid}/credroam/roaming.key")
    assert cache.stdout.split() == ["600", "alice"]
