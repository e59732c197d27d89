"""One sync of one user: read the directory, reconcile with the local store, write both sides.

This module wires the pieces; the rules live in :mod:`.reconcile`. The order of writes is
chosen so that a sync interrupted anywhere leaves both sides valid and the next sync finishes:

1. read the user's roaming values (one search) and map valid tokens to reconcile items;
2. reconcile against the local store and the last-synced base;
3. write the directory first, optimistically (on :class:`ConcurrentModification` re-read and
   re-plan, at most ``max_attempts`` times). Until it succeeded nothing local has changed;
4. save an interim base (:meth:`.model.Plan.interim_base`: the directory's new state, the old
   entries of items still to be written locally), so a sync that stops now neither brings
   back an item it uploaded and the user then deleted, nor takes an item it is about to
   remove locally for one the user deleted;
5. then write the local store, item by item, in one store batch (the store records its
   bookkeeping once, at the end; a crash inside the batch still leaves a store that lists each
   item at its true version). Every local write only brings the local side to a version the
   directory now holds, so if one fails the next sync plans it again (the interim base is kept,
   and with it an item both sides already agree on is simply left alone);
6. save the new base last, and only when every write succeeded.

A sync first takes the fast path (:func:`_fast_check`): when the state file's head proves that
nothing changed since the last full sync (same DC, same uSNChanged and msPKIRoamingTimeStamp of
the user object, same local change marker, same policy and roaming key, the full sync interval
not yet over, no certificate due to expire), it stops after one small LDAP search (plus two
once per connection: which DC answers), without listing the store, reading the base or any
token. Otherwise it is a full sync, which with nothing to do costs one LDAP search of all
roaming values and no LDAP write, and records a new head when it can prove what it saw.

The whole sync runs under the local store's lock (:meth:`.store.CertificateStore.lock`), so
two syncs of one user on one host never interleave; a held lock raises :class:`SyncBusy`.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

import ldap3

from ..errors import CredroamError
from ..timestamps import TICKS_PER_DAY
from ..tokens import (
    Token,
    TokenError,
    TokenFlags,
    TokenLimits,
    TokenType,
    encode_token,
    parse_key,
    validate_identifier,
)
from .certelement import (
    certificate_token,
    parse_certificate_token,
    parse_request_token,
    request_token,
)
from .changemark import ChangeMarker, combine
from .directory import (
    ACCOUNT_CREDENTIALS,
    KEY_ENVELOPES,
    ROAMING_KEYS,
    ConcurrentModification,
    RejectedValue,
    RoamingRecord,
    StoredToken,
    ValueChange,
    apply_changes,
    build_modifications,
    dc_identity,
    describe_changes,
    modify_operations,
    put_token,
    read_mark,
    read_roaming,
    remove_token,
)
from .envelope import EnvelopeError, open_private_key, private_key_aad, seal_private_key
from .fsutil import LockHeld
from .model import (
    Base,
    Item,
    ItemKind,
    LeftAlone,
    Plan,
    Policy,
    Refusal,
    StoreName,
    content_hash,
    newest,
)
from .native import native_plan
from .reconcile import reconcile
from .roamingkey import RoamingKeyError, parse_wrapped_keys, roaming_key_id, sealing_user_id
from .state import HEAD_VERSION, SyncHeader
from .store import CertificateStore

__all__ = [
    "DEFAULT_MAX_ATTEMPTS",
    "MAX_CLOCK_SKEW",
    "READ_LIMITS",
    "BaseStore",
    "DirectorySide",
    "FullSyncReason",
    "SyncBusy",
    "SyncError",
    "SyncReport",
    "SyncStep",
    "directory_changes",
    "map_record",
    "reseal_changes",
    "sync_user",
]

DEFAULT_MAX_ATTEMPTS = 5
# What is read is bounded by the policy template's largest values; the user's own policy is
# enforced on what is written (reconcile refuses items over it), never by dropping what others
# wrote.
READ_LIMITS = TokenLimits(max_token_size=100000, max_tokens=10000)
# How far in the future a directory token may be dated (other hosts' clocks differ from ours).
MAX_CLOCK_SKEW = TICKS_PER_DAY
_KIND_OF_TYPE = {
    TokenType.CERTIFICATE: (ItemKind.CERTIFICATE, StoreName.MY),
    TokenType.CNG_CERTIFICATE: (ItemKind.CERTIFICATE, StoreName.MY),
    TokenType.REQUEST: (ItemKind.REQUEST, StoreName.REQUEST),
    TokenType.CNG_REQUEST: (ItemKind.REQUEST, StoreName.REQUEST),
}


class SyncError(CredroamError):
    """A sync could not complete; the message says which step and why."""


class SyncBusy(SyncError):
    """Another sync of the same user holds the local store's lock; try again when it ends."""


