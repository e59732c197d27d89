"""The per-user roaming key's life cycle: find it, create it once, keep its wrapped copies current.

:mod:`.envelope` does the cryptography; this module decides which record to open and when to
create, rewrap or add one, and writes through :mod:`.directory` like every roaming value
(optimistic: one LDAP modify that also replaces the exact msPKIRoamingTimeStamp read).

Each value of ``credroamRoamingKeys`` is DN-Binary (the user's own DN) whose binary part is::

    "CRKV" | version 1 | key id (16 bytes) | envelope record (password "CRPW" or recovery "CRRK")

The *key id* is the first 16 bytes of SHA-256("credroam-roaming-key-id" NUL key). It names the
key a record wraps without opening it, so a cached key is checked against the directory with no
password and no scrypt. A record's id is checked again against the key it yields when opened,
so a header that lies is caught. The envelope records use the user's objectGUID as user id.

:func:`obtain_roaming_key` decides as follows (the cache is the 0600 file of
``envelope.write_key_cache``; "matches": its key id is among the directory's records):

=============== ====================== ======================== =============================
cache           directory              password                 outcome
=============== ====================== ======================== =============================
matches         any records            none                     use the cache
matches         password record opens  given                    use the cache; nothing written
matches         record does not open   given, verified          rewrap: replace that record
matches         record does not open   given, not verified      use the cache; problem reported
matches         no password record     given                    add one
none, no match  records                opens one                use it; cache it
none, no match  records                wrong or none            RoamingKeyUnavailable, no write
valid           no records             given                    wrap the cached key and write
valid           no records             none                     use the cache (records later)
none            no records             given                    first use: create, wrap, write
none            no records             none                     RoamingKeyUnavailable
=============== ====================== ======================== =============================

After a password reset the helpdesk replaces the password records with one wrapped under a
one-time secret (:func:`recover_with_recovery_key`, the recovery record opening the key). A
login given that secret (``one_time_secret``) opens it where neither cache nor password can,
and then proceeds as with a matching cache: with the password verified, the record for it
replaces the one-time record, which the secret no longer opens. Rotating the recovery key
(:func:`rotate_recovery_key`) adds a record for the new recovery key to each key the old one
opens and removes the old key's records; the roaming key itself never changes.

Then every configured recovery public key without a record for this roaming key gets one. A
record that could not be opened is never replaced unless the key it wraps is known (the cache
with that key id): replacing it could lose every sealed private key. The cache is only ever
written with a key the directory holds a record of, so a host does not adopt a key that no
other host can get.

A record that does not open with the password given is rewrapped for it only when the caller
says the password is proven current (``password_verified``: for example it just bound to the
directory as the user). Neither this module nor the directory can tell a typo from a new
password, and rewrapping for a typo would leave every new host needing the recovery key.
With a password, each call opens the key's password record once (one scrypt) to notice a
password change; without one (a background sync) the cache alone is used and nothing costs
more than the one search.

Two keys. Two hosts creating a key at the same time through different DCs (first use while
replication lags) leave records of two keys after replication, each host's private keys sealed
under its own. One key wins, on every host alike, from what the directory shows and nothing
else (:func:`winning_key_id`): the smallest key id among the keys that have a password record.
Key ids are hashes of random keys, so neither host is favoured, and no clock or creation time
(which a skewed host could get wrong) takes part. A call with the password retires every other
key it can open: its cached key when that is not the winner, and each other key whose password
record opens (:attr:`KeyPlan.retired`). The sync then opens the values sealed under a retired
key, writes them again sealed under the winner (same version, so no other host sees a change)
and removes the retired key's records, all in its one modify, so a retired key's records go
only together with the last values sealed under it. Without a password (a background sync) a
host keeps the key it has: the other host's keys are held (R34), never lost, until a sync with
the password on either host re-seals them.
"""

from __future__ import annotations

import hashlib
import os
import struct
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TypeVar

import ldap3
from cryptography.hazmat.primitives.asymmetric import rsa

from ..errors import CredroamError, DirectoryError
from ..ldapresult import check_result
from .directory import (
    ROAMING_KEYS,
    ConcurrentModification,
    RoamingRecord,
    StoredBlob,
    ValueChange,
    apply_changes,
    build_modifications,
    modify_operations,
    put_blob,
    read_roaming,
)
from .envelope import (
    DEFAULT_SCRYPT,
    EnvelopeError,
    KeyCacheError,
    ScryptParams,
    WrongPassword,
    WrongRecoveryKey,
    load_recovery_private_key,
    new_roaming_key,
    password_record_cost,
    public_key_id,
    read_key_cache,
    recovery_key_id,
    unwrap_with_password,
    unwrap_with_recovery_key,
    wrap_with_password,
    wrap_with_recovery_key,
    write_key_cache,
)
from .fsutil import ensure_private_dir

