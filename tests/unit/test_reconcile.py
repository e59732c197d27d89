"""Reconciliation rules R1..R36: one test (at least) per row of the README's table."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from credroam.roaming.model import (
    MAX_PLAN_AGE,
    TICKS_PER_DAY,
    Base,
    BaseEntry,
    Item,
    ItemKind,
    Plan,
    Policy,
    ReconcileError,
    StoreName,
    newest,
)
from credroam.roaming.reconcile import reconcile
from tests.hypothesis_profiles import examples

T0 = 133_000_000_000_000_000
DAY = TICKS_PER_DAY
POLICY = Policy()  # 60 tombstone days
NOW = T0 + 10 * DAY
CERT = "%3\\" + "A" * 40
KEY = "%9\\" + "A" * 40
OTHER = "%3\\" + "B" * 40


def item(key: str = CERT, modified: int = T0, content: str = "v1", **extra) -> Item:
    extra.setdefault("store", StoreName.MY)
    extra.setdefault("kind", ItemKind.KEY if key.startswith("%9") else ItemKind.CERTIFICATE)
    extra.setdefault("size", 1000)
    return Item(key=key, modified=modified, content_hash=content, **extra)


def tomb(key: str = CERT, modified: int = T0) -> Item:
    return item(key, modified, "", size=0, tombstone=True)


def base_of(*entries: tuple[Item, int]) -> Base:
    return Base(entries={i.key: BaseEntry.of(i, seen) for i, seen in entries}, last_sync=T0)


def run(local=(), directory=(), base=None, policy=POLICY, now=NOW) -> Plan:
    return reconcile({i.key: i for i in local}, {i.key: i for i in directory}, base, policy, now)


def apply(local, directory, plan: Plan) -> tuple[dict, dict]:
    """Apply a plan as the sync engine does, to dictionaries."""
    local, directory = dict(local), dict(directory)
    for i in (*plan.upload, *plan.archive_directory, *plan.tombstone_directory):
        directory[i.key] = i
    for i in plan.purge_directory:
        del directory[i.key]
    for i in (*plan.download, *plan.archive_local):
        local[i.key] = i
    for deletion in plan.delete_local:
        del local[deletion.item.key]
    return local, directory


def only(plan: Plan, **expected) -> None:
    """Assert that the plan holds exactly the given actions (keys per action)."""
    actions = (
        "upload",
        "download",
        "delete_local",
        "tombstone_directory",
        "purge_directory",
        "archive_local",
        "archive_directory",
    )
    for action in actions:
        entries = getattr(plan, action)
        keys = [getattr(e, "item", e).key for e in entries]
        assert keys == expected.get(action, []), f"{action}: {keys}"


# --- R1..R6: both sides live ------------------------------------------------------------------


def test_r1_first_use_uploads_local_items() -> None:
    local = item()
    plan = run(local=[local])
    only(plan, upload=[CERT])
    assert plan.upload == (local,)
    assert plan.base.entries[CERT] == BaseEntry.of(local, NOW)


def test_r2_directory_items_are_downloaded() -> None:
    remote = item(content="remote")
    plan = run(directory=[remote])
    only(plan, download=[CERT])
    assert plan.download == (remote,)


def test_r3_equal_versions_need_nothing() -> None:
    plan = run(local=[item()], directory=[item()], base=base_of((item(), T0)))
    assert plan.is_empty and not plan.conflicts
    assert plan.base.entries[CERT].last_seen_in_directory == NOW


@pytest.mark.parametrize("local_newer", [True, False])
def test_r4_newest_wins_in_both_directions(local_newer: bool) -> None:
    old, new = item(modified=T0, content="old"), item(modified=T0 + 5, content="new")
    local, remote = (new, old) if local_newer else (old, new)
    plan = run(local=[local], directory=[remote], base=base_of((old, T0)))
    if local_newer:
        only(plan, upload=[CERT])
    else:
        only(plan, download=[CERT])
    assert not plan.conflicts  # only one side changed since the base


def test_r4_both_changed_is_a_reported_conflict() -> None:
    ancestor = item(modified=T0, content="v0")
    local, remote = item(modified=T0 + 9, content="mine"), item(modified=T0 + 5, content="theirs")
    plan = run(local=[local], directory=[remote], base=base_of((ancestor, T0)))
    only(plan, upload=[CERT])
    (conflict,) = plan.conflicts
    assert conflict.winner == local and conflict.directory == remote


def test_r5_lagging_dc_is_neither_downgraded_nor_reuploaded() -> None:
    synced = item(modified=T0 + 5, content="v2")
    plan = run(local=[synced], directory=[item(content="v1")], base=base_of((synced, T0 + 5)))
    assert plan.is_empty
    assert plan.base.entries[CERT] == BaseEntry.of(synced, T0 + 5)  # not "seen" now


def test_r6_equal_times_break_ties_by_content_hash_the_same_everywhere() -> None:
    a, b = item(content="aaaa"), item(content="bbbb")
    one = run(local=[a], directory=[b])
    other = run(local=[b], directory=[a])
    only(one, download=[CERT])
    only(other, upload=[CERT])
    assert one.download[0] == other.upload[0] == b == newest([a, b])


# --- R7..R10: deleted locally -----------------------------------------------------------------


def test_r7_local_deletion_becomes_a_tombstone() -> None:
    synced = item()
    plan = run(directory=[synced], base=base_of((synced, T0)))
    only(plan, tombstone_directory=[CERT])
    (tombstone,) = plan.tombstone_directory
    assert tombstone.tombstone and tombstone.modified == NOW and tombstone.size == 0
    assert plan.base.entries[CERT].tombstone


def test_r7_tombstone_is_newer_than_what_it_deletes_even_with_a_slow_clock() -> None:
    synced = item(modified=NOW + 50)
    plan = run(directory=[synced], base=base_of((synced, T0)))
    assert plan.tombstone_directory[0].modified == NOW + 51


def test_r8_local_deletion_against_a_newer_remote_edit() -> None:
    synced = item(modified=T0)
    edited = item(modified=T0 + 10, content="edited")
    plan = run(directory=[edited], base=base_of((synced, T0)))
    only(plan, tombstone_directory=[CERT])  # the deletion, noticed now, is the newest
    assert "deletion wins" in plan.conflicts[0].reason
    future = item(modified=NOW + DAY, content="from a host whose clock is ahead")
    plan = run(directory=[future], base=base_of((synced, T0)))
    only(plan, download=[CERT])
    assert "kept the newer copy" in plan.conflicts[0].reason


def test_r9_local_deletion_while_the_dc_lags_writes_a_tombstone() -> None:
    synced = item()
    plan = run(base=base_of((synced, NOW - DAY)))
    only(plan, tombstone_directory=[CERT])


def test_r10_local_deletion_of_an_item_purged_long_ago_still_writes_a_tombstone() -> None:
    """The item may have been deleted elsewhere and purged, or edited on a host that has not
    synced yet (older than this deletion, noticed now): only a tombstone makes that edit lose."""
    synced = item()
    plan = run(base=base_of((synced, NOW - 61 * DAY)))
    only(plan, tombstone_directory=[CERT])
    assert plan.tombstone_directory[0].modified == NOW
    edit_elsewhere = item(modified=NOW - DAY, content="edited on a host away since")
    later = run([edit_elsewhere], plan.tombstone_directory, base_of((synced, NOW - 61 * DAY)))
    only(later, delete_local=[CERT])  # the deletion noticed now beats the older edit
    assert later.delete_local[0].keep_copy and later.conflicts


# --- R11..R13: tombstone in the directory -----------------------------------------------------


def test_r11_tombstone_deletes_an_unchanged_local_copy() -> None:
    synced = item()
    plan = run(local=[synced], directory=[tomb(modified=T0 + 5)], base=base_of((synced, T0)))
    only(plan, delete_local=[CERT])
    assert plan.base.entries[CERT].tombstone
    assert not plan.conflicts


def test_r11_without_base_a_tombstone_still_wins_and_nothing_is_reuploaded() -> None:
    stale = item(modified=T0)
    plan = run(local=[stale], directory=[tomb(modified=T0 + 5)], base=None)
    only(plan, delete_local=[CERT])
    assert plan.delete_local[0].keep_copy  # provenance unknown: keep it aside
    equal_time = run(local=[stale], directory=[tomb(modified=T0)], base=None)
    only(equal_time, delete_local=[CERT])  # not newer: the tombstone wins


def test_r11_copy_is_kept_when_local_changes_lose_to_a_deletion() -> None:
    synced, edited = item(), item(modified=T0 + 3, content="edited")
    policy = Policy(keep_deleted_copy=False)
    plan = run([edited], [tomb(modified=T0 + 5)], base_of((synced, T0)), policy)
    assert plan.delete_local[0].keep_copy
    assert plan.conflicts
    unchanged = run([synced], [tomb(modified=T0 + 5)], base_of((synced, T0)), policy)
    assert not unchanged.delete_local[0].keep_copy


def test_r12_newer_local_edit_resurrects_a_deleted_item() -> None:
    synced, edited = item(), item(modified=T0 + 9, content="edited")
    plan = run(local=[edited], directory=[tomb(modified=T0 + 5)], base=base_of((synced, T0)))
    only(plan, upload=[CERT])
    assert plan.upload == (edited,)


def test_r13_tombstone_with_nothing_local_is_recorded() -> None:
    plan = run(directory=[tomb(modified=T0 + 5)])
    assert plan.is_empty
    assert plan.base.entries[CERT].tombstone


def test_r33_local_deletion_noticed_after_an_older_tombstone_writes_its_own() -> None:
    synced = item()
    plan = run(directory=[tomb(modified=T0 + 5)], base=base_of((synced, T0)))
    only(plan, tombstone_directory=[CERT])
    assert plan.tombstone_directory[0].modified == NOW
    newer = tomb(modified=NOW + 5)  # a later deletion elsewhere already stands for this one
    assert run(directory=[newer], base=base_of((synced, T0))).is_empty


@pytest.mark.parametrize("deleter_first", [True, False])
def test_r33_the_later_deletion_beats_an_edit_in_between_whichever_host_syncs_first(
    deleter_first: bool,
) -> None:
    """Host A's tombstone is at T0+5, host C edits at T0+7, host B noticed its own deletion
    (R7: at its sync, later than the edit). The outcome must not depend on the sync order."""
    synced, edited = item(), item(modified=T0 + 7, content="edited")
    directory = {CERT: tomb(modified=T0 + 5)}
    deleter = ({}, base_of((synced, T0)))
    editor = ({CERT: edited}, base_of((synced, T0)))
    for now, (local, base) in enumerate((deleter, editor) if deleter_first else (editor, deleter)):
        plan = reconcile(local, directory, base, POLICY, NOW + now)
        _, directory = apply(local, directory, plan)
    assert directory[CERT].tombstone


# --- R14..R18: absent from the directory, no tombstone ----------------------------------------


def test_r14_absent_within_tombstone_days_is_replication_lag() -> None:
    synced = item()
    plan = run(local=[synced], base=base_of((synced, NOW - 59 * DAY)))
    assert plan.is_empty  # kept, and not re-uploaded
    assert plan.base.entries[CERT] == BaseEntry.of(synced, NOW - 59 * DAY)


def test_r15_local_edit_during_lag_is_uploaded() -> None:
    synced, edited = item(), item(modified=T0 + 9, content="edited")
    plan = run(local=[edited], base=base_of((synced, NOW - DAY)))
    only(plan, upload=[CERT])


def test_r16_absent_longer_than_tombstone_days_means_deleted_no_resurrection() -> None:
    synced = item()
    plan = run(local=[synced], base=base_of((synced, NOW - 61 * DAY)))
    only(plan, delete_local=[CERT])
    assert plan.delete_local[0].keep_copy == POLICY.keep_deleted_copy
    assert CERT not in plan.base.entries
    no_copy = run([synced], [], base_of((synced, NOW - 61 * DAY)), Policy(keep_deleted_copy=False))
    assert not no_copy.delete_local[0].keep_copy


def test_r17_edit_provably_newer_than_a_purged_deletion_roams() -> None:
    synced, edited = item(), item(modified=NOW - DAY, content="edited")
    plan = run(local=[edited], base=base_of((synced, NOW - 61 * DAY)))
    only(plan, upload=[CERT])


def test_r18_edit_of_unknown_order_against_a_purged_deletion_is_kept_aside() -> None:
    synced = item(modified=NOW - 90 * DAY)
    edited = item(modified=NOW - 70 * DAY, content="edited")
    plan = run([edited], [], base_of((synced, NOW - 80 * DAY)), Policy(keep_deleted_copy=False))
    only(plan, delete_local=[CERT])
    assert plan.delete_local[0].keep_copy
    assert plan.delete_local[0].undecided  # its copy stays until the user or an admin decides
    assert "order unknown" in plan.conflicts[0].reason


# --- R19..R22: the base holds a tombstone -----------------------------------------------------


def test_r19_item_recreated_after_an_agreed_deletion_is_uploaded() -> None:
    plan = run(local=[item(modified=T0 + 9)], base=base_of((tomb(modified=T0 + 5), T0 + 5)))
    only(plan, upload=[CERT])


def test_r20_old_copy_reappearing_after_an_agreed_deletion_is_removed() -> None:
    agreed = tomb(modified=T0 + 5)
    plan = run(local=[item(modified=T0)], base=base_of((agreed, NOW - DAY)))
    only(plan, delete_local=[CERT])
    assert plan.delete_local[0].keep_copy
    assert not plan.delete_local[0].undecided  # an ordinary copy, kept for the retention
    assert plan.base.entries[CERT].tombstone


def test_r21_item_recreated_elsewhere_after_the_deletion_is_downloaded() -> None:
    plan = run(directory=[item(modified=T0 + 9)], base=base_of((tomb(modified=T0 + 5), T0 + 5)))
    only(plan, download=[CERT])


def test_r22_lagging_dc_showing_a_deleted_item_changes_nothing() -> None:
    agreed = tomb(modified=T0 + 5)
    plan = run(directory=[item(modified=T0)], base=base_of((agreed, T0 + 5)))
    assert plan.is_empty
    assert plan.base.entries[CERT] == BaseEntry.of(agreed, T0 + 5)


# --- R23..R24: purge and archive --------------------------------------------------------------


def test_r23_tombstones_older_than_tombstone_days_are_purged() -> None:
    old = tomb(modified=NOW - 61 * DAY)
    plan = run(directory=[old], base=base_of((old, NOW - DAY)))
    only(plan, purge_directory=[CERT])
    assert CERT not in plan.base.entries
    young = tomb(modified=NOW - 59 * DAY)
    assert run(directory=[young]).is_empty


def test_r23_purge_also_removes_a_stale_local_copy() -> None:
    synced = item(modified=NOW - 70 * DAY)
    plan = run([synced], [tomb(modified=NOW - 61 * DAY)], base_of((synced, T0)))
    only(plan, delete_local=[CERT], purge_directory=[CERT])


def test_r24_expired_certificate_is_archived_on_both_sides() -> None:
    expired = item(expires=NOW - 1)
    plan = run(local=[expired], directory=[expired], base=base_of((expired, T0)))
    only(plan, archive_local=[CERT], archive_directory=[CERT])
    archived = replace(expired, archived=True)
    assert plan.archive_local == plan.archive_directory == (archived,)
    assert plan.base.entries[CERT].archived
    new_host = run(directory=[expired])
    only(new_host, download=[CERT], archive_directory=[CERT])
    assert new_host.download == (archived,)


def test_r24_archiving_can_be_turned_off() -> None:
    expired = item(expires=NOW - 1)
    policy = Policy(archive_expired=False)
    assert run([expired], [expired], base_of((expired, T0)), policy).is_empty


def test_r24_key_is_archived_with_its_certificate() -> None:
    cert = item(expires=NOW - 1)
    key = item(KEY, expires=NOW - 1, owner=CERT)
    plan = run(local=[cert, key], directory=[cert, key])
    only(plan, archive_local=[CERT, KEY], archive_directory=[CERT, KEY])


# --- R25..R28: limits, smart cards, requests --------------------------------------------------


def test_r25_item_over_the_size_limit_is_refused_with_its_key_and_the_rest_roams() -> None:
    big = item(size=70000)
    key = item(KEY, owner=CERT)
    small = item(OTHER, content="small")
    plan = run(local=[big, key, small])
    only(plan, upload=[OTHER])
    reasons = {refusal.item.key: refusal.reason for refusal in plan.refused}
    assert "70000 bytes exceed the maximum token size 65535" in reasons[CERT]
    assert "roams with" in reasons[KEY]
    assert CERT not in plan.base.entries and KEY not in plan.base.entries
    assert plan.warnings and plan.is_empty is False


def test_r25_refused_group_is_left_as_it_is_on_both_sides() -> None:
    """Nothing is written for a refused item, not even locally (R30): archiving the expired
    certificate here while keeping its old base entry changed what the next sync saw."""
    local, directory, base = EXPIRED_GROUP_REFUSED
    plan = reconcile(local, directory, base, POLICY, NOW)
    only(plan)
    assert sorted(r.item.key for r in plan.refused) == [CERT, KEY]
    assert plan.base.entries == base.entries


def test_r25_refused_update_keeps_the_old_base_and_retries() -> None:
    synced = item()
    grown = item(modified=T0 + 5, content="grown", size=70000)
    plan = run([grown], [synced], base_of((synced, T0)))
    only(plan)
    assert plan.refused and plan.base.entries[CERT] == BaseEntry.of(synced, T0)
    assert run([grown], [synced], plan.base).refused  # reported again, never blocks


def test_r26_count_limit_refuses_only_the_newest_excess() -> None:
    policy = Policy(max_tokens=3)
    existing = item("%3\\" + "E" * 40, content="e")
    new = [item(f"%3\\{c * 40}", modified=T0 + n, content=c) for n, c in enumerate("123")]
    plan = run([existing, *new], [existing], base_of((existing, T0)), policy)
    assert [i.key for i in plan.upload] == [new[0].key, new[1].key]
    assert [r.item.key for r in plan.refused] == [new[2].key]
    assert "more than 3 tokens" in plan.refused[0].reason


def test_r26_certificate_and_key_are_counted_and_refused_together() -> None:
    policy = Policy(max_tokens=2)
    older = item(OTHER, modified=T0, content="o")
    cert, key = item(modified=T0 + 5), item(KEY, modified=T0 + 5, owner=CERT)
    plan = run([older, cert, key], [], None, policy)
    only(plan, upload=[OTHER])
    assert sorted(r.item.key for r in plan.refused) == [CERT, KEY]


@pytest.mark.parametrize("side", ["local", "directory"])
def test_r27_smartcard_items_never_roam(side: str) -> None:
    card = item(smartcard=True)
    plan = run(**{side: [card]})
    assert plan.is_empty and CERT not in plan.base.entries


def test_r27_smartcard_certificate_may_roam_by_policy_but_never_its_key() -> None:
    policy = Policy(roam_smartcard_certificates=True)
    cert, key = item(smartcard=True), item(KEY, owner=CERT, smartcard=True)
    plan = run(local=[cert, key], policy=policy)
    only(plan, upload=[CERT])


def test_r28_request_store_items_roam_like_my_items() -> None:
    request = item("%4\\" + "D" * 40, store=StoreName.REQUEST, kind=ItemKind.REQUEST)
    only(run(local=[request]), upload=[request.key])
    only(run(directory=[request]), download=[request.key])
    only(run(directory=[request], base=base_of((request, T0))), tombstone_directory=[request.key])


# --- R29..R32: lost base, idempotence, base tombstones, plan age ------------------------------


def test_r29_without_base_nothing_is_deleted_because_of_absence() -> None:
    plan = run(local=[item()], directory=[item(OTHER)], base=None)
    only(plan, upload=[CERT], download=[OTHER])


def test_r31_base_keeps_a_tombstone_for_tombstone_days_then_drops_it() -> None:
    recent = base_of((tomb(modified=NOW - DAY), NOW - DAY))
    assert run(base=recent).base.entries[CERT].tombstone
    old = base_of((tomb(modified=NOW - 61 * DAY), NOW - 61 * DAY))
    assert CERT not in run(base=old).base.entries


def test_r32_a_plan_may_be_written_only_close_to_the_time_it_was_made_for() -> None:
    plan = run(local=[item()], now=NOW)
    assert plan.made_at == NOW == plan.base.entries[CERT].last_seen_in_directory
    assert plan.is_current(NOW)
    assert plan.is_current(NOW + MAX_PLAN_AGE)
    # Later, the base would date the upload before its write (README, rule R32).
    assert not plan.is_current(NOW + MAX_PLAN_AGE + 1)
    assert not plan.is_current(NOW - 1)  # the clock went back: re-plan at the new time
    assert not Plan().is_current(NOW)  # not made by reconcile: no time to judge it by


# --- inputs -----------------------------------------------------------------------------------


def test_inconsistent_inputs_are_refused_by_name() -> None:
    with pytest.raises(ReconcileError, match="filed under"):
        reconcile({OTHER: item()}, {}, None, POLICY, NOW)
    with pytest.raises(ReconcileError, match="tombstone"):
        reconcile({CERT: tomb()}, {}, None, POLICY, NOW)
    with pytest.raises(ReconcileError, match="tombstone_days"):
        Policy(tombstone_days=0)
    with pytest.raises(ReconcileError, match="modified"):
        item(modified=-1)


# --- R30: idempotence, for any inputs ---------------------------------------------------------

KEYS = [CERT, OTHER, KEY, "%4\\" + "D" * 40]
times = st.sampled_from([T0, T0 + 1, NOW - 61 * DAY, NOW - DAY, NOW, NOW + DAY])


@st.composite
def versions(draw, key: str) -> Item:
    if draw(st.booleans()) and draw(st.booleans()):
        return tomb(key, draw(times))
    return item(
        key,
        draw(times),
        draw(st.sampled_from(["a", "b", "c"])),
        archived=draw(st.booleans()),
        expires=draw(st.one_of(st.none(), times)),
        smartcard=draw(st.sampled_from([False, False, False, True])),
        size=draw(st.sampled_from([10, 70000])),
        owner=CERT if key == KEY else None,
    )


@st.composite
def states(draw) -> tuple[dict, dict, Base | None]:
    local, directory, entries = {}, {}, {}
    for key in KEYS:
        if draw(st.booleans()):
            v = draw(versions(key))
            if not v.tombstone:
                local[key] = v
        if draw(st.booleans()):
            directory[key] = draw(versions(key))
        if draw(st.booleans()):
            entries[key] = BaseEntry.of(draw(versions(key)), draw(times))
    base = Base(entries=entries) if draw(st.booleans()) else None
    return local, directory, base


# Issue 8: an expired certificate whose key is over max_token_size, last agreed (archived) more
# than TD ago: the first sync refused the group but archived the certificate locally, so the
# second saw it unchanged since the base (R16) and deleted it.
EXPIRED_GROUP_REFUSED = (
    {
        CERT: item(CERT, NOW - DAY, "a", expires=NOW - DAY),
        KEY: item(KEY, NOW - DAY, "k", size=70000, owner=CERT, expires=NOW - DAY),
    },
    {},
    base_of((item(CERT, NOW - DAY, "a", expires=NOW - DAY, archived=True), NOW - 61 * DAY)),
)


# Found by make hunt: a key (not on the card) of a smart-card certificate, which never roams,
# was uploaded while the directory held a tombstone of that certificate.
KEY_OF_A_SMARTCARD_CERTIFICATE = (
    {
        CERT: item(CERT, T0, "a", size=10, smartcard=True),
        KEY: item(KEY, T0, "a", size=10, owner=CERT),
    },
    {CERT: tomb(CERT, T0)},
    None,
)

# Found by make hunt: the directory's value of the key claims a smart card, so the key was held
# and stayed here when its certificate was deleted (R11).
KEY_CLAIMED_BY_A_SMARTCARD_VALUE = (
    {CERT: item(CERT, T0, "a", size=10), KEY: item(KEY, T0, "a", size=10, owner=CERT)},
    {CERT: tomb(CERT, T0), KEY: item(KEY, T0, "a", size=10, owner=CERT, smartcard=True)},
    None,
)


@settings(max_examples=examples(300))
@given(states(), st.sampled_from([Policy(), Policy(max_tokens=2)]))
@example(EXPIRED_GROUP_REFUSED, Policy())
@example(KEY_OF_A_SMARTCARD_CERTIFICATE, Policy())
@example(KEY_CLAIMED_BY_A_SMARTCARD_VALUE, Policy())
def test_r30_applying_a_plan_then_reconciling_again_changes_nothing(state, policy) -> None:
    before, directory, base = state
    plan = reconcile(before, directory, base, policy, NOW)
    local, directory = apply(before, directory, plan)
    again = reconcile(local, directory, plan.base, policy, NOW)
    assert again.is_empty, again
    assert not again.conflicts
    assert not _orphaned_key(before, local, directory, plan)  # R35, R36


# --- siblings of R30: a refused group combined with every other rule --------------------------


def _situations(key: str, size: int) -> list[tuple[Item | None, Item | None, BaseEntry | None]]:
    """(local, directory, base) of one item, covering the rows R1..R24 of the README."""
    owner = CERT if key == KEY else None
    expiry = NOW - DAY if key == KEY else NOW - 2 * DAY  # keys expire with their certificate

    def live(modified: int, content: str, **extra) -> Item:
        return item(key, modified, content, size=size, owner=owner, **extra)

    old, new = live(T0, "a"), live(NOW - DAY, "b")
    expired = live(T0, "a", expires=expiry)
    locals_ = [None, old, new, expired]
    directories = [None, old, new, tomb(key, T0 + 1), tomb(key, NOW - 61 * DAY)]
    directories = [replace(d, owner=owner) if d is not None else None for d in directories]
    bases = [
        None,
        BaseEntry.of(old, NOW - DAY),
        BaseEntry.of(old, NOW - 61 * DAY),
        BaseEntry.of(replace(expired, archived=True), NOW - 61 * DAY),
        BaseEntry.of(replace(tomb(key, T0 + 1), owner=owner), NOW - DAY),
    ]
    return [(lo, di, ba) for lo in locals_ for di in directories for ba in bases]


@pytest.mark.parametrize("big", [CERT, KEY])
def test_r30_a_refused_group_with_every_other_rule_settles_in_one_sync(big: str) -> None:
    """Every combination of a certificate's and its key's situations, with one of the pair
    over max_token_size (so any upload of the pair is refused): the plan, once applied, is
    final (R30), and it never leaves a key without its certificate locally nor uploads one
    alone (R35, R36)."""
    failures = []
    for cert_state in _situations(CERT, 70000 if big == CERT else 10):
        for key_state in _situations(KEY, 70000 if big == KEY else 10):
            local, directory, entries = {}, {}, {}
            for (lo, di, ba), key in ((cert_state, CERT), (key_state, KEY)):
                if lo is not None:
                    local[key] = lo
                if di is not None:
                    directory[key] = di
                if ba is not None:
                    entries[key] = ba
            base = Base(entries=entries) if entries else None
            plan = reconcile(local, directory, base, POLICY, NOW)
            after_local, after_directory = apply(local, directory, plan)
            again = reconcile(after_local, after_directory, plan.base, POLICY, NOW)
            if not again.is_empty or again.conflicts:
                failures.append((cert_state, key_state, plan, again))
            elif orphaned := _orphaned_key(local, after_local, after_directory, plan):
                failures.append((cert_state, key_state, plan, orphaned))
    assert not failures, f"{len(failures)} combinations, first: {failures[0]}"


def _orphaned_key(before: dict, after: dict, directory: dict, plan: Plan) -> str:
    """What the plan did to KEY that it must not do without CERT, if anything."""
    if KEY in before and before[KEY].smartcard:
        return ""  # on its card: credroam never touches it (R27)
    if KEY in after and CERT in before and CERT not in after:
        return "the certificate was deleted locally, its key kept"
    if any(i.key == KEY for i in plan.download) and CERT not in after:
        return "key downloaded without its certificate"
    if any(i.key == KEY for i in plan.upload) and (
        CERT not in after or (CERT in directory and directory[CERT].tombstone)
    ):
        return "key uploaded without its certificate"
    return ""


# --- R35, R36: a private key follows its certificate -------------------------------------------

SYNCED_CERT, SYNCED_KEY = item(), item(KEY, owner=CERT, content="k1")
BOTH_SYNCED = base_of((SYNCED_CERT, T0), (SYNCED_KEY, T0))


def test_r35_key_replaced_here_is_deleted_with_its_certificate_deleted_elsewhere() -> None:
    """Issue 8: the key, newer than the deletion, must not be uploaded alone (R12) while its
    certificate is deleted here (R11): it goes too, kept aside as a copy, and it is reported.
    Its tombstone is dated after it, so no older version of the key, roamed meanwhile by a
    host that had not seen the deletion, comes back over the copy kept aside."""
    replaced = item(KEY, modified=T0 + 9, content="k2", owner=CERT)
    deleted = [tomb(modified=T0 + 5), replace(tomb(KEY, T0 + 5), owner=CERT)]
    plan = run(local=[SYNCED_CERT, replaced], directory=deleted, base=BOTH_SYNCED)
    only(plan, delete_local=[KEY, CERT], tombstone_directory=[KEY])
    key_deletion = plan.delete_local[0]
    assert key_deletion.keep_copy and CERT in key_deletion.reason
    assert [c.key for c in plan.conflicts] == [KEY]
    assert plan.tombstone_directory[0].modified == T0 + 10
    older = item(KEY, modified=T0 + 7, content="k3", owner=CERT)
    assert newest([plan.tombstone_directory[0], older]).tombstone


def test_r35_a_key_roamed_after_its_certificate_was_deleted_waits_for_its_return() -> None:
    """The hunt: a host that had not seen the certificate's deletion roamed a new key. A host
    that sees both removes its copies, but leaves that key in the directory (a tombstone
    dated at the sync beat it): when the certificate is edited back to life (newer than its
    deletion, R12), it comes back with its newest key, on this host too."""
    roamed = item(KEY, modified=T0 + 9, content="k2", owner=CERT)
    deleted = tomb(modified=T0 + 5)
    plan = run(local=[SYNCED_CERT, SYNCED_KEY], directory=[deleted, roamed], base=BOTH_SYNCED)
    only(plan, delete_local=[KEY, CERT])
    assert [c.key for c in plan.conflicts] == [KEY]
    assert plan.base.entries[KEY].tombstone and plan.base.entries[KEY].modified < T0 + 9
    assert run(directory=[deleted, roamed], base=plan.base).is_empty
    back = item(modified=T0 + 7, content="c2")
    again = run(directory=[back, roamed], base=plan.base)
    only(again, download=[CERT, KEY])
    assert again.download[1].content_hash == "k2"


def test_r35_key_in_replication_lag_goes_with_its_certificate() -> None:
    """The key is held by its own rule (R14, the DC lags) but its certificate is deleted: it
    goes from here; its value on the other DCs is left to wait for the certificate's return."""
    plan = run(local=[SYNCED_CERT, SYNCED_KEY], directory=[tomb(modified=T0 + 5)], base=BOTH_SYNCED)
    only(plan, delete_local=[KEY, CERT])


