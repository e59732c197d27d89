"""credroam_sync run the real way: ansible over SSH to a lab client host, where it runs the
agent as root for alice (the agent drops to alice), with her password as a vaulted variable
would pass it. Seeds alice's directory from that host's store; check mode changes nothing; a
second run reports changed=false."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from tests.integration import test_agent
from tests.integration.test_agent import PYZ, directory_keys, new_certificate, store_files
from tests.lab import REPO, Account, Lab

pytestmark = pytest.mark.integration
# The agent tests' lab preparation (schema, local accounts, agent configuration, zipapp).
pyz, agent_lab, alice = test_agent.pyz, test_agent.agent_lab, test_agent.alice


def run_module(lab: Lab, account: Account, *flags: str) -> dict:
    """The module's result for client1, from one ad-hoc ansible run (JSON callback)."""
    args = {
        "users": [account.name],
        "passwords": {account.name: account.password},
        "agent_path": str(PYZ),
    }
    run = subprocess.run(
        [str(REPO / ".venv/bin/ansible"), "client1", "-m", "credroam_sync",
         "-a", json.dumps(args), *flags],
        cwd=REPO, capture_output=True, text=True, timeout=300, check=False,
        env={**os.environ, "CREDROAM_LAB": lab.name, "ANSIBLE_STDOUT_CALLBACK": "json",
             "ANSIBLE_LOAD_CALLBACK_PLUGINS": "1"},
    )  # fmt: skip
    assert account.password not in run.stdout + run.stderr
    report = json.loads(run.stdout)
    (task,) = report["plays"][0]["tasks"]
    result = task["hosts"]["client1"]
    assert not result.get("failed"), result
    return result


def test_the_module_seeds_the_directory_from_a_hosts_store_and_is_idempotent(agent_lab, alice):
    host = agent_lab.client(0)
    thumb, _ = new_certificate(host, "alice", "seeded by credroam_sync")
    before = store_files(agent_lab, host, "alice")
    expected = [f"%3\\{thumb}", f"%9\\{thumb}"]

    planned = run_module(agent_lab, alice, "--check", "--diff")
    assert planned["changed"] is True
    assert planned["users"]["alice"]["uploads"] == expected
    assert f"directory %3\\{thumb}: as on this host" in planned["diff"][0]["after"]
    assert directory_keys(agent_lab, alice) == set()  # check mode wrote nothing
    assert store_files(agent_lab, host, "alice") == before

    seeded = run_module(agent_lab, alice)
    assert seeded["changed"] is True and seeded["users"]["alice"]["uploads"] == expected
    assert directory_keys(agent_lab, alice) == set(expected)

    again = run_module(agent_lab, alice)
    assert again["changed"] is False, again["users"]["alice"]
    assert directory_keys(agent_lab, alice) == set(expected)
