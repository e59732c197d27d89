"""GpoApplier without a DC: plan first, then write, and every file's ACL on each SYSVOL.

Reuses the fakes of test_gpo_info (the directory holds one GPC with a filtered ACL); the
directory and the SYSVOLs here record writes, and can be told to fail one.
"""

from __future__ import annotations

import pytest

from credroam.connection import RootDse
from credroam.gpo.engine import GpoApplier, GpoIncomplete, GpoRequest, LinkRequest
from credroam.gpo.model import GpoError
from credroam.gpo.secdesc import SecurityDescriptor, same_access
from credroam.gpo.sysvol import SysvolError
from tests.unit.test_gpo_info import (
    DOMAIN_DN,
    DRIFTED_SD,
    ENTRIES,
    FOLDER_SD,
    GPC_DN,
    GUID,
    OTHER,
    OU,
    V2,
    FakeDirectory,
    FakeSysvol,
    gpt_files,
    sd_from_sddl,
)

# What a file or folder created in the GPO's folder gets from Samba: the folder's ACEs,
# inherited (ID), which sysvolcheck does not accept.
INHERITED_SD = sd_from_sddl("O:BAG:DUD:AI(A;OICIID;0x001f01ff;;;DA)(A;OICIID;0x001200a9;;;AU)")
NEW_GUID = "{0D7B3F37-6B3C-4F4B-9B0E-2B9A1C6E5D41}"


class WritableSysvol(FakeSysvol):
    """Records writes; a new file or folder inherits INHERITED_SD; ``fail_on`` makes the write
    of that path fail as a dropped connection would."""

    def __init__(self, files, acl, contents_acl=FOLDER_SD, fail_on=None) -> None:
        super().__init__(files, acl, contents_acl)
        self.writes: list[tuple[str, ...]] = []
        self.fail_on = fail_on

    def _check(self, parts) -> None:
        if parts == self.fail_on:
            raise SysvolError(f"writing {parts} on this server failed: connection reset")

    def write_security(self, descriptor: bytes, *parts: str) -> None:
        self._check(parts)
        self.writes.append(("acl", *parts))
        if parts == (GUID,) or parts == (NEW_GUID,):
            self.acl = descriptor
        else:
            self.acls[parts] = descriptor

    def makedirs(self, *parts: str) -> None:
        self._check(parts)
        self.writes.append(("mkdir", *parts))
        for end in range(2, len(parts) + 1):
            self.acls.setdefault(parts[:end], INHERITED_SD)

    def write(self, data: bytes, *parts: str) -> None:
        self._check(parts)
        self.writes.append(("write", *parts))
        self.files[parts] = data
        self.acls.setdefault(parts, INHERITED_SD)


class UnreachableSysvol:
    """What the SYSVOL factory does for a server with nothing listening."""

    def __init__(self, server: str) -> None:
        raise SysvolError(f"cannot open an SMB session to {server}: connection refused")


class RecordingDirectory(FakeDirectory):
    """The fake directory, which also knows the Domain Users group and nothing else."""

    def search(self, base, flt, search_scope=None, attributes=None, controls=None):
        super().search(base, flt, search_scope, attributes, controls)
        if flt == "(sAMAccountName=Domain Users)":
            sid = bytes.fromhex("010500000000000515000000f6bb641f60f2f634ce69555701020000")
            entry = {"dn": f"CN=Domain Users,CN=Users,{DOMAIN_DN}", "attributes": {}}
            self.response = [{"type": "searchResEntry", **entry,
                              "raw_attributes": {"objectSid": [sid]}}]  # fmt: skip
        elif flt == "(objectClass=*)" and attributes == ["gPLink"]:
            if base != OU:
                self.result = {"result": 32}  # noSuchObject: only the roaming OU exists
            else:
                link = f"[LDAP://cn={GUID},cn=policies,cn=system,{DOMAIN_DN};2]"
                self.response = [{"type": "searchResEntry", "dn": OU,
                                  "attributes": {"gPLink": [link]}}]  # fmt: skip


def applier(sysvols, directory=None) -> GpoApplier:
    root = RootDse(DOMAIN_DN, "", f"CN=Configuration,{DOMAIN_DN}", DOMAIN_DN, "dc1", "")

    def factory(server: str):
        found = sysvols[server]
        return found(server) if isinstance(found, type) else found

    return GpoApplier(directory or RecordingDirectory(), root, factory, list(sysvols))


def healthy() -> WritableSysvol:
    return WritableSysvol(gpt_files(V2, ENTRIES), FOLDER_SD)


def test_only_the_drifted_folder_acl_is_rewritten_and_check_mode_writes_nothing():
    sysvols = {"dc1": healthy(), "dc2": WritableSysvol(gpt_files(V2, ENTRIES), DRIFTED_SD)}
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
    sysvols = {"dc1": healthy(), "dc2": WritableSysvol({}, None)}
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
        # then, as sysvolreset does, the folder's own ACL on everything made in it
        ("acl", GUID, "User"),
        ("acl", GUID, "Machine"),
        ("acl", GUID, "User", "Registry.pol"),
        ("acl", GUID, "GPT.INI"),
    ]
    assert sysvols["dc2"].files == sysvols["dc1"].files
    assert set(sysvols["dc2"].acls.values()) == {FOLDER_SD}
    assert repaired["sysvol_versions"] == {"dc1": V2.number, "dc2": V2.number}