def test_r35_a_certificate_deleted_here_leaves_its_roamed_key_in_the_directory() -> None:
    """The hunt: a host holding the certificate but not its key deleted the certificate, and
    tombstoned the key with it; another host then edited the certificate back to life (newer
    than the deletion, R12) and it came back without its key, which no user had deleted."""
    synced = base_of((SYNCED_CERT, T0))
    plan = run(directory=[SYNCED_CERT, SYNCED_KEY], base=synced)
    only(plan, tombstone_directory=[CERT])
    back = item(modified=NOW + 1, content="c2")
    again = run(directory=[back, SYNCED_KEY], base=plan.base, now=NOW + 2)
    only(again, download=[CERT, KEY])


def test_r37_a_key_deleted_elsewhere_while_its_certificate_stays_is_kept_aside() -> None:
    """The hunt: a key tombstoned with its certificate, whose deletion was then purged; an
    edit on a host away since brings the certificate back (R17), and the key's tombstone
    deletes the only copy left of the key. The copy is kept aside and reported."""
    away = base_of((SYNCED_CERT, T0 - 70 * DAY), (SYNCED_KEY, T0 - 70 * DAY))
    edited = item(modified=NOW - 1, content="c2")
    plan = run(local=[edited, SYNCED_KEY], directory=[tomb(KEY, NOW - DAY)], base=away)
    only(plan, upload=[CERT], delete_local=[KEY])
    assert plan.delete_local[0].keep_copy
    assert [c.key for c in plan.conflicts] == [KEY]