class BaseStore(Protocol):
    """Where the last-synced base of one user on this host is kept (the state file).

    A base store may also keep a :class:`~.state.SyncHeader` (``load_header``,
    ``save_header``, ``clear_header``, as :class:`~.state.StateFile` does); without them every
    sync is a full one.
    """

    def load(self) -> Base | None: ...

    def save(self, base: Base) -> None: ...


class SyncStep:
    """The steps of a full sync at which ``sync_user(..., checkpoint=)`` is called, in order.

    Each names what has happened when the checkpoint runs; a sync stopped there (a crash, a
    killed process, a lost DC) must leave both sides valid, and the next sync completes it.
    Fault tests stop or kill the agent at one (its test hook, ``credroam_agent.testhook``), and
    the convergence simulation crashes its hosts at each.
    """

    PLANNED = "planned"  # read and planned; nothing written yet
    DIRECTORY_WRITTEN = "directory-written"  # the LDAP modify succeeded; nothing local yet
    STORE_HALF_WRITTEN = "store-half-written"  # the first local write of several is done
    BASE_NOT_SAVED = "base-not-saved"  # every local write done; the new base not saved yet
    ALL = (PLANNED, DIRECTORY_WRITTEN, STORE_HALF_WRITTEN, BASE_NOT_SAVED)


Checkpoint = Callable[[str], None]


def _no_checkpoint(step: str) -> None:
    """The default: a sync runs through its steps without stopping."""


class FullSyncReason:
    """Why a sync was a full one (``SyncReport.full_sync_reason``); None: the fast path."""

    FORCED = "forced"  # the caller asked (force_full), e.g. a file watch saw a change
    RESEAL = "keys to re-seal"  # the caller gave retired roaming keys
    NO_HEADER = "no header"  # first sync, a damaged head, or a base store without one
    INTERVAL = "full sync interval over"
    DUE = "a certificate is due to expire"
    SETTINGS = "policy or roaming key changed"
    USER = "another user's head"
    LOCAL = "local change"  # or the local stores cannot give a marker now
    OTHER_DC = "another DC"
    DIRECTORY = "directory change"


@dataclass(frozen=True)
class SyncReport:
    user_dn: str
    uploaded: tuple[str, ...] = ()
    downloaded: tuple[str, ...] = ()
    tombstoned: tuple[str, ...] = ()
    archived: tuple[str, ...] = ()
    purged: tuple[str, ...] = ()
    deleted_local: tuple[str, ...] = ()
    refused: tuple[Refusal, ...] = ()  # uploads not made, why, and the cause
    rejected: tuple[RejectedValue, ...] = ()  # directory values that failed a check
    held: tuple[str, ...] = ()  # keys left alone: their directory values are all unusable
    conflicts: tuple[tuple[str, str], ...] = ()  # (item key, how it was resolved)
    local_errors: tuple[tuple[str, str], ...] = ()  # (item key, error); base not saved
    # Private keys whose directory value was re-sealed under the roaming key (it had been
    # sealed under a retired one), and the retired keys whose records the sync removed.
    resealed: tuple[str, ...] = ()
    retired_keys: tuple[str, ...] = ()
    recovery: tuple[str, ...] = ()  # what was done to the store's recovery copies, and problems
    left_alone: tuple[LeftAlone, ...] = ()  # items the plan left alone on both sides
    warnings: tuple[str, ...] = ()  # for a person: what reconcile left alone or refused, and why
    store_problems: tuple[str, ...] = ()  # local files the store skipped, and why
    attempts: int = 1  # reads needed (more than one when another writer raced us)
    # The LDAP modifies sent (or, in check mode, planned), as modify_operations() shows them.
    operations: tuple[dict, ...] = ()
    directory_changes: tuple[str, ...] = ()  # readable form of the modifies
    check_mode: bool = False
    # Why the sync compared every item (a FullSyncReason); None: the fast path proved that
    # nothing changed and the sync stopped after its small search.
    full_sync_reason: str | None = FullSyncReason.NO_HEADER

    @property
    def changed(self) -> bool:
        return bool(self.operations or self.downloaded or self.deleted_local or self.archived)


# --- the directory side as reconcile items ---------------------------------------------------


@dataclass(frozen=True)
class DirectorySide:
    """Reconcile items of the directory, their canonical payloads, and what could not be used."""

    items: dict[str, Item]
    payloads: dict[str, bytes]
    rejected: tuple[RejectedValue, ...]
    # Keys whose values are in the directory but none can be used: held on both sides (R34).
    unusable_keys: frozenset[str] = frozenset()
    # Per key, the values that opened only with a retired roaming key (to be removed), and
    # whether the key's chosen version is among them (to be written again, sealed anew).
    resealable: Mapping[str, tuple[tuple[bytes, ...], bool]] = field(default_factory=dict)


