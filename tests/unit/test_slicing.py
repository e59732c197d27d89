"""Plays stay correct under AWX job slicing: a slice is the inventory cut down to some hosts,
so a play may not choose its hosts by which hosts happen to be in the run."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml

pytest.importorskip("ansible", reason="runs ansible-playbook --list-hosts")

REPO = Path(__file__).resolve().parents[2]


def list_hosts(tmp_path: Path, playbook: str, groups: dict[str, list[str]]) -> str:
    """``ansible-playbook --list-hosts`` output over an inventory of ``groups``."""
    inventory = tmp_path / "inventory.yml"
    children = {name: {"hosts": {host: {} for host in hosts}} for name, hosts in groups.items()}
    inventory.write_text(yaml.safe_dump({"all": {"children": children}}))
    run = subprocess.run(
        [str(REPO / ".venv/bin/ansible-playbook"), "-i", str(inventory), playbook, "--list-hosts"],
        cwd=REPO, capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    return run.stdout


def listed_hosts(tmp_path: Path, playbook: str, clients: list[str], agents: list[str]) -> set:
    output = list_hosts(tmp_path, playbook, {"clients": clients, "credroam_agents": agents})
    return set(re.findall(r"^      (\S+)$", output, re.MULTILINE))


def test_an_agent_slice_without_agent_hosts_installs_the_agent_nowhere(tmp_path):
    # The whole inventory: the agent goes to c1 only, though c2 and c3 are clients too.
    assert listed_hosts(tmp_path, "playbooks/agent.yml", ["c1", "c2", "c3"], ["c1"]) == {"c1"}
    # The slice holding c2 and c3: credroam_agents is still defined, with no host here.
    assert listed_hosts(tmp_path, "playbooks/agent.yml", ["c2", "c3"], []) == set()


def test_without_an_agent_group_the_clients_get_the_agent(tmp_path):
    output = list_hosts(tmp_path, "playbooks/agent.yml", {"clients": ["c1"]})
    assert "pattern: ['clients']" in output and "      c1" in output


PLAYBOOKS = sorted((REPO / "playbooks").glob("*.yml"))
# What would couple the hosts of one run: a task run once for all of them on one host, work
# delegated to another host, another host's variables, or batches of hosts.
COUPLING = re.compile(r"^\s*(run_once|delegate_to|serial|throttle):|hostvars\[|hostvars\b", re.M)
# Each allowed use and why it is slice-safe (README, "Running in AWX").
ALLOWED = {
    "summary.yml": "a read-only report for a person; run it unsliced",
    "lab.yml": "the embedded lab, one controller host",
}


@pytest.mark.parametrize("playbook", PLAYBOOKS, ids=lambda p: p.name)
def test_no_playbook_couples_its_hosts(playbook):
    if playbook.name in ALLOWED:
        pytest.skip(ALLOWED[playbook.name])
    assert not COUPLING.findall(playbook.read_text())


def test_the_agent_role_runs_once_only_on_the_controller():
    """The directory roles (schema, GPO, compliance) run in plays of the one controller host;
    the sync_agent role runs on each agent host, and its only run_once tasks are the
    controller's reproducible build, which each slice repeats with the same bytes."""
    for path in REPO.glob("roles/sync_agent/tasks/*.yml"):
        text = path.read_text()
        assert "hostvars" not in text and "serial:" not in text, path
        for block in re.split(r"\n(?=- name:)", text):
            if "run_once: true" in block:
                assert "delegate_to: localhost" in block, (path, block[:80])