STRICT = Policy(keep_deleted_copy=False)
LATER = T0 + 80 * DAY  # the certificate's deletion at T0 + 5 is purged by now


def test_r37_a_key_roamed_after_its_certificate_was_deleted_is_kept_aside_at_the_purge() -> None:
    """The hunt: the key, edited after its certificate's deletion, goes with the purge of
    that deletion (R23, R35); an edit of the certificate on a host away since may still bring
    it back (R17), and this was the last copy of the key's newest version."""
    roamed = item(KEY, modified=T0 + 9, content="k2", owner=CERT)
    base = base_of((SYNCED_CERT, T0), (roamed, T0 + 9))
    plan = run(
        local=[SYNCED_CERT, roamed],
        directory=[tomb(modified=T0 + 5), roamed],
        base=base,
        policy=STRICT,
        now=LATER,
    )
    only(plan, delete_local=[KEY, CERT], tombstone_directory=[KEY], purge_directory=[CERT])
    assert plan.delete_local[0].keep_copy and not plan.delete_local[1].keep_copy
    assert [c.key for c in plan.conflicts] == [KEY]


def test_r37_a_key_tombstone_outliving_its_certificates_purged_one_keeps_a_copy() -> None:
    """The hunt: the certificate is gone by a deletion already purged (R16), its key by a
    tombstone written after it, perhaps at that purge (R35): the key is kept aside."""
    later_tombstone = replace(tomb(KEY, T0 + 70 * DAY), owner=CERT)
    plan = run(
        local=[SYNCED_CERT, SYNCED_KEY],
        directory=[later_tombstone],
        base=BOTH_SYNCED,
        policy=STRICT,
        now=LATER,
    )
    only(plan, delete_local=[KEY, CERT])
    assert plan.delete_local[0].keep_copy and not plan.delete_local[1].keep_copy