__all__ = [
    "DEFAULT_MAX_ATTEMPTS",
    "KEY_ID_SIZE",
    "KeyChanges",
    "KeyPlan",
    "RecordKind",
    "RoamingKeyError",
    "RoamingKeyUnavailable",
    "RotationPlan",
    "WrappedKey",
    "describe_wrapped",
    "encode_wrapped_key",
    "obtain_roaming_key",
    "parse_wrapped_keys",
    "plan_recovery",
    "plan_roaming_key",
    "plan_rotation",
    "recover_with_recovery_key",
    "roaming_key_holders",
    "roaming_key_id",
    "rotate_recovery_key",
    "sealing_user_id",
    "winning_key_id",
]

DEFAULT_MAX_ATTEMPTS = 5
KEY_ID_SIZE = 16
_VALUE_MAGIC = b"CRKV"
_VALUE_VERSION = 1
_VALUE_HEADER = struct.Struct("<4sB16s")  # magic, version, key id
_KEY_ID_CONTEXT = b"credroam-roaming-key-id\0"
_ENVELOPE_KINDS = {b"CRPW": "password", b"CRRK": "recovery"}


class RoamingKeyError(CredroamError):
    """The roaming key could not be obtained or recovered; the message names the user."""


class RoamingKeyUnavailable(RoamingKeyError):
    """No usable key: no cache, and the password opens no record (or none was given).

    Nothing was written. The organisation's recovery key can set a new password record
    (:func:`recover_with_recovery_key`).
    """

    def __init__(self, user: str, reason: str) -> None:
        super().__init__(f"roaming key of {user} unavailable: {reason}; nothing was overwritten")
        self.user = user


class RecordKind(StrEnum):
    PASSWORD = "password"
    RECOVERY = "recovery"


@dataclass(frozen=True)
class WrappedKey:
    """One parsed value of credroamRoamingKeys. ``stored`` is the value read (for replacing)."""

    kind: RecordKind
    key_id: str  # hex of the roaming key's id
    envelope: bytes
    recovery_key_id: str | None = None  # hex SHA-256 of the recovery key's SPKI
    stored: StoredBlob | None = field(default=None, repr=False)


@dataclass(frozen=True)
class KeyPlan:
    """The key to use and the credroamRoamingKeys changes that keep the directory current."""

    key: bytes = field(repr=False)
    changes: tuple[ValueChange, ...] = ()
    actions: tuple[str, ...] = ()  # what the changes do, readable, no key material
    problems: tuple[str, ...] = ()  # values or cache skipped, and why
    # Other keys known here (a losing cache, records the password opens): what is sealed under
    # them is re-sealed under ``key`` by the sync, which then removes their records.
    retired: tuple[bytes, ...] = field(default=(), repr=False)

    @property
    def key_id(self) -> str:
        return roaming_key_id(self.key)


@dataclass(frozen=True)
class KeyChanges:
    """What obtaining (or recovering) the key changed; in check mode what it would change."""

    changes: tuple[ValueChange, ...] = ()
    actions: tuple[str, ...] = ()
    # The LDAP modifies sent (or, in check mode, planned), as modify_operations() shows them.
    operations: tuple[dict, ...] = ()
    cache_written: bool = False
    problems: tuple[str, ...] = ()
    check_mode: bool = False
    retired: tuple[bytes, ...] = field(default=(), repr=False)  # as KeyPlan.retired

    @property
    def changed(self) -> bool:
        return bool(self.changes or self.cache_written)


# --- ids and the value format --------------------------------------------------------------


def roaming_key_id(key: bytes) -> str:
    """Hex id of a roaming key: the first 16 bytes of a domain-separated SHA-256."""
    return hashlib.sha256(_KEY_ID_CONTEXT + key).digest()[:KEY_ID_SIZE].hex()


def encode_wrapped_key(key_id: str, envelope: bytes) -> bytes:
    """The binary part of a credroamRoamingKeys value (module docstring)."""
    return _VALUE_HEADER.pack(_VALUE_MAGIC, _VALUE_VERSION, bytes.fromhex(key_id)) + envelope


