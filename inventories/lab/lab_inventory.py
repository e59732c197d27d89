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
When the lab is not up the groups are empty (controller stays), so playbooks still parse.
Standard library only: runs under any python3.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


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


def inventory(lab: dict | None) -> dict:
    hostvars: dict[str, dict] = {"localhost": {}}
    groups: dict = {
        "controller": {"hosts": ["localhost"]},
        "dcs": {"hosts": []},
        "clients": {"hosts": []},
        "all": {"children": ["controller", "dcs", "clients", "ungrouped"], "vars": {}},
    }
    if lab is not None:
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


def main(argv: list[str]) -> int:
    data = inventory(load_lab(os.environ.get("CREDROAM_LAB", "lab")))
    if "--host" in argv:
        host = argv[argv.index("--host") + 1]
        print(json.dumps(data["_meta"]["hostvars"].get(host, {})))
    else:
        print(json.dumps(data, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