def _certificate_item(stored: StoredToken) -> tuple[Item, bytes]:
    token = stored.token
    kind, store = _KIND_OF_TYPE[token.type]
    if token.is_tombstone:
        item = Item(token.key, store, kind, token.last_modified, "", 0, tombstone=True)
        return item, b""
    if kind is ItemKind.REQUEST:
        return _request_item(token, store)
    element = parse_certificate_token(token)  # raises CertElementError (a TokenError)
    item = Item(
        key=token.key,
        store=store,
        kind=kind,
        modified=token.last_modified,
        content_hash=content_hash(element.der),
        size=len(element.der),
        archived=element.archived,
        expires=element.expires,
    )
    return item, element.der


def _request_item(token: Token, store: StoreName) -> tuple[Item, bytes]:
    der = parse_request_token(token)  # a Windows dummy-certificate request is refused: held
    modified = token.last_modified
    return Item(token.key, store, ItemKind.REQUEST, modified, content_hash(der), len(der)), der


def _owner_key(identifier: str, items: Mapping[str, Item]) -> str:
    """The certificate or request a private key belongs to (same thumbprint)."""
    owner_types = (*_KIND_OF_TYPE,)  # certificates and requests, CAPI and CNG
    for token_type in owner_types:
        key = f"%{token_type.value}\\{identifier}"
        if key in items:
            return key
    return f"%{TokenType.CERTIFICATE.value}\\{identifier}"


def _key_item(
    stored: StoredToken, roaming_key: bytes, user_id: str, owners: Mapping[str, Item]
) -> tuple[Item, bytes]:
    token = stored.token
    # credroam seals a key under its certificate's thumbprint: any other name has no owner and
    # would poison the base (store and state refuse such owners), so it is rejected here.
    validate_identifier(TokenType.CERTIFICATE, token.identifier)
    owner = owners.get(_owner_key(token.identifier, owners))
    owner_key = owner.key if owner else _owner_key(token.identifier, owners)
    if token.is_tombstone:
        kind, store = ItemKind.KEY, StoreName.MY
        return Item(token.key, store, kind, token.last_modified, "", 0, True, owner=owner_key), b""
    try:
        payload = open_private_key(roaming_key, token.data, private_key_aad(user_id, token.key))
    except EnvelopeError as exc:
        raise TokenError("envelope", f"sealed key {token.key}: {exc}") from exc
    # A key is archived and expires together with its certificate (reconcile's convention).
    item = Item(
        key=token.key,
        store=StoreName.MY,
        kind=ItemKind.KEY,
        modified=token.last_modified,
        content_hash=content_hash(payload),
        size=len(payload),
        archived=bool(owner and owner.archived),
        expires=owner.expires if owner else None,
        owner=owner_key,
    )
    return item, payload


def _usable_versions(
    tokens: Iterable[StoredToken],
    map_one: Callable[[StoredToken], tuple[Item, bytes]],
    rejected: list[RejectedValue],
    now: int | None,
) -> tuple[dict[str, tuple[Item, bytes]], set[str]]:
    """Per key, the newest value that passes its checks; and the keys where none does.

    Only values that pass compete (in reconcile's version order), so a newer damaged duplicate
    never hides an older good value. Values that fail are added to ``rejected``.
    """
    usable: dict[str, dict[Item, bytes]] = {}
    failed: set[str] = set()
    for stored in tokens:
        try:
            _check_not_future(stored.token, now)
            item, payload = map_one(stored)
        except TokenError as exc:
            rejected.append(RejectedValue(stored.attribute, stored.raw, exc))
            failed.add(stored.token.key)
            continue
        usable.setdefault(item.key, {})[item] = payload
    chosen = {}
    for key, versions in usable.items():
        winner = newest(versions)
        chosen[key] = (winner, versions[winner])
    return chosen, failed - chosen.keys()


def _check_not_future(token: Token, now: int | None) -> None:
    if now is not None and token.last_modified > now + MAX_CLOCK_SKEW:
        raise TokenError(
            "future",
            f"{token.key} is dated {token.last_modified}, more than a day after now ({now})",
        )


def _tokens_of(record: RoamingRecord, attribute: str, types: Collection[TokenType]):
    return [
        stored
        for stored in record.tokens
        if stored.attribute.lower() == attribute.lower() and stored.token.type in types
    ]