def _decode_wrapped_key(blob: StoredBlob) -> WrappedKey:
    data = blob.blob
    if len(data) < _VALUE_HEADER.size + 4:
        raise EnvelopeError(f"value of {len(data)} bytes is too short")
    magic, version, key_id = _VALUE_HEADER.unpack_from(data)
    if magic != _VALUE_MAGIC or version != _VALUE_VERSION:
        raise EnvelopeError(f"unknown format (magic {magic!r}, version {version})")
    envelope = data[_VALUE_HEADER.size :]
    kind = _ENVELOPE_KINDS.get(envelope[:4])
    if kind is None:
        raise EnvelopeError(f"unknown envelope record {envelope[:4]!r}")
    recovery_id = recovery_key_id(envelope) if kind == "recovery" else None
    return WrappedKey(RecordKind(kind), key_id.hex(), envelope, recovery_id, blob)


def parse_wrapped_keys(record: RoamingRecord) -> tuple[list[WrappedKey], list[str]]:
    """The usable credroamRoamingKeys values of ``record`` and one problem line per other."""
    wrapped: list[WrappedKey] = []
    problems = [
        f"{rejected.describe()}; ignored"
        for rejected in record.rejected
        if rejected.attribute.lower() == ROAMING_KEYS.lower()
    ]
    for index, blob in enumerate(record.blobs_in(ROAMING_KEYS)):
        try:
            wrapped.append(_decode_wrapped_key(blob))
        except EnvelopeError as exc:
            problems.append(f"{ROAMING_KEYS} value {index}: {exc}; ignored")
    return wrapped, problems


# --- planning --------------------------------------------------------------------------------


def sealing_user_id(record: RoamingRecord, user: str) -> str:
    """The objectGUID text that binds the user's sealed values (key records, sealed keys,
    recovery copies) to that user; ``user`` names them in the error when it was not read."""
    if record.object_guid is None:
        raise RoamingKeyError(f"objectGUID of {user} was not readable: it binds the key records")
    return str(record.object_guid)


def _open_password_record(
    wrapped: WrappedKey, password: str | bytes, user_id: str, problems: list[str]
) -> bytes | None:
    """The key inside a password record, or None (wrong password, or a problem noted)."""
    try:
        key = unwrap_with_password(wrapped.envelope, password, user_id=user_id)
    except WrongPassword:
        return None
    except EnvelopeError as exc:
        problems.append(f"password record of key {wrapped.key_id}: {exc}; ignored")
        return None
    if roaming_key_id(key) != wrapped.key_id:
        problems.append(f"password record names key {wrapped.key_id} but wraps another; ignored")
        return None
    return key


def _password_wrap(key: bytes, password: str | bytes, user_id: str, params: ScryptParams) -> bytes:
    envelope = wrap_with_password(key, password, user_id=user_id, scrypt_params=params)
    return encode_wrapped_key(roaming_key_id(key), envelope)


def winning_key_id(wrapped: Sequence[WrappedKey]) -> str | None:
    """The key every host settles on when the directory holds records of several: the smallest
    key id among keys with a password record (among all records' keys when none has one)."""
    with_password = {w.key_id for w in wrapped if w.kind is RecordKind.PASSWORD}
    ids = with_password or {w.key_id for w in wrapped}
    return min(ids) if ids else None


def _open_key(
    wrapped: Sequence[WrappedKey],
    key_id: str,
    password: str | bytes,
    user_id: str,
    problems: list[str],
) -> tuple[bytes, WrappedKey] | None:
    """Key ``key_id`` from the first of its password records that opens, and that record."""
    for candidate in wrapped:
        if candidate.kind is RecordKind.PASSWORD and candidate.key_id == key_id:
            key = _open_password_record(candidate, password, user_id, problems)
            if key is not None:
                return key, candidate
    return None


def _retired(
    wrapped: Sequence[WrappedKey],
    key: bytes,
    cached: bytes | None,
    password: str | bytes | None,
    user_id: str,
    problems: list[str],
) -> tuple[bytes, ...]:
    """Every other key this call knows: the cache when it is not ``key`` (its values may sit in
    the directory even once its records are gone), and, given the password, each other key
    whose password record opens (one scrypt per other key, only while two keys exist)."""
    found = {roaming_key_id(cached): cached} if cached is not None else {}
    if password is not None:
        for other in sorted({w.key_id for w in wrapped} - {roaming_key_id(key), *found}):
            opened = _open_key(wrapped, other, password, user_id, problems)
            if opened is not None:
                found[other] = opened[0]
    found.pop(roaming_key_id(key), None)
    return tuple(found[key_id] for key_id in sorted(found))


def _unresolved_keys(
    user: str, wrapped: Sequence[WrappedKey], key: bytes, retired: Sequence[bytes]
) -> list[str]:
    """The problem to report while other keys remain that this call cannot retire."""
    ids = sorted({w.key_id for w in wrapped})
    others = set(ids) - {roaming_key_id(key), *(roaming_key_id(k) for k in retired)}
    if not others:
        return []
    winner = winning_key_id(wrapped)
    losers = ", ".join(i for i in ids if i != winner)
    return [
        f"the directory holds {len(ids)} roaming keys of {user}: {', '.join(ids)}; {losers} "
        f"lost to {winner} (the smallest key id), this host uses {roaming_key_id(key)}: a sync "
        "with the password re-seals under the winner what the others sealed"
    ]


