"""ad_gpo against the lab's two DCs, run the real way (ansible-playbook), checked with Samba's
own tools: its Registry.pol parser, `samba-tool gpo show/getlink/listall`, `samba-tool gpo
aclcheck` and `samba-tool ntacl sysvolcheck` (never after a `samba-tool ntacl sysvolreset`).

Most tests in this file form one scenario on one GPO and run in file order: create, rerun,
change, check mode, link, security filtering, ACL drift, version mismatch, a lagging SYSVOL,
removal. The GPO's folder is kept on both DCs' SYSVOLs (sysvol_servers). The last tests make
GPOs of their own that fail: before any write (nothing is left), and half-way (the next run
completes it).
"""

from __future__ import annotations

import configparser
import json
import shutil
import subprocess
import uuid
from pathlib import Path

import ldap3
import pytest
import yaml

from credroam.gpo.model import GpoVersion
from credroam.gpo.settings import CREDENTIAL_ROAMING
from tests.lab import REPO, Lab

pytestmark = pytest.mark.integration

samba_ndr = pytest.importorskip("samba.ndr", reason="Samba's parser is the independent reader")
from ldap3.protocol.formatters.formatters import format_sid
from ldap3.protocol.microsoft import security_descriptor_control
from ldap3.utils.conv import escape_filter_chars
from samba.dcerpc import preg as samba_preg
from samba.dcerpc import security
from samba.ntacls import dsacl2fsacl

KEY = CREDENTIAL_ROAMING.key
ROAMING = {"enabled": True, "tombstone_days": 60, "max_tokens": 2000, "max_token_size": 65535}
EXTRA = [{"key": "HKCU\\Software\\Policies\\credroam", "value": "Note", "type": "REG_SZ",
          "data": "managed by credroam"}]  # fmt: skip

PLAYBOOK = """
- hosts: localhost
  connection: local
  gather_facts: false
  vars:
    ansible_python_interpreter: "{{ ansible_playbook_python }}"
  tasks:
    - name: MODULE under test
      MODULE: "{{ gpo_args }}"
      register: gpo_result
      ignore_errors: true  # the test decides whether a failure was expected
    - name: Hand the result to the test
      ansible.builtin.copy:
        content: "{{ gpo_result | to_json }}"
        dest: "{{ result_file }}"
        mode: "0600"
      check_mode: false
"""


class GpoRunner:
    """Runs one module (ad_gpo by default) in a playbook against the lab; its result."""

    def __init__(self, lab: Lab, workdir: Path, module: str = "ad_gpo") -> None:
        self.lab = lab
        self.workdir = workdir
        (workdir / "play.yml").write_text(PLAYBOOK.replace("MODULE", module))
        dc = lab.dc(0)
        self.connection = {
            "server": dc.ip,
            "tls_server_name": dc.fqdn,
            "ca_cert": lab.ca_cert,
            "bind_user": lab.admin.upn,
            "bind_password": lab.admin.password,
            "sysvol_servers": [d.ip for d in lab.dcs],
        }

    def __call__(self, *flags: str, expect_failure: bool = False, **args) -> dict:
        result_file = self.workdir / "result.json"
        result_file.unlink(missing_ok=True)
        extra = {"gpo_args": {**self.connection, **args}, "result_file": str(result_file)}
        (self.workdir / "vars.json").write_text(json.dumps(extra))
        run = subprocess.run(
            [str(REPO / ".venv/bin/ansible-playbook"), str(self.workdir / "play.yml"),
             "-e", f"@{self.workdir / 'vars.json'}", *flags],
            cwd=REPO, capture_output=True, text=True, timeout=180,
        )  # fmt: skip
        assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
        result = json.loads(result_file.read_text())
        assert bool(result.get("failed")) == expect_failure, result.get("msg")
        return result

    def fail(self, **args) -> dict:
        """Run the module expecting it to fail; its result (msg, changed, operations...)."""
        return self(expect_failure=True, **args)


