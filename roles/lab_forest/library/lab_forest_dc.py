#!/usr/bin/python
# Copyright: credroam contributors
from __future__ import annotations

DOCUMENTATION = r"""
module: lab_forest_dc
short_description: One Samba AD domain controller of the embedded lab forest
description:
  - O(state=present) makes the DC's host (own network namespace on the lab bridge, own mount
    and UTS namespaces with a per-host /etc whose resolv.conf and hosts point into the lab, a
    tmpfs /run so several DCs coexist), provisions the domain (first DC) or joins it (other
    DCs) into the state folder, configures the lab's TLS certificate and removes the DNS
    forwarder, starts C(samba -F) detached (after checking that nothing else holds the DC's
    ports on its address) and waits until an LDAPS bind validated against the lab CA succeeds.
    A joined DC is checked by forcing a replication from the first DC; its own service
    principals (C(ldap/<fqdn>), ...) are registered (C(samba_spnupdate), run to its end) and
    the first DC pulls them, so the first DC's KDC issues Kerberos tickets for every DC.
  - The DCs accept SASL binds without a signing layer inside TLS, as Kerberos binds from ldap3
    are (C(ldap server require strong auth = allow_sasl_over_tls)).
  - On the first DC, the roaming OU and O(users) converge on every run, also on a lab that is
    already up - a missing user is added, a user whose password no longer binds gets it set
    again; users not listed are left alone (tests may create their own). The other DCs
    receive them by replication.
  - Every step is skipped when already done; RV(changed) is true only when something was done.
    Check mode starts nothing.
  - O(state=absent) stops the DC's processes (SIGTERM, then SIGKILL) and removes its namespace,
    veth and folder.
options:
  realm:
    description: AD realm, e.g. C(LAB.EXAMPLE).
    type: str
    required: true
  domain:
    description: NetBIOS domain name, e.g. C(LAB).
    type: str
    required: true
  admin_password:
    description: Password of the domain's Administrator.
    type: str
    required: true
  roaming_ou:
    description: Name of the OU (under the base DN) that holds the lab users.
    type: str
    default: RoamingUsers
  users:
    description: Users wanted in the roaming OU (first DC only).
    type: list
    elements: dict
    default: []
    suboptions:
      name:
        description: sAMAccountName and CN.
        type: str
        required: true
      password:
        description: The user's password.
        type: str
        required: true
  ca_cert:
    description: Lab CA certificate (PEM) used for smb.conf and to validate LDAPS.
    type: path
    required: true
  start_timeout:
    description: Seconds to wait at most for LDAPS to answer after start.
    type: int
    default: 300
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - lab_forest
  - lab_forest.host
seealso:
  - module: lab_forest_network
  - module: lab_forest_pki
  - module: lab_forest_host
author: credroam contributors
"""

EXAMPLES = r"""
- name: Provision the first DC of lab "mine" with one roaming user
  lab_forest_dc:
    lab: mine
    host: dc1
    state_dir: /srv/credroam/.lab/mine
    subnet: 172.29.7.0/24
    realm: LAB.EXAMPLE
    domain: LAB
    admin_password: "{{ lab_admin_password }}"
    users:
      - {name: alice, password: "{{ lab_alice_password }}"}
    hosts: {dc1: 172.29.7.10, client1: 172.29.7.21}
    nameservers: [172.29.7.10]
    ca_cert: /srv/credroam/.lab/mine/ca.pem
"""

RETURN = r"""
name:
  description: DC host name.
  type: str
  returned: always
fqdn:
  description: DC FQDN.
  type: str
  returned: always
ip:
  description: DC IP.
  type: str
  returned: always
smb_conf:
  description: Path of the DC's smb.conf.
  type: str
  returned: always
pid:
  description: Process id of the DC's samba main process (0 in check mode before start).
  type: int
  returned: always
exec:
  description: argv prefix that runs a command in the DC's network and mount namespaces.
  type: list
  elements: str
  returned: always
actions:
  description: What was done (or, in check mode, would be done).
  type: list
  elements: str
  returned: always
"""