def _choose_key(
    user: str,
    wrapped: Sequence[WrappedKey],
    cached: bytes | None,
    password: str | bytes | None,
    user_id: str,
    problems: list[str],
) -> tuple[bytes, WrappedKey | None, str | None]:
    """(key, the password record it was opened from or None, action) when the directory holds
    records: the winner (:func:`winning_key_id`) when the password opens it or the cache is
    it; else the cache when the directory holds it; else any key the password opens."""
    ids = sorted({w.key_id for w in wrapped})
    winner = winning_key_id(wrapped)
    cached_id = roaming_key_id(cached) if cached is not None else None
    if cached is not None and cached_id == winner:
        return cached, None, None
    if password is not None and winner is not None:
        opened = _open_key(wrapped, winner, password, user_id, problems)
        if opened is not None:
            action = (
                f"cached key {cached_id} lost to roaming key {winner} (the smallest key id)"
                if cached_id in ids
                else "cached key matched no record: replaced by the directory's"
                if cached is not None
                else None
            )
            return opened[0], opened[1], action
    if cached is not None and cached_id in ids:
        return cached, None, None
    if password is None:
        reason = "no password given" + (" and the cached key matches no record" if cached else "")
        raise RoamingKeyUnavailable(user, reason)
    for key_id in ids:
        opened = _open_key(wrapped, key_id, password, user_id, problems)
        if opened is not None:
            action = "cached key matched no record: replaced by the directory's" if cached else None
            return opened[0], opened[1], action
    if not any(w.kind is RecordKind.PASSWORD for w in wrapped):
        raise RoamingKeyUnavailable(user, "the directory holds no password record")
    raise RoamingKeyUnavailable(user, "the password opens none of its password records")


def _open_one_time_record(
    user: str,
    wrapped: Sequence[WrappedKey],
    cached: bytes | None,
    secret: str | bytes,
    user_id: str,
) -> bytes | None:
    """The key the one-time secret opens; None when the cache already matches a record (the
    secret is not needed). Raises :class:`RoamingKeyUnavailable` when it opens none."""
    if cached is not None and roaming_key_id(cached) in {w.key_id for w in wrapped}:
        return None
    ignored: list[str] = []
    for candidate in sorted(
        (w for w in wrapped if w.kind is RecordKind.PASSWORD), key=lambda w: w.key_id
    ):
        key = _open_password_record(candidate, secret, user_id, ignored)
        if key is not None:
            return key
    raise RoamingKeyUnavailable(user, "the one-time secret opens none of its password records")


def _password_record_change(
    record: RoamingRecord,
    key: bytes,
    password: str | bytes,
    own: Sequence[WrappedKey],
    user_id: str,
    scrypt_params: ScryptParams,
    password_verified: bool,
    problems: list[str],
) -> tuple[ValueChange | None, str] | None:
    """For a key known without the password (cache, or new): the password record to write.

    None when one of the key's password records opens with ``password``. Otherwise the
    user's password changed (or there is no record yet): every password record of this key
    is replaced by one for ``password``. Costs one scrypt per record tried.
    """
    own_password = [w for w in own if w.kind is RecordKind.PASSWORD]
    ignored: list[str] = []  # a damaged own record is simply replaced
    for candidate in own_password:
        if _open_password_record(candidate, password, user_id, ignored) is not None:
            return _strengthened(record, key, password, candidate, user_id, scrypt_params)
    if own_password and not password_verified:
        problems.append(
            "the password given does not open the roaming key's password record; not rewrapped, "
            "since a mistyped password would lock out new hosts (rewrap with password_verified "
            "once the password is proven current, e.g. by a bind as the user)"
        )
        return None
    value = _password_wrap(key, password, user_id, scrypt_params)
    replaced = [w.stored for w in own_password if w.stored is not None]
    action = (
        "rewrapped the password record for the current password"
        if own_password
        else "added the password record"
    )
    return put_blob(record, ROAMING_KEYS, value, replaced), action