def test_files_that_kept_an_inherited_acl_get_the_folders_own():
    sysvols = {"dc1": WritableSysvol(gpt_files(V2, ENTRIES), FOLDER_SD, INHERITED_SD)}
    result = applier(sysvols).apply(GpoRequest(guid=GUID))
    assert [(op["kind"], op["target"]) for op in result["operations"]] == [
        ("smb_set_acl", f"{GUID}\\GPT.INI"),
        ("smb_set_acl", f"{GUID}\\User"),
        ("smb_set_acl", f"{GUID}\\User\\Registry.pol"),
    ]
    assert set(sysvols["dc1"].acls.values()) == {FOLDER_SD}
    assert not applier(sysvols).apply(GpoRequest(guid=GUID))["changed"]


def test_a_content_change_keeps_the_acl_of_the_files_it_rewrites():
    sysvols = {"dc1": healthy()}
    result = applier(sysvols).apply(GpoRequest(guid=GUID, entries=OTHER))
    assert sysvols["dc1"].writes == [
        ("write", GUID, "User", "Registry.pol"),
        ("write", GUID, "GPT.INI"),
    ]
    assert result["version"]["user"] == V2.user + 1


# --- plan first: nothing is written until everything was read and resolved ------------------


def new_gpo(**fields) -> GpoRequest:
    return GpoRequest(name="Brand new", guid=NEW_GUID, entries=ENTRIES, **fields)


class EmptyDirectory(RecordingDirectory):
    """A directory where the GPO to create does not exist yet."""

    def search(self, base, flt, search_scope=None, attributes=None, controls=None):
        super().search(base, flt, search_scope, attributes, controls)
        if base.startswith(f"CN={NEW_GUID}"):
            self.result, self.response = {"result": 32}, []


@pytest.fixture
def empty_directory() -> EmptyDirectory:
    return EmptyDirectory()


def test_an_unreachable_sysvol_fails_a_new_gpo_before_anything_is_written(empty_directory):
    dc1 = WritableSysvol({}, None)
    with pytest.raises(SysvolError, match="dc2: connection refused"):
        applier({"dc1": dc1, "dc2": UnreachableSysvol}, empty_directory).apply(new_gpo())
    assert empty_directory.writes == [] and dc1.writes == []


def test_a_mistyped_group_fails_a_new_gpo_before_anything_is_written(empty_directory):
    dc1 = WritableSysvol({}, None)
    request = new_gpo(security_filtering=["Domain Users", "Domian Admins"])
    with pytest.raises(GpoError, match="no single account 'Domian Admins'"):
        applier({"dc1": dc1}, empty_directory).apply(request)
    assert empty_directory.writes == [] and dc1.writes == []


def test_a_mistyped_link_target_fails_before_anything_is_written(empty_directory):
    dc1 = WritableSysvol({}, None)
    request = new_gpo(links=[LinkRequest(OU), LinkRequest(f"OU=RoamingUsres,{DOMAIN_DN}")])
    with pytest.raises(GpoError, match="link target 'OU=RoamingUsres,DC=lab,DC=example'"):
        applier({"dc1": dc1}, empty_directory).apply(request)
    assert empty_directory.writes == [] and dc1.writes == []


def test_a_sysvol_without_the_domain_folder_fails_before_anything_is_written(empty_directory):
    class WrongDomain(WritableSysvol):
        domain_root = "\\\\dc1\\sysvol\\lab.exmaple"

        def exists(self, *parts: str) -> bool:
            return False

        def domain_exists(self) -> bool:
            return False

    dc1 = WrongDomain({}, None)
    with pytest.raises(GpoError, match=r"lab\.exmaple does not exist on dc1"):
        applier({"dc1": dc1}, empty_directory).apply(new_gpo())
    assert empty_directory.writes == [] and dc1.writes == []


def test_a_joined_dc_without_a_policies_folder_gets_the_gpo_folder():
    class NoPolicies(WritableSysvol):  # a Samba DC just joined: SYSVOL is not replicated
        def exists(self, *parts: str) -> bool:
            return bool(parts) and super().exists(*parts)

    dc2 = NoPolicies({}, None)
    repaired = applier({"dc1": healthy(), "dc2": dc2}).apply(
        GpoRequest(guid=GUID, repair_version_mismatch=True)
    )
    assert repaired["changed"] and repaired["sysvol_versions"]["dc2"] == V2.number
    assert dc2.writes[0] == ("mkdir", GUID)  # made with its parent, Policies


def test_a_write_that_fails_reports_what_was_done_and_what_was_left():
    dc2 = WritableSysvol(gpt_files(V2, ENTRIES), FOLDER_SD, fail_on=(GUID, "GPT.INI"))
    engine = applier({"dc1": healthy(), "dc2": dc2})
    with pytest.raises(GpoIncomplete) as failed:
        engine.apply(GpoRequest(guid=GUID, entries=OTHER))
    done = [(op["kind"], op["target"], op["server"]) for op in failed.value.done]
    assert done == [
        ("smb_write", f"{GUID}\\User\\Registry.pol", "dc1"),
        ("smb_write", f"{GUID}\\GPT.INI", "dc1"),
        ("smb_write", f"{GUID}\\User\\Registry.pol", "dc2"),
    ]
    assert engine.operations == failed.value.done
    assert [op["target"] for op in failed.value.left] == [f"{GUID}\\GPT.INI", GPC_DN]
    message = str(failed.value)
    assert "connection reset" in message and "3 of 5 writes done" in message
    assert f"smb_write {GUID}\\GPT.INI on dc2; ldap_modify {GPC_DN}" in message

    dc2.fail_on = None
    repaired = applier({"dc1": healthy(), "dc2": dc2}).apply(
        GpoRequest(guid=GUID, entries=OTHER, repair_version_mismatch=True)
    )
    assert repaired["changed"] and not repaired["version_mismatch"]
    assert dc2.files[(GUID, "GPT.INI")] != gpt_files(V2, ENTRIES)[(GUID, "GPT.INI")]