def test_r37_a_key_whose_tombstone_is_purged_too_keeps_a_copy_on_a_host_away_that_long() -> None:
    """The hunt (schedule 97850): this host was away past the purge of the certificate's
    deletion and of the key's own tombstone (written at that purge, R35): the directory holds
    neither. A host away as long may still edit the certificate back to life (R17), so this
    host's copy of the key, the newest there is, is kept aside, not lost. No conflict is
    reported: mostly both are simply gone, as on every host back that late (a laptop after
    a long trip would otherwise warn of each credential deleted meanwhile)."""
    plan = run(
        local=[SYNCED_CERT, SYNCED_KEY], base=BOTH_SYNCED, policy=STRICT, now=LATER + 70 * DAY
    )
    only(plan, delete_local=[KEY, CERT])
    assert plan.delete_local[0].keep_copy and not plan.delete_local[1].keep_copy
    assert "purged" in plan.delete_local[0].reason and not plan.conflicts


def test_r35_a_key_value_held_back_here_is_tombstoned_with_its_certificates_purge() -> None:
    """The hunt: the base has the key deleted, so its older live value in the directory is
    held back (R22); the certificate's tombstone is purged now (R23): no host may know of it
    afterwards, so this plan tombstones the key, which would otherwise stay alone for ever."""
    stale = item(KEY, modified=T0 + 3, content="k2", owner=CERT)
    deleted = base_of((tomb(modified=T0 + 5), T0 + 5), (replace(tomb(KEY, T0 + 4), owner=CERT), T0))
    plan = run(directory=[tomb(modified=T0 + 5), stale], base=deleted, policy=STRICT, now=LATER)
    only(plan, tombstone_directory=[KEY], purge_directory=[CERT])