def _strengthened(
    record: RoamingRecord,
    key: bytes,
    password: str | bytes,
    opened: WrappedKey,
    user_id: str,
    scrypt_params: ScryptParams,
) -> tuple[ValueChange | None, str] | None:
    """The password record that just opened, rewrapped when its scrypt cost is below
    ``scrypt_params`` (made before the default was raised); None when it is not. The password
    is proven by the record itself, so this never needs ``password_verified``."""
    cost = password_record_cost(opened.envelope)
    if not cost.is_weaker_than(scrypt_params):
        return None
    value = _password_wrap(key, password, user_id, scrypt_params)
    replaced = [opened.stored] if opened.stored is not None else []
    action = (
        f"rewrapped the password record at scrypt n=2^{scrypt_params.log2_n}, r={scrypt_params.r}, "
        f"p={scrypt_params.p} (it had n=2^{cost.log2_n}, r={cost.r}, p={cost.p})"
    )
    return put_blob(record, ROAMING_KEYS, value, replaced), action


def _recovery_record_changes(
    record: RoamingRecord,
    key: bytes,
    own: Sequence[WrappedKey],
    recovery_public_keys: Sequence[bytes],
    user_id: str,
) -> list[tuple[ValueChange | None, str]]:
    """A recovery record for each configured recovery key that has none for this key.

    Records for recovery keys no longer configured are left alone (rotation is the admin's).
    """
    recovered = {w.recovery_key_id for w in own if w.kind is RecordKind.RECOVERY}
    added = []
    for number, public_key_pem in enumerate(recovery_public_keys, 1):
        try:
            recovery_id = public_key_id(public_key_pem)
            if recovery_id in recovered:
                continue
            envelope = wrap_with_recovery_key(key, public_key_pem, user_id=user_id)
        except EnvelopeError as exc:
            raise RoamingKeyError(f"recovery public key {number}: {exc}") from None
        value = encode_wrapped_key(roaming_key_id(key), envelope)
        recovered.add(recovery_id)
        added.append(
            (
                put_blob(record, ROAMING_KEYS, value),
                f"added a recovery record for recovery key {recovery_id[:16]}",
            )
        )
    return added


def plan_roaming_key(
    record: RoamingRecord,
    *,
    password: str | bytes | None,
    cached_key: bytes | None,
    recovery_public_keys: Sequence[bytes] = (),
    scrypt_params: ScryptParams = DEFAULT_SCRYPT,
    user: str | None = None,
    password_verified: bool = False,
    one_time_secret: str | bytes | None = None,
) -> KeyPlan:
    """Decide the key and the value changes (module docstring's table). Writes nothing.

    ``user`` names the user in messages (default: the record's DN). ``one_time_secret`` is the
    secret the helpdesk wrapped the key under after a password reset (:func:`plan_recovery`);
    given, it opens that record when neither the cache nor the password can, and the
    ``password_verified`` password's record then replaces it. Raises
    :class:`RoamingKeyUnavailable` when no key can be had without losing one.
    """
    user = user or record.dn
    user_id = sealing_user_id(record, user)
    wrapped, problems = parse_wrapped_keys(record)
    changes: list[ValueChange | None] = []
    actions: list[str] = []
    opened: WrappedKey | None = None
    retired: tuple[bytes, ...] = ()
    if one_time_secret is not None and wrapped:
        from_secret = _open_one_time_record(user, wrapped, cached_key, one_time_secret, user_id)
        if from_secret is not None:
            # Known now without the password, as from a cache: the password record for the
            # (verified) password below replaces the one-time record and every stale one.
            cached_key = from_secret
            actions.append("opened the one-time record the helpdesk set")
    if wrapped:
        key, opened, action = _choose_key(user, wrapped, cached_key, password, user_id, problems)
        actions += [action] if action else []
        retired = _retired(wrapped, key, cached_key, password, user_id, problems)
        if retired:
            ids = ", ".join(roaming_key_id(k) for k in retired)
            actions.append(f"the sync re-seals under {roaming_key_id(key)} what key {ids} sealed")
        problems += _unresolved_keys(user, wrapped, key, retired)
    elif cached_key is not None:
        key = cached_key
        actions.append("directory held no key record: wrapped the cached key")
    elif password is not None:
        key = new_roaming_key()
        actions.append("first use: created the roaming key")
    else:
        raise RoamingKeyUnavailable(user, "none exists yet and no password was given to wrap one")
    own = [w for w in wrapped if w.key_id == roaming_key_id(key)]
    if password is not None and opened is not None:
        rewrap = _strengthened(record, key, password, opened, user_id, scrypt_params)
    elif password is not None:
        rewrap = _password_record_change(
            record, key, password, own, user_id, scrypt_params, password_verified, problems
        )
    else:
        rewrap = None
    if rewrap is not None:
        changes.append(rewrap[0])
        actions.append(rewrap[1])
    for change, action in _recovery_record_changes(record, key, own, recovery_public_keys, user_id):
        changes.append(change)
        actions.append(action)
    return KeyPlan(
        key,
        tuple(c for c in changes if c is not None),
        tuple(actions),
        tuple(problems),
        retired,
    )