@pytest.fixture(scope="module")
def gpo(lab: Lab, tmp_path_factory) -> GpoRunner:
    return GpoRunner(lab, tmp_path_factory.mktemp("gpo"))


@pytest.fixture(scope="module")
def name() -> str:
    return f"credroam test {uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def state() -> dict:
    return {}


def sysvol_dir(lab: Lab, dc: int = 0) -> Path:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.read(lab.dc(dc).smb_conf)
    return Path(parser["sysvol"]["path"]) / lab.realm.lower() / "Policies"


def gpt_version(lab: Lab, guid: str, dc: int = 0) -> GpoVersion:
    text = (sysvol_dir(lab, dc) / guid / "GPT.INI").read_text()
    return GpoVersion.from_number(int(text.split("Version=")[1].split()[0]))


def ad_version(lab: Lab, guid: str) -> GpoVersion:
    conn = lab.ldap_connection()
    try:
        dn = f"CN={guid},CN=Policies,CN=System,{lab.base_dn}"
        conn.search(dn, "(objectClass=*)", ldap3.BASE, attributes=["versionNumber"])
        return GpoVersion.from_number(int(conn.response[0]["raw_attributes"]["versionNumber"][0]))
    finally:
        conn.unbind()


def samba_registry(lab: Lab, guid: str, dc: int = 0) -> dict[tuple[str, str], tuple[int, object]]:
    blob = (sysvol_dir(lab, dc) / guid / "User" / "Registry.pol").read_bytes()
    parsed = samba_ndr.ndr_unpack(samba_preg.file, blob)
    return {(e.keyname, e.valuename): (e.type, e.data) for e in parsed.entries}


def samba_tool(lab: Lab, *argv: str, dc: int = 0) -> str:
    host = lab.dc(dc)
    run = host.run(
        "samba-tool", "gpo", *argv, "-H", f"ldap://{host.fqdn}",
        f"-U{lab.admin.name}%{lab.admin.password}", check=False,
    )  # fmt: skip
    return run.stdout + run.stderr


def folder_acl_as_samba_expects(lab: Lab, guid: str) -> str:
    """What aclcheck wants on the GPO folder: Samba's dsacl2fsacl of the GPC's descriptor."""
    conn = lab.ldap_connection()
    try:
        conn.search(lab.base_dn, "(objectClass=*)", ldap3.BASE, attributes=["objectSid"])
        domain = security.dom_sid(format_sid(
            conn.response[0]["raw_attributes"]["objectSid"][0]))  # fmt: skip
        dn = f"CN={guid},CN=Policies,CN=System,{lab.base_dn}"
        conn.search(dn, "(objectClass=*)", ldap3.BASE, attributes=["nTSecurityDescriptor"],
                    controls=security_descriptor_control(sdflags=0x07))  # fmt: skip
        raw = conn.response[0]["raw_attributes"]["nTSecurityDescriptor"][0]
    finally:
        conn.unbind()
    return dsacl2fsacl(samba_ndr.ndr_unpack(security.descriptor, raw).as_sddl(domain), domain)


def assert_acls_clean(lab: Lab, guid: str) -> None:
    """`samba-tool gpo aclcheck` and `samba-tool ntacl sysvolcheck` on dc1 find nothing (they
    check every GPO, and the lab's default GPOs exist on dc1's SYSVOL only); on every DC the
    folder and everything in it carry the NT ACL those checks compare with, computed by
    Samba's own dsacl2fsacl."""
    assert samba_tool(lab, "aclcheck").strip() == ""
    check = lab.dc(0).run("samba-tool", "ntacl", "sysvolcheck", check=False)
    assert check.returncode == 0, check.stdout + check.stderr
    expected = folder_acl_as_samba_expects(lab, guid)
    for index, dc in enumerate(lab.dcs):
        folder = sysvol_dir(lab, index) / guid
        for path in [folder, *sorted(folder.rglob("*"))]:
            found = dc.run("samba-tool", "ntacl", "get", "--as-sddl", str(path)).stdout.strip()
            assert found == expected, f"NT ACL of {path.relative_to(folder.parent)} on {dc.name}"


