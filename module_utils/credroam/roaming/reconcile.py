"""Reconciliation: a pure function from (local items, directory items, base, policy, now) to a plan.

No I/O happens here. The caller reads the local store and the directory, calls ``reconcile``,
applies the plan (directory first, as one atomic modify per attribute; then the local store) and
saves ``plan.base`` only after the whole plan was applied. If applying fails half-way the old
base stays, and the next sync completes the work: every rule below is safe with an older base.

Conventions (decided here, used by every caller):

- All times are FILETIME ints (100 ns ticks since 1601-01-01 UTC), ``now`` included: the token
  format, msPKIRoamingTimeStamp and the state file all use them, so no conversion can drift.
  ``credroam.timestamps.to_filetime`` converts datetimes.
- ``Item.content_hash`` is the lower-case hex SHA-256 of the item's canonical payload, the bytes
  ``CertificateStore.read``/``write`` exchange: the DER certificate, the DER request, the
  PKCS#8 DER private key. It never depends on the tombstone or archived flags, nor on how the
  directory wraps the payload (store element, key envelope): the directory side must hash the
  same canonical payload, or equal items would look different forever.
- A version is ``(modified, tombstone, archived, content_hash)`` and versions are ordered as
  that tuple: the newest ``modified`` wins; at equal times a tombstone wins over a live item
  (a local copy not newer than a tombstone is deleted), an archived copy over the same copy not
  yet archived, and then the larger content hash, so every host resolves a tie the same way.
  ``newest`` applies the same order to duplicate directory values of one key (linked-value
  replication can leave two values per key after concurrent writes through two DCs).
- A local deletion is noticed at the next sync, so its tombstone carries that sync's time
  (the local store keeps no record of when a file disappeared), even when the directory
  already holds an older tombstone of the item: the later deletion wins (R33).
- A plan is a decision taken at ``now`` and holds only while the clock is near ``now``: the base
  records ``now`` as the time each item was seen in the directory, and for an uploaded item that
  must not be earlier than its write. Otherwise a later sync that reads a DC the write has not
  reached yet takes replication lag for a deletion purged long ago (R10, R16). The caller writes
  only a plan that ``Plan.is_current`` at the moment of writing; otherwise it re-reads and
  re-plans with the current time.

The rules are listed as a table in the README ("Reconciliation rules"); ``_decide``
implements them in the same order, each key on its own. ``_follow_owners`` then makes each
private key follow its certificate or request (R35 to R37), and the limits refuse whole groups
(R25, R26).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, replace

from .model import (
    Base,
    BaseEntry,
    Conflict,
    Item,
    ItemKind,
    LeftAlone,
    LocalDeletion,
    Plan,
    Policy,
    ReconcileError,
    Refusal,
    RefusalCause,
    newest,
)

__all__ = ["reconcile"]

# --- the per-item decision -------------------------------------------------------------------


@dataclass(slots=True)
class _Decision:
    """The outcome for one key before limits are applied."""

    key: str
    local: Item | None
    directory: Item | None
    base: BaseEntry | None
    target: Item | None = None  # what both sides should hold; None: absent on both
    hold: bool = False  # write nothing on either side and keep the base entry as it is
    hold_directory: bool = False  # leave the directory alone (the deletion is already agreed)
    # R35: leave the directory's value alone (a key waits there for its deleted owner's
    # return); locally, and in the base, the target (a tombstone) holds.
    leave_directory: bool = False
    purged_deletion: bool = False  # R16: deleted elsewhere, and that tombstone is purged
    keep_copy: bool = False
    undecided: bool = False  # R18: the copy stays until resolved
    deletion_reason: str = ""
    conflict: str = ""
    unusable: bool = False  # the directory value exists but cannot be used (R34)
    warning: str = ""


def _tombstone_after(base: BaseEntry, now: int) -> Item:
    """A tombstone for a deletion noticed at ``now``, always newer than what it deletes."""
    return base.tombstone_at(max(now, base.modified + 1))


def _never_roams(item: Item | None, policy: Policy) -> bool:
    if item is None or not item.smartcard:
        return False
    return item.kind is ItemKind.KEY or not policy.roam_smartcard_certificates


def _decide_absent_locally(d: _Decision, policy: Policy, now: int) -> None:
    directory, base = d.directory, d.base
    if base is not None and not base.tombstone:
        _decide_deleted_here(d, base, now)
        return
    if directory is None:
        # Keep a tombstone in the base while lagging DCs may still show the old copy.
        keep = base is not None and now - base.modified <= policy.tombstone_ticks
        d.target, d.hold = None, keep
    elif directory.tombstone or base is None:
        d.target = directory  # a deletion to record, or new elsewhere (or first use): download
    elif directory.version > base.version:
        d.target = directory  # re-created elsewhere after the deletion
    else:
        d.hold, d.target = True, None  # a lagging DC still shows what was deleted


def _decide_deleted_here(d: _Decision, base: BaseEntry, now: int) -> None:
    """The item was synced and is gone from the local store: a local deletion, noticed now.

    Its tombstone competes like any version with what the directory holds, a tombstone
    included: an edit made elsewhere before this sync must lose to this deletion whichever
    order the hosts sync in, so an older tombstone from another host does not stand for it.
    """
    directory = d.directory
    tombstone = _tombstone_after(base, now)
    if directory is None:
        # Either the DC we read has not got the item yet (R9), or it was deleted elsewhere
        # too and that tombstone is purged (R10). Either way the tombstone is written: an edit
        # made elsewhere that has not reached the directory yet may be older than this
        # deletion, and only a visible tombstone makes it lose.
        d.target = tombstone
    elif directory.tombstone:
        d.target = newest((directory, tombstone))  # deleted on both sides: the later deletion
    elif directory.version > tombstone.version:
        d.target = directory
        d.conflict = "deleted here, but changed elsewhere later: kept the newer copy"
    else:
        d.target = tombstone
        if directory.version != base.version:
            d.conflict = "changed elsewhere, deleted here later: the deletion wins"


def _decide_present_locally(d: _Decision, policy: Policy, now: int) -> None:
    local, directory, base = d.local, d.directory, d.base
    assert local is not None
    changed_since_base = base is None or local.version != base.version
    if directory is None:
        if base is None:
            d.target = local  # new here, or first use: upload
        elif base.tombstone:
            if local.version > base.version:
                d.target = local  # re-created here after the deletion
            else:
                # A copy not newer than an agreed deletion came back (restore?): the deletion
                # wins; the tombstone is already agreed, so the directory is left alone.
                d.target, d.hold_directory, d.keep_copy = None, True, True
                d.deletion_reason = "a copy older than its deletion reappeared"
        elif now - base.last_seen_in_directory <= policy.tombstone_ticks:
            # Seen in the directory within the tombstone days: it cannot have been deleted
            # without a visible tombstone, so this is replication lag.
            if changed_since_base:
                d.target = local  # a real edit: it must roam; newest still wins on merge
            else:
                d.hold = True  # keep it, and do not re-upload what the directory has
        elif not changed_since_base:
            d.target = None  # deleted elsewhere over tombstone days ago (no resurrection)
            d.keep_copy, d.purged_deletion = policy.keep_deleted_copy, True
            d.deletion_reason = "deleted elsewhere, tombstone already purged"
        elif local.modified > now - policy.tombstone_ticks:
            # The purged deletion happened at least tombstone days ago: this edit is newer.
            d.target = local
        else:
            d.target, d.keep_copy, d.undecided = None, True, True
            d.deletion_reason = "deleted elsewhere; local edit of unknown order kept as a copy"
            d.conflict = "edited here and deleted elsewhere, order unknown: local copy kept aside"
        return
    if directory.tombstone:
        if local.version > directory.version:
            d.target = local  # a real edit newer than the deletion resurrects the item
        else:
            d.target = directory
            d.keep_copy = policy.keep_deleted_copy or changed_since_base
            d.deletion_reason = "deleted elsewhere"
            if base is not None and changed_since_base:
                d.conflict = "edited here, deleted elsewhere later: the deletion wins"
        return
    if local.version == directory.version:
        d.target = local
        return
    if (
        base is not None
        and not base.tombstone
        and not changed_since_base
        and directory.version < base.version
    ):
        d.hold = True  # the DC we read lags behind what we already agreed on
        return
    d.target = max(local, directory, key=lambda item: item.version)
    if base is None or (directory.version != base.version and changed_since_base):
        d.conflict = "changed on both sides: the newest wins"


def _decide(d: _Decision, policy: Policy, now: int) -> None:
    if d.local is None:
        _decide_absent_locally(d, policy, now)
    else:
        _decide_present_locally(d, policy, now)


def _finish_target(d: _Decision, policy: Policy, now: int) -> None:
    """Purge old tombstones and archive expired items in the agreed target."""
    target = d.target
    if target is None:
        return
    if target.tombstone and now - target.modified > policy.tombstone_ticks:
        d.target = None
    elif (
        not target.tombstone
        and policy.archive_expired
        and not target.archived
        and target.expires is not None
        and target.expires <= now
    ):
        d.target = replace(target, archived=True)


def _only_archived(before: Item, after: Item) -> bool:
    return (
        not before.tombstone
        and not before.archived
        and after.archived
        and before.modified == after.modified
        and before.content_hash == after.content_hash
    )


# --- a private key follows its certificate or request (R35 to R37) ---------------------------


def _is_gone(d: _Decision) -> bool:
    """The plan removes the item (deleted, tombstoned or purged), as decided on its own."""
    return not d.hold and (d.target is None or d.target.tombstone)


def _live_locally_after(d: _Decision) -> bool:
    """The local store holds a live copy once the plan is applied.

    A refused upload leaves the local copy as it is (R25), like a hold: both are decided
    before limits are applied, from the local copy's presence alone.
    """
    if d.hold:
        return d.local is not None
    return d.target is not None and not d.target.tombstone


def _owner_of(d: _Decision) -> str | None:
    for side in (d.local, d.directory, d.base):
        if side is not None and side.kind is ItemKind.KEY:
            return side.owner
    return None


def _tombstone_of(item: Item, modified: int) -> Item:
    return replace(
        item,
        modified=modified,
        content_hash="",
        size=0,
        tombstone=True,
        archived=False,
        expires=None,
    )


def _delete_with_owner(d: _Decision, owner_decision: _Decision, policy: Policy, now: int) -> None:
    """R35: the key goes with its deleted certificate or request, from the local store.

    In the directory a deletion of the owner is no deletion of its key: while the owner's
    tombstone is there, an edit newer than it may bring the owner back (R12, R17, R19, R21),
    and its key must come back with it. So the key's roamed value stays in the directory,
    sealed, unused here (R36), and is tombstoned only when the owner's tombstone is purged
    (R23) or the owner is gone with none (R16). A tombstone of the key written with the
    owner's instead beat key versions no user had deleted, and an owner edited back to life
    came back without its key. A local edit of the key that has not roamed does not roam
    now (R36): it is kept aside, and the directory's older versions get a tombstone dated
    just after it, so none of them comes back over it.
    """
    owner = owner_decision.key
    own = (d.local or d.directory) if d.hold else d.target
    assert own is not None and not own.tombstone  # kept here or in the directory (see caller)
    directory, base, local = d.directory, d.base, d.local
    # The directory holds it (or held it, for a DC that lags): not a local edit of the key.
    roamed = any(
        side is not None and (side.modified, side.content_hash) == (own.modified, own.content_hash)
        for side in (directory, base)
    )
    owner_tombstoned = owner_decision.target is not None and owner_decision.target.tombstone
    live = [v.modified for v in (local, directory, base) if v is not None and not v.tombstone]
    changed = local is not None and (base is None or local.version != base.version)
    d.hold = d.hold_directory = False
    d.keep_copy = policy.keep_deleted_copy or changed
    d.deletion_reason = f"deleted with its certificate or request {owner}"
    deleted_there = directory is not None and directory.tombstone
    if owner_tombstoned and roamed and not deleted_there:
        # Left in the directory for the owner's return. The base records it as deleted here
        # just before that version, so any version of it comes here once the owner does (R21).
        d.target, d.leave_directory = _tombstone_of(own, own.modified - 1), True
        if local is not None and local.version != own.version:
            d.conflict = f"changed elsewhere, but {owner} was deleted: kept in the directory"
        return
    if deleted_there and (roamed or max(live) <= directory.modified):
        d.target = directory  # already deleted in the directory: nothing to write there
    elif directory is not None or (base is not None and not base.tombstone):
        # After a local edit, the tombstone beats the older versions, not edits made since
        # elsewhere; with the owner gone for good it is dated at the sync, after everything.
        modified = max(live) + 1 if owner_tombstoned else max([now, *(t + 1 for t in live)])
        d.target = _tombstone_of(local or directory or own, modified)
    else:
        d.target = None  # never roamed: only the local copy goes
    if base is None or own.version != base.version:
        d.conflict = f"changed, but {owner} was deleted: the key follows it (copy kept aside)"
        d.keep_copy = d.keep_copy or local is not None
    elif local is not None and _purged_before(owner_decision, own):
        # R37: the owner's tombstone is purged now, and the key roamed after that deletion:
        # an edit of the owner may still bring it back (R17), so its newest key is kept aside.
        d.conflict = f"changed after {owner} was deleted, which is purged now: kept aside"
        d.keep_copy = True
    _finish_target(d, policy, now)


def _follow_owners(decisions: Mapping[str, _Decision], policy: Policy, now: int) -> None:
    """Keys never outlive their certificate or request, nor roam without it.

    R35: when the plan removes the owner, the key is removed with it on both sides (a key
    whose directory value is unusable is removed locally only, R34 still holds there).
    R36: a key is downloaded, kept or uploaded only while the local store keeps its owner;
    a key whose owner is absent locally and not deleted (not yet replicated, unusable, or
    never roamed) is left alone on both sides and reported.
    R37: a key removed here while its owner stays, or while its owner goes by a purged
    deletion (R16), or with its owner's purge after roaming since the owner's deletion, is
    kept aside and reported: the owner may come back by an edit newer than its deletion.
    """
    for d in decisions.values():
        owner = _owner_of(d)
        if owner is None or _never_roams(d.local, policy):
            continue  # a key on a smart card is the card's, never the store's (R27)
        owner_decision = decisions.get(owner)
        owner_gone = owner_decision is not None and _is_gone(owner_decision)
        kept_here = d.local is not None if d.hold else not _is_gone(d)
        # A directory value sync cannot use (R34) or must not touch (a smart-card key, R27).
        untouchable = d.unusable or _never_roams(d.directory, policy)
        if owner_gone and untouchable and d.local is not None:
            # The local copy goes; the directory value is left alone.
            d.hold, d.target, d.hold_directory, d.keep_copy = False, None, True, True
            d.deletion_reason = f"deleted with its certificate or request {owner}"
        elif owner_gone and not untouchable and (kept_here or _left_alone(d, owner_decision)):
            assert owner_decision is not None
            _delete_with_owner(d, owner_decision, policy, now)
        elif not owner_gone and not d.hold and kept_here:
            why = _why_key_cannot_roam(owner, owner_decision, policy)
            if why:
                d.hold, d.warning = True, f"{d.key} left alone: {why}"
        elif d.local is not None and not kept_here and _stays_here(owner_decision):
            # R37: the owner stays, its key goes: deleted elsewhere, perhaps only with its
            # owner (R35), which an edit newer than that deletion then brought back.
            d.keep_copy = True
            d.conflict = d.conflict or f"deleted elsewhere, but {owner} stays: key kept aside"
        elif d.local is not None and not kept_here and _gone_with_a_purged_owner(owner_decision):
            # R37: the owner goes by a deletion already purged (R16), and the key with it or
            # by a tombstone of its own, perhaps written with the owner's purge (R35), purged
            # too by now. This host was away that long; a host away as long may still edit
            # the owner back to life (R17) and bring it back without this key. Kept aside
            # without a conflict: mostly both are simply gone, as on any host back that late.
            d.keep_copy = True
            d.deletion_reason = f"deleted with {owner}, whose deletion is purged (copy kept)"


def _left_alone(d: _Decision, owner: _Decision | None) -> bool:
    """The owner goes for good (no tombstone of it stays) and the key's live value in the
    directory is one this host holds back (R22: its base has the key deleted): no other
    host may still know the owner is gone, so this plan tombstones the key (R35)."""
    directory = d.directory
    owner_gone_for_good = owner is not None and owner.target is None
    live_there = directory is not None and not directory.tombstone
    return d.hold and d.local is None and live_there and owner_gone_for_good


def _purged_before(owner: _Decision, key: Item) -> bool:
    """The plan purges the owner's tombstone (R23), which is older than ``key``."""
    gone = owner.directory
    return (
        owner.target is None
        and gone is not None
        and gone.tombstone
        and gone.modified < key.modified
    )


