"""The sync_agent role's templates as Ansible renders them: agent.toml is a configuration the
agent accepts, the systemd user units pass `systemd-analyze --user verify`, the Windows task is
well-formed Task Scheduler XML with its triggers, and the Windows play passes --syntax-check."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from credroam_agent.config import parse_config
from tests.lab import ANSIBLE_PLAYBOOK, REPO

ROLE = REPO / "roles" / "sync_agent"
TASK_NS = {"t": "http://schemas.microsoft.com/windows/2004/02/mit/task"}
# Every [section] key of agent.toml the role can set, with a value other than the default.
FULL = {
    "sync_agent_domain": "corp.example",
    "sync_agent_realm": "CORP.EXAMPLE",
    "sync_agent_base_dn": "DC=corp,DC=example",
    "sync_agent_dcs": ["dc1.corp.example", "dc2.corp.example"],
    "sync_agent_tls_mode": "starttls",
    "sync_agent_port": 3389,
    "sync_agent_ca_file": "/etc/credroam/corp-ca.pem",
    "sync_agent_bind_method": "simple",
    "sync_agent_timeout": 7,
    "sync_agent_user_realm": "USERS.CORP.EXAMPLE",
    "sync_agent_user_map": {"jdoe": "john.doe", "émile": "emile"},
    "sync_agent_paths": {"store": "~/roamed", "key_cache": "$XDG_RUNTIME_DIR/cr/key"},
    "sync_agent_enrollment_command": ["/usr/local/libexec/enroll", "--ca", "Corp CA"],
    "sync_agent_enrollment_timeout": 60,
    "sync_agent_policy": {"tombstone_days": 30, "remove_at_logoff": True},
    "sync_agent_stores": ["file", "nss", "networkmanager"],
    "sync_agent_recovery_public_key_src": "files/recovery.pem",
    "sync_agent_recovery_public_key_file": "/etc/credroam/org-recovery.pem",
}
WINDOWS_FULL = {
    "sync_agent_domain": "corp.example",
    "sync_agent_platform": "windows",
    "sync_agent_windows_native_roaming": "off",
    "sync_agent_windows_non_exportable_keys": True,
    "sync_agent_windows_paths": {"store": "~/AppData/Local/cr/store"},
    "sync_agent_windows_config_dir": "D:\\credroam",
}
RENDER = """
- hosts: localhost
  gather_facts: false
  vars_files: ["{role}/defaults/main.yml", "{role}/vars/main.yml"]
  vars:
    role_path: "{role}"
    ansible_managed: managed by the test
  tasks:
    - ansible.builtin.template:
        src: "{role}/templates/agent.toml.j2"
        dest: "{out}/minimal.toml"
        mode: "0644"
      vars: {{"sync_agent_domain": "corp.example"}}
    - ansible.builtin.template:
        src: "{role}/templates/agent.toml.j2"
        dest: "{out}/full.toml"
        mode: "0644"
      vars: {full}
    - ansible.builtin.template:
        src: "{role}/templates/agent.toml.j2"
        dest: "{out}/windows.toml"
        mode: "0644"
      vars: {{"sync_agent_domain": "corp.example", "sync_agent_platform": "windows"}}
    - ansible.builtin.template:
        src: "{role}/templates/agent.toml.j2"
        dest: "{out}/windows-full.toml"
        mode: "0644"
      vars: {windows_full}
    - ansible.builtin.template:
        src: "{role}/templates/{{{{ item }}}}.j2"
        dest: "{out}/{{{{ item }}}}"
        mode: "0644"
      vars:
        sync_agent_domain: corp.example
        sync_agent_command: "{out}/credroam-agent"
      loop: [credroam-agent.service, credroam-agent-purge.service, credroam-agent-task.xml]