def assert_sysvols_agree_with_the_gpc(lab: Lab, guid: str, version: GpoVersion) -> None:
    assert ad_version(lab, guid) == version
    for index in range(len(lab.dcs)):
        assert gpt_version(lab, guid, index) == version, f"GPT.INI on dc{index + 1}"
    assert samba_registry(lab, guid, 1) == samba_registry(lab, guid, 0)


def test_create_is_changed_and_samba_reads_what_was_asked(lab, gpo, name, state):
    result = gpo(name=name, credential_roaming=ROAMING, registry_values=EXTRA)
    assert result["changed"]
    guid = state["guid"] = result["guid"]
    assert_sysvols_agree_with_the_gpc(lab, guid, GpoVersion(1, 0))
    assert result["sysvol_versions"] == {dc.ip: 65536 for dc in lab.dcs}
    assert samba_registry(lab, guid) == {
        (KEY, "DIMSRoaming"): (4, 1),
        (KEY, "DIMSRoamingTombstoneDays"): (4, 60),
        (KEY, "DIMSRoamingMaxNumTokens"): (4, 2000),
        (KEY, "DIMSRoamingMaxTokenSize"): (4, 65535),
        ("Software\\Policies\\credroam", "Note"): (1, "managed by credroam"),
    }
    shown = samba_tool(lab, "show", guid)
    assert f"display name : {name}" in shown
    assert "version      : 65536" in shown


def test_created_folders_carry_the_gpc_acl_on_every_dc(lab, gpo, name, state):
    assert_acls_clean(lab, state["guid"])
    for index in range(len(lab.dcs)):
        sysvol = sysvol_dir(lab, index) / state["guid"]
        acl = lab.dc(index).run("samba-tool", "ntacl", "get", "--as-sddl", str(sysvol)).stdout
        assert "(OA;OICI;;edacfd8f-ffb3-11d1-b41d-00a0c968f939;;AU)" in acl
        user = lab.dc(index).run("samba-tool", "ntacl", "get", "--as-sddl", str(sysvol / "User"))
        assert "(A;OICI;0x001200a9;;;AU)" in user.stdout, "User inherits from the GPO folder"


def test_rerun_with_the_same_settings_is_unchanged(lab, gpo, name, state):
    result = gpo(name=name, credential_roaming=ROAMING, registry_values=EXTRA)
    assert not result["changed"]
    assert result["operations"] == []
    assert ad_version(lab, state["guid"]) == GpoVersion(1, 0)


def test_check_mode_changes_nothing_and_diff_shows_the_values(lab, gpo, name, state):
    before = samba_registry(lab, state["guid"])
    result = gpo("--check", "--diff", name=name,
                 credential_roaming={**ROAMING, "tombstone_days": 90})  # fmt: skip
    assert result["changed"]
    diff = result["diff"]
    old = {v["value"]: v["data"] for v in diff["before"]["registry_values"]}
    new = {v["value"]: v["data"] for v in diff["after"]["registry_values"]}
    assert (old["DIMSRoamingTombstoneDays"], new["DIMSRoamingTombstoneDays"]) == (60, 90)
    assert diff["after"]["version"] == {
        "ad": 131072, "sysvol": {dc.ip: 131072 for dc in lab.dcs}
    }  # fmt: skip
    assert samba_registry(lab, state["guid"]) == before
    assert ad_version(lab, state["guid"]) == gpt_version(lab, state["guid"]) == GpoVersion(1, 0)


