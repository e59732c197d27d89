#!/usr/bin/python
"""Run one credential-roaming reconciliation on a host for given users, through the agent."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: credroam_sync
short_description: Reconcile users' certificates and keys on a host with Active Directory
description:
  - Runs one reconciliation for each user in O(users) on the managed host, exactly as the
    agent does at logon or on its timer, and reports what moved. For seeding the directory from
    an existing workstation, for migrations, and for tests.
  - The module runs the installed agent (O(agent_path)) as root, with C(--user); the agent drops
    to that user (its own privilege drop), so the store, the state file and the key cache are
    read and written as the user, and the module and the agent cannot disagree on what a sync
    does. Enrollment configured in the agent runs too, as at logon.
  - With a password in O(passwords) the agent binds as the user and unwraps the roaming key with
    it (C(credroam-agent login)); without, it binds with the user's Kerberos ticket or the
    keytab its configuration names and uses the cached roaming key (C(credroam-agent sync)).
version_added: "0.1.0"
author: credroam
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - credroam_agent
options:
  users:
    description: Local users to sync, in order.
    type: list
    elements: str
    required: true
  passwords:
    description:
      - Password per user (from a vault). A user not listed binds with a ticket or keytab.
    type: dict
attributes:
  check_mode:
    support: full
    details:
      - Plans only (the agent's C(--dry-run)); nothing is written in the directory or the store
        (the sync's lock file may be created).
  diff_mode:
    support: full
    details: Per user, the moved items before and after.
  platform:
    platforms: posix
requirements: [the credroam agent installed on the managed host]
notes:
  - Needs root on the managed host (C(become)).
seealso:
  - module: ad_schema
    description: Adds the attributes the roamed keys and roaming keys are kept in.
  - module: ad_gpo
    description: The Group Policy object whose roaming policy the agent applies.
"""

EXAMPLES = r"""
- name: Seed the directory from alice's existing store on this workstation
  credroam_sync:
    users: [alice]
    passwords:
      alice: "{{ vault_alice_password }}"
  become: true

- name: What would a sync of bob move (ticket or keytab bind)
  credroam_sync:
    users: [bob]
  check_mode: true
  become: true
"""

RETURN = r"""
users:
  description: Per user, what moved (in check mode, what would move).
  returned: always
  type: dict
  contains:
    uploads: {description: Item keys written to the directory., type: list, elements: str}
    downloads: {description: Item keys written to the local store., type: list, elements: str}
    tombstones: {description: Item keys tombstoned in the directory., type: list, elements: str}
    archived: {description: Item keys archived (either side)., type: list, elements: str}
    refused:
      description: "[item key, reason] pairs the sync would not roam."
      type: list
      elements: list
    conflicts:
      description: "[item key, how it was resolved] pairs."
      type: list
      elements: list
    directory_changes:
      description: The directory changes, one readable line per item.
      type: list
      elements: str
    operations:
      description:
        - The LDAP modifies sent (in check mode, planned), as every credroam module reports
          them (kind, target, per attribute the values deleted and added, counted).
      type: list
      elements: dict
    deleted_local:
      description: Item keys deleted from the local store (deleted elsewhere).
      type: list
      elements: str
    exit: {description: "The agent's exit code (0 done, 1 with problems).", type: int}
    events: {description: "The agent's events (Windows event IDs).", type: list, elements: dict}
  sample:
    alice: {uploads: ["%3\\0A1B...", "%9\\0A1B..."], downloads: [], tombstones: [],
            archived: [], refused: [], conflicts: [], directory_changes: [], operations: [],
            deleted_local: [], exit: 0, events: []}
"""

import json
from typing import Any

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.credroam_ansible import agent_argument_spec, exit_with_diff

# What the agent reports per sync (its plan_fields) and the names this module returns them as.
MOVED = {
    "uploads": "upload",
    "downloads": "download",
    "tombstones": "tombstone",
    "archived": "archive",
    "refused": "refused",
    "conflicts": "conflicts",
    "directory_changes": "directory_changes",
    "operations": "operations",
}
# Actions that change something (refusals and conflicts alone do not).
CHANGING = ("uploads", "downloads", "tombstones", "archived", "operations")
_DELETED_LOCALLY = "delete_local"