# --- reading the cache, writing both sides ----------------------------------------------------


def _read_cache(path: str, problems: list[str]) -> bytes | None:
    try:
        return read_key_cache(path)
    except FileNotFoundError:
        return None
    except (KeyCacheError, OSError) as exc:
        problems.append(f"key cache not used: {exc}")
        return None


def _write_cache(path: str, key: bytes) -> None:
    ensure_private_dir(os.path.dirname(os.path.abspath(path)))
    write_key_cache(path, key)


_Plan = TypeVar("_Plan", "KeyPlan", "RotationPlan")


def _apply(
    source: ldap3.Connection | RoamingRecord,
    user: str,
    plan_for: Callable[[RoamingRecord], _Plan],
    *,
    now: int,
    check_mode: bool,
    max_attempts: int,
) -> tuple[_Plan, tuple[dict, ...], RoamingRecord]:
    """Plan against ``source`` and write the plan when it is a connection (optimistic retries).

    With a record nothing is written and no modify is returned: the caller applies
    ``plan.changes`` itself (``directory.apply_changes``).
    """
    if isinstance(source, RoamingRecord):
        return plan_for(source), (), source
    for _ in range(max_attempts):
        record = read_roaming(source, user)
        plan = plan_for(record)
        if check_mode:
            planned = build_modifications(record, plan.changes, now)[0]
            return plan, modify_operations(record.dn, planned), record
        try:
            applied = apply_changes(source, record, plan.changes, now=now)
        except ConcurrentModification:
            continue  # another writer: re-read and decide again
        return plan, modify_operations(record.dn, applied.modifications), record
    raise DirectoryError(
        f"gave up writing the roaming key records of {user} after {max_attempts} attempts: "
        f"other writers kept changing its roaming values on {source.server.host}"
    )


def obtain_roaming_key(
    source: ldap3.Connection | RoamingRecord,
    user: str,
    *,
    password: str | bytes | None,
    cache_path: str,
    recovery_public_keys: Sequence[bytes] = (),
    now: int,
    check_mode: bool = False,
    scrypt_params: ScryptParams = DEFAULT_SCRYPT,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    password_verified: bool = False,
    one_time_secret: str | bytes | None = None,
) -> tuple[bytes, KeyChanges]:
    """The roaming key of ``user`` (a DN), the directory and the cache brought up to date.

    ``source`` is a bound connection (one search; the changes are written, ``now`` being the
    FILETIME for msPKIRoamingTimeStamp) or a record already read (nothing is written to the
    directory: the caller applies ``changes.changes`` with ``directory.apply_changes``). The
    cache at ``cache_path`` is written (0600) only with a key the directory holds, never in
    check mode. Raises :class:`RoamingKeyUnavailable` (nothing written) and
    :class:`~credroam.errors.DirectoryError` for a failed write.
    """
    problems: list[str] = []
    cached = _read_cache(cache_path, problems)

    def plan_for(record: RoamingRecord) -> KeyPlan:
        return plan_roaming_key(
            record,
            password=password,
            cached_key=cached,
            recovery_public_keys=recovery_public_keys,
            scrypt_params=scrypt_params,
            user=user,
            password_verified=password_verified,
            one_time_secret=one_time_secret,
        )

    plan, operations, record = _apply(
        source, user, plan_for, now=now, check_mode=check_mode, max_attempts=max_attempts
    )
    written = not isinstance(source, RoamingRecord) and not check_mode
    held = written or any(w.key_id == plan.key_id for w in parse_wrapped_keys(record)[0])
    cache_written = False
    if plan.key != cached and held and not check_mode:
        _write_cache(cache_path, plan.key)
        cache_written = True
    return plan.key, KeyChanges(
        changes=plan.changes,
        actions=plan.actions,
        operations=operations,
        cache_written=cache_written,
        problems=(*problems, *plan.problems),
        check_mode=check_mode,
        retired=plan.retired,
    )


# --- recovery ----------------------------------------------------------------------------------


def _load_recovery_key(
    private_key: bytes | rsa.RSAPrivateKey, password: bytes | None
) -> rsa.RSAPrivateKey:
    try:
        return load_recovery_private_key(private_key, password)
    except EnvelopeError as exc:
        raise RoamingKeyError(str(exc)) from None


