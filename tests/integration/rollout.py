"""The rollout as the integration tests run it: playbooks/site.yml (and its siblings) on the
session's lab, and the modules that share the session's one rollout (``rolled_out`` in
conftest.py), in the order they run.

A rollout of the whole lab costs more than a minute, so the session makes it once: the modules
in ``SHARING_THE_ROLLOUT`` run last, in this order, after every other module (which find the
lab as its bring-up left it, as before). Each module leaves the rollout as it found it, except
test_rollback, which undoes it and therefore runs last of all. `make test` runs them in the
session on its second lab (conftest.py marks them `second_lab`); `make integration` runs every
module in one session on one lab.
"""

from __future__ import annotations

import ldap3

from tests.lab import Lab, PlaybookRun, ansible_playbook

SHARING_THE_ROLLOUT = (
    "test_main_job",  # first: `make run` on a lab where alice has roamed nothing yet
    "test_site",
    "test_compliance",
    "test_sync_agent_role",
    "test_rollback",  # undoes the rollout
)


def site(lab: Lab, *args: str) -> PlaybookRun:
    return playbook(lab, "playbooks/site.yml", *args)


def playbook(lab: Lab, path: str, *args: str) -> PlaybookRun:
    """Run the playbook at ``path`` (from the repository root) on ``lab``; it must succeed."""
    result = ansible_playbook(lab, path, *args)
    assert result.returncode == 0, result.output[-5000:]
    return result


def roaming_gpo(conn: ldap3.Connection, lab: Lab) -> dict:
    conn.search(
        f"CN=Policies,CN=System,{lab.base_dn}",
        "(&(objectClass=groupPolicyContainer)(displayName=Credential Roaming))",
        attributes=["cn", "versionNumber"],
    )
    assert len(conn.entries) == 1, "exactly one GPO named Credential Roaming"
    entry = conn.entries[0]
    return {"guid": str(entry.cn), "version": int(entry.versionNumber.value)}
