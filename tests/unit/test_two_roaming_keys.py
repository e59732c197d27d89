"""Two roaming keys after a simultaneous first use through different DCs: one wins on every
host, the other's sealed keys are re-sealed under it, nothing is lost or left unusable.

Two fake DCs (exact-value LDAP semantics, tests/unit/test_sync.py) stand for the two real ones
with replication paused; ``resume`` merges their values as linked-value replication does.
"""

from __future__ import annotations

import ldap3
import pytest

from credroam.roaming.directory import KEY_ENVELOPES, ROAMING_KEYS, read_roaming
from credroam.roaming.envelope import ScryptParams, read_key_cache
from credroam.roaming.roamingkey import (
    obtain_roaming_key,
    parse_wrapped_keys,
    plan_roaming_key,
    roaming_key_id,
    winning_key_id,
)
from credroam.roaming.sync import FullSyncReason
from tests.credentials import certificate_items, new_pkcs8
from tests.unit.test_sync import NOW, USER_DN, FakeDirectory, FakeState, FakeStore, run

CHEAP = ScryptParams(log2_n=10, r=8, p=1)
PASSWORD = "Passw0rd!"


class Host:
    """One host of alice: a store, a state file and a key cache."""

    def __init__(self, tmp_path, name: str, entries) -> None:
        self.store = FakeStore(entries)
        self.state = FakeState()
        self.cache = str(tmp_path / name / "roaming.key")

    def sync(self, dc: FakeDirectory, password: str | None, now: int = NOW):
        key, changes = obtain_roaming_key(
            dc,
            USER_DN,
            password=password,
            cache_path=self.cache,
            now=now,
            scrypt_params=CHEAP,
        )
        report = run(dc, self.store, self.state, key, now=now, retired_keys=changes.retired)
        return key, changes, report


def pair(make_certificate_der, name: str):
    der, key = make_certificate_der(name), new_pkcs8()
    certificate, private_key = certificate_items(der, key, NOW - 100, NOW * 2)
    return [(certificate, der), (private_key, key)]


def resume(*dcs: FakeDirectory) -> None:
    """Replication resumed: every DC holds the union of the values (nothing was removed)."""
    merged: dict[str, list[bytes]] = {}
    for dc in dcs:
        for attribute, values in dc.values.items():
            known = merged.setdefault(attribute, [])
            known += [v for v in values if v not in known]
    for dc in dcs:
        dc.values = {attribute: list(values) for attribute, values in merged.items()}


def copy(source: FakeDirectory, dest: FakeDirectory) -> None:
    """What ``source`` wrote since, replicated to ``dest``."""
    dest.values = {attribute: list(values) for attribute, values in source.values.items()}


def key_ids(dc: FakeDirectory) -> set[str]:
    return {w.key_id for w in parse_wrapped_keys(read_roaming(dc, USER_DN))[0]}


@pytest.fixture
def split(tmp_path, make_certificate_der):
    """Alice's first use on host A through DC1 and on host B through DC2, replication paused,
    then resumed: two keys in the directory, each host's private key sealed under its own."""
    dc1, dc2 = FakeDirectory(), FakeDirectory()
    a = Host(tmp_path, "a", pair(make_certificate_der, "on host A"))
    b = Host(tmp_path, "b", pair(make_certificate_der, "on host B"))
    key_a, _, _ = a.sync(dc1, PASSWORD)
    key_b, _, _ = b.sync(dc2, PASSWORD)
    assert key_a != key_b
    resume(dc1, dc2)
    winner, loser = sorted([(a, key_a), (b, key_b)], key=lambda h: roaming_key_id(h[1]))
    return dc1, dc2, winner, loser


def all_keys_usable(dc: FakeDirectory, key: bytes, hosts) -> None:
    """Every private key any host holds is in the directory sealed under ``key``, one key's
    records only, and every host holds every item (nothing lost, nothing held)."""
    assert key_ids(dc) == {roaming_key_id(key)}
    fresh = FakeStore()
    report = run(dc, fresh, FakeState(), key, now=NOW + 50)
    assert report.rejected == () and report.held == ()
    expected = {k: payload for host in hosts for k, (_, payload) in host.store.entries.items()}
    assert {k: payload for k, (_, payload) in fresh.entries.items()} == expected
    for host in hosts:
        assert set(host.store.entries) == set(expected)


def test_the_smallest_key_id_with_a_password_record_wins_whatever_the_value_order(split):
    dc1, _dc2, (_, winner), _ = split
    record = read_roaming(dc1, USER_DN)
    wrapped = parse_wrapped_keys(record)[0]
    assert winning_key_id(wrapped) == winning_key_id(wrapped[::-1]) == roaming_key_id(winner)
    assert winning_key_id([]) is None
    plan = plan_roaming_key(record, password=PASSWORD, cached_key=None, scrypt_params=CHEAP)
    assert plan.key == winner  # a new host takes the winner too