def argument_spec() -> dict:
    spec = agent_argument_spec()
    spec.update(
        users={"type": "list", "elements": "str", "required": True},
        passwords={"type": "dict", "no_log": True},
    )
    return spec


def agent_command(params: dict[str, Any], user: str, password: str | None) -> list[str]:
    """The agent's command line for one user: login (password on stdin) or sync."""
    command = [params["agent_path"], "--user", user]
    if params.get("agent_config"):
        command += ["--config", params["agent_config"]]
    command += ["login" if password is not None else "sync", "--json"]
    if params["_check_mode"]:
        command.append("--dry-run")
    return command


def summarize(report: dict[str, Any]) -> dict[str, Any]:
    """Merge the agent's sync reports (a dry run's plan, or every sync of a run) into one."""
    runs = [report["plan"]] if "plan" in report else list(report.get("synced") or [])
    moved: dict[str, list] = {name: [] for name in MOVED}
    deleted: list[str] = []
    for run in runs:
        for name, field in MOVED.items():
            moved[name].extend(run.get(field) or [])
        deleted.extend(run.get(_DELETED_LOCALLY) or [])
    moved["deleted_local"] = deleted
    moved["exit"] = report.get("exit")
    moved["events"] = report.get("events") or []
    return moved


def changed_by(moved: dict[str, Any]) -> bool:
    return any(moved[name] for name in CHANGING) or bool(moved["deleted_local"])


# How each kind of move reads in the diff: (side, before, after), in the order they are shown.
DIFF_LINES = {
    "uploads": ("directory", "absent or older", "as on this host"),
    "downloads": ("local", "absent or older", "as in the directory"),
    "tombstones": ("directory", "present", "tombstone"),
    "archived": ("", "current", "archived"),
    "deleted_local": ("local", "present", "deleted (deleted elsewhere)"),
}


def diff_of(user: str, moved: dict[str, Any]) -> dict[str, str]:
    """Before and after of each moved item, one line per side it is on."""
    before, after = [], []
    for name, (side, was, becomes) in DIFF_LINES.items():
        where = f"{user} {side} " if side else f"{user} "
        for key in moved[name]:
            before.append(f"{where}{key}: {was}")
            after.append(f"{where}{key}: {becomes}")
    return {
        "before_header": f"{user}",
        "after_header": f"{user}",
        "before": "".join(f"{line}\n" for line in before),
        "after": "".join(f"{line}\n" for line in after),
    }


def sync_one(module: AnsibleModule, user: str, password: str | None) -> dict[str, Any]:
    params = dict(module.params, _check_mode=module.check_mode)
    command = agent_command(params, user, password)
    code, out, err = module.run_command(command, data=password, binary_data=False, check_rc=False)
    try:
        report = json.loads(out)
    except ValueError:
        report = None
    if not isinstance(report, dict):
        module.fail_json(
            msg=f"credroam-agent for {user} on this host exited {code} without a report: "
            f"{err.strip() or out.strip()}",
            rc=code,
        )
    if code not in (0, 1):  # 2 configuration, 3 directory unreachable: nothing was synced
        module.fail_json(
            msg=f"credroam-agent could not sync {user} (exit {code}): {err.strip()}",
            rc=code,
            events=report.get("events"),
        )
    return summarize(report)


def main() -> None:
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    users: list[str] = module.params["users"]
    passwords: dict[str, Any] = module.params["passwords"] or {}
    unknown = sorted(set(passwords) - set(users))
    if unknown:
        module.fail_json(msg=f"passwords given for users not in users: {', '.join(unknown)}")
    results, diffs = {}, []
    for user in users:
        password = passwords.get(user)
        results[user] = sync_one(module, user, None if password is None else str(password))
        diffs.append(diff_of(user, results[user]))
    changed = any(changed_by(moved) for moved in results.values())
    failed_users = [user for user, moved in results.items() if moved["exit"] != 0]
    for user in failed_users:  # exit 1: synced, but something was reported (see its events)
        module.warn(f"credroam-agent synced {user} with problems; see users.{user}.events")
    exit_with_diff(module, {"changed": changed, "users": results, "diff": diffs})


if __name__ == "__main__":
    main()
