"""The embedded lab forest behaves like a real, isolated AD forest with real SSH hosts."""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import json
import os
import re
import signal
import subprocess
import time
import uuid
from pathlib import Path

import ldap3
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from credroam.errors import DirectoryError
from tests.integration.conftest import CITEST
from tests.lab import REPO, Lab, companion_lab, lab_playbook, lab_traces, pid_is_live

pytestmark = pytest.mark.integration

# Samba 4.17 provisions the Windows Server 2012 R2 base schema.
SCHEMA_2012_R2 = 69


def _read_base(conn: ldap3.Connection, dn: str, attributes: list[str]) -> dict:
    conn.search(dn, "(objectClass=*)", search_scope=ldap3.BASE, attributes=attributes)
    assert len(conn.entries) == 1, f"{dn} not found"
    return conn.entries[0].entry_attributes_as_dict


def test_admin_reads_root_dse_over_validated_ldaps(lab: Lab, lab_admin_ldap) -> None:
    root = _read_base(lab_admin_ldap, "", ["defaultNamingContext", "dnsHostName"])
    assert root["defaultNamingContext"] == [lab.base_dn]
    assert root["dnsHostName"][0].lower() == lab.dc(0).fqdn


def test_schema_version_is_readable(lab: Lab, lab_admin_ldap) -> None:
    schema_nc = f"CN=Schema,CN=Configuration,{lab.base_dn}"
    version = _read_base(lab_admin_ldap, schema_nc, ["objectVersion"])["objectVersion"]
    assert [int(v) for v in version] == [SCHEMA_2012_R2]


def test_normal_user_binds_and_reads_own_entry(lab: Lab) -> None:
    alice = lab.user("alice")
    conn = lab.ldap_connection(alice.upn, alice.password, dc=1)
    try:
        entry = _read_base(conn, alice.dn, ["sAMAccountName", "userPrincipalName"])
    finally:
        conn.unbind()
    assert entry["sAMAccountName"] == ["alice"]
    assert entry["userPrincipalName"][0].lower() == alice.upn


def test_wrong_password_is_refused(lab: Lab) -> None:
    with pytest.raises(DirectoryError, match="invalidCredentials"):
        lab.ldap_connection(lab.user("bob").upn, "not-the-password")


def _foreign_ca(directory: Path) -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "not the lab CA")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    path = directory / "foreign-ca.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return str(path)


def test_certificate_validation_is_really_on(lab: Lab, tmp_path: Path) -> None:
    with pytest.raises(DirectoryError, match="certificate verification failed for the domain"):
        lab.ldap_connection(ca_cert=_foreign_ca(tmp_path))


def test_dc_certificates_name_fqdn_short_name_and_ip(lab: Lab) -> None:
    for dc in lab.dcs:
        cert_path = lab.state_dir / dc.name / "tls" / "cert.pem"
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert set(sans.get_values_for_type(x509.DNSName)) == {dc.fqdn, dc.name}
        assert sans.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address(dc.ip)]


def test_client_reaches_dc_ldaps_by_lab_name(lab: Lab) -> None:
    dc = lab.dc(0)
    probe = f"import socket; socket.create_connection(('{dc.fqdn}', 636), 5); print('reached')"
    result = lab.client(0).ssh(f'getent hosts {dc.fqdn} && python3 -c "{probe}"')
    assert dc.ip in result.stdout
    assert "reached" in result.stdout


def test_each_client_has_its_own_hostname_etc_and_home(lab: Lab) -> None:
    first, second = lab.client(0), lab.client(1)
    assert first.ssh("hostname").stdout.strip() == first.name
    assert second.ssh("hostname").stdout.strip() == second.name
    marker = f"credroam-lab-probe-{uuid.uuid4().hex}"
    first.ssh(f"touch /etc/{marker} /home/{marker} /root/{marker}")
    try:
        for folder in ("/etc", "/home", "/root"):
            assert not (Path(folder) / marker).exists(), f"{folder} is the machine's"
            listing = second.ssh(f"ls {folder}").stdout.split()
            assert marker not in listing, f"{folder} is shared with {second.name}"
    finally:
        first.ssh(f"rm -f /etc/{marker} /home/{marker} /root/{marker}")


def test_second_dc_replicates_a_change_made_on_the_first(lab: Lab, lab_admin_ldap) -> None:
    carol = lab.user("carol")
    description = f"replication probe {uuid.uuid4().hex}"
    lab_admin_ldap.modify(carol.dn, {"description": [(ldap3.MODIFY_REPLACE, [description])]})
    first, second = lab.dc(0), lab.dc(1)
    admin = f"{lab.domain}\\{lab.admin.name}"
    second.run(
        "samba-tool", "drs", "replicate", second.name, first.name, lab.base_dn,
        "-U", admin, f"--password={lab.admin.password}",
    )  # fmt: skip
    conn = lab.ldap_connection(dc=1)
    try:
        assert _read_base(conn, carol.dn, ["description"])["description"] == [description]
    finally:
        conn.unbind()


def test_dns_stays_in_the_lab(lab: Lab) -> None:
    for dc in lab.dcs:
        assert not re.search(r"^\s*dns\s*forwarder", Path(dc.smb_conf).read_text(), re.M | re.I)
    client = lab.client(0)
    assert "default" not in client.ssh("ip route").stdout, "a route leads out of the lab"
    # The lab resolver has no forwarder: an outside name fails (timeout bounds a hang).
    outside = client.ssh("getent hosts debian.org", check=False, timeout=30)
    assert outside.returncode == 2, outside.stdout


