"""The agent stage of site.yml run sliced, as AWX job slicing runs it (each slice a separate
ansible-playbook over part of the hosts; here `--limit`), leaves the hosts exactly as one run
does: a full run after the slices changes nothing and every host holds the same files."""

from __future__ import annotations

import pytest

from tests.integration.test_site import site
from tests.lab import Lab

pytestmark = pytest.mark.integration

# What the sync_agent role puts on a lab host (paths from inventories/lab/group_vars/clients.yml
# and the role's defaults): the agent, its command, config and CA, the PAM hook and stack lines,
# the user units.
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


def test_the_agent_stage_sliced_per_client_gives_what_one_run_gives(lab):
    site(lab, "--tags", "agent", "-e", "sync_agent_state=absent")
    first, *others = [host.name for host in lab.clients]
    sliced = [
        site(lab, "--tags", "agent", "--limit", first),
        site(lab, "--tags", "agent", "--limit", ",".join(others)),
    ]
    assert all(run.changed > 0 for run in sliced)  # each slice installed its own hosts
    after_slices = installed(lab)
    assert all("credroam-agent.pyz" in files for files in after_slices.values()), after_slices

    whole = site(lab, "--tags", "agent")
    assert whole.changed == 0, whole.output[-4000:]
    assert installed(lab) == after_slices