def map_record(
    record: RoamingRecord,
    roaming_key: bytes | None,
    local: Mapping[str, Item] | None = None,
    *,
    now: int | None = None,
    retired_keys: Sequence[bytes] = (),
) -> DirectorySide:
    """Reconcile items for the certificate, request and key tokens of ``record``.

    A sealed key that ``roaming_key`` does not open is tried with each of ``retired_keys``;
    one that opens so is listed in ``resealable`` (:func:`reseal_changes`).

    Tokens sync does not own (DPAPI master keys, CAPI keys, unknown types) are left alone. A
    token whose content fails a check (element, envelope) is rejected like a malformed value;
    a key none of whose values pass is listed in ``unusable_keys`` (it exists, so reconcile
    must hold it rather than take it for deleted). Given ``now``, a token dated more than
    ``MAX_CLOCK_SKEW`` after it is rejected too: it would win every comparison and push the
    base and later tombstones past the largest FILETIME.
    """
    rejected = list(record.rejected)
    certificates, unusable = _usable_versions(
        _tokens_of(record, ACCOUNT_CREDENTIALS, _KIND_OF_TYPE), _certificate_item, rejected, now
    )
    owners = {**(local or {}), **{key: item for key, (item, _) in certificates.items()}}

    own: dict[str, set[Item]] = {}  # versions that opened with roaming_key
    under_retired: dict[str, dict[bytes, Item]] = {}  # raw value -> version, per key

    user_id = str(record.object_guid)

    def key_item(stored: StoredToken) -> tuple[Item, bytes]:
        if roaming_key is None and not stored.token.is_tombstone:
            raise TokenError("envelope", f"no roaming key to open {stored.token.key}")
        try:
            opened = _key_item(stored, roaming_key or b"", user_id, owners)
        except TokenError:
            for retired in retired_keys:
                with contextlib.suppress(TokenError):
                    opened = _key_item(stored, retired, user_id, owners)
                    under_retired.setdefault(stored.token.key, {})[stored.raw] = opened[0]
                    return opened
            raise
        own.setdefault(stored.token.key, set()).add(opened[0])
        return opened

    keys, unusable_keys = _usable_versions(
        _tokens_of(record, KEY_ENVELOPES, (TokenType.CNG_KEY,)), key_item, rejected, now
    )
    chosen = {**certificates, **keys}
    return DirectorySide(
        items={key: item for key, (item, _) in chosen.items()},
        payloads={key: payload for key, (_, payload) in chosen.items()},
        rejected=tuple(rejected),
        unusable_keys=frozenset(unusable | unusable_keys),
        resealable={
            key: (
                tuple(values),
                chosen[key][0] in values.values() and chosen[key][0] not in own.get(key, ()),
            )
            for key, values in under_retired.items()
            if key in chosen
        },
    )


# --- the plan as directory changes -----------------------------------------------------------


def _attribute(item: Item) -> str:
    return KEY_ENVELOPES if item.kind is ItemKind.KEY else ACCOUNT_CREDENTIALS


def _token_for(item: Item, payload: bytes, roaming_key: bytes | None, user_id: str) -> Token:
    token_type, identifier = parse_key(item.key)
    if item.tombstone:
        return Token(token_type, identifier, item.modified, TokenFlags.TOMBSTONE, b"")
    if item.kind is ItemKind.KEY:
        if roaming_key is None:
            raise SyncError(f"cannot upload private key {item.key}: no roaming key")
        sealed = seal_private_key(roaming_key, payload, private_key_aad(user_id, item.key))
        return Token(token_type, identifier, item.modified, TokenFlags(0), sealed)
    if item.kind is ItemKind.REQUEST:
        return request_token(payload, item.modified, token_type=token_type)
    return certificate_token(payload, item.modified, archived=item.archived, token_type=token_type)


def _sealing_user_id(record: RoamingRecord) -> str:
    """The objectGUID text that binds sealed keys to their user (the same check as the key
    records use); without it no key may be sealed."""
    try:
        return sealing_user_id(record, record.dn)
    except RoamingKeyError as exc:
        raise SyncError(f"cannot seal private keys of {record.dn}: {exc}") from exc


def directory_changes(
    plan: Plan,
    record: RoamingRecord,
    store: CertificateStore,
    roaming_key: bytes | None,
) -> list[ValueChange]:
    """The value changes that carry out the directory half of ``plan``."""
    changes: list[ValueChange | None] = []
    sealing = any(i.kind is ItemKind.KEY for i in (*plan.upload, *plan.archive_directory))
    user_id = _sealing_user_id(record) if sealing and roaming_key is not None else ""
    for item in (*plan.upload, *plan.archive_directory):
        token = _token_for(item, store.read(item), roaming_key, user_id)
        changes.append(put_token(record, _attribute(item), token))
    for item in plan.tombstone_directory:
        changes.append(put_token(record, _attribute(item), _token_for(item, b"", None, user_id)))
    for item in plan.purge_directory:
        changes.append(remove_token(record, _attribute(item), item.key))
    return [change for change in changes if change is not None]


