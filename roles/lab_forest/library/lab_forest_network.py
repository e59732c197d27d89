#!/usr/bin/python
# Copyright: credroam contributors
from __future__ import annotations

DOCUMENTATION = r"""
module: lab_forest_network
short_description: The embedded lab forest as a whole - prerequisites, bridge, full teardown
description:
  - O(state=present) checks the prerequisites (root, the Debian packages' commands, the subnet
    not used by anything else, no stale half-started lab of this name) and makes the lab bridge
    in the root namespace with the subnet's first address, through which the controller reaches
    every lab host.
  - O(state=absent) tears the whole lab down by name prefix, whether or not lab.json exists or
    the lab finished starting - every process started for the lab (SIGTERM, then SIGKILL),
    namespaces, veths, the bridge - and removes O(state_dir). Nothing existing is a no-op.
options:
  lab:
    description: Lab name (C([a-z0-9]{1,8})); prefixes every kernel object name.
    type: str
    required: true
  state:
    description: Wanted state.
    type: str
    choices: [present, absent]
    default: present
  subnet:
    description: The lab subnet (IPv4 CIDR); the bridge gets its first address.
    type: str
    required: true
  state_dir:
    description: The lab's state folder (holds lab.json once the lab is complete).
    type: path
    required: true
  dc_count:
    description: Number of DCs; names C(dc1), C(dc2) at .10, .11 of the subnet.
    type: int
    default: 1
  client_count:
    description: Number of client hosts; names C(client1), ... at .21, .22, ...
    type: int
    default: 0
author: credroam contributors
"""

RETURN = r"""
bridge:
  description: Name of the lab bridge.
  type: str
  returned: always
bridge_ip:
  description: The controller's address on the lab bridge.
  type: str
  returned: always
dcs:
  description: The DCs to make, each C(name) and C(ip), first DC first.
  type: list
  elements: dict
  returned: always
clients:
  description: The client hosts to make, each C(name) and C(ip).
  type: list
  elements: dict
  returned: always
hosts:
  description: Every lab host name to its IP (DCs then clients).
  type: dict
  returned: always
removed:
  description: With O(state=absent), what was found and removed (netns, links, pids).
  type: dict
  returned: when state is absent
"""

import ipaddress
import os
import shutil
from pathlib import Path

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.lab_forest_common import (
    LabError,
    LabNames,
    bridge_ip,
    ensure_bridge,
    host_ip,
    lab_resources,
    missing_commands,
    remove_lab,
)


def check_prerequisites(names: LabNames, subnet: str, state_dir: Path) -> None:
    if os.geteuid() != 0:
        raise LabError("the lab needs root (network namespaces, mounts): run as root")
    missing = missing_commands()
    if missing:
        raise LabError(
            f"missing {', '.join(missing)} (Debian packages samba-ad-dc, samba-ad-provision, "
            "openssh-server, iproute2, util-linux): run `make deps`"
        )
    network = ipaddress.ip_network(subnet)
    if network.version != 4 or network.prefixlen > 24:
        raise LabError(f"lab subnet {subnet} must be an IPv4 network of /24 or larger")
    if (state_dir / "lab.json").exists():
        return
    found = lab_resources(names)
    leftovers = [*found["netns"], *(str(p) for p in found["pids"])]
    leftovers += [link for link in found["links"] if link != names.bridge]
    if state_dir.is_dir() and any(state_dir.iterdir()):
        leftovers.append(str(state_dir))
    if leftovers:
        raise LabError(
            f"a stale, half-started lab {names.lab!r} exists ({', '.join(leftovers)}) but has no "
            f"{state_dir / 'lab.json'}; clean it with -e lab_forest_state=absent, then retry"
        )


def host_plan(subnet: str, dc_count: int, client_count: int) -> dict:
    if not 1 <= dc_count <= 2 or not 0 <= client_count <= 20:
        raise LabError(f"dc_count must be 1-2 and client_count 0-20, not {dc_count}/{client_count}")
    dcs = [{"name": f"dc{i}", "ip": host_ip(subnet, f"dc{i}")} for i in range(1, dc_count + 1)]
    clients = [
        {"name": f"client{i}", "ip": host_ip(subnet, f"client{i}")}
        for i in range(1, client_count + 1)
    ]
    return {"dcs": dcs, "clients": clients, "hosts": {h["name"]: h["ip"] for h in dcs + clients}}


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "lab": {"type": "str", "required": True},
            "state": {"type": "str", "choices": ["present", "absent"], "default": "present"},
            "subnet": {"type": "str", "required": True},
            "state_dir": {"type": "path", "required": True},
            "dc_count": {"type": "int", "default": 1},
            "client_count": {"type": "int", "default": 0},
        },
        supports_check_mode=True,
    )
    state_dir = Path(module.params["state_dir"])
    subnet = module.params["subnet"]
    try:
        names = LabNames(module.params["lab"])
        result = {"bridge": names.bridge, "bridge_ip": bridge_ip(subnet)}
        result.update(host_plan(subnet, module.params["dc_count"], module.params["client_count"]))
        if module.params["state"] == "present":
            check_prerequisites(names, subnet, state_dir)
            changed = ensure_bridge(names, subnet, module.check_mode)
        else:
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