def test_lab_json_is_private_and_complete(lab: Lab) -> None:
    path = lab.state_dir / "lab.json"
    assert path.stat().st_mode & 0o777 == 0o600
    data = json.loads(path.read_text())
    assert [dc["name"] for dc in data["dcs"]] == ["dc1", "dc2"]
    base = ipaddress.ip_network(lab.subnet).network_address
    assert [c["ip"] for c in data["clients"]] == [str(base + n) for n in (21, 22, 23)]


def test_bringing_the_lab_up_again_changes_nothing(lab: Lab) -> None:
    again = lab_playbook(**CITEST, state="present")
    assert again.returncode == 0, again.output[-4000:]
    assert again.changed == 0, again.output[-4000:]
    checked = lab_playbook(**CITEST, state="present", check_mode=True)
    assert checked.returncode == 0 and checked.changed == 0, checked.output[-4000:]
    assert lab.is_up()  # the same processes still serve


# This session's second lab (fixlab -> fixlab2 in the next /24): brought up and torn down here.
SECOND = companion_lab(CITEST["name"], CITEST["subnet"])
CLEANTEST = {**SECOND, "dc_count": 1, "client_count": 1}


def _namespace_pids(name: str) -> list[int]:
    pids = []
    for netns in Path("/run/netns").glob(f"cr-{name}-*"):
        listed = subprocess.run(["ip", "netns", "pids", netns.name], capture_output=True, text=True)
        pids += [int(pid) for pid in listed.stdout.split()]
    return pids


def test_check_mode_starts_nothing_and_absent_leaves_nothing() -> None:
    name = CLEANTEST["name"]
    assert lab_playbook(**CLEANTEST, state="absent").returncode == 0
    checked = lab_playbook(**CLEANTEST, state="present", check_mode=True)
    assert checked.returncode == 0, checked.output[-4000:]
    assert checked.changed > 0
    assert lab_traces(name) == []

    up = lab_playbook(**CLEANTEST, state="present")
    assert up.returncode == 0, up.output[-4000:]
    lab = Lab.load(name)
    assert lab.is_up()
    lab_pids = _namespace_pids(name)
    assert len(lab_pids) > len(lab.dcs) + len(lab.clients)  # samba's workers included
    # An interrupted bring-up leaves no lab.json: `present` must not guess, and must say how
    # to clean up, whether the lab's processes still run or died.
    (lab.state_dir / "lab.json").unlink()
    refused = lab_playbook(**CLEANTEST, state="present")
    assert refused.returncode != 0
    assert f"lab {name!r} is stale or half-started" in refused.output
    assert "lab processes still run" in refused.output
    assert f"-e lab_forest_name={name} -e lab_forest_state=absent" in refused.output
    _kill_all_lab_processes(name)
    refused = lab_playbook(**CLEANTEST, state="present")
    assert refused.returncode != 0
    assert f"network namespaces cr-{name}-dc1, cr-{name}-client1" in refused.output
    assert "no lab process runs (they died)" in refused.output

    # Teardown must not need lab.json.
    down = lab_playbook(**CLEANTEST, state="absent")
    assert down.returncode == 0, down.output[-4000:]
    assert down.changed > 0
    assert lab_traces(name) == []
    assert not lab.state_dir.exists()
    assert [pid for pid in lab_pids if pid_is_live(pid)] == []

    again = lab_playbook(**CLEANTEST, state="absent")
    assert again.returncode == 0 and again.changed == 0, again.output[-4000:]


def _kill_all_lab_processes(name: str) -> None:
    """SIGKILL every process in lab ``name``'s namespaces, as a crash would, until none is left.

    Listed again after each round: Samba's master restarts a prefork worker killed before it,
    so one listing can miss the replacement (seen under load)."""
    deadline = time.monotonic() + 10
    while pids := _namespace_pids(name):
        assert time.monotonic() < deadline, f"lab processes survived SIGKILL: {pids}"
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.05)


def test_playbook_importing_lab_yml_reaches_the_new_clients_in_the_same_run() -> None:
    lab = {**SECOND, "dc_count": 1, "client_count": 2}
    assert lab_playbook(**lab, state="absent").returncode == 0
    try:
        run = lab_playbook(
            **lab,
            playbook=REPO / "tests" / "integration" / "playbooks" / "lab_then_clients.yml",
            inventory_lab=lab["name"],
        )
        assert run.returncode == 0, run.output[-4000:]
        ping = run.output.split("TASK [Ping each client over SSH]", 1)[1]
        assert "ok: [client1]" in ping and "ok: [client2]" in ping, run.output[-4000:]
        listed = _ansible("ansible-inventory", "--list", lab_name=lab["name"])
        assert json.loads(listed.stdout)["clients"]["hosts"] == ["client1", "client2"]
    finally:
        down = lab_playbook(**lab, state="absent")
        assert down.returncode == 0, down.output[-4000:]
    assert lab_traces(lab["name"]) == []


def _ansible(*argv: str, lab_name: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CREDROAM_LAB": lab_name}
    return subprocess.run(
        [str(REPO / ".venv" / "bin" / argv[0]), *argv[1:]],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def test_inventory_reaches_every_client_over_ssh_with_host_keys_checked(lab: Lab) -> None:
    result = _ansible("ansible", "clients", "-m", "ansible.builtin.ping", lab_name=lab.name)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == len(lab.clients)


def test_inventory_without_a_lab_still_parses() -> None:
    result = _ansible("ansible-inventory", "--list", lab_name="nolab")
    assert result.returncode == 0, result.stderr
    groups = json.loads(result.stdout)
    assert groups["controller"]["hosts"] == ["localhost"]
    assert "hosts" not in groups.get("clients", {})
