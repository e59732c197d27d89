"""ad_gpo_info without a DC: problems found on each SYSVOL copy, and that it never writes.

The directory and the SYSVOLs are small fakes answering the reads GpoReader makes; descriptors
are built with Samba's own SDDL codec, and the expected folder ACL with Samba's dsacl2fsacl.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

pytest.importorskip("ansible", reason="a module test: needs Ansible (.venv/bin/pytest runs it)")

import ad_gpo_info
import ansible.module_utils.credroam_sysvol_ansible as sysvol_glue
from ansible.module_utils.testing import patch_module_args

from credroam.connection import RootDse
from credroam.gpo import preg
from credroam.gpo.engine import GptState, gpt_problems
from credroam.gpo.model import (
    REGISTRY_CSE,
    REGISTRY_TOOL_USER,
    GpoVersion,
    add_extension_names,
    update_gpt_ini,
)
from credroam.gpo.secdesc import SecurityDescriptor, gpt_folder_descriptor
from credroam.gpo.settings import CREDENTIAL_ROAMING

samba_ndr = pytest.importorskip("samba.ndr", reason="python3-samba is the independent codec")
from samba.dcerpc import security
from samba.ntacls import dsacl2fsacl

DOMAIN_DN = "DC=lab,DC=example"
DOMAIN_SID = "S-1-5-21-526654454-889184608-1465157838"
GUID = "{6C1F5E6B-9B7E-4E0F-8E7A-1E4F8A3D2C10}"
GPC_DN = f"CN={GUID},CN=Policies,CN=System,{DOMAIN_DN}"
OU = f"OU=RoamingUsers,{DOMAIN_DN}"
GPC_SDDL = (
    "O:DAG:DAD:P(A;CI;RPWPCCDCLCLORCWOWDSDDTSW;;;DA)(A;CIIO;RPWPCCDCLCLORCWOWDSDDTSW;;;CO)"
    "(A;CI;RPLCLORC;;;AU)(A;CI;RPLCLORC;;;DU)(OA;CI;CR;edacfd8f-ffb3-11d1-b41d-00a0c968f939;;DU)"
)
V2 = GpoVersion(2, 0)
EXTENSION_NAMES = add_extension_names(None, REGISTRY_CSE, REGISTRY_TOOL_USER)
ENTRIES = [preg.make_entry(CREDENTIAL_ROAMING.key, "DIMSRoaming", "REG_DWORD", 1)]
OTHER = [preg.make_entry(CREDENTIAL_ROAMING.key, "DIMSRoaming", "REG_DWORD", 0)]


def sd_from_sddl(sddl: str) -> bytes:
    return samba_ndr.ndr_pack(security.descriptor.from_sddl(sddl, security.dom_sid(DOMAIN_SID)))


GPC_SD = sd_from_sddl(GPC_SDDL)
FOLDER_SD = sd_from_sddl(dsacl2fsacl(GPC_SDDL, security.dom_sid(DOMAIN_SID)))
DRIFTED_SD = sd_from_sddl("O:BAG:DUD:(A;OICI;0x001f01ff;;;BA)(A;OICI;0x001200a9;;;AU)")


class FakeDirectory:
    """The GPC with its User and Machine children, its descriptor and one OU linking it;
    records anything but a search."""

    def __init__(self) -> None:
        self.result: dict[str, Any] = {"result": 0}
        self.response: list[dict[str, Any]] = []
        self.writes: list[str] = []

    def search(self, base, flt, search_scope=None, attributes=None, controls=None):
        self.result, self.response = {"result": 0}, []
        if attributes == ["nTSecurityDescriptor"]:
            entry = {"dn": base, "attributes": {}, "raw_attributes": {attributes[0]: [GPC_SD]}}
            self.response = [{"type": "searchResEntry", **entry}]
        elif "groupPolicyContainer" in flt:
            attributes = {
                "displayName": ["Credential Roaming"],
                "versionNumber": [V2.number],
                "gPCUserExtensionNames": [EXTENSION_NAMES],
            }
            self.response = [{"type": "searchResEntry", "dn": GPC_DN, "attributes": attributes}]
        elif flt == "(objectClass=container)" and base == GPC_DN:
            self.response = [
                {"type": "searchResEntry", "dn": f"CN={cn},{GPC_DN}", "attributes": {"cn": [cn]}}
                for cn in ("User", "Machine")
            ]
        elif "gPLink" in flt and base == DOMAIN_DN:
            link = f"[LDAP://cn={GUID},cn=policies,cn=system,{DOMAIN_DN};2]"
            self.response = [{"type": "searchResEntry", "dn": OU, "attributes": {"gPLink": [link]}}]

    def add(self, *args, **kwargs):
        self.writes.append("add")

    def modify(self, *args, **kwargs):
        self.writes.append("modify")

    def delete(self, *args, **kwargs):
        self.writes.append("delete")

    def unbind(self):
        pass


class FakeSysvol:
    """One DC's SYSVOL: files by path, the GPO folder's descriptor and that of everything in it
    (the folder's expected ACL unless ``contents_acl`` says otherwise); no write methods, so a
    write attempt fails the test."""

    def __init__(
        self,
        files: dict[tuple[str, ...], bytes],
        acl: bytes | None,
        contents_acl: bytes = FOLDER_SD,
    ) -> None:
        self.files = files
        self.acl = acl
        self.acls: dict[tuple[str, ...], bytes] = {}
        for path in files:
            for end in range(2, len(path) + 1):
                self.acls[path[:end]] = contents_acl

    def read(self, *parts: str) -> bytes | None:
        return self.files.get(parts)

    def read_security(self, *parts: str) -> bytes | None:
        return self.acl if parts == (GUID,) else self.acls.get(parts)

    def tree(self, *parts: str) -> list[tuple[str, ...]]:
        return sorted(p for p in self.acls if p[: len(parts)] == parts and p != parts)

    def exists(self, *parts: str) -> bool:
        return not parts or self.read_security(*parts) is not None or parts in self.files

    def domain_exists(self) -> bool:
        return True

    def close(self) -> None:
        pass


def gpt_files(version: GpoVersion, entries) -> dict[tuple[str, ...], bytes]:
    return {
        (GUID, "GPT.INI"): update_gpt_ini(None, version),
        (GUID, "User", "Registry.pol"): preg.encode(entries),
    }


def run_info(monkeypatch, capsys, sysvols: dict[str, FakeSysvol], **args) -> dict:
    directory = FakeDirectory()
    root = RootDse(DOMAIN_DN, "", f"CN=Configuration,{DOMAIN_DN}", DOMAIN_DN, "dc1", "")
    monkeypatch.setattr(ad_gpo_info, "connect_or_fail", lambda *_: directory)
    monkeypatch.setattr(sysvol_glue, "read_root_dse", lambda _conn: root)
    monkeypatch.setattr(sysvol_glue, "Sysvol", lambda target: sysvols[target.server])
    module_args = {
        "server": "dc1",
        "bind_user": "Administrator@lab.example",
        "bind_password": "secret",
        "name": "Credential Roaming",
        "sysvol_servers": list(sysvols),
        **args,
    }
    with patch_module_args(module_args), pytest.raises(SystemExit):
        ad_gpo_info.main()
    assert directory.writes == []
    return json.loads(capsys.readouterr().out)


def test_a_healthy_gpo_on_two_dcs_has_no_problems(monkeypatch, capsys):
    sysvols = {dc: FakeSysvol(gpt_files(V2, ENTRIES), FOLDER_SD) for dc in ("dc1", "dc2")}
    result = run_info(monkeypatch, capsys, sysvols)
    assert result["changed"] is False
    assert (result["guid"], result["dn"], result["name"]) == (GUID, GPC_DN, "Credential Roaming")
    assert result["version"] == {"user": 2, "computer": 0, "number": 131072}
    assert result["problems"] == []
    assert result["links"] == {OU: {"linked": True, "enabled": True, "enforced": True, "order": 1}}
    assert result["security_filtering"] == [f"{DOMAIN_SID}-513"]
    assert result["registry_values"] == [e.describe() for e in ENTRIES]
    assert result["sysvols"]["dc2"] == {
        "exists": True,
        "version": V2.as_dict(),
        "registry_values": [e.describe() for e in ENTRIES],
        "acl_in_sync": True,
    }


def test_every_kind_of_problem_is_named_with_its_server(monkeypatch, capsys):
    sysvols = {
        "dc1": FakeSysvol(gpt_files(V2, ENTRIES), DRIFTED_SD),
        "dc2": FakeSysvol(gpt_files(GpoVersion(1, 0), ENTRIES), FOLDER_SD),
        "dc3": FakeSysvol(gpt_files(V2, OTHER), FOLDER_SD),
        "dc4": FakeSysvol({}, None),
    }
    result = run_info(monkeypatch, capsys, sysvols)
    assert [(p["kind"], p["server"]) for p in result["problems"]] == [
        ("acl_drift", "dc1"),
        ("version_mismatch", "dc2"),
        ("content_mismatch", "dc3"),
        ("missing_gpt", "dc4"),
    ]
    assert "65536 on dc2, versionNumber 131072 in AD" in result["problems"][1]["message"]
    assert result["sysvols"]["dc4"] == {
        "exists": False,
        "version": None,
        "registry_values": [],
        "acl_in_sync": False,
    }


def test_an_absent_gpo_is_reported_as_such(monkeypatch, capsys):
    monkeypatch.setattr(FakeDirectory, "search", _search_nothing)
    result = run_info(monkeypatch, capsys, {"dc1": FakeSysvol({}, None)}, guid=GUID, name=None)
    result.pop("invocation")
    assert result == {"changed": False, "exists": False}


def _search_nothing(self, *args, **kwargs):
    self.result, self.response = {"result": 32}, []


def test_gpt_problems_compares_the_folder_acl_as_samba_derives_it():
    folder_acl = gpt_folder_descriptor(SecurityDescriptor.parse(GPC_SD))
    gpt_ini = update_gpt_ini(None, V2)
    healthy = GptState("dc1", gpt_ini, ENTRIES, SecurityDescriptor.parse(FOLDER_SD))
    assert gpt_problems(GUID, V2, [healthy], folder_acl) == []
    drifted = GptState("dc1", gpt_ini, ENTRIES, SecurityDescriptor.parse(DRIFTED_SD))
    assert [p["kind"] for p in gpt_problems(GUID, V2, [drifted], folder_acl)] == ["acl_drift"]


def test_files_whose_acl_is_not_the_folders_own_are_named(monkeypatch, capsys):
    sysvols = {"dc1": FakeSysvol(gpt_files(V2, ENTRIES), FOLDER_SD, contents_acl=DRIFTED_SD)}
    result = run_info(monkeypatch, capsys, sysvols)
    ((problem),) = result["problems"]
    assert (problem["kind"], problem["server"]) == ("acl_drift", "dc1")
    assert f"{GUID}\\User\\Registry.pol" in problem["message"]
    assert result["sysvols"]["dc1"]["acl_in_sync"] is False
