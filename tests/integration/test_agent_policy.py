"""The agent finds a user's policy as Windows does, against the lab's real DC: GPOs made with
`ad_gpo` (run through ansible-playbook) linked to the domain and to the roaming OU with different
tombstone days, one filtered to bob; `read_policy` bound as alice and as bob over LDAPS, with
Registry.pol read over SMB (signing required) as the same user.

The tests run in file order on one set of GPOs: what each user gets and from where, the two
users' caches apart, a version change seen cheaply and read again, the cache while the DC is
stopped (every Samba process of dc1 frozen with SIGSTOP, so nothing answers; SIGCONT after).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import stat
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from credroam.connection import connect
from credroam.errors import DirectoryError
from credroam.gpo.resolve import Denial
from credroam_agent.policy import (
    PolicyUnavailableError,
    SmbCredentials,
    gpo_versions_changed,
    read_policy,
)
from tests.integration.roaming_lab import target_for
from tests.integration.test_gpo import GpoRunner
from tests.lab import Account, Lab

pytestmark = pytest.mark.integration

TAG = uuid.uuid4().hex[:8]
NAMES = {
    "domain": f"credroam agent domain {TAG}",
    "ou": f"credroam agent ou {TAG}",
    "bob": f"credroam agent bob only {TAG}",
}


@pytest.fixture(scope="module")
def gpo(lab: Lab, tmp_path_factory) -> GpoRunner:
    return GpoRunner(lab, tmp_path_factory.mktemp("agent-policy"))


@pytest.fixture(scope="module")
def guids(lab: Lab, gpo: GpoRunner) -> Iterator[dict[str, str]]:
    """Three GPOs: the domain's (30 days, 1500 tokens), the roaming OU's (45 days, agent sync
    every 15 minutes) and, above it in link order, one filtered to bob (99 days)."""
    made: dict[str, str] = {}
    try:
        made["domain"] = gpo(name=NAMES["domain"],
                             credential_roaming={"tombstone_days": 30, "max_tokens": 1500},
                             links=[{"target": lab.base_dn, "order": 1}])["guid"]  # fmt: skip
        made["ou"] = gpo(name=NAMES["ou"], credential_roaming={"tombstone_days": 45},
                         credroam_agent={"sync_interval_minutes": 15},
                         links=[{"target": lab.roaming_ou_dn, "order": 1}])["guid"]  # fmt: skip
        made["bob"] = gpo(name=NAMES["bob"], credential_roaming={"tombstone_days": 99},
                          links=[{"target": lab.roaming_ou_dn, "order": 1}],
                          security_filtering=["bob"])["guid"]  # fmt: skip
        yield made
    finally:
        for name in NAMES.values():
            gpo(name=name, state="absent")


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("policy-cache") / "policy"


def smb_as(lab: Lab, account: Account) -> SmbCredentials:
    return SmbCredentials(server=lab.dc(0).ip, username=account.upn, password=account.password)


def read_as(lab: Lab, account: Account, cache_dir: Path, conn=None):
    own = conn is None
    conn = conn or connect(target_for(lab, account))
    try:
        return read_policy(conn, account.dn, smb_as(lab, account), cache_dir)
    finally:
        if own:
            conn.unbind()


def user_folder(cache_dir: Path, account: Account) -> Path:
    found = [p for p in cache_dir.iterdir()
             if json.loads((p / "policy.json").read_text())["user_dn"] == account.dn]  # fmt: skip
    assert len(found) == 1
    return found[0]


def test_alice_gets_the_ou_value_over_the_domain_one_and_each_value_names_its_gpo(
    lab, guids, cache_dir
):
    alice = lab.user("alice")
    resolved = read_as(lab, alice, cache_dir)
    assert not resolved.from_cache
    assert resolved.problems == (), "dc1's SYSVOL is at every GPO's version"
    assert resolved.policy.tombstone_days == 45
    assert resolved.policy.max_tokens == 1500
    assert resolved.effective()["sync_interval_minutes"] == 15
    tombstone = resolved.source("tombstone_days")
    assert (tombstone.guid, tombstone.name, tombstone.version, tombstone.som) == (
        guids["ou"], NAMES["ou"], 65536, lab.roaming_ou_dn)  # fmt: skip
    tokens = resolved.source("max_tokens")
    assert (tokens.guid, tokens.name, tokens.som.lower()) == (
        guids["domain"], NAMES["domain"], lab.base_dn.lower())  # fmt: skip
    assert resolved.source("max_token_size") is None, "no GPO sets it: the default"
    ours = [s.guid for s in resolved.applied if s.guid in guids.values()]
    assert ours == [guids["domain"], guids["ou"]], "application order: domain, then the OU"
    denied = {d.gpo_dn.split(",")[0][3:].upper(): d.reason for d in resolved.denied}
    assert denied[guids["bob"]] is Denial.NO_APPLY, "filtered to bob, alice is not given it"
    assert {guids["domain"], guids["ou"], guids["bob"]} <= resolved.gpo_versions.keys()


def test_bob_gets_the_gpo_filtered_to_him_and_the_two_caches_stay_apart(lab, guids, cache_dir):
    alice, bob = lab.user("alice"), lab.user("bob")
    alice_folder = user_folder(cache_dir, alice)
    alice_files = {p: p.read_bytes() for p in alice_folder.rglob("*") if p.is_file()}

    resolved = read_as(lab, bob, cache_dir)
    assert resolved.policy.tombstone_days == 99
    assert resolved.source("tombstone_days").guid == guids["bob"]
    assert resolved.policy.max_tokens == 1500, "the domain GPO still applies to bob"

    bob_folder = user_folder(cache_dir, bob)
    assert bob_folder != alice_folder
    assert {p: p.read_bytes() for p in alice_folder.rglob("*") if p.is_file()} == alice_files
    for folder in (alice_folder, bob_folder, bob_folder / "gpo"):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    for path in bob_folder.rglob("*"):
        if path.is_file():
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert (bob_folder / "gpo" / f"{guids['bob']}-65536.pol").is_file()
    assert not (alice_folder / "gpo" / f"{guids['bob']}-65536.pol").exists()


def test_a_version_change_is_seen_in_one_search_and_read_again(lab, gpo, guids, cache_dir):
    alice = lab.user("alice")
    conn = connect(target_for(lab, alice))
    try:
        before = read_as(lab, alice, cache_dir, conn)
        assert not gpo_versions_changed(conn, before)
        gpo(name=NAMES["ou"], credential_roaming={"tombstone_days": 50})
        assert gpo_versions_changed(conn, before)
        after = read_as(lab, alice, cache_dir, conn)
    finally:
        conn.unbind()
    assert after.policy.tombstone_days == 50
    assert after.source("tombstone_days").version == 2 * 65536
    cached = {p.name for p in (user_folder(cache_dir, alice) / "gpo").iterdir()}
    assert f"{guids['ou']}-131072.pol" in cached
    assert f"{guids['ou']}-65536.pol" not in cached, "the old version's copy is dropped"


@contextlib.contextmanager
def dc_stopped(lab: Lab, index: int = 0) -> Iterator[None]:
    """Every Samba process of the DC frozen (SIGSTOP), so it accepts nothing and answers
    nothing, then resumed (SIGCONT) whatever happened."""
    root = lab.dc(index).pid
    pids = [root, *_descendants(root)]
    try:
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
        yield
    finally:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)


def _descendants(pid: int) -> list[int]:
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    found = [int(child) for child in children]
    for child in list(found):
        found.extend(_descendants(child))
    return found


def test_while_the_dc_is_stopped_the_last_good_policy_is_used(lab, guids, cache_dir):
    alice = lab.user("alice")
    conn = connect(target_for(lab, alice, timeout=3))
    try:
        with dc_stopped(lab):
            with pytest.raises(DirectoryError):
                connect(target_for(lab, alice, timeout=3))
            offline = read_policy(None, alice.dn, smb_as(lab, alice), cache_dir)
            mid_way = read_policy(conn, alice.dn, smb_as(lab, alice), cache_dir)
    finally:
        with contextlib.suppress(Exception):
            conn.unbind()
    for resolved in (offline, mid_way):
        assert resolved.from_cache
        assert resolved.policy.tombstone_days == 50
        assert resolved.source("tombstone_days").guid == guids["ou"]
    assert "no domain controller reachable" in offline.stale_reason
    assert lab.dc(0).ip in mid_way.stale_reason, "the reason names the DC that failed"
    carol = lab.user("carol")
    with pytest.raises(PolicyUnavailableError, match="none cached"):
        read_policy(None, carol.dn, smb_as(lab, carol), cache_dir)
    assert not read_as(lab, alice, cache_dir).from_cache, "the DC is back"
