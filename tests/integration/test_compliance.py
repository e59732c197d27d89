"""The compliance run on the lab: playbooks/compliance.yml after playbooks/site.yml, as CI runs it.

A healthy rollout passes, also for a least-privilege read-only account holding only the
delegated right to read confidential attributes; without that right the users are reported as
unreadable, never passed. Each broken state is caught by exactly the check meant for it and by
no other. The HTML report is opened in a real headless Chromium.

The host checks read the lab's client hosts over SSH, as the compliance play does anywhere:
alice logs on to client1 once (her last sync there is judged); a stale agent is a real older
build (version 0.0.9) put on client3 where and as the sync_agent role installs it. An attribute
missing on one DC is made by pausing dc2's inbound replication (`samba-tool drs options dc2
--dsa-option=+DISABLE_INBOUND_REPL`) while the rollout adds an attribute of its own to the
schema; afterwards replication is resumed and dc2 catches up (schema objects cannot be deleted,
so each run adds an attribute of a new name). Independent faults are planted together, a few
to a compliance run (the broken-states section says why that still proves each one alone).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import jsonschema
import ldap3
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from ldap3.protocol.microsoft import security_descriptor_control

from credroam.compliance.checks import CHECKS
from credroam.gpo.secdesc import format_sid
from credroam.roaming.certelement import certificate_token
from credroam.roaming.directory import ACCOUNT_CREDENTIALS
from credroam.roaming.sync import READ_LIMITS
from credroam.schema.definitions import PRIVATE_INFORMATION
from credroam.timestamps import filetime_now
from credroam.tokens import Token, TokenFlags, TokenType, encode_token, format_dn_binary
from tests.integration.roaming_lab import clear_everywhere, plant, replicate, self_signed
from tests.integration.rollout import playbook, roaming_gpo
from tests.integration.test_gpo import samba_tool, sysvol_dir
from tests.integration.test_sync_agent_role import COMMAND
from tests.lab import REPO, Account, ClientHost, Lab, PlaybookRun, ansible_playbook

pytestmark = pytest.mark.integration

SCHEMA = json.loads((REPO / "roles/compliance/files/report.schema.json").read_text())
ARTIFACTS = REPO / "tests" / "artifacts"
USER_CLASS = "bf967aba-0de6-11d0-a285-00aa003049e2"  # the user class's schemaIDGUID
AUDIT = "credroam-audit"
AUDIT_PASSWORD = "Audit-Lab-Pass1!"


class Run:
    """One run of playbooks/compliance.yml: exit status, output and the three reports."""

    def __init__(self, lab: Lab, out: Path, *extra: str) -> None:
        done = ansible_playbook(
            lab, "playbooks/compliance.yml", "-e", f"compliance_output_dir={out}", *extra
        )
        self.returncode, self.output = done.returncode, done.output
        assert (out / "report.json").is_file(), self.output[-4000:]
        self.out = out
        self.report = json.loads((out / "report.json").read_text())

    def failing(self) -> set[tuple[str, str]]:
        return {
            (r["check"], r["subject"]["name"])
            for r in self.report["results"]
            if r["status"] != "pass"
        }

    def result(self, check: str, subject: str) -> dict:
        return next(
            r
            for r in self.report["results"]
            if r["check"] == check and r["subject"]["name"].lower() == subject.lower()
        )


AGENT_VERSION = re.search(
    r'__version__ = "([^"]+)"', (REPO / "agent/credroam_agent/__init__.py").read_text()
).group(1)


@pytest.fixture(scope="module")
def rolled_out(lab: Lab, rolled_out: PlaybookRun) -> Lab:
    """The session's rollout, then alice's first logon on client1 (so the host checks have a
    last sync to judge), replicated both ways so the DCs agree on her timestamp."""
    for user in lab.users:
        clear_everywhere(lab, user)
    alice = lab.user("alice")
    login = lab.client(0).ssh(
        f"printf '%s' '{alice.password}' | {COMMAND} login --user alice", check=False
    )
    assert login.returncode == 0, login.stderr[-2000:]
    for index in range(1, len(lab.dcs)):
        replicate(lab, index, 0)
        replicate(lab, 0, index)
    return lab


@pytest.fixture
def compliance(rolled_out: Lab, tmp_path: Path):
    def run(*extra: str) -> Run:
        return Run(rolled_out, tmp_path / f"run-{uuid.uuid4().hex[:6]}", *extra)

    return run


@pytest.fixture(scope="module")
def healthy(rolled_out: Lab, tmp_path_factory) -> Run:
    return Run(rolled_out, tmp_path_factory.mktemp("healthy"))


def test_a_healthy_rollout_passes_with_every_output_valid(healthy, rolled_out):
    assert healthy.returncode == 0, healthy.output[-4000:]
    assert healthy.failing() == set()
    jsonschema.validate(healthy.report, SCHEMA)
    checks = {r["check"] for r in healthy.report["results"]}
    assert checks == set(healthy.report["checks"]), "every check ran on the lab"
    subjects = {r["subject"]["name"].lower() for r in healthy.report["results"]}
    assert {dc.fqdn for dc in rolled_out.dcs} | {u.dn.lower() for u in rolled_out.users} <= subjects
    hosts = {h.name for h in rolled_out.clients}
    assert hosts <= subjects, "every client host is checked"
    synced = healthy.result("host.last_sync", f"{rolled_out.client(0).name}/alice")
    assert synced["status"] == "pass" and "hours ago" in synced["message"]
    listed = {h["host"]: h for h in healthy.report["hosts"]["hosts"]}
    assert set(listed) == hosts
    assert {h["agent"] for h in listed.values()} == {f"credroam-agent {AGENT_VERSION}"}
    assert listed[rolled_out.client(0).name]["last_syncs"]["alice"] is not None
    junit = ET.parse(healthy.out / "report.junit.xml").getroot()
    assert len(junit.findall("./testsuite/testcase")) == len(healthy.report["results"])
    assert junit.get("failures") == "0" and junit.get("errors") == "0"


def test_check_mode_and_one_user_a_page_give_the_same_results(healthy, compliance):
    """The paged search really pages (three users over three pages), and --check, which the
    module supports by never writing, still writes the report files."""
    run = compliance("--check", "-e", "compliance_page_size=1")
    assert run.returncode == 0, run.output[-3000:]
    outcome = {(r["check"], r["subject"]["name"], r["status"]) for r in run.report["results"]}
    assert outcome == {
        (r["check"], r["subject"]["name"], r["status"]) for r in healthy.report["results"]
    }


def test_the_html_report_renders_in_headless_chromium_with_its_chart_and_no_console_error(
    healthy, tmp_path
):
    chromium = shutil.which("chromium")
    assert chromium, "Debian's chromium is needed (make deps installs it)"
    ARTIFACTS.mkdir(exist_ok=True)
    screenshot = ARTIFACTS / "compliance-report.png"
    screenshot.unlink(missing_ok=True)
    page = (healthy.out / "report.html").as_uri()
    common = [
        chromium,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--enable-logging=stderr",
        "--v=0",
        # Nothing may leave the machine, whatever the page asked for.
        "--host-resolver-rules=MAP * ~NOTFOUND",
        "--window-size=1200,1600",
    ]
    dom = subprocess.run(
        [*common, "--dump-dom", page], capture_output=True, text=True, timeout=120, check=True
    )
    shot = subprocess.run(
        [*common, f"--screenshot={screenshot}", page],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert '<svg id="token-chart"' in dom.stdout and 'class="bar"' in dom.stdout
    assert "PASSED" in dom.stdout
    console = [line for line in (dom.stderr + shot.stderr).splitlines() if ":CONSOLE" in line]
    assert console == []
    assert screenshot.stat().st_size > 10_000, "a real rendering, kept as a test artifact"


def test_the_console_check_itself_sees_a_console_error(tmp_path):
    """The harness above would notice: a page that logs an error shows up in the log."""
    page = tmp_path / "bad.html"
    page.write_text('<html><body><script>console.error("boom")</script></body></html>')
    done = subprocess.run(
        [
            "chromium",
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--enable-logging=stderr",
            "--v=0",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--dump-dom",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert any(":CONSOLE" in line and "boom" in line for line in done.stderr.splitlines())


# --- broken states: each caught by exactly its check ------------------------------------------
#
# The faults are planted together, a few to a run, and the run must fail exactly the union of
# their (check, subject) pairs, each message naming its own cause: so each fault is still caught
# by its own check and by no other (a fault seen by a second check adds a pair; one missed
# removes one). This holds because no two faults share a (check, subject) pair and none changes
# what another check reads: each lives in its own place (one DC's SYSVOL file or folder ACL,
# one user's values, one DC's schema, one host's agent files), and each check reads only its
# own. What changes what the checks can read (another account, check mode, paging) is tested
# on its own below. The threshold is judged per result (verdict.blocking counts them), so a
# run holding both high and medium faults could not show that medium ones pass the run: those
# have a run of their own.


@contextmanager
def gpt_version_changed(lab: Lab, dc: int) -> Iterator[None]:
    """The DC's GPT.INI version no longer equals the GPC's versionNumber (put back after)."""
    guid = roaming_gpo(lab.ldap_connection(), lab)["guid"]
    gpt = sysvol_dir(lab, dc) / guid / "GPT.INI"
    original = gpt.read_bytes()
    gpt.write_text(original.decode().replace("Version=", "Version=1"))
    try:
        yield
    finally:
        gpt.write_bytes(original)


@contextmanager
def folder_acl_drifted(lab: Lab, dc: int) -> Iterator[str]:
    """The GPO folder's ACL on the DC no longer matches the GPC; yields the GPO's GUID."""
    guid = roaming_gpo(lab.ldap_connection(), lab)["guid"]
    folder = str(sysvol_dir(lab, dc) / guid)
    original = lab.dc(dc).run("samba-tool", "ntacl", "get", "--as-sddl", folder).stdout.strip()
    lab.dc(dc).run("samba-tool", "ntacl", "set", "O:BAG:DUD:(A;OICI;FA;;;BA)", folder)
    try:
        yield guid
    finally:
        lab.dc(dc).run("samba-tool", "ntacl", "set", original, folder)


@pytest.fixture
def carol_and_bob(rolled_out: Lab) -> Iterator[tuple[Account, Account]]:
    """Two users to plant values on, cleared everywhere afterwards (alice is left alone: her
    logon on client1 is what host.last_sync judges)."""
    accounts = (rolled_out.user("carol"), rolled_out.user("bob"))
    yield accounts
    for account in accounts:
        clear_everywhere(rolled_out, account)


def token_value(account: Account, token: Token) -> bytes:
    return format_dn_binary(encode_token(token, READ_LIMITS), account.dn).encode()


def capi_key(identifier_seed: int, data: bytes) -> Token:
    """A native CAPI key token (type 1): credroam never maps these, so only what is checked
    about every value applies to it."""
    identifier = f"{identifier_seed:032x}_{uuid.UUID(int=identifier_seed)}"
    return Token(TokenType.CAPI_RSA_KEY, identifier, filetime_now(), TokenFlags(0), data)


def plant_oversize_token(lab: Lab, account: Account) -> None:
    oversize = capi_key(1, os.urandom(70_000))  # DIMSRoamingMaxTokenSize is 65535
    plant(lab, account, ACCOUNT_CREDENTIALS, token_value(account, oversize))


def plant_malformed_token(lab: Lab, account: Account) -> None:
    token = certificate_token(self_signed(account.name)[0], filetime_now())
    broken = bytearray(encode_token(token, READ_LIMITS))
    broken[-1] ^= 0xFF  # the data no longer matches the token's SHA-1
    plant(lab, account, ACCOUNT_CREDENTIALS, format_dn_binary(bytes(broken), account.dn).encode())


def plant_plaintext_key(lab: Lab, account: Account) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pkcs8 = key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    plant(lab, account, ACCOUNT_CREDENTIALS, token_value(account, capi_key(3, pkcs8)))


def drs_options(lab: Lab, dc: int, option: str) -> None:
    target = lab.dc(dc)
    target.run(
        "samba-tool",
        "drs",
        "options",
        target.name,
        f"--dsa-option={option}",
        f"--username={lab.admin.upn}",
        f"--password={lab.admin.password}",
    )


@contextmanager
def inbound_replication_paused(lab: Lab, dc: int) -> Iterator[None]:
    """The DC takes no replication in until the block is over; then it catches up at once."""
    drs_options(lab, dc, "+DISABLE_INBOUND_REPL")
    try:
        yield
    finally:
        drs_options(lab, dc, "-DISABLE_INBOUND_REPL")
        schema_nc = f"CN=Schema,CN=Configuration,{lab.base_dn}"
        lab.dc(dc).run(
            "samba-tool",
            "drs",
            "replicate",
            lab.dc(dc).name,
            lab.dc(0).name,
            schema_nc,
            f"--username={lab.admin.upn}",
            f"--password={lab.admin.password}",
        )


def attribute_added_on_dc1_only(lab: Lab) -> dict:
    """The rollout adds an attribute of a new name to the schema (schema objects cannot be
    deleted) while dc2 takes no replication in; returns the variables it ran with, which the
    compliance run must be given too (as in an inventory)."""
    suffix = uuid.uuid4()
    added = {
        "roaming_schema_extra_attributes": [
            {
                "name": f"credroamCheck{suffix.hex[:10]}",
                "syntax": "unicode-string",
                "oid_index": 10_000 + suffix.int % 1_000_000,
            }
        ],
        "roaming_schema_wait_for_replication": False,
    }
    playbook(lab, "playbooks/schema.yml", "-e", json.dumps(added))
    return added


OLD_AGENT = "0.0.9"


def installed_agent_files(host: ClientHost) -> tuple[str, str]:
    """The zipapp and install record the role installed on ``host``: the command it links is
    the zipapp, the record is VERSION beside it (roles/sync_agent/vars/main.yml)."""
    zipapp = host.ssh(f"readlink -e {COMMAND}").stdout.strip()
    assert zipapp.endswith("/credroam-agent.pyz"), zipapp
    return zipapp, f"{zipapp.rsplit('/', 1)[0]}/VERSION"


def read_host_file(host: ClientHost, path: str) -> bytes:
    argv = [*host.ssh_argv(), f"cat {path}"]
    return subprocess.run(argv, capture_output=True, check=True, timeout=60).stdout


def write_host_file(host: ClientHost, path: str, data: bytes, mode: str) -> None:
    """Replace ``path`` on ``host`` by a temporary file renamed over it, as the role's copy."""
    command = f"cat > {path}.new && chmod {mode} {path}.new && mv {path}.new {path}"
    argv = [*host.ssh_argv(), command]
    subprocess.run(argv, input=data, capture_output=True, check=True, timeout=60)