def plan_recovery(
    record: RoamingRecord,
    *,
    recovery_private_key: bytes | rsa.RSAPrivateKey,
    new_password: str | bytes,
    recovery_key_password: bytes | None = None,
    scrypt_params: ScryptParams = DEFAULT_SCRYPT,
    user: str | None = None,
) -> KeyPlan:
    """Open the user's key with the recovery key; replace its password record(s) for
    ``new_password``. Writes nothing. Raises :class:`RoamingKeyUnavailable` when no recovery
    record for this recovery key opens."""
    user = user or record.dn
    user_id = sealing_user_id(record, user)
    private_key = _load_recovery_key(recovery_private_key, recovery_key_password)
    recovery_id = public_key_id(private_key.public_key())
    wrapped, problems = parse_wrapped_keys(record)
    mine = sorted((w for w in wrapped if w.recovery_key_id == recovery_id), key=lambda w: w.key_id)
    key = None
    for candidate in mine:
        try:
            opened = unwrap_with_recovery_key(candidate.envelope, private_key, user_id=user_id)
        except (WrongRecoveryKey, EnvelopeError) as exc:
            problems.append(f"recovery record of key {candidate.key_id}: {exc}; ignored")
            continue
        if roaming_key_id(opened) == candidate.key_id:
            key = opened
            break
        problems.append(f"recovery record names key {candidate.key_id} but wraps another")
    if key is None:
        raise RoamingKeyUnavailable(
            user, f"no recovery record for recovery key {recovery_id[:16]} opens"
        )
    key_id = roaming_key_id(key)
    replaced = [
        w.stored
        for w in wrapped
        if w.kind is RecordKind.PASSWORD and w.key_id == key_id and w.stored is not None
    ]
    value = _password_wrap(key, new_password, user_id, scrypt_params)
    change = put_blob(record, ROAMING_KEYS, value, replaced)
    action = f"password record of key {key_id} set for the new password by recovery"
    return KeyPlan(key, (change,) if change else (), (action,), tuple(problems))


def recover_with_recovery_key(
    source: ldap3.Connection | RoamingRecord,
    user: str,
    *,
    recovery_private_key: bytes | rsa.RSAPrivateKey,
    new_password: str | bytes,
    recovery_key_password: bytes | None = None,
    now: int,
    check_mode: bool = False,
    scrypt_params: ScryptParams = DEFAULT_SCRYPT,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
) -> tuple[bytes, KeyChanges]:
    """Admin recovery after a password reset: the key opened with the organisation's recovery
    private key, rewrapped for ``new_password`` (the password record replaced).

    Run with a connection allowed to write the user's confidential attributes (an
    administrator). No cache is written: the admin's host is not the user's. With a record,
    nothing is written (the caller applies the changes).
    """

    def plan_for(record: RoamingRecord) -> KeyPlan:
        return plan_recovery(
            record,
            recovery_private_key=recovery_private_key,
            new_password=new_password,
            recovery_key_password=recovery_key_password,
            scrypt_params=scrypt_params,
            user=user,
        )

    plan, operations, _ = _apply(
        source, user, plan_for, now=now, check_mode=check_mode, max_attempts=max_attempts
    )
    return plan.key, KeyChanges(
        changes=plan.changes,
        actions=plan.actions,
        operations=operations,
        problems=plan.problems,
        check_mode=check_mode,
    )


# --- rotating the recovery key ------------------------------------------------------------------


@dataclass(frozen=True)
class RotationPlan:
    """The credroamRoamingKeys changes that move one user's recovery records from the old
    recovery key to the new one. ``pending`` is False when nothing is left to rotate (every
    record opened by the old key has one for the new key and is removed)."""

    changes: tuple[ValueChange, ...] = ()
    actions: tuple[str, ...] = ()
    problems: tuple[str, ...] = ()

    @property
    def changed(self) -> bool:
        return bool(self.changes)


