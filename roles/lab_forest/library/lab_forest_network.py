#!/usr/bin/python
# Copyright: credroam contributors
from __future__ import annotations

DOCUMENTATION = r"""
module: lab_forest_network
short_description: The embedded lab forest as a whole - prerequisites, bridge, full teardown
description:
  - O(state=present) checks every input and the prerequisites before it changes anything (lab
    name, subnet, counts, realm, domain and user names; root, the Debian packages' commands;
    the subnet not overlapping any address of the machine; no stale half-started lab of this
    name; an up lab keeps its subnet, realm, domain and DCs), removes client hosts beyond
    O(client_count), and makes the lab bridge in the root namespace with the subnet's first
    address, through which the controller reaches every lab host.
  - O(state=absent) tears the whole lab down by name prefix, whether or not lab.json exists or
    the lab finished starting - every process started for the lab (SIGTERM, then SIGKILL),
    namespaces, veths, the bridge - and removes O(state_dir). Nothing existing is a no-op.
options:
  dc_count:
    description: Number of DCs; names C(dc1), C(dc2) at .10, .11 of the subnet.
    type: int
    default: 1
  client_count:
    description: Number of client hosts; names C(client1), ... at .21, .22, ...
    type: int
    default: 0
  realm:
    description: AD realm (checked here, before anything is made).
    type: str
    default: LAB.EXAMPLE
  domain:
    description: NetBIOS domain name (checked here, before anything is made).
    type: str
    default: LAB
  user_names:
    description: Names of the lab users (checked here, before anything is made).
    type: list
    elements: str
    default: []
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - lab_forest
seealso:
  - module: lab_forest_pki
  - module: lab_forest_dc
  - module: lab_forest_host
author: credroam contributors
"""

EXAMPLES = r"""
- name: Check prerequisites and make the bridge of lab "mine" (one DC, two clients)
  lab_forest_network:
    lab: mine
    subnet: 172.29.7.0/24
    state_dir: /srv/credroam/.lab/mine
    dc_count: 1
    client_count: 2
  register: lab_network

- name: Tear lab "mine" down completely, whatever state it is in
  lab_forest_network:
    lab: mine
    state: absent
    subnet: 172.29.7.0/24
    state_dir: /srv/credroam/.lab/mine
"""

RETURN = r"""
bridge:
  description: Name of the lab bridge.
  type: str
  returned: always
bridge_ip:
  description: The controller's address on the lab bridge.
  type: str
  returned: when state is present
dcs:
  description: The DCs to make, each C(name) and C(ip), first DC first.
  type: list
  elements: dict
  returned: when state is present
clients:
  description: The client hosts to make, each C(name) and C(ip).
  type: list
  elements: dict
  returned: when state is present
hosts:
  description: Every lab host name to its IP (DCs then clients).
  type: dict
  returned: when state is present
removed:
  description: With O(state=absent), what was found and removed (netns, links, pids).
  type: dict
  returned: when state is absent
removed_hosts:
  description: With O(state=present), client hosts beyond O(client_count) that were removed.
  type: list
  elements: str
  returned: when state is present
"""

import json
import os
import shutil
from pathlib import Path

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.lab_forest_common import (
    LabError,
    LabNames,
    Sandbox,
    addresses_in,
    bridge_ip,
    ensure_bridge,
    host_plan,
    lab_resources,
    missing_commands,
    remove_host,
    remove_lab,
    stale_lab_message,
    subnet_conflict_message,
    unchangeable_settings_message,
    validate_directory_names,
)


def check_prerequisites(names: LabNames, subnet: str, state_dir: Path, wanted: dict) -> None:
    """Everything that must hold before the first change; each failure names its cause."""
    if os.geteuid() != 0:
        raise LabError("the lab needs root (network namespaces, mounts): run as root")
    missing = missing_commands()
    if missing:
        raise LabError(
            f"missing {', '.join(missing)} (Debian packages samba-ad-dc, samba-ad-provision, "
            "openssh-server, iproute2, util-linux): run `make deps`"
        )
    conflict = subnet_conflict_message(names, subnet, addresses_in(subnet))
    if conflict:
        raise LabError(conflict)
    lab_json = state_dir / "lab.json"
    if lab_json.exists():
        try:
            recorded = json.loads(lab_json.read_text())
        except (OSError, ValueError) as exc:
            raise LabError(
                f"{lab_json} is unreadable ({exc}); remove the lab with "
                f"-e lab_forest_name={names.lab} -e lab_forest_state=absent"
            ) from exc
        refusal = unchangeable_settings_message(recorded, wanted)
        if refusal:
            raise LabError(refusal)
        return
    refusal = stale_lab_message(names, lab_resources(names), state_dir)
    if refusal:
        raise LabError(refusal)


def remove_surplus_clients(
    names: LabNames, state_dir: Path, client_count: int, check_mode: bool
) -> list[str]:
    """Client hosts of this lab numbered above `client_count` (namespace or folder)."""
    hosts = {names.host_of_netns(netns) for netns in lab_resources(names)["netns"]}
    if state_dir.is_dir():
        hosts |= {path.name for path in state_dir.iterdir() if path.is_dir()}
    surplus = sorted(
        host
        for host in hosts
        if host
        and host.startswith("client")
        and host[6:].isdigit()
        and int(host[6:]) > client_count
    )
    for host in surplus:
        remove_host(Sandbox(names, host, state_dir / host), check_mode)
    return surplus


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "lab": {"type": "str", "required": True},
            "state": {"type": "str", "choices": ["present", "absent"], "default": "present"},
            "subnet": {"type": "str", "required": True},
            "state_dir": {"type": "path", "required": True},
            "dc_count": {"type": "int", "default": 1},
            "client_count": {"type": "int", "default": 0},
            "realm": {"type": "str", "default": "LAB.EXAMPLE"},
            "domain": {"type": "str", "default": "LAB"},
            "user_names": {"type": "list", "elements": "str", "default": []},
        },
        supports_check_mode=True,
    )
    params = module.params
    state_dir = Path(params["state_dir"])
    subnet = params["subnet"]
    try:
        names = LabNames(params["lab"])
        if params["state"] == "present":
            plan = host_plan(subnet, params["dc_count"], params["client_count"])
            result = {"bridge": names.bridge, "bridge_ip": bridge_ip(subnet), **plan}
            validate_directory_names(params["realm"], params["domain"], params["user_names"])
            wanted = {
                "subnet": subnet,
                "realm": params["realm"],
                "domain": params["domain"],
                "dc_count": params["dc_count"],
            }
            check_prerequisites(names, subnet, state_dir, wanted)
            surplus = remove_surplus_clients(
                names, state_dir, params["client_count"], module.check_mode
            )
            result["removed_hosts"] = surplus
            changed = ensure_bridge(names, subnet, module.check_mode) or bool(surplus)
        else:
            # Teardown needs only the name: a bad subnet must never keep a lab from going.
            result = {"bridge": names.bridge}
            found = lab_resources(names)
            bridge_exists = names.bridge in found["links"]
            changed = any(found.values()) or bridge_exists or state_dir.exists()
            if changed and not module.check_mode:
                found = remove_lab(names)
                shutil.rmtree(state_dir, ignore_errors=True)
            result["removed"] = found
    except LabError as exc:
        module.fail_json(msg=str(exc))
    module.exit_json(changed=changed, **result)


if __name__ == "__main__":
    main()