def test_changing_one_value_bumps_the_user_version_in_both_places(lab, gpo, name, state):
    result = gpo(name=name, credential_roaming={**ROAMING, "tombstone_days": 90})
    assert result["changed"]
    guid = state["guid"]
    assert_sysvols_agree_with_the_gpc(lab, guid, GpoVersion(2, 0))
    assert samba_registry(lab, guid, 1)[(KEY, "DIMSRoamingTombstoneDays")] == (4, 90)
    assert (
        "Software\\Policies\\credroam",
        "Note",
    ) in samba_registry(lab, guid), "values not named in the run are kept"


def test_out_of_range_value_fails_and_writes_nothing(lab, gpo, name, state):
    with pytest.raises(AssertionError, match="between 1 and 3650"):
        gpo(name=name, credential_roaming={"tombstone_days": 4000})
    assert ad_version(lab, state["guid"]) == GpoVersion(2, 0)


def test_link_to_the_roaming_ou_agrees_with_samba_tool(lab, gpo, name, state):
    # Other GPOs may be linked to the roaming OU already (the rollout's own): ask for the top.
    links = [{"target": lab.roaming_ou_dn, "enforced": True, "order": 1}]
    result = gpo(name=name, links=links)
    assert result["changed"]
    assert result["links"] == {
        lab.roaming_ou_dn: {"linked": True, "enabled": True, "enforced": True, "order": 1}
    }
    listed = samba_tool(lab, "getlink", lab.roaming_ou_dn)
    assert state["guid"] in listed and "GPLINK_OPT_ENFORCE" in listed
    assert not gpo(name=name, links=links)["changed"]
    assert ad_version(lab, state["guid"]) == GpoVersion(2, 0), "links are not content"


def test_security_filtering_gives_apply_to_the_group_only(lab, gpo, name, state):
    dn = f"CN={state['guid']},CN=Policies,CN=System,{lab.base_dn}"
    result = gpo(name=name, security_filtering=["Domain Users"])
    assert result["changed"]
    acl = lab.dc(0).run(
        "samba-tool", "dsacl", "get", f"--objectdn={dn}", "-H", f"ldap://{lab.dc(0).fqdn}",
        f"-U{lab.admin.name}%{lab.admin.password}",
    ).stdout  # fmt: skip
    apply_right = "(OA;CI;CR;edacfd8f-ffb3-11d1-b41d-00a0c968f939;;"
    assert apply_right + "DU)" in acl
    assert apply_right + "AU)" not in acl
    assert "(A;CI;RPLCLORC;;;AU)" in acl, "Authenticated Users keep Read"
    guid = state["guid"]
    set_acl = {(op["server"], op["target"]) for op in result["operations"]
               if op["kind"] == "smb_set_acl"}  # fmt: skip
    inside = [guid, f"{guid}\\GPT.INI", f"{guid}\\Machine", f"{guid}\\User",
              f"{guid}\\User\\Registry.pol"]  # fmt: skip
    assert set_acl == {(dc.ip, path) for dc in lab.dcs for path in inside}, (
        "the new ACL reaches the files already in the folder"
    )
    assert_acls_clean(lab, guid)
    assert not gpo(name=name, security_filtering=["Domain Users"])["changed"]


def test_a_changed_folder_acl_is_reported_in_check_mode_and_put_back(lab, gpo, name, state):
    folder = str(sysvol_dir(lab, 1) / state["guid"])
    lab.dc(1).run("samba-tool", "ntacl", "set", "O:BAG:DUD:(A;OICI;FA;;;BA)", folder)
    checked = gpo("--check", name=name)
    assert checked["changed"]
    assert [(op["kind"], op["server"]) for op in checked["operations"]] == [
        ("smb_set_acl", lab.dc(1).ip)
    ]
    assert (
        "0x001200a9;;;AU"
        not in lab.dc(1).run("samba-tool", "ntacl", "get", "--as-sddl", folder).stdout
    ), "check mode wrote nothing"
    assert gpo(name=name)["changed"]
    assert_acls_clean(lab, state["guid"])
    assert not gpo(name=name)["changed"]