"""


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sync_agent")
    playbook = out / "render.yml"
    playbook.write_text(
        RENDER.format(
            role=ROLE, out=out, full=json.dumps(FULL), windows_full=json.dumps(WINDOWS_FULL)
        )
    )
    agent = out / "credroam-agent"
    agent.write_text("#!/bin/sh\n")
    agent.chmod(0o755)
    done = subprocess.run(
        [str(ANSIBLE_PLAYBOOK), "-i", "localhost,", "-c", "local", str(playbook),
         "-e", f"ansible_python_interpreter={sys.executable}"],
        cwd=REPO, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    return out


def test_the_default_config_is_accepted_by_the_agent(rendered):
    config = parse_config((rendered / "minimal.toml").read_text(), "agent.toml")
    assert config.directory.domain == "corp.example"
    assert config.directory.realm == "CORP.EXAMPLE"
    assert config.directory.ca_file == "/etc/credroam/ca.pem"  # the role's sync_agent_ca_file
    assert config.directory.bind_method == "gssapi"
    assert config.policy == {}
    assert config.stores == ("file",)
    assert config.recovery_key_files == ()


def test_every_variable_reaches_its_key_in_agent_toml(rendered):
    config = parse_config((rendered / "full.toml").read_text(), "agent.toml")
    directory = config.directory
    assert (directory.domain, directory.realm, directory.base_dn) == (
        "corp.example", "CORP.EXAMPLE", "DC=corp,DC=example",
    )  # fmt: skip
    assert directory.dcs == ("dc1.corp.example", "dc2.corp.example")
    assert (directory.tls_mode, directory.port, directory.timeout) == ("starttls", 3389, 7)
    assert (directory.ca_file, directory.bind_method) == ("/etc/credroam/corp-ca.pem", "simple")
    assert config.user_realm == "USERS.CORP.EXAMPLE"
    assert dict(config.user_map) == {"jdoe": "john.doe", "émile": "emile"}
    assert config.paths["store"] == "~/roamed"
    assert config.paths["key_cache"] == "$XDG_RUNTIME_DIR/cr/key"
    assert config.enrollment_command == ("/usr/local/libexec/enroll", "--ca", "Corp CA")
    assert config.enrollment_timeout == 60
    assert dict(config.policy) == {"tombstone_days": 30, "remove_at_logoff": True}
    assert config.stores == ("file", "nss", "networkmanager")
    assert config.recovery_key_files == ("/etc/credroam/org-recovery.pem",)


def test_a_windows_config_has_windows_paths_and_the_windows_section(rendered):
    config = parse_config((rendered / "windows.toml").read_text(), "agent.toml")
    assert (config.windows.native_roaming, config.windows.non_exportable_keys) == ("auto", False)
    assert config.paths["store"] == "~/AppData/Local/credroam/store"
    assert config.paths["state"] == "~/AppData/Local/credroam/state.json"
    assert config.paths["policy_cache"] == "~/AppData/Local/credroam/policy"
    assert config.paths["key_cache"].startswith("$XDG_RUNTIME_DIR")  # unset on purpose: README
    assert config.directory.ca_file == "C:\\ProgramData\\credroam\\ca.pem"
    full = parse_config((rendered / "windows-full.toml").read_text(), "agent.toml")
    assert (full.windows.native_roaming, full.windows.non_exportable_keys) == ("off", True)
    assert full.paths["store"] == "~/AppData/Local/cr/store"
    assert full.directory.ca_file == "D:\\credroam\\ca.pem"
    linux = parse_config((rendered / "minimal.toml").read_text(), "agent.toml")
    assert "[windows]" not in (rendered / "minimal.toml").read_text()
    assert linux.paths["store"] == "~/.local/share/credroam/store"


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze not installed")
@pytest.mark.parametrize("unit", ["credroam-agent.service", "credroam-agent-purge.service"])
def test_the_user_units_pass_systemd_analyze_verify(rendered, unit):
    env = {**os.environ, "XDG_RUNTIME_DIR": str(rendered)}
    done = subprocess.run(
        ["systemd-analyze", "--user", "verify", str(rendered / unit)],
        capture_output=True, text=True, timeout=60, check=False, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    text = (rendered / unit).read_text()
    assert "WantedBy=default.target" in text
    command = "watch" if unit == "credroam-agent.service" else "purge"
    assert f"{rendered}/credroam-agent --config /etc/credroam/agent.toml {command}" in text


def test_the_windows_task_is_well_formed_and_holds_its_triggers(rendered):
    root = ET.parse(rendered / "credroam-agent-task.xml").getroot()
    triggers = root.find("t:Triggers", TASK_NS)
    assert triggers.find("t:LogonTrigger", TASK_NS) is not None
    states = [
        e.text for e in triggers.iterfind("t:SessionStateChangeTrigger/t:StateChange", TASK_NS)
    ]
    assert sorted(states) == ["SessionLock", "SessionUnlock"]
    subscription = ET.fromstring(triggers.find("t:EventTrigger/t:Subscription", TASK_NS).text)
    select = subscription.find("Query/Select")
    assert select.get("Path") == "Microsoft-Windows-GroupPolicy/Operational"
    assert "EventID=1502" in select.text and "EventID=1503" in select.text
    interval = triggers.find("t:TimeTrigger/t:Repetition/t:Interval", TASK_NS)
    assert interval.text == "PT8H"
    principal = root.find("t:Principals/t:Principal/t:GroupId", TASK_NS)
    assert principal.text == "S-1-5-32-545"  # BUILTIN\Users: whoever is logged on
    command = root.find("t:Actions/t:Exec/t:Arguments", TASK_NS).text
    assert command.endswith(" sync") and "credroam-agent.pyz" in command


WINDOWS_PLAY = """
- hosts: windows
  gather_facts: false
  tasks:
    - ansible.builtin.import_role:
        name: sync_agent
        tasks_from: windows.yml
"""


def test_the_windows_play_passes_syntax_check(tmp_path):
    playbook = tmp_path / "windows.yml"
    playbook.write_text(WINDOWS_PLAY)
    done = subprocess.run(
        [str(ANSIBLE_PLAYBOOK), "-i", "win1,", "--syntax-check", str(playbook)],
        cwd=REPO, capture_output=True, text=True, timeout=120, check=False,
        env={**os.environ, "ANSIBLE_ROLES_PATH": str(REPO / "roles")},
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
