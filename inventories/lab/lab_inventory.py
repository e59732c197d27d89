#!/usr/bin/env python3
"""Ansible dynamic inventory of the embedded lab forest (ansible.builtin.script plugin).

Reads <repo>/.lab/$CREDROAM_LAB/lab.json (CREDROAM_LAB defaults to `lab`) written by
playbooks/lab.yml. Groups:
  controller  localhost (connection local, the Python running Ansible).
  dcs         the lab's Samba DCs as data, not SSH targets: connection local, so tasks run on
              the controller and reach the DC over LDAPS at `lab_host_ip`; `lab_exec` is the
              argv prefix that runs a command inside the DC, `lab_smb_conf` its smb.conf.
  clients     Linux client hosts over real SSH as root with the lab key; host keys checked
              against the lab's known_hosts.
When the lab is not up the groups are empty (controller stays), so playbooks still parse (and
playbooks/lab.yml can start it); `credroam_lab_not_up` then says which lab and how to start it,
and the rollout playbooks stop on it before any task. `--status` prints what runs instead.
Standard library only: runs under any python3.
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def labs_up() -> list[str]:
    """Names of the labs that have a lab.json (finished starting)."""
    return sorted(path.parent.name for path in (REPO / ".lab").glob("*/lab.json"))


def not_up_message(name: str) -> str:
    """What a user who asked for lab `name` must be told when it is not up."""
    others = ", ".join(labs_up()) or "none"
    return (
        f"lab {name!r} is not up (no .lab/{name}/lab.json; labs up: {others}): start it with "
        f"`make lab-up LAB={name}`, or set CREDROAM_LAB to a lab that is up"
    )


def load_lab(name: str) -> dict | None:
    try:
        return json.loads((REPO / ".lab" / name / "lab.json").read_text())
    except (OSError, ValueError):
        return None


def lab_vars(lab: dict) -> dict:
    """Variables every later role reads (inventory vars for the lab only)."""
    return {
        "credroam_lab_name": lab["name"],
        "credroam_realm": lab["realm"],
        "credroam_domain": lab["domain"],
        "credroam_base_dn": lab["base_dn"],
        "credroam_roaming_ou_dn": lab["roaming_ou_dn"],
        "credroam_ldap_server": lab["dcs"][0]["ip"],
        "credroam_ldap_servers": [dc["ip"] for dc in lab["dcs"]],
        "credroam_ldap_ca_file": lab["ca_cert"],
        # The lab CA's key (lab_forest_pki writes it beside ca.pem): the lab issues the users'
        # certificates with it (the demonstration in summary.yml, Molecule's roaming story).
        "credroam_lab_ca_key": str(Path(lab["ca_cert"]).with_name("ca.key")),
        "credroam_ldap_bind_user": lab["admin"]["upn"],
        "credroam_ldap_bind_password": lab["admin"]["password"],
        "credroam_dc_addresses": {dc["fqdn"]: dc["ip"] for dc in lab["dcs"]},
        "credroam_lab_users": lab["users"],
        # KRB5_CONFIG for Kerberos binds (bind_method=gssapi) to the lab realm: its DCs, no DNS.
        "credroam_lab_krb5_conf": lab.get("krb5_conf", ""),
        "credroam_lab_dcs": [
            {key: dc[key] for key in ("name", "fqdn", "ip", "smb_conf")} for dc in lab["dcs"]
        ],
    }


def inventory(lab: dict | None, name: str = "lab") -> dict:
    hostvars: dict[str, dict] = {"localhost": {}}
    groups: dict = {
        "controller": {"hosts": ["localhost"]},
        "dcs": {"hosts": []},
        "clients": {"hosts": []},
        "all": {"children": ["controller", "dcs", "clients", "ungrouped"], "vars": {}},
    }
    if lab is None:
        groups["all"]["vars"] = {"credroam_lab_not_up": not_up_message(name)}
    else:
        groups["all"]["vars"] = lab_vars(lab)
        ssh_args = f"-o UserKnownHostsFile={lab['known_hosts']} -o StrictHostKeyChecking=yes"
        for dc in lab["dcs"]:
            groups["dcs"]["hosts"].append(dc["name"])
            hostvars[dc["name"]] = {
                "lab_host_ip": dc["ip"],
                "lab_host_fqdn": dc["fqdn"],
                "lab_exec": dc["exec"],
                "lab_smb_conf": dc["smb_conf"],
            }
        for client in lab["clients"]:
            groups["clients"]["hosts"].append(client["name"])
            hostvars[client["name"]] = {
                "ansible_host": client["ip"],
                "ansible_ssh_private_key_file": lab["ssh_private_key"],
                "ansible_ssh_common_args": f"{ssh_args} -o IdentitiesOnly=yes",
                "lab_host_ip": client["ip"],
                "lab_host_fqdn": client["fqdn"],
                "lab_exec": client["exec"],
            }
    groups["_meta"] = {"hostvars": hostvars}
    return groups


def pid_is_live(pid: int) -> bool:
    """A running process; a zombie (exited, not yet reaped) is not."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return re.search(r"^State:\s+Z", status, re.MULTILINE) is None


def status(name: str, lab: dict | None) -> list[str]:
    """Lines for `make lab-status`: the lab, each DC and client with its address, up or not."""
    if lab is None:
        return [not_up_message(name)]
    lines = [f"lab {name}: realm {lab['realm']}, subnet {lab['subnet']}, CA {lab['ca_cert']}"]
    for kind, hosts in (("dc", lab["dcs"]), ("client", lab["clients"])):
        for host in hosts:
            state = "up" if pid_is_live(int(host.get("pid", 0))) else "DOWN (process gone)"
            lines.append(f"  {kind:6} {host['name']:8} {host['ip']:15} {host['fqdn']:24} {state}")
    return lines


def main(argv: list[str]) -> int:
    name = os.environ.get("CREDROAM_LAB", "lab")
    lab = load_lab(name)
    if "--status" in argv:
        print("\n".join(status(name, lab)))
        return 0 if lab is not None else 1
    data = inventory(lab, name)
    if "--host" in argv:
        host = argv[argv.index("--host") + 1]
        print(json.dumps(data["_meta"]["hostvars"].get(host, {})))
    else:
        print(json.dumps(data, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