def test_version_mismatch_is_reported_then_repaired(lab, gpo, name, state):
    guid = state["guid"]
    gpt = sysvol_dir(lab) / guid / "GPT.INI"
    gpt.write_text(gpt.read_text().replace("Version=131072", "Version=65536"))
    reported = gpo(name=name)
    assert not reported["changed"]
    assert reported["version_mismatch"] is True
    assert gpt_version(lab, guid) == GpoVersion(1, 0)
    repaired = gpo(name=name, repair_version_mismatch=True)
    assert repaired["changed"] and not repaired["version_mismatch"]
    assert_sysvols_agree_with_the_gpc(lab, guid, GpoVersion(2, 0))


def test_a_lagging_sysvol_is_reported_then_repaired(lab, gpo, name, state):
    guid, dc2 = state["guid"], lab.dc(1)
    old = (sysvol_dir(lab, 1) / guid / "User" / "Registry.pol").read_bytes()
    gpo(name=name, sysvol_servers=[lab.dc(0).ip],
        credential_roaming={**ROAMING, "tombstone_days": 120})  # fmt: skip
    assert (sysvol_dir(lab, 1) / guid / "User" / "Registry.pol").read_bytes() == old
    assert gpt_version(lab, guid, 1) == GpoVersion(2, 0), "dc2 was left behind"

    reported = gpo(name=name)
    assert not reported["changed"]
    assert reported["version_mismatch"] and reported["lagging_sysvols"] == [dc2.ip]
    assert any(dc2.ip in warning for warning in reported.get("warnings", []))

    repaired = gpo(name=name, repair_version_mismatch=True)
    assert repaired["changed"] and repaired["lagging_sysvols"] == [dc2.ip]
    written = {(op["kind"], op["target"]) for op in repaired["operations"]
               if op.get("server") == dc2.ip}  # fmt: skip
    assert written == {("smb_write", f"{guid}\\User\\Registry.pol"),
                       ("smb_write", f"{guid}\\GPT.INI")}  # fmt: skip
    assert all(op.get("server") != lab.dc(0).ip for op in repaired["operations"])
    assert_sysvols_agree_with_the_gpc(lab, guid, GpoVersion(3, 0))
    assert samba_registry(lab, guid, 1)[(KEY, "DIMSRoamingTombstoneDays")] == (4, 120)
    assert not gpo(name=name)["changed"]


def test_a_missing_folder_on_one_dc_is_recreated_with_its_acl(lab, gpo, name, state):
    guid = state["guid"]
    shutil.rmtree(sysvol_dir(lab, 1) / guid)
    reported = gpo(name=name)
    assert reported["version_mismatch"] and not reported["changed"]
    assert gpo(name=name, repair_version_mismatch=True)["changed"]
    assert_sysvols_agree_with_the_gpc(lab, guid, GpoVersion(3, 0))
    assert_acls_clean(lab, state["guid"])


def test_absent_removes_container_folder_and_links(lab, gpo, name, state):
    guid = state["guid"]
    result = gpo(name=name, state="absent")
    assert result["changed"]
    assert not (sysvol_dir(lab, 0) / guid).exists()
    assert not (sysvol_dir(lab, 1) / guid).exists()
    assert guid not in samba_tool(lab, "getlink", lab.roaming_ou_dn)
    assert guid not in samba_tool(lab, "listall")
    conn = lab.ldap_connection()
    try:
        conn.search(f"CN=Policies,CN=System,{lab.base_dn}", f"(cn={guid})", ldap3.SUBTREE)
        assert conn.response == [] or all(r["type"] != "searchResEntry" for r in conn.response)
    finally:
        conn.unbind()
    assert not gpo(name=name, state="absent")["changed"]


# --- runs that fail: plan first, so a mistake writes nothing; a failed write is completed ----

ROLE_DEFAULTS = yaml.safe_load((REPO / "roles/roaming_gpo/defaults/main.yml").read_text())


