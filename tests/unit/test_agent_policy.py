"""The agent's policy cache (credroam_agent.policy) without a DC: per-user folders, the last good
policy while no DC answers, formats from a newer agent left alone, SYSVOL paths from the GUID."""

from __future__ import annotations

import json
import stat

import pytest

from credroam.gpo.resolve import Denial, DeniedGpo, GpoSettings, GpoSource
from credroam_agent.policy import (
    PolicyUnavailableError,
    ResolvedPolicy,
    SmbCredentials,
    _UserCache,
    cached_policy,
    read_policy,
    registry_pol_path,
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


def test_registry_pol_is_read_from_the_dc_in_use_by_guid():
    assert registry_pol_path("dc2.lab.example", "DC=Lab,DC=Example", GUID) == (
        f"\\\\dc2.lab.example\\sysvol\\lab.example\\Policies\\{GUID}\\User\\Registry.pol"
    )
