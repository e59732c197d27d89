"""Group Policy reaches the agent on a lab host: a GPO made with `ad_gpo` on the roaming OU sets
the tombstone days over the agent's config file, read at login as alice (LDAP bound, SYSVOL over
signed SMB with her password), and in the background with her Kerberos ticket while the GPO's
version stands.

A changed GPO needs its Registry.pol read again. In the background that is SMB with Kerberos,
which pyspnego only offers with the compiled ``krb5`` package that Debian 12 lacks: the agent
then keeps the last good policy (marked cached, with the reason) and the next logon, with the
password, reads the change.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator

import pytest

from tests.integration import test_agent
from tests.integration.test_agent import agent, new_certificate, uid
from tests.integration.test_gpo import GpoRunner
from tests.lab import Lab

pytestmark = pytest.mark.integration

NAME = f"credroam agent host {uuid.uuid4().hex[:8]}"

# The fixtures this test shares (pytest finds fixtures by name in the module).
agent_lab, alice, pyz = test_agent.agent_lab, test_agent.alice, test_agent.pyz


@pytest.fixture(scope="module")
def roaming_gpo(agent_lab: Lab, tmp_path_factory) -> Iterator[GpoRunner]:
    runner = GpoRunner(agent_lab, tmp_path_factory.mktemp("agent-gpo"))
    runner(
        name=NAME,
        credential_roaming={"tombstone_days": 45},
        links=[{"target": agent_lab.roaming_ou_dn, "order": 1}],
    )
    try:
        yield runner
    finally:
        runner(name=NAME, state="absent")


def policy_of(host, env: str) -> dict:
    status = agent(host, "status", "--json", env=env)
    assert status.returncode == 0, status.stdout + status.stderr
    return json.loads(status.stdout)["policy"]


def test_a_gpo_sets_the_policy_over_the_config_and_its_change_is_read_in_the_background(
    agent_lab, alice, roaming_gpo
):
    host = agent_lab.client(0)
    new_certificate(host, "alice", "under the gpo")
    login = agent(host, "login", password=alice.password)
    assert login.returncode == 0, login.stderr
    cache = f"KRB5CCNAME=FILE:/run/user/{uid(host, 'alice')}/krb5cc"
    kinit = subprocess.run(
        [*host.ssh_argv(), f"runuser -u alice -- env {cache} kinit alice@LAB.EXAMPLE"],
        input=alice.password + "\n",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert kinit.returncode == 0, kinit.stderr

    tombstone_days = policy_of(host, cache)["tombstone_days"]
    assert tombstone_days["value"] == 45
    assert tombstone_days["source"].startswith(f"GPO {NAME} ")
    assert "cached" not in tombstone_days["source"]  # read now, with the ticket

    roaming_gpo(name=NAME, credential_roaming={"tombstone_days": 50})
    background = policy_of(host, cache)["tombstone_days"]
    fresh = background == {"value": 50, "source": background["source"]}
    assert fresh or (background["value"] == 45 and ", cached: " in background["source"])
    login = agent(host, "login", password=alice.password)
    assert login.returncode == 0, login.stderr
    changed = policy_of(host, cache)["tombstone_days"]
    assert changed["value"] == 50 and "cached" not in changed["source"]
