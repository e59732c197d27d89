"""Test helpers for the embedded lab forest: read lab.json, run commands on its hosts, bind LDAP.

    lab = Lab.load("citest")
    lab.dc(0).run("samba-tool", "user", "list")          # inside dc1, with dc1's smb.conf
    lab.client(0).ssh("hostname")                         # real ssh as root with the lab key
    conn = lab.ldap_connection(lab.admin.upn, lab.admin.password)   # LDAPS, CA validated

LDAP goes through credroam.connection.connect (the project's one way to reach a DC).
`lab_playbook()` runs playbooks/lab.yml for any lab name (bring-up, teardown, idempotence).
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import ldap3

from credroam.connection import LdapTarget, connect

REPO = Path(__file__).resolve().parent.parent
LAB_ROOT = REPO / ".lab"
ANSIBLE_PLAYBOOK = REPO / ".venv" / "bin" / "ansible-playbook"


class LabNotUpError(RuntimeError):
    """lab.json is missing or unreadable: the lab is not up."""


def pid_is_live(pid: int) -> bool:
    """A running process (a zombie awaiting PID 1's reaping is dead; see the role README)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return re.search(r"^State:\s+Z", status, re.MULTILINE) is None


def lab_traces(name: str) -> list[str]:
    """Whatever of lab `name` the machine still shows: namespaces, links, mounts, state."""
    prefix = f"cr-{name}-"
    traces = [f"netns {n}" for n in Path("/run/netns").glob(f"{prefix}*")]
    traces += [f"link {p.name}" for p in Path("/sys/class/net").glob(f"{prefix}*")]
    mounts = Path("/proc/mounts").read_text().splitlines()
    traces += [f"mount {m}" for m in mounts if prefix in m or f"/.lab/{name}/" in m]
    if (LAB_ROOT / name).exists():
        traces.append(f"folder {LAB_ROOT / name}")
    return traces


@dataclass(frozen=True)
class Account:
    name: str  # sAMAccountName
    upn: str
    dn: str
    password: str


@dataclass(frozen=True)
class Host:
    name: str
    fqdn: str
    ip: str
    pid: int
    exec: tuple[str, ...]  # argv prefix entering the host's network, mount and UTS namespaces

    def run(
        self, *argv: str, check: bool = True, timeout: float = 60, env: dict | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run argv inside this host (its /etc, resolver, network), output captured as text."""
        return subprocess.run(
            [*self.exec, *argv],
            capture_output=True,
            text=True,
            check=check,
            timeout=timeout,
            env={**os.environ, **(env or {})},
        )

    def is_running(self) -> bool:
        return pid_is_live(self.pid)


@dataclass(frozen=True)
class DomainController(Host):
    smb_conf: str = ""

    def run(
        self, *argv: str, check: bool = True, timeout: float = 60, env: dict | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run argv inside the DC; Samba tools (samba-tool, ldbsearch) use this DC's smb.conf."""
        return super().run(
            *argv, check=check, timeout=timeout, env={"SMB_CONF_PATH": self.smb_conf, **(env or {})}
        )


@dataclass(frozen=True)
class ClientHost(Host):
    ssh_private_key: str = ""
    known_hosts: str = ""

    def ssh_argv(self) -> list[str]:
        """ssh options that reach this host as root with the lab key, host key checked."""
        return [
            "ssh", "-i", self.ssh_private_key,
            "-o", f"UserKnownHostsFile={self.known_hosts}",
            "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes",
            "-o", "IdentitiesOnly=yes", "-o", "ConnectTimeout=5",
            f"root@{self.ip}",
        ]  # fmt: skip

    def ssh(
        self, command: str, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """Run a shell command on the host over real SSH."""
        return subprocess.run(
            [*self.ssh_argv(), command],
            capture_output=True,
            text=True,
            check=check,
            timeout=timeout,
        )


@dataclass(frozen=True)
class Lab:
    name: str
    realm: str
    domain: str
    base_dn: str
    subnet: str
    controller_ip: str
    roaming_ou_dn: str
    ca_cert: str
    admin: Account
    users: tuple[Account, ...]
    dcs: tuple[DomainController, ...]
    clients: tuple[ClientHost, ...]
    ssh_private_key: str
    known_hosts: str
    # Kerberos client settings for the lab realm (KRB5_CONFIG): its DCs as KDCs, no DNS.
    krb5_conf: str
    state_dir: Path

    @classmethod
    def load(cls, name: str = "lab", root: Path = LAB_ROOT) -> Lab:
        path = root / name / "lab.json"
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise LabNotUpError(f"lab {name!r} is not up: cannot read {path} ({exc})") from exc
        admin = data["admin"]
        return cls(
            name=data["name"],
            realm=data["realm"],
            domain=data["domain"],
            base_dn=data["base_dn"],
            subnet=data["subnet"],
            controller_ip=data["controller_ip"],
            roaming_ou_dn=data["roaming_ou_dn"],
            ca_cert=data["ca_cert"],
            admin=Account(admin["user"], admin["upn"], admin["dn"], admin["password"]),
            users=tuple(Account(**user) for user in data["users"]),
            dcs=tuple(
                DomainController(
                    name=dc["name"],
                    fqdn=dc["fqdn"],
                    ip=dc["ip"],
                    pid=dc["pid"],
                    exec=tuple(dc["exec"]),
                    smb_conf=dc["smb_conf"],
                )
                for dc in data["dcs"]
            ),
            clients=tuple(
                ClientHost(
                    name=c["name"],
                    fqdn=c["fqdn"],
                    ip=c["ip"],
                    pid=c["pid"],
                    exec=tuple(c["exec"]),
                    ssh_private_key=data["ssh_private_key"],
                    known_hosts=data["known_hosts"],
                )
                for c in data["clients"]
            ),
            ssh_private_key=data["ssh_private_key"],
            known_hosts=data["known_hosts"],
            # A lab brought up before the lab wrote krb5.conf has none until its next `present`.
            krb5_conf=data.get("krb5_conf", ""),
            state_dir=path.parent,
        )

    def dc(self, index: int = 0) -> DomainController:
        return self.dcs[index]

    def client(self, index: int = 0) -> ClientHost:
        return self.clients[index]

    def user(self, name: str) -> Account:
        return next(user for user in self.users if user.name == name)

    def is_up(self) -> bool:
        """Every DC and client process recorded in lab.json is alive."""
        return all(host.is_running() for host in (*self.dcs, *self.clients))

    def ldap_target(
        self,
        user: str | None = None,
        password: str | None = None,
        dc: int = 0,
        ca_cert: str | None = None,
    ) -> LdapTarget:
        """LDAPS to a DC, its certificate validated against the lab CA (default: Administrator).
        The DC is addressed by IP (its certificate names its IP too): the machine's resolver
        does not know the lab names."""
        return LdapTarget(
            server=self.dcs[dc].ip,
            bind_user=user or self.admin.upn,
            bind_password=password if password is not None else self.admin.password,
            ca_cert=ca_cert or self.ca_cert,
            timeout=30,
        )

    def ldap_connection(
        self,
        user: str | None = None,
        password: str | None = None,
        dc: int = 0,
        ca_cert: str | None = None,
        raise_exceptions: bool = True,
    ) -> ldap3.Connection:
        """A bound connection from credroam.connection.connect (see ldap_target). `user` is a
        UPN, DN or DOMAIN\\name. A failed bind raises DirectoryError; by default later
        operations raise ldap3 exceptions, so a test fails at the operation that failed."""
        conn = connect(self.ldap_target(user, password, dc, ca_cert))
        conn.raise_exceptions = raise_exceptions
        return conn


def companion_lab(name: str, subnet: str) -> dict[str, str]:
    """The lab a test session may bring up and tear down beside its main one: the name with
    '2' (at most 8 characters) in the next /24, e.g. citest 172.29.200.0/24 -> citest2
    172.29.201.0/24, so engineers with their own main lab never share the second one."""
    network = ipaddress.ip_network(subnet)
    return {
        "name": f"{name[:7]}2",
        "subnet": str(ipaddress.ip_network((network.network_address + 256, 24))),
    }


@dataclass(frozen=True)
class PlaybookRun:
    returncode: int
    output: str

    @property
    def changed(self) -> int:
        """The `changed=` counts of the play recap, summed over its hosts (the controller's
        directory work and each agent host's)."""
        counts = re.findall(r"changed=(\d+)", self.output.rsplit("PLAY RECAP", 1)[-1])
        if not counts:
            raise AssertionError(f"no play recap in ansible-playbook output:\n{self.output}")
        return sum(int(count) for count in counts)

    @property
    def changed_tasks(self) -> list[str]:
        """The names of the tasks that reported a change on some host, in the order they ran."""
        return [
            block.split("]", 1)[0]
            for block in self.output.split("\nTASK [")[1:]
            if re.search(r"^changed: ", block, re.MULTILINE)
        ]


def ansible_playbook(lab: Lab, path: str | Path, *args: str, timeout: float = 600) -> PlaybookRun:
    """Run the playbook at ``path`` (from the repository root) against ``lab`` (the dynamic
    inventory's CREDROAM_LAB); output is kept, and the exit status is the caller's to judge."""
    run = subprocess.run(
        [str(ANSIBLE_PLAYBOOK), str(path), *args],
        cwd=REPO,
        env={**os.environ, "CREDROAM_LAB": lab.name},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return PlaybookRun(run.returncode, run.stdout + run.stderr)


def lab_playbook(
    name: str,
    subnet: str,
    state: str = "present",
    dc_count: int = 1,
    client_count: int = 1,
    check_mode: bool = False,
    timeout: float = 600,
    extra_vars: dict | None = None,
    playbook: str | Path = "playbooks/lab.yml",
    inventory_lab: str | None = None,
) -> PlaybookRun:
    """Run playbooks/lab.yml (or a playbook importing it) for one lab, as a user would; output
    is kept for diagnostics. `extra_vars` adds role variables (e.g. lab_forest_users);
    `inventory_lab` sets CREDROAM_LAB, the lab the dynamic inventory describes."""
    extra = {
        "lab_forest_name": name,
        "lab_forest_subnet": subnet,
        "lab_forest_state": state,
        "lab_forest_dc_count": dc_count,
        "lab_forest_client_count": client_count,
        **(extra_vars or {}),
    }
    argv = [str(ANSIBLE_PLAYBOOK), str(playbook), "-e", json.dumps(extra)]
    if check_mode:
        argv.append("--check")
    env = {**os.environ, **({"CREDROAM_LAB": inventory_lab} if inventory_lab else {})}
    result = subprocess.run(
        argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    return PlaybookRun(result.returncode, result.stdout + result.stderr)