def test_without_a_password_each_host_keeps_its_key_and_nothing_is_lost(split):
    dc1, dc2, (winner_host, winner), (loser_host, loser) = split
    key, changes, report = loser_host.sync(dc2, None, now=NOW + 10)
    assert key == loser and changes.retired == ()
    assert any("lost to" in problem for problem in changes.problems)
    assert report.deleted_local == ()
    key, changes, report = winner_host.sync(dc1, None, now=NOW + 10)
    assert key == winner and report.deleted_local == ()
    # The loser's private key is held on the winner's host, not taken for absent.
    assert len(report.held) == 1 and report.held[0].startswith("%9\\")


def test_the_losing_host_re_seals_under_the_winner_at_its_next_sync_with_the_password(split):
    dc1, dc2, (winner_host, winner), (loser_host, loser) = split
    key, changes, report = loser_host.sync(dc2, PASSWORD, now=NOW + 10)
    assert key == winner and changes.retired == (loser,)
    assert changes.problems == ()  # resolved here: nothing for the user to act on
    assert read_key_cache(loser_host.cache) == winner
    assert report.full_sync_reason == FullSyncReason.RESEAL
    assert len(report.resealed) == 1 and report.retired_keys == (roaming_key_id(loser),)
    assert report.uploaded == () and report.downloaded != ()  # the winner's pair came down
    copy(dc2, dc1)
    _, _, report = winner_host.sync(dc1, None, now=NOW + 20)
    assert report.held == () and report.rejected == ()
    all_keys_usable(dc1, winner, [winner_host, loser_host])


def test_the_winning_host_can_re_seal_the_losers_keys_with_the_password_too(split):
    dc1, dc2, (winner_host, winner), (loser_host, loser) = split
    key, changes, report = winner_host.sync(dc1, PASSWORD, now=NOW + 10)
    assert key == winner and changes.retired == (loser,)
    assert len(report.resealed) == 1 and report.downloaded != ()
    copy(dc1, dc2)
    # The losing host's cache now matches no record: without the password it waits (its
    # items stay as they are), with it it takes the winner; nothing is left to re-seal.
    _, _, waiting = loser_host.sync(dc2, PASSWORD, now=NOW + 20)
    assert waiting.deleted_local == () and waiting.resealed == ()
    assert read_key_cache(loser_host.cache) == winner
    all_keys_usable(dc2, winner, [winner_host, loser_host])


def test_a_re_seal_that_was_not_written_leaves_the_losing_key_recoverable(split):
    _dc1, dc2, (_, winner), (loser_host, loser) = split
    real_modify = dc2.modify
    calls = []

    def refuse_the_sync(dn, changes):
        calls.append(changes)
        if any(KEY_ENVELOPES in attribute for attribute in changes):
            dc2.result = {"result": ldap3.core.results.RESULT_OTHER, "message": "DC went away"}
            return False
        return real_modify(dn, changes)

    dc2.modify = refuse_the_sync
    with pytest.raises(Exception, match="DC went away"):
        loser_host.sync(dc2, PASSWORD, now=NOW + 10)
    # The cache already holds the winner, but the loser's records are still there, so the
    # next sync with the password opens the loser again and completes the re-seal.
    assert roaming_key_id(loser) in key_ids(dc2)
    dc2.modify = real_modify
    _, changes, report = loser_host.sync(dc2, PASSWORD, now=NOW + 20)
    assert changes.retired == (loser,) and len(report.resealed) == 1
    assert key_ids(dc2) == {roaming_key_id(winner)}


def test_a_re_sealed_key_keeps_its_version_so_no_host_sees_a_change(split):
    _dc1, dc2, (_winner_host, _winner), (loser_host, _loser) = split
    before = {
        k: (item.modified, item.content_hash) for k, (item, _) in loser_host.store.entries.items()
    }
    _, _, report = loser_host.sync(dc2, PASSWORD, now=NOW + 10)
    (resealed,) = report.resealed
    tokens = read_roaming(dc2, USER_DN).stored(KEY_ENVELOPES)
    assert tokens[resealed].token.last_modified == before[resealed][0]
    assert ROAMING_KEYS in dc2.values and len(dc2.values[ROAMING_KEYS]) == 1
    # A second sync with the password has nothing left to do.
    _, changes, again = loser_host.sync(dc2, PASSWORD, now=NOW + 20)
    assert changes.retired == () and again.operations == ()