import shutil
import subprocess
from pathlib import Path

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.lab_forest_common import (
    DC_TCP_PORTS,
    LabError,
    LabNames,
    Sandbox,
    check_ports_free,
    ensure_host,
    exec_prefix,
    host_ip,
    host_network_ready,
    hosts_file,
    new_user_attributes,
    password_value,
    remove_host,
    resolv_conf,
    run,
    set_global_options,
    split_host,
    wait_until,
)

try:
    import ldap3
    from ansible.module_utils.credroam.connection import LdapTarget, connect
    from ansible.module_utils.credroam.errors import DirectoryError
    from ansible.module_utils.credroam.ldapresult import check_result, first

    HAS_LDAP3 = True
except ImportError:
    HAS_LDAP3 = False

NO_FORWARDER = ("dns forwarder",)
# Provision and join run to their end, with no time limit of the lab's: how long they take is
# the machine's load (a provision took 110 s with the lab held to 15 % of one core, against the
# 120 s once allowed), and each ends by itself, failing when it cannot go on (a join's requests
# to dc1 time out on their own).
UNTIL_DONE = None


class DomainController:
    def __init__(self, params: dict, check_mode: bool) -> None:
        self.p = params
        self.check_mode = check_mode
        self.names = LabNames(params["lab"])
        self.host = params["host"]
        self.index = split_host(self.host)[1]
        self.state_dir = Path(params["state_dir"])
        self.sandbox = Sandbox(self.names, self.host, self.state_dir / self.host)
        self.target = self.sandbox.root / "samba"
        self.smb_conf = self.target / "etc" / "smb.conf"
        self.ip = host_ip(params["subnet"], self.host)
        self.fqdn = f"{self.host}.{params['realm'].lower()}"
        self.base_dn = ",".join(f"DC={part}" for part in params["realm"].lower().split("."))
        self.actions: list[str] = []

    # -- steps ----------------------------------------------------------------------------

    def present(self) -> int:
        resolv = resolv_conf(self.p["realm"], self.p["nameservers"])
        hosts = hosts_file(self.p["realm"], self.p["hosts"])
        self.actions += ensure_host(
            self.sandbox, self.p["subnet"], hosts, resolv, self.fqdn, self.check_mode
        )
        if not (self.sandbox.root / "provisioned").exists():
            if self.index == 1:
                self._do("provision domain", self._provision)
            else:
                self._do("join domain", self._join)
        if self.smb_conf.exists() and self._wanted_smb_conf() != self.smb_conf.read_text():
            self._do("configure smb.conf", self._configure)
        pid = self.sandbox.running_pid()
        if pid is None:
            if host_network_ready(self.names, self.host):
                check_ports_free(self.names, self.host, self.ip, DC_TCP_PORTS)
            self._do("start samba", self._start)
            pid = self.sandbox.running_pid() or 0
            if self.index > 1:
                self._do("check replication from dc1", self._replicate_from_first)
                self._do("replicate its service principals to dc1", self._replicate_to_first)
        if self.index == 1:
            self._converge_users(running=pid != 0)
        return pid

    def _do(self, what: str, step) -> None:
        self.actions.append(what)
        if not self.check_mode:
            step()

    def _common_options(self) -> list[str]:
        prefix_len = self.p["subnet"].split("/")[1]
        return [
            f"--option=interfaces={self.ip}/{prefix_len}",
            "--option=bind interfaces only=yes",
            "--option=dsdb:schema update allowed=true",
            f"--targetdir={self.target}",
        ]

    def _fresh_target(self) -> None:
        # A provision/join that failed half-way leaves a target that samba-tool refuses.
        shutil.rmtree(self.target, ignore_errors=True)
        self.target.mkdir(parents=True)
        # samba-tool would fold the machine's smb.conf (log files in /var/log, a standalone
        # role) into the DC's own: the host's /etc has none.
        (self.sandbox.etc / "samba" / "smb.conf").unlink(missing_ok=True)

    def _provision(self) -> None:
        self._fresh_target()
        self.sandbox.run(
            [
                "samba-tool",
                "domain",
                "provision",
                f"--realm={self.p['realm']}",
                f"--domain={self.p['domain']}",
                "--server-role=dc",
                "--dns-backend=SAMBA_INTERNAL",
                f"--adminpass={self.p['admin_password']}",
                f"--host-name={self.host}",
                f"--host-ip={self.ip}",
                *self._common_options(),
            ],
            timeout=UNTIL_DONE,
        )
        self._configure()
        (self.sandbox.root / "provisioned").touch()

    def _join(self) -> None:
        first = Sandbox(self.names, "dc1", self.state_dir / "dc1")
        if first.running_pid() is None:
            raise LabError(
                f"dc1 of lab {self.names.lab!r} is not running, so {self.host} cannot join"
            )
        self._fresh_target()
        first_ip = host_ip(self.p["subnet"], "dc1")
        self.sandbox.run(
            [
                "samba-tool",
                "domain",
                "join",
                self.p["realm"],
                "DC",
                f"--server={first_ip}",
                "--dns-backend=SAMBA_INTERNAL",
                "-U",
                f"{self.p['domain']}\\Administrator",
                f"--password={self.p['admin_password']}",
                f"--option=netbios name={self.host.upper()}",
                *self._common_options(),
            ],
            timeout=UNTIL_DONE,
        )
        self._configure()
        (self.sandbox.root / "provisioned").touch()

    def _wanted_smb_conf(self) -> str:
        tls = self.sandbox.root / "tls"
        wanted = {
            "dsdb:schema update allowed": "true",
            "tls enabled": "yes",
            "tls keyfile": str(tls / "key.pem"),
            "tls certfile": str(tls / "cert.pem"),
            "tls cafile": self.p["ca_cert"],
            # Samba accepts the previous password for 60 minutes by default, also on an LDAP
            # simple bind: a changed lab password must stop working at once, both for tests
            # and for the users step, which detects a password to set by a failing bind.
            "old password allowed period": "0",
            # Samba's default ("yes") refuses a SASL bind without a signing or sealing layer,
            # which ldap3 cannot negotiate, so Kerberos (bind_method=gssapi) would fail.
            # allow_sasl_over_tls accepts such a bind only inside TLS; credroam never talks
            # to a DC without TLS, so nothing weaker than TLS is allowed. Simple binds still
            # need TLS as before.
            "ldap server require strong auth": "allow_sasl_over_tls",
        }
        return set_global_options(self.smb_conf.read_text(), wanted, NO_FORWARDER)

    def _configure(self) -> None:
        text = self._wanted_smb_conf()
        if text != self.smb_conf.read_text():
            self.smb_conf.write_text(text)
            if self.sandbox.stop():  # samba reads TLS and schema settings at start only
                self.actions.append("stop samba to apply smb.conf")

    def _start(self) -> None:
        self.sandbox.start(["samba", "-F", "--debug-stdout", "-s", str(self.smb_conf)])
        wait_until(self._ldaps_bind_works, self.p["start_timeout"], f"LDAPS on {self.ip}:636")

    def _ldaps_bind_works(self) -> bool:
        if self.sandbox.started_pid() is None:
            log = self.sandbox.log_file.read_text(errors="replace")[-1500:]
            raise LabError(f"samba on {self.host} exited; end of {self.sandbox.log_file}:\n{log}")
        try:
            connect(self._target()).unbind()
        except DirectoryError:
            return False
        return True

    def _target(self, user: str = "Administrator", password: str | None = None) -> LdapTarget:
        """LDAPS to this DC by IP (its certificate names the IP), validated by the lab CA."""
        return LdapTarget(
            server=self.ip,
            bind_user=f"{user}@{self.p['realm'].lower()}",
            bind_password=self.p["admin_password"] if password is None else password,
            ca_cert=self.p["ca_cert"],
            timeout=5,
        )

    # -- users (first DC) -------------------------------------------------------------------

    def _converge_users(self, running: bool) -> None:
        """Roaming OU and listed users, on every run: a lab that is up converges too."""
        if not running:  # check mode before the first start: everything is still to do
            self.actions.append(f"create roaming OU and {len(self.p['users'])} users")
            return
        try:
            conn = connect(self._target())
        except DirectoryError as exc:
            raise LabError(f"cannot check the lab users on {self.host}: {exc}") from exc
        try:
            self._ensure_roaming_ou(conn)
            existing = self._existing_users(conn)
            for user in self.p["users"]:
                found = existing.get(user["name"].lower())
                if found is None:
                    self._do(f"add user {user['name']}", lambda u=user: self._add_user(conn, u))
                elif found.lower() != self._user_dn(user["name"]).lower():
                    raise LabError(
                        f"lab_forest_users: {user['name']!r} already exists as {found}, outside "
                        f"OU={self.p['roaming_ou']}; rename it or choose another user name"
                    )
                elif not self._password_binds(user):
                    self._do(
                        f"set password of {user['name']}",
                        lambda u=user: self._set_password(conn, u),
                    )
        except DirectoryError as exc:
            raise LabError(f"lab users on {self.host}: {exc}") from exc
        finally:
            conn.unbind()

    def _ou_dn(self) -> str:
        return f"OU={self.p['roaming_ou']},{self.base_dn}"

    def _user_dn(self, name: str) -> str:
        return f"CN={name},{self._ou_dn()}"

    def _ensure_roaming_ou(self, conn: ldap3.Connection) -> None:
        if conn.search(self._ou_dn(), "(objectClass=organizationalUnit)", ldap3.BASE):
            return
        check_result(conn, f"reading {self._ou_dn()}", missing_ok=True)
        self._do(f"create {self._ou_dn()}", lambda: self._add_ou(conn))

    def _add_ou(self, conn: ldap3.Connection) -> None:
        conn.add(self._ou_dn(), ["top", "organizationalUnit"])
        check_result(conn, f"creating {self._ou_dn()}")

    def _existing_users(self, conn: ldap3.Connection) -> dict[str, str]:
        """Lower-cased sAMAccountName -> DN of the listed users that exist anywhere."""
        if not self.p["users"]:
            return {}
        wanted = "".join(f"(sAMAccountName={user['name']})" for user in self.p["users"])
        conn.search(
            self.base_dn,
            f"(&(objectClass=user)(|{wanted}))",
            ldap3.SUBTREE,
            attributes=["sAMAccountName"],
        )
        check_result(conn, "searching the lab users")
        return {
            str(first(entry["attributes"], "sAMAccountName")).lower(): entry["dn"]
            for entry in conn.response
            if entry.get("type") == "searchResEntry"
        }

    def _add_user(self, conn: ldap3.Connection, user: dict) -> None:
        attributes = new_user_attributes(user["name"], user["password"], self.p["realm"])
        conn.add(self._user_dn(user["name"]), attributes=attributes)
        check_result(conn, f"adding lab user {user['name']!r} (is the password complex enough?)")

    def _password_binds(self, user: dict) -> bool:
        try:
            connect(self._target(user["name"], user["password"])).unbind()
        except DirectoryError:
            return False
        return True

    def _set_password(self, conn: ldap3.Connection, user: dict) -> None:
        change = {"unicodePwd": [(ldap3.MODIFY_REPLACE, [password_value(user["password"])])]}
        conn.modify(self._user_dn(user["name"]), change)
        check_result(conn, f"setting the password of {user['name']!r}")

    def _replicate_from_first(self) -> None:
        # Forces an inbound replication of the domain NC from dc1; fails if replication is broken.
        self.sandbox_exec(
            [
                "samba-tool",
                "drs",
                "replicate",
                self.host,
                "dc1",
                self.base_dn,
                "-s",
                str(self.smb_conf),
                "-U",
                f"{self.p['domain']}\\Administrator",
                f"--password={self.p['admin_password']}",
            ]
        )

    def _replicate_to_first(self) -> None:
        """A joined DC's own service principals (ldap/<fqdn>, ...) reach dc1 only by a
        replication. Until then dc1's KDC, the first in the lab krb5.conf, knows no
        ldap/<this DC> and a Kerberos bind to this DC fails ("Server not found in Kerberos
        database"). Register them (_register_own_principals), then pull them now."""
        self._register_own_principals()
        self.sandbox_exec(
            [
                "samba-tool",
                "drs",
                "replicate",
                "dc1",
                self.host,
                self.base_dn,
                "-s",
                str(self.smb_conf),
                "-U",
                f"{self.p['domain']}\\Administrator",
                f"--password={self.p['admin_password']}",
            ]
        )

    def _register_own_principals(self) -> None:
        """Samba registers them itself shortly after it starts, by running samba_spnupdate
        under a time limit of its own; on a loaded machine the script outlasts it, is killed
        ("Failed SPN update - with error code 110" in the DC's log) and is tried again only
        at the next name update, minutes later. So the lab runs it too, to its end (it adds
        only what is missing). Samba's own run may add the same names meanwhile and make this
        one fail: what counts is that the DC then holds ldap/<fqdn>."""
        if self._holds_own_ldap_principal():
            return
        update = self.sandbox_exec(["samba_spnupdate", "-s", str(self.smb_conf)], check=False)
        if not self._holds_own_ldap_principal():
            output = (update.stderr or update.stdout).strip()[-2000:]
            raise LabError(
                f"samba_spnupdate on {self.host} (rc={update.returncode}) did not register "
                f"ldap/{self.fqdn}: {output}"
            )

    def _holds_own_ldap_principal(self) -> bool:
        """This DC's account, read on this DC, lists ldap/<fqdn>."""
        account_dn = f"CN={self.host.upper()},OU=Domain Controllers,{self.base_dn}"
        try:
            conn = connect(self._target())
        except DirectoryError as exc:
            raise LabError(f"cannot read the service principals of {self.host}: {exc}") from exc
        try:
            found = conn.search(
                account_dn, "(objectClass=*)", ldap3.BASE, attributes=["servicePrincipalName"]
            )
            names = conn.response[0]["attributes"]["servicePrincipalName"] if found else []
        finally:
            conn.unbind()
        return f"ldap/{self.fqdn}" in [str(name).lower() for name in names]

    def sandbox_exec(self, argv: list[str], check: bool = True) -> subprocess.CompletedProcess:
        pid = self.sandbox.running_pid()
        if pid is None:
            raise LabError(f"samba on {self.host} is not running")
        return run([*exec_prefix(pid), *argv], check=check)

    def absent(self) -> None:
        self.actions += remove_host(self.sandbox, self.check_mode)


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "lab": {"type": "str", "required": True},
            "host": {"type": "str", "required": True},
            "state": {"type": "str", "choices": ["present", "absent"], "default": "present"},
            "state_dir": {"type": "path", "required": True},
            "subnet": {"type": "str", "required": True},
            "realm": {"type": "str", "required": True},
            "domain": {"type": "str", "required": True},
            "admin_password": {"type": "str", "required": True, "no_log": True},
            "roaming_ou": {"type": "str", "default": "RoamingUsers"},
            "users": {
                "type": "list",
                "elements": "dict",
                "default": [],
                "options": {
                    "name": {"type": "str", "required": True},
                    "password": {"type": "str", "required": True, "no_log": True},
                },
            },
            "hosts": {"type": "dict", "required": True},
            "nameservers": {"type": "list", "elements": "str", "required": True},
            "ca_cert": {"type": "path", "required": True},
            "start_timeout": {"type": "int", "default": 300},
        },
        supports_check_mode=True,
    )
    if not HAS_LDAP3:
        module.fail_json(msg="the 'ldap3' Python library is missing: run `make deps`")
    try:
        dc = DomainController(module.params, module.check_mode)
        pid = 0
        if module.params["state"] == "present":
            pid = dc.present()
        else:
            dc.absent()
    except LabError as exc:
        module.fail_json(msg=str(exc))
    module.exit_json(
        changed=bool(dc.actions),
        actions=dc.actions,
        name=dc.host,
        fqdn=dc.fqdn,
        ip=dc.ip,
        smb_conf=str(dc.smb_conf),
        pid=pid,
        exec=exec_prefix(pid) if pid else [],
    )


if __name__ == "__main__":
    main()