def reseal_changes(
    plan: Plan,
    record: RoamingRecord,
    side: DirectorySide,
    roaming_key: bytes,
    retired_keys: Sequence[bytes],
) -> list[ValueChange]:
    """Values sealed under a retired roaming key written again under ``roaming_key``, then the
    retired keys' records removed (the two-keys case of :mod:`.roamingkey`).

    Only the values sealed under a retired key are replaced; a key's value that neither key
    opens is left alone. A re-sealed value keeps its version (time and content), so no host
    sees a change; an older duplicate under a retired key is only removed. Keys the plan writes
    anyway are left to it (an upload or archive seals under ``roaming_key``, replacing every
    value of the key; a tombstone or purge carries no secret). The records go in the same
    modify as the last values sealed under them, so a retired key is never forgotten while
    something still needs it.
    """
    written = {i.key for i in (*plan.upload, *plan.archive_directory, *plan.tombstone_directory)}
    written |= {i.key for i in plan.purge_directory}
    changes: list[ValueChange | None] = []
    user_id = _sealing_user_id(record)
    for key, (stale, chosen) in sorted(side.resealable.items()):
        if key in written:
            continue
        added = None
        if chosen:
            token = _token_for(side.items[key], side.payloads[key], roaming_key, user_id)
            added = encode_token(token, record.limits)
        changes.append(ValueChange(KEY_ENVELOPES, delete=stale, add=added, label=key))
    for key_id, stale in _retired_records(record, roaming_key, retired_keys).items():
        label = f"records of retired roaming key {key_id}"
        changes.append(ValueChange(ROAMING_KEYS, delete=stale, label=label))
    return [change for change in changes if change is not None]


def _retired_records(
    record: RoamingRecord, roaming_key: bytes, retired_keys: Sequence[bytes]
) -> dict[str, tuple[bytes, ...]]:
    """Per retired key id (never ``roaming_key``'s), the raw credroamRoamingKeys values of it."""
    retired_ids = {roaming_key_id(k) for k in retired_keys} - {roaming_key_id(roaming_key)}
    found: dict[str, list[bytes]] = {}
    for wrapped in parse_wrapped_keys(record)[0]:
        if wrapped.key_id in retired_ids and wrapped.stored is not None:
            found.setdefault(wrapped.key_id, []).append(wrapped.stored.raw)
    return {key_id: tuple(raws) for key_id, raws in sorted(found.items())}


# --- the engine ------------------------------------------------------------------------------


def _apply_local(
    plan: Plan,
    payloads: Mapping[str, bytes],
    store: CertificateStore,
    checkpoint: Checkpoint = _no_checkpoint,
) -> list[tuple[str, str]]:
    errors: list[tuple[str, str]] = []
    remaining = len(plan.download) + len(plan.archive_local) + len(plan.delete_local)

    def one_done() -> None:
        nonlocal remaining
        remaining -= 1
        if remaining:
            checkpoint(SyncStep.STORE_HALF_WRITTEN)

    with store.batch():
        for item in (*plan.download, *plan.archive_local):
            try:
                # An archiving has the same content as the local copy: a certificate that was
                # already expired when first seen has no directory payload, so its own is used.
                payload = payloads[item.key] if item.key in payloads else store.read(item)
                store.write(item, payload)
            except Exception as exc:  # one item's failure must not stop the others
                errors.append((item.key, f"{type(exc).__name__}: {exc}"))
            one_done()
        for deletion in plan.delete_local:
            try:
                store.delete(
                    deletion.item, keep_copy=deletion.keep_copy, undecided=deletion.undecided
                )
            except Exception as exc:
                errors.append((deletion.item.key, f"{type(exc).__name__}: {exc}"))
            one_done()
    return errors


