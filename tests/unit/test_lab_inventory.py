"""The lab's dynamic inventory: a lab that is not up is named, with the command that starts it."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "inventories" / "lab" / "lab_inventory.py"
# Lab names are [a-z0-9]{1,8}: this one can never be up.
NO_LAB = "no-such-lab"

spec = importlib.util.spec_from_file_location("lab_inventory", SCRIPT)
lab_inventory = importlib.util.module_from_spec(spec)
spec.loader.exec_module(lab_inventory)


def run(*argv: str, lab: str = NO_LAB) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CREDROAM_LAB": lab, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg")}
    return subprocess.run(
        argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=120, check=False
    )


def test_a_lab_that_is_not_up_is_named_with_the_command_that_starts_it():
    inventory = json.loads(run(sys.executable, str(SCRIPT), "--list").stdout)
    message = inventory["all"]["vars"]["credroam_lab_not_up"]
    assert message.startswith(f"lab '{NO_LAB}' is not up")
    assert f"make lab-up LAB={NO_LAB}" in message
    assert inventory["dcs"]["hosts"] == [] and inventory["controller"]["hosts"] == ["localhost"]


def test_the_rollout_stops_on_a_lab_that_is_not_up_before_any_module_runs():
    playbook = run(str(REPO / ".venv/bin/ansible-playbook"), "playbooks/site.yml")
    assert playbook.returncode != 0
    assert f"lab '{NO_LAB}' is not up" in playbook.stdout
    assert f"make lab-up LAB={NO_LAB}" in playbook.stdout
    assert "bind_method is simple but" not in playbook.stdout


def test_status_lists_every_host_with_its_address_and_whether_it_runs():
    lab = {
        "realm": "LAB.EXAMPLE",
        "subnet": "172.29.9.0/24",
        "ca_cert": "/x/ca.pem",
        "dcs": [
            {"name": "dc1", "ip": "172.29.9.10", "fqdn": "dc1.lab.example", "pid": os.getpid()}
        ],
        "clients": [{"name": "client1", "ip": "172.29.9.21", "fqdn": "c1.lab.example", "pid": 0}],
    }
    lines = lab_inventory.status("mine", lab)
    assert lines[0].startswith("lab mine: realm LAB.EXAMPLE, subnet 172.29.9.0/24")
    assert lines[1].split() == ["dc", "dc1", "172.29.9.10", "dc1.lab.example", "up"]
    assert lines[2].split()[:3] == ["client", "client1", "172.29.9.21"]
    assert "DOWN" in lines[2]
    assert lab_inventory.status(NO_LAB, None)[0].startswith(f"lab '{NO_LAB}' is not up")
