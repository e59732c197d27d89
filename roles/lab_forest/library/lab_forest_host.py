#!/usr/bin/python
# Copyright: credroam contributors
from __future__ import annotations

DOCUMENTATION = r"""
module: lab_forest_host
short_description: One Linux client host of the embedded lab forest, reachable over SSH
description:
  - O(state=present) makes the host - its own network namespace with a veth on the lab bridge,
    own mount and UTS namespaces with a per-host copy of /etc (resolv.conf to the lab DCs,
    hosts file with the lab names), own /home and /root, a tmpfs /run, its hostname, and a real
    sshd with its own host key listening only on the host's address (refused when something
    else already holds port 22 there), accepting root with the lab SSH key.
  - Every step is skipped when already done; RV(changed) is true only when something was done.
    Check mode starts nothing.
  - O(state=absent) stops the host's processes and removes its namespace, veth and folder.
options:
  realm:
    description: AD realm; the host's FQDN is C(<host>.<realm lowercased>).
    type: str
    required: true
  authorized_key:
    description: Public key line allowed to log in as root.
    type: str
    required: true
  start_timeout:
    description: Seconds to wait at most for sshd to answer after start.
    type: int
    default: 120
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - lab_forest
  - lab_forest.host
seealso:
  - module: lab_forest_network
  - module: lab_forest_dc
author: credroam contributors
"""

EXAMPLES = r"""
- name: Start client1 of lab "mine", reachable over SSH as root with the lab key
  lab_forest_host:
    lab: mine
    host: client1
    state_dir: /srv/credroam/.lab/mine
    subnet: 172.29.7.0/24
    realm: LAB.EXAMPLE
    hosts: {dc1: 172.29.7.10, client1: 172.29.7.21}
    nameservers: [172.29.7.10]
    authorized_key: "{{ lab_pki.ssh_public_key }}"
"""

RETURN = r"""
name:
  description: Host name.
  type: str
  returned: always
fqdn:
  description: Host FQDN.
  type: str
  returned: always
ip:
  description: Host IP.
  type: str
  returned: always
pid:
  description: Process id of the host's sshd (0 in check mode before start).
  type: int
  returned: always
exec:
  description: argv prefix that runs a command in the host's namespaces.
  type: list
  elements: str
  returned: always
host_key:
  description: The host's SSH public host key line (type and key).
  type: str
  returned: when the key exists
actions:
  description: What was done (or, in check mode, would be done).
  type: list
  elements: str
  returned: always
"""

import socket
from pathlib import Path

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.lab_forest_common import (
    SSH_TCP_PORTS,
    SSHD,
    LabError,
    LabNames,
    Sandbox,
    check_ports_free,
    ensure_host,
    exec_prefix,
    host_ip,
    host_network_ready,
    hosts_file,
    remove_host,
    resolv_conf,
    run,
    wait_until,
)

HOST_KEY = "ssh/ssh_host_ed25519_key"


def sshd_config(ip: str) -> str:
    # A complete config of our own (the copied Debian one would Include machine snippets).
    return "\n".join(
        [
            f"ListenAddress {ip}",
            f"HostKey /etc/{HOST_KEY}",
            "PidFile /run/sshd.pid",
            "PermitRootLogin prohibit-password",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "PubkeyAuthentication yes",
            "AuthorizedKeysFile .ssh/authorized_keys",
            "UsePAM yes",
            "X11Forwarding no",
            "PrintMotd no",
            "AcceptEnv LANG LC_*",
            "Subsystem sftp /usr/lib/openssh/sftp-server",
            "",
        ]
    )


