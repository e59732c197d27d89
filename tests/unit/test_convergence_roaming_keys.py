"""The convergence simulation with roaming keys: first uses through lagging DCs make several
keys, and the hosts still converge with every private key usable under one of them.

World of tests/unit/test_convergence.py, plus what the roaming key adds (roamingkey.py):
- each DC holds the key records (key ids) it has seen; records replicate like values, and a
  removed record replicates as a removal;
- a host's first sync through a DC without records creates a key (a new id) and writes its
  record; a host with a cache and no record on its DC writes its cache's record;
- a private key's value is sealed under the key of the host that wrote it; a host opens only
  values sealed under its key or a key it retires; the others are held (R34), never deleted;
- a sync with the password takes the winner (``roamingkey.winning_key_id``, the real rule) and
  retires every other key (its cache, and the records the password opens); a sync without
  keeps its cache while the DC holds its record, else has no key (keys refused, held);
- a sync that retires keys re-seals what they sealed under the winner and removes their
  records in its one write (``sync.reseal_changes``' contract).
Checks: the simulation's own (no loss, no resurrection, convergence), and at the end one key
record on every DC, every host's cache that key, every private key value sealed under it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from credroam.roaming.model import ItemKind, Plan, newest
from credroam.roaming.reconcile import reconcile
from credroam.roaming.roamingkey import RecordKind, WrappedKey, winning_key_id
from tests.hypothesis_profiles import examples
from tests.unit.test_convergence import (
    POLICY,
    DomainController,
    Operation,
    Value,
    World,
    _check_converged,
    _op,
    operations,
)


@dataclass
class KeyedDC(DomainController):
    records: set[str] = field(default_factory=set)
    removed_records: set[str] = field(default_factory=set)


@dataclass(frozen=True)
class SyncKeys:
    """What a host's sync decided about keys: the key it seals with, the keys it retires."""

    key: str | None
    retired: frozenset[str]


def winner(records: set[str]) -> str | None:
    return winning_key_id([WrappedKey(RecordKind.PASSWORD, key_id, b"") for key_id in records])


class KeyedWorld(World):
    def __init__(self, hosts: int = 3, dcs: int = 2) -> None:
        super().__init__(hosts, dcs)
        self.dcs = [KeyedDC() for _ in range(dcs)]
        self.caches: list[str | None] = [None] * hosts
        self.sealed_by: dict[int, str] = {}  # write_id of a private key's value -> key id
        self.password = True  # whether the next sync has the password (a logon)
        self.decided: dict[int, SyncKeys] = {}

    # --- the key, as obtain_roaming_key decides it --------------------------------------
    def _obtain(self, h: int, d: int) -> SyncKeys:
        dc, cache = self.dcs[d], self.caches[h]
        if not dc.records:
            if not self.password:  # the cache alone (its record waits for the password)
                return SyncKeys(cache, frozenset())
            key = cache or f"{next(self.ids):08d}"  # first use: a new key
            self._write_record(dc, key)
            self.caches[h] = key
            return SyncKeys(key, frozenset())
        if self.password:
            key = winner(dc.records)
            retired = (dc.records | {cache} - {None}) - {key}
            self.caches[h] = key
            return SyncKeys(key, frozenset(retired))
        return SyncKeys(cache if cache in dc.records else None, frozenset())

    def _write_record(self, dc: KeyedDC, key: str) -> None:
        dc.records.add(key)
        if self.oldest_unreplicated is None:
            self.oldest_unreplicated = self.clock

    # --- sync: reconcile with what this host's keys open -----------------------------------
    def _opens(self, keys: SyncKeys, value: Value) -> bool:
        if value.item.kind is not ItemKind.KEY or value.item.tombstone:
            return True
        return self.sealed_by[value.write_id] in {keys.key, *keys.retired} - {None}

    def _plan(self, h: int, d: int) -> tuple[dict[str, frozenset[Value]], Plan]:
        self.tick()
        keys = self.decided[h] = self._obtain(h, d)
        host, dc = self.hosts[h], self.dcs[d]
        read = dc.values_by_key()
        directory, held = {}, set()
        for key, values in read.items():
            usable = [v.item for v in values if self._opens(keys, v)]
            if usable:
                directory[key] = newest(usable)
            else:
                held.add(key)
        refused = {}
        if keys.key is None:
            refused = {k: "no roaming key" for k, i in host.local.items() if i.kind is ItemKind.KEY}
        plan = reconcile(
            dict(host.local),
            directory,
            host.base,
            POLICY,
            self.clock,
            hold_keys=frozenset(held),
            refuse_uploads=refused,
        )
        return read, plan

    def _apply(
        self,
        h: int,
        d: int,
        read: dict[str, frozenset[Value]],
        plan: Plan,
        planned_at: int,
        crash_at: str | None = None,
        crash_after: int = 0,
    ) -> bool:
        keys, dc = self.decided[h], self.dcs[d]
        written = {i.key for i in [*plan.upload, *plan.tombstone_directory, *plan.purge_directory]}
        written |= {i.key for i in plan.archive_directory}
        reseal = {
            key: frozenset(v for v in values if self.sealed_by.get(v.write_id) in keys.retired)
            for key, values in read.items()
            if key not in written
        }
        reseal = {key: stale for key, stale in reseal.items() if stale}
        current = dc.values_by_key()
        if any(current.get(key, frozenset()) != values for key, values in reseal.items()):
            return False  # a concurrent writer: re-read and re-plan
        before = set(dc.values)
        if not super()._apply(h, d, read, plan, planned_at, crash_at, crash_after):
            return False
        for value in dc.values - before:
            if value.item.kind is ItemKind.KEY and not value.item.tombstone:
                self.sealed_by[value.write_id] = keys.key  # uploads seal under the host's key
        for key, stale in reseal.items():
            # Only what the retired keys sealed is replaced, as sync.reseal_changes does; the
            # chosen version is written again only when it was one of those.
            chosen = newest(v.item for v in read[key] if self._opens(keys, v))
            dc.values -= stale
            dc.removed |= stale
            if chosen in {v.item for v in stale} - {
                v.item for v in read[key] - stale if self._opens(keys, v)
            }:
                value = Value(chosen, next(self.ids))
                dc.values.add(value)
                self.sealed_by[value.write_id] = keys.key
        gone = dc.records & keys.retired
        dc.records -= gone
        dc.removed_records |= gone
        if (reseal or gone) and self.oldest_unreplicated is None:
            self.oldest_unreplicated = self.clock
        return True

    def replicate(self) -> None:
        super().replicate()
        removed = set().union(*(dc.removed_records for dc in self.dcs))
        records = set().union(*(dc.records for dc in self.dcs)) - removed
        for dc in self.dcs:
            dc.records, dc.removed_records = set(records), set(removed)

    def quiesce(self) -> None:
        self.password = True  # everyone logs on again
        super().quiesce()