def gpo_folders(lab: Lab) -> list[set[str]]:
    return [{p.name for p in sysvol_dir(lab, i).iterdir()} for i in range(len(lab.dcs))]


def gpcs_named(lab: Lab, display_name: str) -> list[str]:
    conn = lab.ldap_connection()
    try:
        flt = f"(displayName={escape_filter_chars(display_name)})"
        conn.search(f"CN=Policies,CN=System,{lab.base_dn}", flt, ldap3.SUBTREE)
        return [r["dn"] for r in conn.response if r["type"] == "searchResEntry"]
    finally:
        conn.unbind()


@pytest.mark.parametrize(
    ("mistake", "args", "named"),
    [
        # Loopback, where nothing listens on 445: the second SYSVOL cannot be reached.
        ("unreachable SYSVOL", {"sysvol_servers": ["DC1", "127.0.0.1"]}, "127.0.0.1"),
        ("mistyped group", {"security_filtering": ["Domain Users", "Domian Users"]},
         "'Domian Users'"),
        ("mistyped link target", {"links": [{"target": "ROAMING_OU"},
                                            {"target": "OU=RoamingUsres,BASE"}]},
         "OU=RoamingUsres"),
    ],
)  # fmt: skip
def test_a_mistake_fails_a_new_gpo_before_anything_is_written(lab, gpo, mistake, args, named):
    text = json.dumps(args).replace("DC1", lab.dc(0).ip).replace("ROAMING_OU", lab.roaming_ou_dn)
    args = json.loads(text.replace("BASE", lab.base_dn))
    name = f"credroam {mistake} {uuid.uuid4().hex[:8]}"
    folders = gpo_folders(lab)
    failed = gpo.fail(name=name, credential_roaming=ROAMING, **args)
    assert named in failed["msg"] and "nothing was written" in failed["msg"]
    assert failed["changed"] is False and failed["operations"] == []
    assert gpcs_named(lab, name) == []
    assert gpo_folders(lab) == folders


def test_a_write_failing_half_way_is_reported_and_the_next_run_completes_the_gpo(lab, gpo):
    name = f"credroam half-made {uuid.uuid4().hex[:8]}"
    dc1, dc2 = lab.dc(0), lab.dc(1)
    policies_on_dc2 = sysvol_dir(lab, 1)
    # Planning reads dc2's SYSVOL fine; creating the GPO's folder there then fails.
    subprocess.run(["chattr", "+i", str(policies_on_dc2)], check=True)
    try:
        failed = gpo.fail(name=name, credential_roaming=ROAMING)
    finally:
        subprocess.run(["chattr", "-i", str(policies_on_dc2)], check=True)
    assert failed["changed"] is True
    done = [(op["kind"], op.get("server")) for op in failed["operations"]]
    assert done[:3] == [("ldap_add", None)] * 3 and ("smb_write", dc1.ip) in done
    assert all(server != dc2.ip for _, server in done)
    left = failed["operations_left"]
    assert (left[0]["kind"], left[0]["server"]) == ("smb_mkdir", dc2.ip)
    assert left[-1]["kind"] == "ldap_modify", "the version number comes last"
    assert "Run again to complete the GPO" in failed["msg"]
    (dn,) = gpcs_named(lab, name)
    guid = dn.split(",")[0].split("=")[1]
    assert ad_version(lab, guid) == GpoVersion(0, 0)

    # The role's defaults repair what the failed run left.
    repair = ROLE_DEFAULTS["roaming_gpo_repair_version_mismatch"]
    completed = gpo(name=name, credential_roaming=ROAMING, repair_version_mismatch=repair)
    assert completed["changed"] and not completed["version_mismatch"]
    assert_sysvols_agree_with_the_gpc(lab, guid, GpoVersion(1, 0))
    assert_acls_clean(lab, guid)
    assert not gpo(name=name, credential_roaming=ROAMING)["changed"]
    assert gpo(name=name, state="absent")["changed"]