class ClientHost:
    def __init__(self, params: dict, check_mode: bool) -> None:
        self.p = params
        self.check_mode = check_mode
        self.host = params["host"]
        self.sandbox = Sandbox(
            LabNames(params["lab"]), self.host, Path(params["state_dir"]) / self.host
        )
        self.ip = host_ip(params["subnet"], self.host)
        self.fqdn = f"{self.host}.{params['realm'].lower()}"
        self.actions: list[str] = []

    def _files(self) -> dict[Path, tuple[str, int]]:
        root = self.sandbox.root
        return {
            self.sandbox.etc / "ssh" / "sshd_config": (sshd_config(self.ip), 0o644),
            root / "root" / ".ssh" / "authorized_keys": (self.p["authorized_key"] + "\n", 0o600),
        }

    def present(self) -> int:
        resolv = resolv_conf(self.p["realm"], self.p["nameservers"])
        hosts = hosts_file(self.p["realm"], self.p["hosts"])
        self.actions += ensure_host(
            self.sandbox, self.p["subnet"], hosts, resolv, self.fqdn, self.check_mode
        )
        files_changed = False
        for path, (text, mode) in self._files().items():
            if not path.exists() or path.read_text() != text:
                self.actions.append(f"write {path}")
                files_changed = True
                if not self.check_mode:
                    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                    path.write_text(text)
                    path.chmod(mode)
        key = self.sandbox.etc / HOST_KEY
        if not key.exists():
            self.actions.append("generate SSH host key")
            if not self.check_mode:
                run(
                    ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", self.fqdn, "-f", str(key)]
                )
        if files_changed and self.sandbox.running_pid() is not None:
            self.actions.append("restart sshd for the new config")
            if not self.check_mode:
                self.sandbox.stop()
        pid = self.sandbox.running_pid()
        if pid is None:
            if host_network_ready(self.sandbox.names, self.host):
                check_ports_free(self.sandbox.names, self.host, self.ip, SSH_TCP_PORTS)
            self.actions.append("start sshd")
            if not self.check_mode:
                self.sandbox.start([SSHD, "-D", "-e", "-f", "/etc/ssh/sshd_config"])
                wait_until(self._sshd_answers, self.p["start_timeout"], f"sshd on {self.ip}:22")
                pid = self.sandbox.running_pid() or 0
        return pid or 0

    def _sshd_answers(self) -> bool:
        if self.sandbox.started_pid() is None:
            log = self.sandbox.log_file.read_text(errors="replace")[-1500:]
            raise LabError(f"sshd on {self.host} exited; end of {self.sandbox.log_file}:\n{log}")
        try:
            with socket.create_connection((self.ip, 22), timeout=2) as sock:
                return sock.recv(4).startswith(b"SSH-")
        except OSError:
            return False

    def host_key(self) -> str | None:
        public = self.sandbox.etc / (HOST_KEY + ".pub")
        if not public.exists():
            return None
        return " ".join(public.read_text().split()[:2])


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "lab": {"type": "str", "required": True},
            "host": {"type": "str", "required": True},
            "state": {"type": "str", "choices": ["present", "absent"], "default": "present"},
            "state_dir": {"type": "path", "required": True},
            "subnet": {"type": "str", "required": True},
            "realm": {"type": "str", "required": True},
            "hosts": {"type": "dict", "required": True},
            "nameservers": {"type": "list", "elements": "str", "required": True},
            "authorized_key": {"type": "str", "required": True, "no_log": False},
            "start_timeout": {"type": "int", "default": 120},
        },
        supports_check_mode=True,
    )
    try:
        client = ClientHost(module.params, module.check_mode)
        pid = 0
        if module.params["state"] == "present":
            pid = client.present()
        else:
            client.actions += remove_host(client.sandbox, module.check_mode)
    except LabError as exc:
        module.fail_json(msg=str(exc))
    result = {
        "changed": bool(client.actions),
        "actions": client.actions,
        "name": client.host,
        "fqdn": client.fqdn,
        "ip": client.ip,
        "pid": pid,
        "exec": exec_prefix(pid) if pid else [],
    }
    if module.params["state"] == "present" and client.host_key():
        result["host_key"] = client.host_key()
    module.exit_json(**result)


if __name__ == "__main__":
    main()
