"""The sync_agent role on the lab's client hosts, through playbooks/site.yml (the session's
rollout): the agent on each host (in the host's own folder, version recorded), a real SSH
password logon as alice after the rollout uploads her certificate, state=absent removes the
agent and its PAM lines, and the agent stage run sliced, as AWX job slicing runs it (each slice a
separate ansible-playbook over part of the hosts; here `--limit`), installs exactly what one run
installs."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration import test_agent_triggers
from tests.integration.rollout import site
from tests.integration.test_agent import directory_keys, new_certificate
from tests.integration.test_agent_triggers import password_sshd, ssh_with_password, wait_for
from tests.lab import Lab

pytestmark = pytest.mark.integration

PREFIX = "/usr/local/lib/credroam/agent"  # inventories/lab/group_vars/clients.yml
COMMAND = "/usr/local/lib/credroam/bin/credroam-agent"
# The trigger tests' fixtures (pytest finds fixtures by name in the module).
host, alice_uid = test_agent_triggers.host, test_agent_triggers.alice_uid
shared_dir = test_agent_triggers.shared_dir


# What the role puts on a lab host (paths from inventories/lab/group_vars/clients.yml and the
# role's defaults): the agent, its command, config and CA, the PAM hook and stack lines, the units.
INSTALLED = (
    "/usr/local/lib/credroam /etc/credroam/agent.toml /etc/credroam/ca.pem "
    "/etc/pam.d/sshd /etc/pam.d/login /etc/systemd/user"
)


def installed(lab: Lab) -> dict[str, str]:
    """Per client host: the sha256 of every installed file and each link's target."""
    command = (
        f"find {INSTALLED} \\( -type f -exec sha256sum {{}} + \\) -o "
        "\\( -type l -printf '%p -> %l\\n' \\) 2>/dev/null | sort"
    )
    return {host.name: host.ssh(command).stdout for host in lab.clients}


def test_the_agent_is_on_each_client_in_its_own_folder_with_its_version(rolled_out, lab):
    for host in lab.clients:
        version = host.ssh(f"cat {PREFIX}/VERSION; {COMMAND} --version").stdout.splitlines()
        assert version[0] == version[2]
        assert version[0].startswith("credroam-agent ")
        pam = host.ssh("grep pam-hook /etc/pam.d/sshd /etc/pam.d/login").stdout
        assert pam.count("pam_exec.so") == 4
        # The host's folder is its own, under the lab's state; the machine's /usr has none.
        assert (lab.state_dir / host.name / "agent" / "agent" / "credroam-agent.pyz").is_file()
    assert not Path("/usr/local/lib/credroam/agent").exists()


def test_an_ssh_password_logon_after_the_rollout_uploads_alices_certificate(
    rolled_out, lab, alice_uid, shared_dir
):
    host = lab.client(0)
    alice = lab.user("alice")
    thumb, _ = new_certificate(host, "alice", "rolled out by site.yml")
    with password_sshd(host, shared_dir):
        logon = ssh_with_password(host, shared_dir, alice.password, "id -un")
        assert logon.returncode == 0, logon.stderr
    wait_for(
        lambda: f"%9\\{thumb}" in directory_keys(lab, alice),
        "alice's certificate and key in the directory",
        timeout=120,
    )


def test_absent_removes_the_agent_and_its_pam_lines_and_a_sliced_install_gives_what_one_run_gave(
    rolled_out, lab
):
    one_run = installed(lab)
    assert all("credroam-agent.pyz" in files for files in one_run.values()), one_run
    removed = site(lab, "--tags", "agent", "-e", "sync_agent_state=absent")
    assert removed.changed > 0
    for host in lab.clients:
        left = host.ssh(
            f"ls {PREFIX} {COMMAND} /etc/credroam/agent.toml "
            "/etc/systemd/user/credroam-agent.service 2>/dev/null; "
            "grep -c pam-hook /etc/pam.d/sshd /etc/pam.d/login",
            check=False,
        ).stdout
        assert "credroam" not in left.replace("/etc/pam.d/", "")
        assert "sshd:0" in left and "login:0" in left
    assert site(lab, "--tags", "agent", "-e", "sync_agent_state=absent").changed == 0
    # --check --diff on hosts without the agent: every install shown, nothing installed.
    planned = site(lab, "--tags", "agent", "--check", "--diff")
    assert planned.changed >= 3 * len(lab.clients)
    assert "pam-hook --agent" in planned.output and "[directory]" in planned.output
    for host in lab.clients:
        assert host.ssh(f"ls {PREFIX} {COMMAND} 2>/dev/null; true").stdout == ""

    first, *others = [host.name for host in lab.clients]
    sliced = [
        site(lab, "--tags", "agent", "--limit", first),
        site(lab, "--tags", "agent", "--limit", ",".join(others)),
    ]
    assert all(run.changed > 0 for run in sliced)  # each slice installed its own hosts
    assert installed(lab) == one_run
    whole = site(lab, "--tags", "agent")
    assert whole.changed == 0, whole.output[-4000:]
