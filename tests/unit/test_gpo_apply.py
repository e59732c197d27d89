"""GpoApplier without a DC: the GPO folder's ACL on each SYSVOL, in check mode and for real.

Reuses the fakes of test_gpo_info (the directory holds one GPC with a filtered ACL); the
SYSVOLs here record writes.
"""

from __future__ import annotations

from credroam.connection import RootDse
from credroam.gpo.engine import GpoApplier, GpoRequest
from credroam.gpo.secdesc import SecurityDescriptor, same_access
from tests.unit.test_gpo_info import (
    DOMAIN_DN,
    DRIFTED_SD,
    ENTRIES,
    FOLDER_SD,
    GUID,
    V2,
    FakeDirectory,
    FakeSysvol,
    gpt_files,
)


class WritableSysvol(FakeSysvol):
    def __init__(self, files, acl) -> None:
        super().__init__(files, acl)
        self.writes: list[tuple[str, ...]] = []

    def write_security(self, descriptor: bytes, *parts: str) -> None:
        self.writes.append(("acl", *parts))
        self.acl = descriptor

    def makedirs(self, *parts: str) -> None:
        self.writes.append(("mkdir", *parts))

    def write(self, data: bytes, *parts: str) -> None:
        self.writes.append(("write", *parts))
        self.files[parts] = data


def applier(sysvols: dict[str, WritableSysvol]) -> GpoApplier:
    root = RootDse(DOMAIN_DN, "", f"CN=Configuration,{DOMAIN_DN}", DOMAIN_DN, "dc1", "")
    return GpoApplier(FakeDirectory(), root, sysvols.__getitem__, list(sysvols))


def test_only_the_drifted_folder_acl_is_rewritten_and_check_mode_writes_nothing():
    sysvols = {
        "dc1": WritableSysvol(gpt_files(V2, ENTRIES), FOLDER_SD),
        "dc2": WritableSysvol(gpt_files(V2, ENTRIES), DRIFTED_SD),
    }
    checked = applier(sysvols).apply(GpoRequest(guid=GUID, check_mode=True))
    assert checked["changed"]
    assert [(op["kind"], op["server"]) for op in checked["operations"]] == [("smb_set_acl", "dc2")]
    assert checked["diff"]["before"]["sysvol_acl"] == {"dc1": "in sync", "dc2": "drift"}
    assert sysvols["dc2"].writes == [] and sysvols["dc2"].acl == DRIFTED_SD

    done = applier(sysvols).apply(GpoRequest(guid=GUID))
    assert done["operations"] == checked["operations"]
    assert sysvols["dc2"].writes == [("acl", GUID)]
    assert sysvols["dc1"].writes == []
    written = SecurityDescriptor.parse(sysvols["dc2"].acl)
    assert same_access(written, SecurityDescriptor.parse(FOLDER_SD))
    assert not applier(sysvols).apply(GpoRequest(guid=GUID))["changed"]


def test_a_missing_copy_is_only_reported_unless_repair_is_asked_for():
    sysvols = {
        "dc1": WritableSysvol(gpt_files(V2, ENTRIES), FOLDER_SD),
        "dc2": WritableSysvol({}, None),
    }
    reported = applier(sysvols).apply(GpoRequest(guid=GUID))
    assert not reported["changed"] and reported["lagging_sysvols"] == ["dc2"]
    assert reported["version_mismatch"] and "GPT.INI missing on dc2" in reported["warnings"][0]

    repaired = applier(sysvols).apply(GpoRequest(guid=GUID, repair_version_mismatch=True))
    assert repaired["changed"] and not repaired["version_mismatch"]
    assert sysvols["dc2"].writes == [
        ("mkdir", GUID),
        ("acl", GUID),  # before anything is created in the folder, so it all inherits
        ("mkdir", GUID, "User"),
        ("mkdir", GUID, "Machine"),
        ("write", GUID, "User", "Registry.pol"),
        ("write", GUID, "GPT.INI"),
    ]
    assert sysvols["dc2"].files == sysvols["dc1"].files
    assert repaired["sysvol_versions"] == {"dc1": V2.number, "dc2": V2.number}
