"""The convergence simulation (test_convergence) with the sync's fast path in every host.

Each DC keeps a change counter of the user object that moves whenever the values it holds
change, by a write or by replication (Samba's uSNChanged, measured on the lab:
tests/integration/test_fast_path.py); each host a local change counter. A sync whose head (DC,
its counter, the local counter, all as the last full sync read them) still matches, whose
full sync interval is not over and whose next expiry is not due, stops without planning, as
sync._fast_check does. A head is recorded only by a full sync that wrote nothing to either
side; a full sync clears it first, so a sync that crashed leaves none.

Besides the simulation's own oracle (convergence, no loss, no resurrection), every skipped
sync is checked directly: a full sync at that moment would have written nothing, except the
purge of tombstones past their lifetime, which may wait for the full sync interval.
"""

from __future__ import annotations

from collections.abc import Sequence

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from credroam.roaming.model import Plan, StoreName, newest
from credroam.roaming.reconcile import reconcile
from tests.hypothesis_profiles import examples
from tests.unit.test_convergence import (
    DCS,
    HOSTS,
    POLICY,
    World,
    _check_converged,
    _op,
    operations,
)

INTERVAL = POLICY.full_sync_interval_ticks


class FastWorld(World):
    def __init__(self, hosts: int = HOSTS, dcs: int = DCS, skews: Sequence[int] = ()) -> None:
        super().__init__(hosts, dcs, skews)
        self.usn = [0] * dcs
        self._seen = [frozenset() for _ in range(dcs)]
        self.local_version = [0] * hosts
        self.heads: list[tuple[int, int, int, int, int | None] | None] = [None] * hosts
        self._read_marks: list[tuple[int, int, int] | None] = [None] * hosts
        self.skipped = 0

    # --- the counters ------------------------------------------------------------------------
    def _observe(self) -> None:
        for d, dc in enumerate(self.dcs):
            now = frozenset(dc.values)
            if now != self._seen[d]:
                self.usn[d] += 1
                self._seen[d] = now

    def add(
        self,
        h: int,
        store: StoreName,
        expires_hours: int | None,
        smartcard: bool,
        with_key: bool = False,
    ) -> None:
        before = dict(self.hosts[h].local)
        super().add(h, store, expires_hours, smartcard, with_key)
        self.local_version[h] += self.hosts[h].local != before

    def modify(self, h: int, index: int, expires_hours: int | None) -> None:
        before = dict(self.hosts[h].local)
        super().modify(h, index, expires_hours)
        self.local_version[h] += self.hosts[h].local != before

    def delete(self, h: int, index: int) -> None:
        before = dict(self.hosts[h].local)
        super().delete(h, index)
        self.local_version[h] += self.hosts[h].local != before

    def replicate(self) -> None:
        super().replicate()
        self._observe()

    def replicate_one(self, source: int, destination: int) -> None:
        super().replicate_one(source, destination)
        self._observe()

    # --- the fast path -----------------------------------------------------------------------
    def _plan(self, h: int, d: int):
        self.heads[h] = None  # a full sync clears the head before anything else
        read, plan = super()._plan(h, d)
        self._read_marks[h] = (d, self.usn[d], self.local_version[h])
        return read, plan

    def _fast_path(self, h: int, d: int) -> bool:
        head = self.heads[h]
        if head is None:
            return False
        head_dc, usn, version, last_full, due = head
        return (
            (head_dc, usn, version) == (d, self.usn[d], self.local_version[h])
            and last_full <= self.now(h) < last_full + INTERVAL
            and (due is None or self.now(h) < due)
        )

    def begin_sync(self, h: int, d: int) -> None:
        if self.hosts[h].pending is None and self._fast_path(h, d):
            self._check_nothing_to_do(h, d)
            self.skipped += 1
            return
        super().begin_sync(h, d)

    def _check_nothing_to_do(self, h: int, d: int) -> None:
        host = self.hosts[h]
        directory = {
            key: newest(v.item for v in values)
            for key, values in self.dcs[d].values_by_key().items()
        }
        plan = reconcile(dict(host.local), directory, host.base, POLICY, self.now(h))
        purges = plan.purge_directory
        assert not (plan.changes_local or (plan.changes_directory and not purges)), (
            f"host {h} skipped a sync via DC {d} that had work: {plan}"
        )

    def _apply(
        self,
        h: int,
        d: int,
        read,
        plan: Plan,
        planned_at: int,
        crash_at: str | None = None,
        crash_after: int = 0,
    ) -> bool:
        before = dict(self.hosts[h].local)
        applied = super()._apply(h, d, read, plan, planned_at, crash_at, crash_after)
        self._observe()
        if not applied:
            return False
        mark = self._read_marks[h]
        if crash_at is not None:
            self.local_version[h] += self.hosts[h].local != before
            return True  # no head: the full sync cleared it and never got to record one
        if plan.changes_directory or plan.changes_local or mark is None:
            self.heads[h] = None  # a sync that wrote proves nothing about what it saw
            self.local_version[h] += plan.changes_local
            return True
        expiries = [
            item.expires
            for item in self.hosts[h].local.values()
            if item.expires is not None and not item.archived
        ]
        self.heads[h] = (*mark, planned_at, min(expiries, default=None))
        return True


@settings(max_examples=examples(400), suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(operations, min_size=10, max_size=80))
def test_hosts_with_the_fast_path_converge_and_skip_only_idle_syncs(ops) -> None:
    world = FastWorld()
    for operation in ops:
        operation.run(world)
    world.quiesce()
    _check_converged(world)


def test_the_fast_path_is_taken_and_a_value_replicated_in_ends_it() -> None:
    world = FastWorld()
    world.add(0, StoreName.MY, None, False)
    for _ in range(3):
        world.sync(0, 0)
    assert world.skipped == 1  # upload, record the head, then the fast path
    world.add(1, StoreName.MY, None, False)
    world.sync(1, 1)  # another host writes through the other DC
    world.replicate()
    world.sync(0, 0)
    assert world.skipped == 1 and len(world.hosts[0].local) == 2


def test_a_host_past_its_full_sync_interval_syncs_in_full() -> None:
    world = FastWorld()
    for operation in [_op("add"), _op("sync"), _op("sync"), _op("sync")]:
        operation.run(world)
    assert world.skipped == 1
    world.tick(INTERVAL)
    world.sync(0, 0)
    assert world.skipped == 1
    world.sync(0, 0)
    assert world.skipped == 2  # the full sync recorded a new head