def sync_user(
    conn: ldap3.Connection,
    user_dn: str,
    store: CertificateStore,
    state: BaseStore,
    policy: Policy,
    roaming_key: bytes | None,
    clock: Callable[[], int],
    *,
    check_mode: bool = False,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    lock_timeout: float | None = 0,
    force_full: bool = False,
    local_markers: Sequence[ChangeMarker] = (),
    retired_keys: Sequence[bytes] = (),
    native_roaming: bool = False,
    checkpoint: Checkpoint = _no_checkpoint,
) -> SyncReport:
    """Sync one user's roaming items between ``store`` and the directory.

    ``clock`` returns the current time as a FILETIME. It is read once the lock is held and again
    before each write: a plan is written only while it is current (reconcile's rule R32), else
    the directory is read again and a new plan made, so a sync that waited (for the lock, or on
    a slow DC) never records a stale "seen in the directory" time in the base.

    ``roaming_key`` opens and seals private keys (None: the directory's keys are reported as
    rejected and held, and a key that would be uploaded is refused with its certificate; all
    else syncs). In check mode nothing is written anywhere; the report lists the LDAP
    modifies that would be sent. The sync holds ``store.lock(lock_timeout)`` from the first
    read of the store to the save of the base (0: fail at once when another sync holds it,
    None: wait); a held lock raises :class:`SyncBusy` and nothing is read or written.

    ``force_full`` skips the fast path (the agent passes it when a file watch saw a store
    change, which a marker of folders may not). ``local_markers`` are the change markers of
    the other local stores the agent keeps (application-store mirrors): the fast path is taken
    only when the file store's and each of these are as the last full sync recorded them.

    ``retired_keys`` are roaming keys that lost to ``roaming_key``
    (``roamingkey.KeyChanges.retired``): the sync is a full one, re-seals under ``roaming_key``
    what they sealed and removes their records (:func:`reseal_changes`).

    ``native_roaming``: Windows' own client roams this user's certificates here, so the plan
    is :func:`.native.native_plan` (only credroam's sealed keys come in) instead of
    ``reconcile``. A store may name keys it holds but cannot list (``held_keys``, e.g. a
    private key Windows will not export): they are held as unusable values are (R34).

    ``checkpoint`` is called with each :class:`SyncStep` a full sync (not in check mode)
    reaches (fault tests stop or kill the process there).
    """
    with contextlib.ExitStack() as held:
        try:
            held.enter_context(store.lock(lock_timeout))
        except LockHeld as exc:
            raise SyncBusy(
                f"another credroam sync of {user_dn} is running on this host "
                f"(lock {exc.filename} held); nothing was synced, try again when it ends"
            ) from exc
        markers = _local_markers(store, local_markers)
        retired = tuple(retired_keys) if roaming_key is not None else ()
        head = None if force_full or retired else _load_header(state)
        settings = _settings_digest(user_dn, policy, roaming_key, native_roaming)
        reason = _fast_check(conn, user_dn, head, markers, policy, settings, clock)
        if reason is None:
            return SyncReport(user_dn=user_dn, check_mode=check_mode, full_sync_reason=None)
        report = _sync_locked(
            conn, user_dn, store, state, policy, roaming_key, clock, check_mode, max_attempts,
            settings, markers, retired, native_roaming, checkpoint,
        )  # fmt: skip
        if force_full:
            reason = FullSyncReason.FORCED
        elif retired:
            reason = FullSyncReason.RESEAL
        return replace(report, full_sync_reason=reason)


def _held_here(store: CertificateStore, side: DirectorySide, base: Base | None) -> frozenset[str]:
    """Keys the store holds but cannot list (``held_keys``) that the directory or the base
    knows: held, so their absence from the listing is never taken for a local deletion."""
    held = frozenset(getattr(store, "held_keys", ()))
    known = side.items.keys() | (base.entries.keys() if base is not None else set())
    return held & known


def _private_key_owners(store: CertificateStore, local: Mapping[str, Item]) -> frozenset[str]:
    """The local certificates that have a private key here: the store's own account of it
    (``private_key_owners``, which counts keys it cannot list), else the listed keys' owners."""
    owners = getattr(store, "private_key_owners", None)
    if owners is not None:
        return frozenset(owners)
    return frozenset(item.owner for item in local.values() if item.owner is not None)


def _unsealable(local: Mapping[str, Item], roaming_key: bytes | None) -> dict[str, str]:
    """Private keys that cannot be uploaded because there is no roaming key to seal them."""
    if roaming_key is not None:
        return {}
    reason = "no roaming key to seal the private key"
    return {key: reason for key, item in local.items() if item.kind is ItemKind.KEY}