def _gone_with_a_purged_owner(owner: _Decision | None) -> bool:
    """The owner goes by a deletion whose tombstone is purged (R16)."""
    return owner is not None and owner.purged_deletion


def _stays_here(d: _Decision | None) -> bool:
    return d is not None and _live_locally_after(d)


def _why_key_cannot_roam(owner: str, d: _Decision | None, policy: Policy) -> str:
    """Why a key whose owner is not deleted must not roam now (R36), or "" if it may."""
    if d is None or not _live_locally_after(d):
        return f"its certificate or request {owner} is not here"
    if _never_roams(d.local, policy) or _never_roams(d.directory, policy):
        return f"its certificate or request {owner} does not roam (smart card)"
    return ""


# --- limits ----------------------------------------------------------------------------------


def _group(item: Item) -> str:
    return item.owner or item.key


def _apply_limits(
    uploads: dict[str, Item],
    directory: Mapping[str, Item],
    new_other: int,
    policy: Policy,
    refuse_uploads: Mapping[str, str],
) -> dict[str, tuple[str, RefusalCause]]:
    """Refusal reason and cause per refused key. Uploads of one group (a certificate or request
    and its keys) are refused together, for the cause of the member refused on its own; the
    count limit refuses the newest groups that do not fit."""
    reasons: dict[str, tuple[str, RefusalCause]] = {}
    groups: dict[str, list[Item]] = {}
    for item in uploads.values():
        groups.setdefault(_group(item), []).append(item)
    for members in groups.values():
        own_reasons = {m.key: _own_refusal(m, policy, refuse_uploads) for m in members}
        refused = [(key, why) for key, why in own_reasons.items() if why]
        for member in members:
            own = own_reasons[member.key]
            if own:
                reasons[member.key] = own
            elif refused:
                key, (why, cause) = refused[0]
                reasons[member.key] = (f"roams with {key}, which was refused: {why}", cause)
    fitting = {group: members for group, members in groups.items() if members[0].key not in reasons}
    count = len(directory) + new_other
    for group in sorted(fitting, key=lambda g: (max(m.modified for m in fitting[g]), g)):
        members = fitting[group]
        new_keys = sum(1 for m in members if m.key not in directory)
        if count + new_keys <= policy.max_tokens:
            count += new_keys
            continue
        for member in members:
            reasons[member.key] = (
                f"the directory would hold more than {policy.max_tokens} tokens; "
                f"newest items are refused first",
                RefusalCause.TOKEN_COUNT,
            )
    return reasons


