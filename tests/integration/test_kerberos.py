"""Kerberos (bind_method=gssapi) against the lab's Samba KDC, through credroam's own `connect`.

Tickets come from the lab's DCs only: KRB5_CONFIG is the lab's krb5.conf (its DCs as KDCs by
address, no DNS) and every test has its own credential cache (KRB5CCNAME) in its tmp folder,
filled by `kinit` as a user would. Who the DC thinks is bound is read two ways, since Samba has
no WhoAmI: the rootDSE's tokenGroups (the SIDs of the bound identity) and a confidential
attribute of alice (msPKIRoamingTimeStamp) that only she - not bob - may read.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ldap3
import pytest

from credroam.connection import LdapTarget, connect
from credroam.errors import DirectoryError
from tests.integration.roaming_lab import replicate_both_ways
from tests.lab import REPO, Account, Lab

pytestmark = pytest.mark.integration

VENV = REPO / ".venv" / "bin"
CONFIDENTIAL = "msPKIRoamingTimeStamp"  # in the Private-Information property set


@dataclass(frozen=True)
class Kerberos:
    """The lab realm's Kerberos settings and one private credential cache."""

    lab: Lab
    cache: Path

    @property
    def env(self) -> dict[str, str]:
        return {"KRB5_CONFIG": self.lab.krb5_conf, "KRB5CCNAME": f"FILE:{self.cache}"}

    def kinit(self, account: Account) -> None:
        """A ticket-granting ticket for `account` from a lab KDC, the password on stdin."""
        principal = f"{account.name}@{self.lab.realm}"
        done = subprocess.run(
            ["kinit", principal],
            input=account.password + "\n",
            env={**os.environ, **self.env},
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert done.returncode == 0, f"kinit {principal}: {done.stderr}"


@pytest.fixture
def kerberos(lab: Lab, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Kerberos:
    if not lab.krb5_conf or not Path(lab.krb5_conf).is_file():
        pytest.fail(f"lab {lab.name} has no krb5.conf: run lab_forest_state=present on it again")
    settings = Kerberos(lab, tmp_path / "krb5cc")
    for name, value in settings.env.items():  # for connect() in this process
        monkeypatch.setenv(name, value)
    return settings


def kerberos_target(lab: Lab, dc: int, tls_mode: str) -> LdapTarget:
    """A DC by address, its FQDN for the certificate and the service ticket ldap/<fqdn>."""
    return LdapTarget(
        server=lab.dc(dc).ip,
        tls_server_name=lab.dc(dc).fqdn,
        bind_method="gssapi",
        tls_mode=tls_mode,
        ca_cert=lab.ca_cert,
        timeout=30,
    )


def read_base(conn: ldap3.Connection, dn: str, attribute: str) -> list[bytes]:
    assert conn.search(dn, "(objectClass=*)", ldap3.BASE, attributes=[attribute]), conn.result
    return conn.response[0]["raw_attributes"].get(attribute, [])


def bound_sids(conn: ldap3.Connection) -> list[bytes]:
    """The SIDs of the identity the DC has bound this connection to."""
    return read_base(conn, "", "tokenGroups")


@pytest.fixture
def alice_secret(lab: Lab) -> Any:
    """Per DC: a fresh value in alice's confidential attribute, written by alice on that DC.

    The DC first takes in every other DC's changes: an older write to the attribute elsewhere
    (e.g. the previous test's clean-up on the other DC) has a higher version than this DC's copy
    and would otherwise replicate in over the fresh value, which loses on version, not time."""
    alice = lab.user("alice")
    written: list[int] = []

    def write(dc: int, values: list[bytes]) -> None:
        replicate_both_ways(lab)
        conn = lab.ldap_connection(alice.upn, alice.password, dc=dc)
        try:
            replaced = conn.modify(alice.dn, {CONFIDENTIAL: [(ldap3.MODIFY_REPLACE, values)]})
            assert replaced, f"{lab.dc(dc).name}: {conn.result}"
        finally:
            conn.unbind()

    def plant(dc: int) -> bytes:
        value = secrets.token_bytes(8)
        write(dc, [value])
        written.append(dc)
        return value

    yield plant
    for dc in written:
        write(dc, [])


def object_sid(lab: Lab, account: Account) -> bytes:
    conn = lab.ldap_connection()
    try:
        return read_base(conn, account.dn, "objectSid")[0]
    finally:
        conn.unbind()


def test_lab_krb5_conf_names_the_lab_dcs_and_looks_nothing_up_in_dns(lab):
    text = Path(lab.krb5_conf).read_text()
    settings = dict(
        (key.strip(), value.strip())
        for key, _, value in (line.partition("=") for line in text.splitlines())
        if value and key.strip() != "kdc"
    )
    for setting in ("dns_lookup_kdc", "dns_lookup_realm", "dns_canonicalize_hostname", "rdns"):
        assert settings[setting] == "false", setting
    kdcs = [
        line.split("=", 1)[1].strip()
        for line in text.splitlines()
        if line.strip().startswith("kdc =")
    ]
    assert kdcs == [dc.ip for dc in lab.dcs]


# LDAPS to dc1 and StartTLS to dc2: both DCs are KDCs and both services have tickets.
@pytest.mark.parametrize(("tls_mode", "dc"), [("ldaps", 0), ("starttls", 1)])
def test_alices_ticket_binds_as_alice(lab, kerberos, alice_secret, tls_mode, dc):
    alice, bob = lab.user("alice"), lab.user("bob")
    secret = alice_secret(dc)
    kerberos.kinit(alice)
    conn = connect(kerberos_target(lab, dc, tls_mode))
    try:
        sids = bound_sids(conn)
        assert object_sid(lab, alice) in sids
        assert object_sid(lab, bob) not in sids
        assert read_base(conn, alice.dn, CONFIDENTIAL) == [secret]
    finally:
        conn.unbind()


def test_bobs_ticket_binds_as_bob_who_cannot_read_alices_confidential_value(
    lab, kerberos, alice_secret
):
    alice, bob = lab.user("alice"), lab.user("bob")
    alice_secret(0)
    kerberos.kinit(bob)
    conn = connect(kerberos_target(lab, 0, "ldaps"))
    try:
        sids = bound_sids(conn)
        assert object_sid(lab, bob) in sids and object_sid(lab, alice) not in sids
        assert read_base(conn, alice.dn, CONFIDENTIAL) == []
    finally:
        conn.unbind()


def test_without_a_ticket_the_error_says_to_run_kinit(lab, kerberos):
    with pytest.raises(DirectoryError, match="no Kerberos credentials") as caught:
        connect(kerberos_target(lab, 0, "ldaps"))
    assert "run kinit" in str(caught.value) and str(kerberos.cache) in str(caught.value)


def test_a_dc_name_the_kdc_does_not_know_is_named_in_the_error(lab, kerberos):
    kerberos.kinit(lab.user("alice"))
    # Certificates are not what is tested here: the lab certificate names dc1's FQDN, not this.
    target = LdapTarget(
        server=lab.dc(0).ip,
        tls_server_name=f"nodc.{lab.realm.lower()}",
        bind_method="gssapi",
        validate_certs=False,
        timeout=30,
    )
    with pytest.raises(DirectoryError, match=f"ticket for ldap/nodc.{lab.realm.lower()}"):
        connect(target)


# --- a module run through Ansible, as an operator would with their own ticket ------------------


def ad_schema_check(lab: Lab, kerberos: Kerberos) -> dict[str, Any]:
    """`ansible localhost -m ad_schema --check` (preset credroam) binding with Kerberos: no
    password; bind_user is the admin's UPN as the lab inventory gives it (it picks the ticket).
    The module inherits KRB5_CONFIG and KRB5CCNAME."""
    params = {
        "server": lab.dc(0).ip,
        "tls_server_name": lab.dc(0).fqdn,
        "ca_cert": lab.ca_cert,
        "bind_method": "gssapi",
        "bind_user": lab.admin.upn,
        "dc_addresses": {dc.fqdn: dc.ip for dc in lab.dcs},
        "preset": "credroam",
    }
    argv = [
        str(VENV / "ansible"), "localhost", "-i", "localhost,", "-c", "local",
        "-e", f"ansible_python_interpreter={VENV / 'python'}",
        "-m", "ad_schema", "-a", json.dumps(params), "--check",
    ]  # fmt: skip
    env = {
        **os.environ,
        **kerberos.env,
        "ANSIBLE_LOAD_CALLBACK_PLUGINS": "1",
        "ANSIBLE_STDOUT_CALLBACK": "ansible.builtin.json",
    }
    done = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    output = json.loads(done.stdout[done.stdout.index("{") :])
    return output["plays"][0]["tasks"][0]["hosts"]["localhost"]


def test_ad_schema_reads_the_schema_as_administrator_with_a_ticket(lab, kerberos):
    kerberos.kinit(lab.admin)
    result = ad_schema_check(lab, kerberos)
    assert not result.get("failed"), result.get("msg")
    assert "msPKIAccountCredentials" in result["verified"]


def test_ad_schema_without_a_ticket_fails_saying_to_run_kinit(lab, kerberos):
    result = ad_schema_check(lab, kerberos)
    assert result.get("failed") and "no Kerberos credentials" in result["msg"]
    assert "run kinit" in result["msg"]