def _sync_locked(
    conn: ldap3.Connection,
    user_dn: str,
    store: CertificateStore,
    state: BaseStore,
    policy: Policy,
    roaming_key: bytes | None,
    clock: Callable[[], int],
    check_mode: bool,
    max_attempts: int,
    settings: str,  # _settings_digest of this sync, for the head it may record
    markers: Sequence[ChangeMarker] = (),
    retired_keys: Sequence[bytes] = (),
    native_roaming: bool = False,
    checkpoint: Checkpoint = _no_checkpoint,
) -> SyncReport:
    marker_before = combine(markers) if markers else None
    if not check_mode:
        _clear_header(state)  # whatever this sync writes, the old head no longer proves it
    local = dict(store.items())
    problems = tuple(store.problems)  # what that listing skipped (read before any write)
    base = state.load()
    for attempt in range(1, max_attempts + 1):
        now = clock()
        record = read_roaming(conn, user_dn, READ_LIMITS)
        side = map_record(record, roaming_key, local, now=now, retired_keys=retired_keys)
        stamp = record.timestamp.last_change if record.timestamp else None
        held = side.unusable_keys | _held_here(store, side, base)
        if native_roaming:
            plan = native_plan(
                local,
                side.items,
                base,
                now,
                private_key_owners=_private_key_owners(store, local),
                directory_timestamp=stamp,
                hold_keys=held,
            )
        else:
            plan = reconcile(
                local,
                side.items,
                base,
                policy,
                now,
                directory_timestamp=stamp,
                hold_keys=held,
                refuse_uploads=_unsealable(local, roaming_key),
            )
        changes = directory_changes(plan, record, store, roaming_key)
        if roaming_key is not None and retired_keys:
            changes += reseal_changes(plan, record, side, roaming_key, retired_keys)
        if check_mode:
            modifications, _ = build_modifications(record, changes, now)
            return _report(
                user_dn, plan, side, attempt, tuple(modifications), changes, (), True, problems
            )
        checkpoint(SyncStep.PLANNED)
        if not plan.is_current(clock()):
            continue  # too long since the read (R32): re-read and re-plan
        try:
            applied = apply_changes(conn, record, changes, now=now)
        except ConcurrentModification:
            continue  # someone wrote in between: re-read and re-plan
        break
    else:
        raise SyncError(
            f"gave up syncing {user_dn} after {max_attempts} attempts: other writers kept "
            f"changing its roaming values on {conn.server.host}, or each plan went stale "
            "before it could be written"
        )
    if plan.needs_interim_base:
        interim = plan.interim_base(base, local)
        if applied.timestamp is not None:
            interim = replace(interim, directory_timestamp=applied.timestamp.last_change)
        state.save(interim)  # what the directory now holds, before any local write
    checkpoint(SyncStep.DIRECTORY_WRITTEN)
    errors = _apply_local(plan, side.payloads, store, checkpoint)
    recovery = _tend_recovery(store, record, roaming_key, policy, now)
    checkpoint(SyncStep.BASE_NOT_SAVED)
    if not errors:
        new_base = plan.base
        if applied.timestamp is not None:
            new_base = replace(new_base, directory_timestamp=applied.timestamp.last_change)
        state.save(new_base)
        if not applied.changed:
            _record_header(state, user_dn, record, conn, markers, marker_before, plan, side,
                           local, policy, settings, now)  # fmt: skip
    report = _report(
        user_dn, plan, side, attempt, applied.modifications, changes, tuple(errors), False, problems
    )
    # Only a sync given retired keys has their records to name (the parse is skipped else).
    retired = (
        _retired_records(record, roaming_key, retired_keys) if roaming_key and retired_keys else {}
    )
    return replace(
        report,
        recovery=recovery,
        resealed=tuple(
            sorted(c.label for c in changes if c.label in side.resealable and c.add is not None)
        ),
        retired_keys=tuple(retired),
    )


# --- the fast path ---------------------------------------------------------------------------


def _local_markers(
    store: CertificateStore, extra: Sequence[ChangeMarker]
) -> tuple[ChangeMarker, ...]:
    """Every local store's marker; empty (no fast path) when the store cannot give one."""
    own = getattr(store, "change_marker", None)
    return (own, *extra) if callable(own) else ()


def _load_header(state: BaseStore) -> SyncHeader | None:
    load = getattr(state, "load_header", None)
    return load() if callable(load) else None


def _clear_header(state: BaseStore) -> None:
    clear = getattr(state, "clear_header", None)
    if callable(clear):
        clear()


def _settings_digest(
    user_dn: str, policy: Policy, roaming_key: bytes | None, native_roaming: bool = False
) -> str:
    """What a plan depends on besides the two sides: the policy, the roaming key (its hash
    only: the head is no place for the key) and whether Windows roams natively here."""
    text = f"credroam-head {HEAD_VERSION}\0{user_dn}\0{policy!r}\0"
    digest = hashlib.sha256((text + ("native\0" if native_roaming else "")).encode())
    digest.update(hashlib.sha256(roaming_key).digest() if roaming_key is not None else b"-")
    return digest.hexdigest()