def _own_refusal(
    item: Item, policy: Policy, refuse_uploads: Mapping[str, str]
) -> tuple[str, RefusalCause] | None:
    """Why ``item`` may not be uploaded whatever its group does, or None."""
    if item.key in refuse_uploads:
        return refuse_uploads[item.key], RefusalCause.CALLER
    if item.size > policy.max_token_size:
        size = f"{item.size} bytes exceed the maximum token size {policy.max_token_size}"
        return size, RefusalCause.TOKEN_SIZE
    return None


# --- the entry point -------------------------------------------------------------------------


def _check_inputs(
    local: Mapping[str, Item], directory: Mapping[str, Item], base: Base | None
) -> None:
    for side, items in (("local", local), ("directory", directory)):
        for key, item in items.items():
            if key != item.key:
                raise ReconcileError(f"{side} item filed under {key!r} has key {item.key!r}")
    for key, item in local.items():
        if item.tombstone:
            raise ReconcileError(f"local item {key} is a tombstone; local stores hold live items")
    if base is not None:
        for key, entry in base.entries.items():
            if key != entry.key:
                raise ReconcileError(f"base entry filed under {key!r} has key {entry.key!r}")


def reconcile(
    local: Mapping[str, Item],
    directory: Mapping[str, Item],
    base: Base | None,
    policy: Policy,
    now: int,
    *,
    directory_timestamp: int | None = None,
    hold_keys: Collection[str] = (),
    refuse_uploads: Mapping[str, str] | None = None,
) -> Plan:
    """Plan one sync of one user. ``directory`` holds one item per key (see ``newest``).

    ``base`` is None on first use or when the state file was lost: then nothing is deleted on
    the strength of absence, and a directory tombstone still beats a local copy not newer than
    it. ``directory_timestamp`` (msPKIRoamingTimeStamp last change, as read) goes into the new
    base unchanged. ``hold_keys`` are keys whose directory value exists but cannot be used
    (unreadable, sealed under another roaming key, damaged), or that a local store holds but
    cannot list (``sync._held_here``): nothing is done to them on either side and their base
    entry is kept, since their absence proves nothing (R34). Each is reported in ``left_alone``.
    ``refuse_uploads`` maps keys the caller cannot upload to the reason (e.g. a private key
    with no roaming key to seal it): a planned upload of one is refused like one over the
    limits, with its group (R25).
    """
    if isinstance(now, bool) or not isinstance(now, int) or now < 0:
        raise ReconcileError(f"now must be a FILETIME int, not {now!r}")
    _check_inputs(local, directory, base)
    entries = base.entries if base is not None else {}
    held = set(hold_keys)
    decisions: list[_Decision] = []
    for key in sorted(set(local) | set(directory) | set(entries) | held):
        d = _Decision(key, local.get(key), directory.get(key), entries.get(key))
        if key in held:
            d.hold = d.unusable = True
            # Unusable in the directory, or held by a store that cannot list it (a Windows key
            # that will not export): present either way, so never taken for a deletion.
            d.warning = f"{key} left alone on both sides: it is there but cannot be used"
        elif _never_roams(d.local, policy) or _never_roams(d.directory, policy):
            d.hold = True
        else:
            _decide(d, policy, now)
            if not d.hold:
                _finish_target(d, policy, now)
        decisions.append(d)
    _follow_owners({d.key: d for d in decisions}, policy, now)

    uploads: dict[str, Item] = {}
    new_other = 0
    for d in decisions:
        if d.hold or d.hold_directory or d.leave_directory:
            continue
        if d.target is None:
            new_other -= d.directory is not None
        elif d.directory is None or d.directory.version != d.target.version:
            if not d.target.tombstone and not (
                d.directory is not None and _only_archived(d.directory, d.target)
            ):
                uploads[d.key] = d.target
            elif d.directory is None:
                new_other += 1
    refusals = _apply_limits(uploads, directory, new_other, policy, refuse_uploads or {})

    out: dict[str, list] = {name: [] for name in _ACTION_FIELDS}
    new_entries: dict[str, BaseEntry] = {}
    for d in decisions:
        _emit(d, refusals, policy, now, out, new_entries)
    # Keys are downloaded after their certificates or requests and removed before them: a
    # sync stopped half-way through the local store never leaves a key there without its
    # owner, which the next sync could not decide (R36) and the user could edit meanwhile.
    out["download"].sort(key=lambda item: item.kind is ItemKind.KEY)
    out["delete_local"].sort(key=lambda deletion: deletion.item.kind is not ItemKind.KEY)
    return Plan(
        **{name: tuple(values) for name, values in out.items()},
        base=Base(entries=new_entries, directory_timestamp=directory_timestamp, last_sync=now),
    )


