"""The agent's policy cache (credroam_agent.policy) without a DC: per-user folders, the last good
policy while no DC answers, formats from a newer agent left alone, SYSVOL paths from the GUID."""

from __future__ import annotations

import json
import stat

import pytest

from credroam.gpo.model import GpoVersion
from credroam.gpo.preg import encode, make_entry
from credroam.gpo.resolve import AppliedGpo, Denial, DeniedGpo, GpoContainer, GpoSettings, GpoSource
from credroam_agent.policy import (
    PolicyUnavailableError,
    ResolvedPolicy,
    SmbCredentials,
    _registry_entries,
    _UserCache,
    cached_policy,
    gpo_version_key,
    gpo_versions_changed,
    read_policy,
    sysvol_path,
)

ALICE = "CN=alice,OU=RoamingUsers,DC=lab,DC=example"
BOB = "CN=bob,OU=RoamingUsers,DC=lab,DC=example"
GUID = "{06754415-02AC-4922-B364-1D2062467EDE}"
SMB = SmbCredentials(server="dc1.lab.example")


def resolved_for(user_dn: str, days: int) -> ResolvedPolicy:
    source = GpoSource(GUID, "roaming", 65536, "OU=RoamingUsers,DC=lab,DC=example")
    return ResolvedPolicy(
        user_dn=user_dn,
        settings=GpoSettings({"tombstone_days": days}, {"tombstone_days": source}),
        applied=(source,),
        denied=(DeniedGpo("CN={X},CN=Policies", "DC=lab,DC=example", Denial.NO_APPLY, "x"),),
        gpo_versions={GUID: 65536},
        server="dc1.lab.example",
        read_at=1.5,
    )


def test_the_last_good_policy_is_used_while_no_dc_answers(tmp_path):
    _UserCache(tmp_path, ALICE).save_policy(resolved_for(ALICE, 45))
    found = read_policy(None, ALICE, SMB, tmp_path)
    assert found.from_cache and found.stale_reason == "no domain controller reachable"
    assert found.policy.tombstone_days == 45
    assert found.source("tombstone_days") == resolved_for(ALICE, 45).applied[0]
    assert found.denied[0].reason is Denial.NO_APPLY
    assert found.gpo_versions == {GUID: 65536}


def test_each_user_has_a_private_folder_and_never_gets_another_users_policy(tmp_path):
    _UserCache(tmp_path, ALICE).save_policy(resolved_for(ALICE, 45))
    _UserCache(tmp_path, BOB).save_policy(resolved_for(BOB, 99))
    assert cached_policy(tmp_path, ALICE).policy.tombstone_days == 45
    assert cached_policy(tmp_path, BOB).policy.tombstone_days == 99
    folders = [p for p in tmp_path.iterdir()]
    assert len(folders) == 2
    for folder in folders:
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700
        assert stat.S_IMODE((folder / "policy.json").stat().st_mode) == 0o600


def test_a_policy_file_naming_another_user_is_refused(tmp_path):
    alice_cache = _UserCache(tmp_path, ALICE)
    alice_cache.save_policy(resolved_for(BOB, 99))  # e.g. copied over by hand
    with pytest.raises(PolicyUnavailableError, match="another user"):
        read_policy(None, ALICE, SMB, tmp_path)


def test_a_cache_written_by_a_newer_agent_is_left_alone(tmp_path):
    cache = _UserCache(tmp_path, ALICE)
    cache.save_policy(resolved_for(ALICE, 45))
    path = cache.root / "policy.json"
    data = json.loads(path.read_text())
    data["format"] = 2
    path.write_text(json.dumps(data))
    with pytest.raises(PolicyUnavailableError, match="newer than this agent"):
        read_policy(None, ALICE, SMB, tmp_path)
    assert json.loads(path.read_text())["format"] == 2, "not rewritten"


def test_no_dc_and_no_cache_says_so(tmp_path):
    with pytest.raises(PolicyUnavailableError, match="none cached"):
        read_policy(None, ALICE, SMB, tmp_path)


def test_sysvol_files_are_read_from_the_dc_in_use_by_guid():
    assert sysvol_path("dc2.lab.example", "DC=Lab,DC=Example", GUID, "User", "Registry.pol") == (
        f"\\\\dc2.lab.example\\sysvol\\lab.example\\Policies\\{GUID}\\User\\Registry.pol"
    )


class FakeSysvol:
    """One DC's copy of a GPO folder: GPT.INI and User\\Registry.pol by file name."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.smb = SmbCredentials(server="dc2.lab.example")
        self.files = files
        self.reads: list[str] = []

    def read(self, path: str, limit: int) -> bytes | None:
        self.reads.append(path.rsplit("\\", 1)[-1])
        return self.files.get(path.rsplit("\\", 1)[-1])


POL = encode([make_entry("Software\\Policies\\credroam", "SyncIntervalMinutes", "REG_DWORD", 15)])
APPLIED = AppliedGpo(
    GpoContainer(
        f"CN={GUID},CN=Policies,CN=System,DC=lab,DC=example", "roaming", GpoVersion(2, 0), b""
    ),
    "DC=lab,DC=example",
    1,
    False,
)


def test_a_sysvol_copy_at_the_containers_version_is_cached_and_not_read_again(tmp_path):
    cache, problems = _UserCache(tmp_path, ALICE), []
    sysvol = FakeSysvol({"GPT.INI": b"[General]\r\nVersion=131072\r\n", "Registry.pol": POL})
    assert len(_registry_entries(APPLIED, sysvol, cache, "DC=lab,DC=example", problems)) == 1
    sysvol.reads.clear()
    assert len(_registry_entries(APPLIED, sysvol, cache, "DC=lab,DC=example", problems)) == 1
    assert sysvol.reads == [] and problems == []


def test_a_lagging_sysvol_copy_is_used_reported_and_not_cached(tmp_path):
    cache, problems = _UserCache(tmp_path, ALICE), []
    sysvol = FakeSysvol({"GPT.INI": b"[General]\r\nVersion=65536\r\n", "Registry.pol": POL})
    assert len(_registry_entries(APPLIED, sysvol, cache, "DC=lab,DC=example", problems)) == 1
    assert "at version 65536" in problems[0] and "dc2.lab.example lags" in problems[0]
    assert cache.registry_pol(GUID, 131072) is None, "read again at the next refresh"


class FakeDirectory:
    """Answers the one versionNumber search of the watch loop's check."""

    def __init__(self, versions: dict[str, int]) -> None:
        self.versions = versions
        self.searches = 0
        self.server = type("Server", (), {"host": "dc1.lab.example"})()
        self.result = {"result": 0}
        self.response: list[dict] = []

    def search(self, base, flt, search_scope, attributes, controls=None):
        self.searches += 1
        self.response = [
            {"type": "searchResEntry", "dn": f"CN={guid},{base}",
             "raw_attributes": {"versionNumber": [str(number).encode()]}}
            for guid, number in self.versions.items() if guid in flt
        ]  # fmt: skip
        return True


def test_the_watch_loop_sees_a_version_change_in_one_search():
    resolved = resolved_for(ALICE, 45)
    directory = FakeDirectory({GUID: 65536})
    assert not gpo_versions_changed(directory, resolved)
    directory.versions[GUID] = 131072
    assert gpo_versions_changed(directory, resolved)
    assert gpo_version_key(directory, resolved) == ((GUID, 131072),)
    directory.versions.clear()
    assert gpo_versions_changed(directory, resolved), "a GPO gone is a change"
    assert directory.searches == 4