def test_r35_key_whose_directory_value_claims_a_smart_card_is_removed_locally_only() -> None:
    local, directory, base = KEY_CLAIMED_BY_A_SMARTCARD_VALUE
    plan = reconcile(local, directory, base, POLICY, NOW)
    only(plan, delete_local=[KEY, CERT])


def test_r35_unusable_key_value_is_removed_locally_only() -> None:
    plan = reconcile(
        {CERT: SYNCED_CERT, KEY: SYNCED_KEY},
        {CERT: tomb(modified=T0 + 5)},
        BOTH_SYNCED,
        POLICY,
        NOW,
        hold_keys={KEY},
    )
    only(plan, delete_local=[KEY, CERT])
    assert plan.base.entries[KEY] == BOTH_SYNCED.entries[KEY]  # R34: the directory untouched


def test_r36_key_without_its_certificate_is_never_downloaded() -> None:
    orphan = item(KEY, owner=CERT)
    plan = run(directory=[orphan])
    only(plan)
    assert KEY not in plan.base.entries
    assert any(KEY in warning and CERT in warning for warning in plan.warnings)
    # Its certificate replicates in later: both are downloaded together.
    only(run(directory=[orphan, item()]), download=[CERT, KEY])


def test_r36_key_of_a_certificate_that_does_not_roam_does_not_roam_either() -> None:
    local, directory, base = KEY_OF_A_SMARTCARD_CERTIFICATE
    plan = reconcile(local, directory, base, POLICY, NOW)
    only(plan)
    assert any(KEY in warning and "does not roam" in warning for warning in plan.warnings)


def test_r36_key_without_its_certificate_is_never_uploaded_alone() -> None:
    plan = run(local=[item(KEY, owner=CERT)])
    only(plan)
    assert plan.warnings


# --- R34: a directory value that exists but cannot be used ------------------------------------


def test_r34_an_unusable_directory_value_holds_its_key_on_both_sides() -> None:
    # The key is in the directory but cannot be opened (e.g. sealed under another roaming key):
    # its absence from the directory items must not read as a deletion elsewhere (R16) nor
    # invite an upload over the value another host wrote.
    old = item(KEY, T0 - 100 * DAY)
    base = base_of((old, T0 - 100 * DAY))
    plan = reconcile({KEY: old}, {}, base, POLICY, NOW, hold_keys={KEY})
    only(plan)
    assert plan.base.entries[KEY] == base.entries[KEY]
    assert any(KEY in warning for warning in plan.warnings)
    edited = item(KEY, NOW - 1, "v2")
    only(reconcile({KEY: edited}, {}, None, POLICY, NOW, hold_keys={KEY}))
    only(reconcile({}, {}, base, POLICY, NOW, hold_keys={KEY}))  # no tombstone either