def plan_rotation(
    record: RoamingRecord,
    *,
    old_private_key: bytes | rsa.RSAPrivateKey,
    new_public_key: bytes,
    old_key_password: bytes | None = None,
    user: str | None = None,
) -> RotationPlan:
    """For each roaming key of the user wrapped for the old recovery key: a record for the new
    recovery public key (unless one is there) and the old key's records removed. Writes
    nothing; run again after it was applied, it plans nothing.

    An old-key record that does not open is reported and left in place (removing it could
    remove the only way back to a key). A user with no old-key record has nothing to rotate;
    one with no recovery record at all is reported, since the helpdesk could not recover it.
    """
    user = user or record.dn
    user_id = sealing_user_id(record, user)
    private_key = _load_recovery_key(old_private_key, old_key_password)
    old_id = public_key_id(private_key.public_key())
    try:
        new_id = public_key_id(new_public_key)
    except EnvelopeError as exc:
        raise RoamingKeyError(f"new recovery public key: {exc}") from None
    if new_id == old_id:
        raise RoamingKeyError("the new recovery public key is the old one: nothing to rotate to")
    wrapped, problems = parse_wrapped_keys(record)
    recovery = [w for w in wrapped if w.kind is RecordKind.RECOVERY]
    has_new = {w.key_id for w in recovery if w.recovery_key_id == new_id}
    changes: list[ValueChange] = []
    actions: list[str] = []
    for old in sorted((w for w in recovery if w.recovery_key_id == old_id), key=lambda w: w.key_id):
        try:
            key = unwrap_with_recovery_key(old.envelope, private_key, user_id=user_id)
        except EnvelopeError as exc:
            problems.append(f"recovery record of key {old.key_id}: {exc}; left in place")
            continue
        if roaming_key_id(key) != old.key_id:
            problems.append(f"recovery record names key {old.key_id} but wraps another; left")
            continue
        if old.key_id not in has_new:
            envelope = wrap_with_recovery_key(key, new_public_key, user_id=user_id)
            value = encode_wrapped_key(old.key_id, envelope)
            added = put_blob(record, ROAMING_KEYS, value)
            if added is not None:
                changes.append(added)
            has_new.add(old.key_id)
            actions.append(f"added a recovery record of key {old.key_id} for {new_id[:16]}")
        if old.stored is not None:
            changes.append(
                ValueChange(ROAMING_KEYS, delete=(old.stored.raw,), label=f"recovery {old_id[:16]}")
            )
            actions.append(f"removed the recovery record of key {old.key_id} for {old_id[:16]}")
    if not recovery:
        problems.append(f"{user} holds no recovery record: the helpdesk cannot recover its key")
    return RotationPlan(tuple(changes), tuple(actions), tuple(problems))


def rotate_recovery_key(
    source: ldap3.Connection | RoamingRecord,
    user: str,
    *,
    old_private_key: bytes | rsa.RSAPrivateKey,
    new_public_key: bytes,
    old_key_password: bytes | None = None,
    now: int,
    check_mode: bool = False,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
) -> KeyChanges:
    """:func:`plan_rotation` for one user (a DN), written as one modify (optimistic, as every
    roaming write); in check mode the planned modify only. Run as an administrator allowed to
    write the user's confidential attributes."""

    def plan_for(record: RoamingRecord) -> RotationPlan:
        return plan_rotation(
            record,
            old_private_key=old_private_key,
            new_public_key=new_public_key,
            old_key_password=old_key_password,
            user=user,
        )

    plan, operations, _ = _apply(
        source, user, plan_for, now=now, check_mode=check_mode, max_attempts=max_attempts
    )
    return KeyChanges(
        changes=plan.changes,
        actions=plan.actions,
        operations=operations,
        problems=plan.problems,
        check_mode=check_mode,
    )


def describe_wrapped(record: RoamingRecord, changes: Sequence[ValueChange] = ()) -> list[str]:
    """One line per credroamRoamingKeys value of ``record`` with ``changes`` applied, for
    --diff: kind, a digest of the record, key id and recovery key id, never key material."""
    deleted = {raw for change in changes for raw in change.delete}
    blobs = [b for b in record.blobs_in(ROAMING_KEYS) if b.raw not in deleted]
    blobs += [StoredBlob(ROAMING_KEYS, c.add, b"") for c in changes if c.add is not None]
    lines = []
    for blob in blobs:
        try:
            wrapped = _decode_wrapped_key(blob)
        except EnvelopeError as exc:
            lines.append(f"unreadable value: {exc}")
            continue
        digest = hashlib.sha256(wrapped.envelope).hexdigest()[:12]  # tells a rewrap apart
        lines.append(
            f"{wrapped.kind.value} record {digest} of key {wrapped.key_id}"
            + (
                f" for recovery key {wrapped.recovery_key_id[:16]}"
                if wrapped.recovery_key_id
                else ""
            )
        )
    return sorted(lines)


def roaming_key_holders(
    conn: ldap3.Connection,
    base_dn: str,
    user_filter: str = "(&(objectCategory=person)(objectClass=user))",
    page_size: int = 1000,
) -> Iterator[str]:
    """The DN of every user under ``base_dn`` matching ``user_filter`` that holds a wrapped
    roaming key, read with a paged search (``page_size`` entries a page)."""
    entries = conn.extend.standard.paged_search(
        base_dn,
        f"(&{user_filter}({ROAMING_KEYS}=*))",
        search_scope=ldap3.SUBTREE,
        attributes=["objectGUID"],
        paged_size=page_size,
        generator=True,
    )
    for entry in entries:
        if entry.get("type") == "searchResEntry":
            yield entry["dn"]
    check_result(conn, f"searching the users holding roaming keys under {base_dn}")
