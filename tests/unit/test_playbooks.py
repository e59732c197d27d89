"""The rollout playbooks feed every directory module from the forest description (credroam_ldap_*)
through one module_defaults block: a setting given once in the inventory reaches each module.

No DC is needed: the settings point at a loopback port nothing listens on (or are invalid), and
the module's own message shows what it received.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def run_playbook(playbook: str, tmp_path: Path, **forest) -> str:
    """Run a rollout playbook with an inventory holding only the forest description; its output."""
    inventory = {
        "controller": {
            "hosts": {"localhost": {"ansible_connection": "local"}},
            "vars": {
                "ansible_python_interpreter": str(REPO / ".venv/bin/python"),
                "credroam_ldap_server": "127.0.0.1",
                "credroam_ldap_bind_user": "Administrator@lab.example",
                "credroam_ldap_bind_password": "secret",
                "credroam_roaming_ou_dn": "OU=RoamingUsers,DC=lab,DC=example",
                **forest,
            },
        }
    }
    path = tmp_path / "inventory.json"
    path.write_text(json.dumps(inventory))
    run = subprocess.run(
        [str(REPO / ".venv/bin/ansible-playbook"), "-i", str(path), playbook],
        cwd=REPO,
        env={**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg")},
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert run.returncode != 0, "nothing listens there: the run must fail"
    return run.stdout


@pytest.mark.parametrize("playbook", ["playbooks/gpo.yml", "playbooks/schema.yml"])
def test_the_inventorys_port_and_tls_mode_reach_the_directory_module(playbook, tmp_path):
    port = closed_port()
    forest = {"credroam_ldap_port": port, "credroam_ldap_tls_mode": "starttls"}
    output = run_playbook(playbook, tmp_path, **forest)
    assert f"cannot reach the domain controller 127.0.0.1:{port} (starttls)" in output


def test_the_inventorys_timeout_reaches_the_gpo_module(tmp_path):
    output = run_playbook("playbooks/gpo.yml", tmp_path, credroam_ldap_timeout=0)
    assert "invalid connection settings: timeout must be positive, not 0" in output


def test_the_inventorys_connection_reaches_the_token_module(tmp_path):
    port = closed_port()
    forest = {"credroam_ldap_port": port, "roaming_tokens_users": ["alice"]}
    output = run_playbook("playbooks/tokens.yml", tmp_path, **forest)
    assert f"cannot reach the domain controller 127.0.0.1:{port} (ldaps)" in output