def _check_one_key(world: KeyedWorld) -> None:
    records = [dc.records for dc in world.dcs]
    assert all(r == records[0] for r in records) and len(records[0]) <= 1, records
    (key,) = records[0] or {None}
    for h, cache in enumerate(world.caches):
        assert cache == key or cache is None, f"host {h} caches {cache}, the directory {key}"
    for dc in world.dcs:
        for value in dc.values:
            if value.item.kind is ItemKind.KEY and not value.item.tombstone:
                assert world.sealed_by[value.write_id] == key, f"{value.item.key} sealed elsewhere"


KEY_OPERATIONS = st.one_of(
    operations, st.builds(lambda: _op("password")), st.builds(lambda: _op("no password"))
)


def run(world: KeyedWorld, ops: list[Operation]) -> None:
    for operation in ops:
        if operation.name == "password":
            world.password = True
        elif operation.name == "no password":
            world.password = False
        else:
            operation.run(world)


@settings(max_examples=examples(200), suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(KEY_OPERATIONS, min_size=10, max_size=80))
@example(  # first use on two hosts through two DCs before replication: two keys
    ops=[
        _op("add", host=0, index=1),
        _op("add", host=1, index=1),
        _op("sync", host=0, dc=0),
        _op("sync", host=1, dc=1),
        _op("replicate"),
        _op("no password"),
        _op("sync", host=0, dc=0),
        _op("sync", host=1, dc=1),
        _op("password"),
        _op("sync", host=1, dc=1),
    ]
)
def test_several_first_uses_end_with_one_key_and_nothing_lost(ops: list[Operation]) -> None:
    world = KeyedWorld()
    run(world, ops)
    world.quiesce()
    _check_converged(world)
    _check_one_key(world)


def test_two_keys_until_a_logon_then_one_with_everything_re_sealed() -> None:
    """Not vacuous: two first uses through unreplicated DCs leave two key records, and the
    losing host's private key is unusable to the other until a sync with the password."""
    world = KeyedWorld()
    run(world, [_op("add", host=0, index=1), _op("add", host=1, index=1)])
    world.sync(0, 0)
    world.sync(1, 1)
    world.replicate()
    assert len(world.dcs[0].records) == 2
    world.password = False
    world.sync(0, 0)
    assert any(
        value.item.kind is ItemKind.KEY and world.sealed_by[value.write_id] != world.caches[0]
        for value in world.dcs[0].values
    )
    world.password = True
    loser = 1 if world.caches[0] == winner(world.dcs[0].records) else 0
    world.sync(loser, 0)
    assert world.dcs[0].records == {world.caches[loser]}
    _check_one_key_on(world.dcs[0], world)


def _check_one_key_on(dc: KeyedDC, world: KeyedWorld) -> None:
    (key,) = dc.records
    for value in dc.values:
        if value.item.kind is ItemKind.KEY and not value.item.tombstone:
            assert world.sealed_by[value.write_id] == key
