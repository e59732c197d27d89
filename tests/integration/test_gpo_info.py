"""ad_gpo_info against the lab's two DCs: what it reports, the problems it finds on each SYSVOL,
and that it changes nothing (files, ACLs and the directory are the same before and after)."""

from __future__ import annotations

import uuid

import pytest

from credroam.gpo.settings import CREDENTIAL_ROAMING
from tests.integration.test_gpo import GpoRunner, ad_version, gpt_version, sysvol_dir
from tests.lab import Lab

pytestmark = pytest.mark.integration

ROAMING = {"enabled": True, "tombstone_days": 60}


@pytest.fixture(scope="module")
def gpo(lab: Lab, tmp_path_factory) -> GpoRunner:
    return GpoRunner(lab, tmp_path_factory.mktemp("gpo"))


@pytest.fixture(scope="module")
def info(lab: Lab, tmp_path_factory) -> GpoRunner:
    return GpoRunner(lab, tmp_path_factory.mktemp("gpo_info"), module="ad_gpo_info")


@pytest.fixture(scope="module")
def created(lab: Lab, gpo: GpoRunner):
    name = f"credroam info {uuid.uuid4().hex[:8]}"
    links = [{"target": lab.roaming_ou_dn}]
    result = gpo(name=name, credential_roaming=ROAMING, links=links,
                 security_filtering=["Domain Users"])  # fmt: skip
    yield name, result["guid"]
    gpo(name=name, state="absent")


def snapshot(lab: Lab, guid: str) -> list:
    """Every file's bytes and every folder's NT ACL of the GPO on both DCs."""
    found = []
    for index, dc in enumerate(lab.dcs):
        root = sysvol_dir(lab, index) / guid
        for path in sorted([root, *root.rglob("*")]):
            acl = dc.run("samba-tool", "ntacl", "get", "--as-sddl", str(path)).stdout
            found.append((str(path), acl, path.read_bytes() if path.is_file() else None))
    return found


def test_a_healthy_gpo_is_reported_in_full(lab, info, created):
    name, guid = created
    result = info(name=name)
    assert result["changed"] is False
    assert result["exists"] and result["guid"] == guid and result["name"] == name
    assert result["problems"] == []
    assert result["version"]["number"] == ad_version(lab, guid).number == 65536
    assert {server: s["version"]["number"] for server, s in result["sysvols"].items()} == {
        dc.ip: 65536 for dc in lab.dcs
    }
    assert all(s["acl_in_sync"] for s in result["sysvols"].values())
    values = {(v["key"], v["value"]): v["data"] for v in result["registry_values"]}
    assert values == {(CREDENTIAL_ROAMING.key, "DIMSRoaming"): 1,
                      (CREDENTIAL_ROAMING.key, "DIMSRoamingTombstoneDays"): 60}  # fmt: skip
    assert list(result["links"]) == [lab.roaming_ou_dn]
    assert len(result["security_filtering"]) == 1
    assert result["security_filtering"][0].endswith("-513"), "Domain Users"
    assert result["attributes"]["gPCFileSysPath"] == result["gpt_path"]


def test_problems_on_each_dc_are_found_and_nothing_is_changed(lab, gpo, info, created):
    name, guid = created
    dc1_folder = str(sysvol_dir(lab, 0) / guid)
    lab.dc(0).run("samba-tool", "ntacl", "set", "O:BAG:DUD:(A;OICI;FA;;;BA)", dc1_folder)
    gpt = sysvol_dir(lab, 1) / guid / "GPT.INI"
    gpt.write_text(gpt.read_text().replace("Version=65536", "Version=0"))
    before = snapshot(lab, guid)

    result = info(guid=guid)
    assert [(p["kind"], p["server"]) for p in result["problems"]] == [
        ("acl_drift", lab.dc(0).ip),
        ("version_mismatch", lab.dc(1).ip),
    ]
    assert result["sysvols"][lab.dc(1).ip]["version"]["number"] == 0
    assert snapshot(lab, guid) == before, "ad_gpo_info wrote to SYSVOL"
    assert ad_version(lab, guid).number == 65536

    assert gpo(name=name, repair_version_mismatch=True)["changed"]
    assert info(guid=guid)["problems"] == []
    assert gpt_version(lab, guid, 1).number == 65536


def test_a_missing_gpt_and_an_unknown_gpo(lab, info, created):
    name, guid = created
    (sysvol_dir(lab, 1) / guid / "GPT.INI").unlink()
    problems = info(name=name)["problems"]
    assert [(p["kind"], p["server"]) for p in problems] == [("missing_gpt", lab.dc(1).ip)]
    assert info(name=f"no such GPO {uuid.uuid4().hex}")["exists"] is False