_ACTION_FIELDS = (
    "upload",
    "download",
    "delete_local",
    "tombstone_directory",
    "purge_directory",
    "archive_local",
    "archive_directory",
    "conflicts",
    "refused",
    "left_alone",
)


def _emit(
    d: _Decision,
    refusals: Mapping[str, tuple[str, RefusalCause]],
    policy: Policy,
    now: int,
    out: dict[str, list],
    new_entries: dict[str, BaseEntry],
) -> None:
    if d.warning:
        out["left_alone"].append(LeftAlone(d.key, d.warning, unusable=d.unusable))
    refused = d.key in refusals
    if d.hold or refused:
        # Nothing is written on either side and the old base entry stays, so the next sync
        # decides exactly as this one did (R30); a refused item is reported, unresolved (R25).
        if refused:
            assert d.target is not None  # only uploads of live items are refused
            reason, cause = refusals[d.key]
            out["refused"].append(Refusal(d.target, reason, cause))
        if d.base is not None:
            new_entries[d.key] = d.base
        return
    target, local, directory = d.target, d.local, d.directory
    if d.conflict:
        out["conflicts"].append(Conflict(d.key, local, directory, target, d.conflict))

    # Local side.
    if target is None or target.tombstone:
        if local is not None:
            keep = d.keep_copy or policy.keep_deleted_copy
            reason = d.deletion_reason or "deleted elsewhere"
            out["delete_local"].append(LocalDeletion(local, keep, reason, d.undecided))
    elif local is None or local.version != target.version:
        out["archive_local" if local and _only_archived(local, target) else "download"].append(
            target
        )

    # Directory side.
    if d.hold_directory or d.leave_directory:
        pass
    elif target is None:
        if directory is not None:
            out["purge_directory"].append(directory)
    elif directory is None or directory.version != target.version:
        if target.tombstone:
            out["tombstone_directory"].append(target)
        elif directory is not None and _only_archived(directory, target):
            out["archive_directory"].append(target)
        else:
            out["upload"].append(target)

    # The new base: what both sides agree on after the plan.
    if d.hold_directory:
        if d.base is not None:
            new_entries[d.key] = d.base
    elif target is not None:
        new_entries[d.key] = BaseEntry.of(target, now)