def _fast_check(
    conn: ldap3.Connection,
    user_dn: str,
    head: SyncHeader | None,
    markers: Sequence[ChangeMarker],
    policy: Policy,
    settings: str,
    clock: Callable[[], int],
) -> str | None:
    """None when ``head`` proves that nothing changed; else why a full sync must run.

    The cheap local checks come first; the directory is asked last, with one small search.
    """
    if head is None or not markers:
        return FullSyncReason.NO_HEADER
    if head.user_dn != user_dn:
        return FullSyncReason.USER
    now = clock()
    if now >= head.last_full_sync + policy.full_sync_interval_ticks or now < head.last_full_sync:
        return FullSyncReason.INTERVAL  # (a clock set back: the interval cannot be trusted)
    if head.due is not None and now >= head.due:
        return FullSyncReason.DUE
    if head.settings != settings:
        return FullSyncReason.SETTINGS
    if combine(markers) != head.local_marker:
        return FullSyncReason.LOCAL
    mark = read_mark(conn, user_dn)
    if (mark.dc.service_name, mark.dc.invocation_id, mark.dc.host_name) != head.dc:
        return FullSyncReason.OTHER_DC
    if mark.usn_changed != head.usn_changed or mark.timestamp_raw != head.directory_timestamp:
        return FullSyncReason.DIRECTORY
    return None


def _next_due(items: Iterable[Item], policy: Policy) -> int | None:
    """The first expiry among live certificates, when reconcile would archive it (R-expiry)."""
    if not policy.archive_expired:
        return None
    expiries = [
        item.expires
        for item in items
        if item.expires is not None and not item.archived and not item.tombstone
    ]
    return min(expiries, default=None)


def _record_header(
    state: BaseStore,
    user_dn: str,
    record: RoamingRecord,
    conn: ldap3.Connection,
    markers: Sequence[ChangeMarker],
    marker_before: str | None,
    plan: Plan,
    side: DirectorySide,
    local: Mapping[str, Item],
    policy: Policy,
    settings: str,
    now: int,
) -> None:
    """Write the head when this sync can prove what it saw, else leave none.

    Only a sync that wrote nothing to the directory records one: its uSNChanged came in the
    same search as the values it planned with (after a write the object's new uSNChanged
    could also cover another writer's values that replicated in meanwhile). The local marker
    must be the same before the listing and now (nothing changed locally while the sync ran,
    the sync's own local writes included), and settled.
    """
    save = getattr(state, "save_header", None)
    if not callable(save) or record.usn_changed is None or marker_before is None:
        return
    if plan.changes_local or combine(markers) != marker_before:
        return
    dc = dc_identity(conn)
    save(
        SyncHeader(
            user_dn=user_dn,
            settings=settings,
            dc=(dc.service_name, dc.invocation_id, dc.host_name),
            usn_changed=record.usn_changed,
            directory_timestamp=record.timestamp_raw,
            local_marker=marker_before,
            last_full_sync=now,
            due=_next_due((*local.values(), *side.items.values()), policy),
        )
    )


def _tend_recovery(
    store: CertificateStore,
    record: RoamingRecord,
    roaming_key: bytes | None,
    policy: Policy,
    now: int,
) -> tuple[str, ...]:
    """Seal the store's recovery copies and remove the expired ones (README, "Security")."""
    user_id = str(record.object_guid) if record.object_guid is not None else None
    try:
        return tuple(
            store.tend_recovery(roaming_key, user_id, policy.recovery_retention_ticks, now)
        )
    except Exception as exc:  # the sync itself succeeded: reported, never fatal
        return (f"recovery copies not tended: {type(exc).__name__}: {exc}",)


def _report(
    user_dn: str,
    plan: Plan,
    side: DirectorySide,
    attempts: int,
    modifications: tuple[dict, ...],
    changes: list[ValueChange],
    local_errors: tuple[tuple[str, str], ...],
    check_mode: bool,
    store_problems: tuple[str, ...],
) -> SyncReport:
    def keys(items) -> tuple[str, ...]:
        return tuple(item.key for item in items)

    return SyncReport(
        user_dn=user_dn,
        uploaded=keys(plan.upload),
        downloaded=keys(plan.download),
        tombstoned=keys(plan.tombstone_directory),
        archived=keys((*plan.archive_directory, *plan.archive_local)),
        purged=keys(plan.purge_directory),
        deleted_local=keys(d.item for d in plan.delete_local),
        refused=plan.refused,
        rejected=side.rejected,
        held=tuple(sorted(side.unusable_keys)),
        conflicts=tuple((c.key, c.reason) for c in plan.conflicts),
        local_errors=local_errors,
        left_alone=plan.left_alone,
        warnings=plan.warnings,
        store_problems=store_problems,
        attempts=attempts,
        operations=modify_operations(user_dn, modifications),
        directory_changes=tuple(describe_changes(changes)),
        check_mode=check_mode,
    )