def install_record(version_line: str, zipapp: bytes) -> bytes:
    """The install record the role writes (task "Record the installed version")."""
    return f"{version_line}\nsha256 {hashlib.sha256(zipapp).hexdigest()}\n".encode()


@pytest.fixture
def stale_agent(rolled_out: Lab, tmp_path: Path) -> Iterator[str]:
    """A real older build (0.0.9) of the agent on client3, in the role's place with the
    record the role writes for it; the files the rollout installed are put back byte for byte
    afterwards. (Installing it with playbooks/agent.yml and back costs two runs of 40 s;
    host.agent judges only these two files and what the zipapp reports, and the record's form
    is checked first against the one the role wrote for the current build.)"""
    tree = tmp_path / "old"
    skip = shutil.ignore_patterns("__pycache__")
    shutil.copytree(REPO / "agent", tree / "agent", ignore=skip)
    shutil.copytree(REPO / "module_utils/credroam", tree / "module_utils/credroam", ignore=skip)
    init = tree / "agent/credroam_agent/__init__.py"
    init.write_text(init.read_text().replace(f'"{AGENT_VERSION}"', f'"{OLD_AGENT}"'))
    pyz = tmp_path / f"credroam-agent-{OLD_AGENT}.pyz"
    python = str(REPO / ".venv/bin/python")
    subprocess.run([python, str(tree / "agent/build_zipapp.py"), str(pyz)], check=True)
    old_version = subprocess.run(
        [python, str(pyz), "--version"], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert old_version == f"credroam-agent {OLD_AGENT}"
    host = rolled_out.client(2)
    zipapp_path, record_path = installed_agent_files(host)
    zipapp, record = read_host_file(host, zipapp_path), read_host_file(host, record_path)
    assert record == install_record(f"credroam-agent {AGENT_VERSION}", zipapp), "the role's form"
    old = pyz.read_bytes()
    write_host_file(host, zipapp_path, old, "0755")
    write_host_file(host, record_path, install_record(old_version, old), "0644")
    try:
        yield host.name
    finally:
        write_host_file(host, zipapp_path, zipapp, "0755")
        write_host_file(host, record_path, record, "0644")


def test_high_and_critical_faults_together_each_fail_only_their_own_check_and_the_run(
    rolled_out, carol_and_bob, stale_agent, compliance
):
    """Over the limits (carol), a plaintext key (bob), GPO versions out of sync on dc2, an
    attribute missing on dc2 and a stale agent on client3, in one run. dc2 stops taking
    replication in only after the users' values reached it, so what it lacks is the new
    attribute alone (the GPT.INI is a SYSVOL file, which DRS does not carry)."""
    lab = rolled_out
    carol, bob = carol_and_bob
    dc2 = lab.dc(1).fqdn
    plant_oversize_token(lab, carol)
    plant_plaintext_key(lab, bob)
    replicate(lab, 0, 1)
    with inbound_replication_paused(lab, 1), gpt_version_changed(lab, 1):
        added = attribute_added_on_dc1_only(lab)
        run = compliance("-e", json.dumps(added))
    expected = {
        "user.limits": (carol.dn, "over DIMSRoamingMaxTokenSize 65535"),
        "user.plaintext_keys": (
            bob.dn,
            "PKCS#8 DER private key in mspkiaccountcredentials value 0, hex-encoded",
        ),
        "gpo.version": (dc2, "in AD"),
        "schema.present": (dc2, f"lacks {added['roaming_schema_extra_attributes'][0]['name']}"),
        "host.agent": (stale_agent, f"agent {OLD_AGENT} on {stale_agent}, older than the wanted"),
    }
    assert run.failing() == {(check, subject) for check, (subject, _) in expected.items()}
    for check, (subject, cause) in expected.items():
        assert cause in run.result(check, subject)["message"], check
    listed = {h["host"]: h["agent"] for h in run.report["hosts"]["hosts"]}
    assert listed[stale_agent] == f"credroam-agent {OLD_AGENT}"
    assert run.report["verdict"]["blocking"] == len(expected), "each is high or critical"
    assert run.returncode != 0


def test_medium_faults_fail_only_their_own_check_and_block_only_at_medium(
    rolled_out, carol_and_bob, compliance
):
    """A malformed token (carol) and ACL drift on dc1's GPO folder, which Samba's own `gpo
    aclcheck` judges the same: medium, so they fail the run only at compliance_fail_on_severity
    medium (both runs see the same state)."""
    lab = rolled_out
    carol, _ = carol_and_bob
    guid = roaming_gpo(lab.ldap_connection(), lab)["guid"]
    assert guid not in samba_tool(lab, "aclcheck"), "aclcheck agrees the healthy folder is right"
    plant_malformed_token(lab, carol)
    replicate(lab, 0, 1)
    with folder_acl_drifted(lab, 0):
        run = compliance()
        aclcheck = samba_tool(lab, "aclcheck")
        at_medium = compliance("-e", "compliance_fail_on_severity=medium")
    expected = {("user.tokens", carol.dn), ("gpo.acl", lab.dc(0).fqdn)}
    assert run.failing() == expected
    assert "SHA-1" in run.result("user.tokens", carol.dn)["message"]
    assert guid in aclcheck, "and aclcheck names the same GPO"
    assert run.returncode == 0, "medium is below the default threshold (high)"
    assert at_medium.failing() == expected
    assert at_medium.report["verdict"]["blocking"] == len(expected), "each blocks at medium"
    assert at_medium.returncode != 0


# --- who runs it --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def audit_account(rolled_out: Lab) -> Iterator[Account]:
    """A plain domain user, then granted Read Property and Control Access on the
    Private-Information property set of users under the roaming OU (the delegated right)."""
    lab = rolled_out
    dc = lab.dc(0)
    dc.run("samba-tool", "user", "delete", AUDIT, check=False)
    dc.run("samba-tool", "user", "create", AUDIT, AUDIT_PASSWORD)
    upn = f"{AUDIT}@{lab.realm.lower()}"
    account = Account(AUDIT, upn, f"CN={AUDIT},CN=Users,{lab.base_dn}", AUDIT_PASSWORD)
    for index in range(1, len(lab.dcs)):
        replicate(lab, 0, index)
    yield account
    dc.run("samba-tool", "user", "delete", AUDIT, check=False)


def as_account(account: Account) -> tuple[str, ...]:
    extra = {
        "credroam_compliance_bind_user": account.upn,
        "credroam_compliance_bind_password": account.password,
    }
    return ("-e", json.dumps(extra))


# These two tests are about the delegated right on confidential attributes, so they leave out
# the SYSVOL checks: whether a plain account may read a GPO's files depends on the file ACLs
# ad_gpo and the lab set (on main at the time of writing, a plain account is denied GPT.INI
# that ad_gpo wrote on dc1), and the run reports such a denial as "could not read" either way.
SYSVOL_CHECKS = ("gpo.version", "gpo.registry_pol", "gpo.settings", "gpo.acl")
NOT_SYSVOL = json.dumps({"compliance_checks": [c for c in CHECKS if c not in SYSVOL_CHECKS]})


def test_an_account_without_the_delegated_right_reports_users_unreadable_not_passed(
    rolled_out, audit_account, compliance
):
    run = compliance(*as_account(audit_account), "-e", NOT_SYSVOL)
    unread = {(u["check"], u["subject"]["name"].lower()) for u in run.report["unreadable"]}
    per_user = {c for c in run.report["checks"] if c.startswith(("user.", "replication."))}
    users = {u.dn.lower() for u in rolled_out.users}
    assert unread == {(c, u) for c in per_user for u in users}, "schema and GPO: readable"
    failing = {(check, subject.lower()) for check, subject in run.failing()}
    assert failing == unread, "nothing unread is passed, nothing read fails"
    message = next(u["message"] for u in run.report["unreadable"] if u["check"] == "user.limits")
    assert "Control Access on the Private-Information property set" in message
    assert run.returncode != 0, "what could not be read is not a pass"


@pytest.fixture
def delegated(rolled_out: Lab, audit_account: Account) -> Iterator[Account]:
    """The delegated right, as README's Compliance section gives it: an inheritable ACE on the
    roaming OU; the OU's DACL is put back as it was afterwards."""
    lab = rolled_out
    admin = lab.ldap_connection()
    dacl_only = security_descriptor_control(sdflags=0x04)
    admin.search(
        lab.roaming_ou_dn,
        "(objectClass=*)",
        ldap3.BASE,
        attributes=["nTSecurityDescriptor"],
        controls=dacl_only,
    )
    original = admin.response[0]["raw_attributes"]["nTSecurityDescriptor"][0]
    admin.search(audit_account.dn, "(objectClass=*)", ldap3.BASE, attributes=["objectSid"])
    account_sid = format_sid(admin.response[0]["raw_attributes"]["objectSid"][0])
    ace = f"(OA;CIIO;RPCR;{PRIVATE_INFORMATION};{USER_CLASS};{account_sid})"
    lab.dc(0).run(
        "samba-tool",
        "dsacl",
        "set",
        f"--objectdn={lab.roaming_ou_dn}",
        f"--sddl={ace}",
        f"-U{lab.admin.upn}%{lab.admin.password}",
        "-H",
        f"ldap://{lab.dc(0).ip}",
    )
    for index in range(1, len(lab.dcs)):
        replicate(lab, 0, index)
    try:
        yield audit_account
    finally:
        admin.modify(
            lab.roaming_ou_dn,
            {"nTSecurityDescriptor": [(ldap3.MODIFY_REPLACE, [original])]},
            controls=dacl_only,
        )
        admin.unbind()
        for index in range(1, len(lab.dcs)):
            replicate(lab, 0, index)


def test_a_read_only_account_with_the_delegated_right_passes(delegated, compliance):
    run = compliance(*as_account(delegated), "-e", NOT_SYSVOL)
    assert run.failing() == set(), run.report["unreadable"][:3]
    assert {r["check"] for r in run.report["results"]} == set(CHECKS) - set(SYSVOL_CHECKS)
    assert run.returncode == 0
