"""The directory side of roaming: find a user, read their roaming values, write changes safely.

Reading costs one LDAP search (BASE scope on the user's DN) that returns every roaming attribute,
objectGUID/objectSid and ``allowedAttributes`` (which tells whether credroam's own schema is
installed), so a sync with nothing to do touches the directory exactly once. Values are read as
raw bytes: every user writes their own tokens, so a value may be hostile or not even UTF-8
(CVE-2022-30170). Each value that fails a check lands in ``RoamingRecord.rejected`` with its
:class:`~.tokens.TokenError`; nothing read from the directory raises.

Writing is optimistic. Each change deletes the exact raw value that was read and adds the new one
in the same LDAP modify, and every modify also replaces the exact msPKIRoamingTimeStamp value that
was read. A concurrent writer (another host, or a Windows client) changes at least the timestamp,
so our delete of the old value fails, the server rejects the whole modify (an LDAP modify is
atomic) and :class:`ConcurrentModification` tells the caller to re-read and re-plan. Token
attributes are linked DN-Binary attributes, so values written through different DCs merge per
value during replication; the check above protects writers on the same DC.
"""

from __future__ import annotations

import re
import uuid
import weakref
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import ldap3
from ldap3.utils.conv import escape_filter_chars
from ldap3.utils.dn import parse_dn

from ..errors import DirectoryError
from ..ldapresult import check_result, first
from ..timestamps import (
    RoamingTimestamp,
    TimestampError,
    advance_roaming_timestamp,
    decode_roaming_timestamp,
    encode_roaming_timestamp,
)
from ..tokens import (
    DEFAULT_LIMITS,
    Token,
    TokenError,
    TokenLimits,
    decode_token,
    encode_token,
    format_dn_binary,
    parse_dn_binary,
)
from .model import Version, content_hash

__all__ = [
    "ACCOUNT_CREDENTIALS",
    "CREDROAM_ATTRIBUTES",
    "DPAPI_MASTER_KEYS",
    "KEY_ENVELOPES",
    "ROAMING_KEYS",
    "ROAMING_TIMESTAMP",
    "TOKEN_ATTRIBUTES",
    "AppliedChanges",
    "ConcurrentModification",
    "DcIdentity",
    "DirectoryMark",
    "RejectedValue",
    "RoamingRecord",
    "StoredBlob",
    "StoredToken",
    "UserEntry",
    "ValueChange",
    "apply_changes",
    "build_modifications",
    "dc_identity",
    "describe_changes",
    "find_user",
    "modify_operations",
    "put_blob",
    "put_token",
    "read_mark",
    "read_roaming",
    "remove_token",
]

ACCOUNT_CREDENTIALS = "msPKIAccountCredentials"
DPAPI_MASTER_KEYS = "msPKIDPAPIMasterKeys"
ROAMING_TIMESTAMP = "msPKIRoamingTimeStamp"
KEY_ENVELOPES = "credroamKeyEnvelopes"
ROAMING_KEYS = "credroamRoamingKeys"
# Attributes whose values are native-layout tokens; credroamRoamingKeys holds envelope records.
TOKEN_ATTRIBUTES = (ACCOUNT_CREDENTIALS, DPAPI_MASTER_KEYS, KEY_ENVELOPES)
BLOB_ATTRIBUTES = (ROAMING_KEYS,)
CREDROAM_ATTRIBUTES = (KEY_ENVELOPES, ROAMING_KEYS)
_VALUE_ATTRIBUTES = TOKEN_ATTRIBUTES + BLOB_ATTRIBUTES
_IDENTITY_ATTRIBUTES = ("objectGUID", "objectSid")
_ALLOWED = "allowedAttributes"  # constructed: the attributes the object's classes allow
# The DC's local change counter of the object. Samba 4.17 moves it on the DC read also when
# linked token values arrive by replication (added or removed through another DC), which the
# single-valued msPKIRoamingTimeStamp does not show (README, "Measured figures").
USN_CHANGED = "uSNChanged"
READ_ATTRIBUTES = (
    *_VALUE_ATTRIBUTES,
    ROAMING_TIMESTAMP,
    USN_CHANGED,
    *_IDENTITY_ATTRIBUTES,
    _ALLOWED,
)
# What the sync's fast path reads: the least that proves the user's roaming values unchanged.
MARK_ATTRIBUTES = (USN_CHANGED, ROAMING_TIMESTAMP)

# Result codes that mean "the values we read are no longer there": someone wrote in between.
# (constraintViolation is not one: Samba answers it for a DN-Binary naming a missing object.)
_CONFLICT_RESULTS = {16: "noSuchAttribute", 20: "attributeOrValueExists"}
# Samba answers noSuchAttribute also for an attribute its schema lacks; that is no conflict.
_NOT_IN_SCHEMA = "not found in the schema"
# Largest modify request sent at once. Samba refuses requests over 16 MiB by default (ldap max
# authenticated request size); a first upload of a big store is split into several modifies.
DEFAULT_MAX_REQUEST_BYTES = 4 * 1024 * 1024
# AD returns at most MaxValRange values of one attribute per search ("attr;range=0-1499").
_RANGED = re.compile(r"(?P<name>[^;]+);range=(?P<low>\d+)-(?P<high>\d+|\*)", re.IGNORECASE)


class ConcurrentModification(DirectoryError):
    """Another writer changed the user's roaming values after we read them: re-read and re-plan.

    ``applied`` lists the modifies that succeeded before the conflict (their values are now in the
    directory and will show up in the re-read).
    """

    def __init__(self, message: str, applied: Sequence[dict] = ()) -> None:
        super().__init__(message)
        self.applied = tuple(applied)


# --- what a read returns -------------------------------------------------------------------


@dataclass(frozen=True)
class UserEntry:
    dn: str
    sam_account_name: str | None
    user_principal_name: str | None
    object_guid: uuid.UUID | None


@dataclass(frozen=True)
class StoredToken:
    """A valid token as found in the directory; ``raw`` is the exact LDAP value (for deletes)."""

    attribute: str
    token: Token
    raw: bytes


@dataclass(frozen=True)
class StoredBlob:
    """A DN-Binary value that is not a token (credroamRoamingKeys): binary part and raw value."""

    attribute: str
    blob: bytes
    raw: bytes


@dataclass(frozen=True)
class RejectedValue:
    """A directory value that failed a check. It is reported and skipped, never used or deleted."""

    attribute: str
    raw: bytes
    error: TokenError

    @property
    def check(self) -> str:
        return self.error.check

    def describe(self) -> str:
        return f"{self.attribute}: {self.error}"


@dataclass(frozen=True)
class RoamingRecord:
    """One user's roaming values as read in one search."""

    dn: str
    object_guid: uuid.UUID | None
    object_sid: bytes | None
    tokens: tuple[StoredToken, ...]
    blobs: tuple[StoredBlob, ...]
    rejected: tuple[RejectedValue, ...]
    timestamp: RoamingTimestamp | None
    # The exact timestamp value read (even a malformed one), so a write can replace exactly it.
    timestamp_raw: bytes | None
    # credroam's schema (credroamKeyEnvelopes, credroamRoamingKeys) is present on this object.
    credroam_schema: bool
    limits: TokenLimits = field(default=DEFAULT_LIMITS, repr=False)
    # uSNChanged as read in the same search as the values (None: not returned).
    usn_changed: int | None = None

    def stored(self, attribute: str) -> dict[str, StoredToken]:
        """One token per key in ``attribute``: the newest in reconcile's version order.

        Two values with one key appear when two writers added the same item through different
        DCs; the others are removed by the next write of that key (see :func:`put_token`).
        """
        chosen: dict[str, StoredToken] = {}
        for stored in self.tokens:
            if stored.attribute.lower() != attribute.lower():
                continue
            current = chosen.get(stored.token.key)
            if current is None or _newer(stored.token, current.token):
                chosen[stored.token.key] = stored
        return chosen

    def raw_values(self, attribute: str, key: str) -> tuple[bytes, ...]:
        """Every raw value of ``attribute`` holding the token ``key`` (duplicates included)."""
        return tuple(
            s.raw
            for s in self.tokens
            if s.attribute.lower() == attribute.lower() and s.token.key == key
        )

    def blobs_in(self, attribute: str) -> tuple[StoredBlob, ...]:
        return tuple(b for b in self.blobs if b.attribute.lower() == attribute.lower())


def _version(token: Token) -> Version:
    """Reconcile's version order on what the token itself shows (the archived flag lives in a
    certificate element, so sync re-chooses among mapped items with ``reconcile.newest``)."""
    if token.is_tombstone:
        return Version(token.last_modified, True, False, "")
    return Version(token.last_modified, False, False, content_hash(token.data))


def _newer(candidate: Token, current: Token) -> bool:
    return _version(candidate) > _version(current)


# --- finding a user ------------------------------------------------------------------------


def find_user(
    conn: ldap3.Connection,
    base_dn: str,
    *,
    sam_account_name: str | None = None,
    upn: str | None = None,
    dn: str | None = None,
) -> UserEntry:
    """Find exactly one user by sAMAccountName, userPrincipalName or DN (give exactly one)."""
    given = {"sam_account_name": sam_account_name, "upn": upn, "dn": dn}
    chosen = [name for name, value in given.items() if value]
    if len(chosen) != 1:
        raise DirectoryError(
            f"find_user needs exactly one of sam_account_name, upn, dn (got {chosen or 'none'})"
        )
    attributes = ["sAMAccountName", "userPrincipalName", "objectGUID"]
    user_filter = "(&(objectCategory=person)(objectClass=user))"
    if dn:
        what = f"user {dn}"
        conn.search(dn, user_filter, search_scope=ldap3.BASE, attributes=attributes)
    else:
        name, value = (
            ("sAMAccountName", sam_account_name) if sam_account_name else ("userPrincipalName", upn)
        )
        what = f"user {name}={value} under {base_dn}"
        conn.search(
            base_dn,
            f"(&{user_filter}({name}={escape_filter_chars(value)}))",
            search_scope=ldap3.SUBTREE,
            attributes=attributes,
        )
    check_result(conn, what, missing_ok=True)
    entries = _entries(conn)
    if not entries:
        raise DirectoryError(f"{what} not found on {conn.server.host}")
    if len(entries) > 1:
        raise DirectoryError(f"{what} is ambiguous: {len(entries)} entries match")
    entry = entries[0]
    raw = _lower_keys(entry["raw_attributes"])
    return UserEntry(
        dn=entry["dn"],
        sam_account_name=_text(first(raw, "sAMAccountName")),
        user_principal_name=_text(first(raw, "userPrincipalName")),
        object_guid=_guid(first(raw, "objectGUID")),
    )


# --- reading roaming values ----------------------------------------------------------------


@dataclass(frozen=True)
class DcIdentity:
    """Which DC (and which life of it) answered: its USNs mean something only on it."""

    service_name: str  # dsServiceName: the DN of the DC's NTDS Settings object
    invocation_id: str  # hex; a DC restored from a backup gets a new one (its USNs restart)
    host_name: str  # dnsHostName, for messages


@dataclass(frozen=True)
class DirectoryMark:
    """What the fast path compares: the object's uSNChanged on one DC and its timestamp."""

    dc: DcIdentity
    usn_changed: int | None
    timestamp_raw: bytes | None


# Read once per connection: a connection stays on the DC it was opened to (ldap3 may move a
# server pool's connection to another server, hence the host check in dc_identity).
_DC_OF_CONNECTION: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def dc_identity(conn: ldap3.Connection) -> DcIdentity:
    """The DC behind ``conn``: rootDSE then its NTDS Settings, two small searches, once."""
    host = str(conn.server.host)
    cached = _DC_OF_CONNECTION.get(conn)
    if cached is not None and cached[0] == host:
        return cached[1]
    conn.search("", "(objectClass=*)", ldap3.BASE, attributes=["dsServiceName", "dnsHostName"])
    check_result(conn, "reading the rootDSE")
    root = _lower_keys(_entries(conn)[0]["raw_attributes"]) if _entries(conn) else {}
    service_name = _text(first(root, "dsServiceName"))
    if not service_name:
        raise DirectoryError(f"the rootDSE of {host} names no dsServiceName")
    conn.search(service_name, "(objectClass=*)", ldap3.BASE, attributes=["invocationId"])
    check_result(conn, f"reading the invocationId of {service_name}")
    settings = _lower_keys(_entries(conn)[0]["raw_attributes"]) if _entries(conn) else {}
    invocation = first(settings, "invocationId")
    if not invocation:
        raise DirectoryError(f"{service_name} on {host} has no readable invocationId")
    identity = DcIdentity(service_name, invocation.hex(), _text(first(root, "dnsHostName")) or host)
    _DC_OF_CONNECTION[conn] = (host, identity)
    return identity


def read_mark(conn: ldap3.Connection, user_dn: str) -> DirectoryMark:
    """One BASE search of ``MARK_ATTRIBUTES`` (after :func:`dc_identity`, once per connection).

    No token is read: the answer is a few dozen bytes whatever the user holds.
    """
    identity = dc_identity(conn)
    conn.search(user_dn, "(objectClass=*)", ldap3.BASE, attributes=list(MARK_ATTRIBUTES))
    check_result(conn, f"reading the change marks of {user_dn}")
    entries = _entries(conn)
    if len(entries) != 1:
        raise DirectoryError(f"reading {user_dn} returned {len(entries)} entries, expected 1")
    raw = _lower_keys(entries[0]["raw_attributes"])
    return DirectoryMark(identity, _usn(raw), first(raw, ROAMING_TIMESTAMP))


def _usn(raw: dict[str, list[bytes]]) -> int | None:
    value = first(raw, USN_CHANGED)
    return int(value) if value is not None and value.isdigit() else None


def read_roaming(
    conn: ldap3.Connection, user_dn: str, limits: TokenLimits = DEFAULT_LIMITS
) -> RoamingRecord:
    """Read a user's roaming values in one BASE search (more only for AD's ranged retrieval).

    Values the bound user may not read (another user's confidential attributes) are simply
    absent, as the directory does not say it withheld them.
    """
    conn.search(
        user_dn, "(objectClass=*)", search_scope=ldap3.BASE, attributes=list(READ_ATTRIBUTES)
    )
    check_result(conn, f"reading the roaming attributes of {user_dn}")
    entries = _entries(conn)
    if len(entries) != 1:
        raise DirectoryError(f"reading {user_dn} returned {len(entries)} entries, expected 1")
    entry = entries[0]
    raw = _collect_ranges(conn, user_dn, _lower_keys(entry["raw_attributes"]))
    return decode_record(entry["dn"], raw, limits)


def decode_record(
    dn: str, raw: dict[str, list[bytes]], limits: TokenLimits = DEFAULT_LIMITS
) -> RoamingRecord:
    """Turn the raw attribute values of a user entry (lower-cased names) into a record."""
    own_dn = _dn_key(dn)
    tokens: list[StoredToken] = []
    blobs: list[StoredBlob] = []
    rejected: list[RejectedValue] = []
    max_values = limits.max_tokens
    for attribute in _VALUE_ATTRIBUTES:
        values = raw.get(attribute.lower(), [])
        for index, value in enumerate(values):
            if index >= max_values:
                error = TokenError(
                    "size-limit",
                    f"{attribute} holds {len(values)} values, over the limit of {max_values}",
                )
                rejected.extend(RejectedValue(attribute, bytes(v), error) for v in values[index:])
                break
            try:
                blob, value_dn = parse_dn_binary(bytes(value), limits.max_token_size)
                if _dn_key(value_dn) != own_dn:
                    raise TokenError(
                        "dn-binary", f"value links to {value_dn[:200]!r}, not the user's own DN"
                    )
                if attribute in TOKEN_ATTRIBUTES:
                    tokens.append(StoredToken(attribute, decode_token(blob, limits), bytes(value)))
                else:
                    blobs.append(StoredBlob(attribute, blob, bytes(value)))
            except TokenError as exc:
                rejected.append(RejectedValue(attribute, bytes(value), exc))
    timestamp, timestamp_raw = None, first(raw, ROAMING_TIMESTAMP)
    if timestamp_raw is not None:
        try:
            timestamp = decode_roaming_timestamp(timestamp_raw)
        except TimestampError as exc:
            error = TokenError("timestamp", str(exc))
            rejected.append(RejectedValue(ROAMING_TIMESTAMP, timestamp_raw, error))
    allowed = {name.decode("utf-8", "replace").lower() for name in raw.get(_ALLOWED.lower(), [])}
    return RoamingRecord(
        dn=dn,
        object_guid=_guid(first(raw, "objectGUID")),
        object_sid=first(raw, "objectSid"),
        tokens=tuple(tokens),
        blobs=tuple(blobs),
        rejected=tuple(rejected),
        timestamp=timestamp,
        timestamp_raw=timestamp_raw,
        credroam_schema=all(name.lower() in allowed for name in CREDROAM_ATTRIBUTES),
        limits=limits,
        usn_changed=_usn(raw),
    )


def _collect_ranges(
    conn: ldap3.Connection, dn: str, raw: dict[str, list[bytes]]
) -> dict[str, list[bytes]]:
    """Merge AD's ranged values (``attr;range=0-1499``) into plain attribute names."""
    merged: dict[str, list[bytes]] = {}
    for name, values in raw.items():
        match = _RANGED.fullmatch(name)
        if match is None:
            merged.setdefault(name, []).extend(values)
            continue
        base = match["name"].lower()
        collected = list(values)
        high = match["high"]
        while high != "*":
            conn.search(
                dn,
                "(objectClass=*)",
                search_scope=ldap3.BASE,
                attributes=[f"{base};range={int(high) + 1}-*"],
            )
            check_result(conn, f"reading further values of {base} of {dn}")
            entries = _entries(conn)
            part = _lower_keys(entries[0]["raw_attributes"]) if entries else {}
            found = [(k, v) for k, v in part.items() if _RANGED.fullmatch(k)]
            if not found or not found[0][1]:
                break
            key, more = found[0]
            collected.extend(more)
            high = _RANGED.fullmatch(key)["high"]
        merged.setdefault(base, []).extend(collected)
    return merged


# --- changes and writing -------------------------------------------------------------------


@dataclass(frozen=True)
class ValueChange:
    """One item's change in one attribute: delete exact raw values, add one new value.

    ``add`` is the binary part (an encoded token, or an envelope record); it is written as
    DN-Binary with the user's own DN. ``label`` names the item in logs and diffs.
    """

    attribute: str
    delete: tuple[bytes, ...] = ()
    add: bytes | None = None
    label: str = ""

    def __post_init__(self) -> None:
        if not self.delete and self.add is None:
            raise ValueError(f"change of {self.label or self.attribute} neither deletes nor adds")


def put_token(
    record: RoamingRecord, attribute: str, token: Token, limits: TokenLimits | None = None
) -> ValueChange | None:
    """Write ``token`` in place of every value holding its key; None if it is already there."""
    encoded = encode_token(token, limits or record.limits)
    old = record.raw_values(attribute, token.key)
    new_raw = format_dn_binary(encoded, record.dn).encode("utf-8")
    if old == (new_raw,) or (len(old) == 1 and _same_blob(old[0], encoded)):
        return None
    return ValueChange(attribute, delete=old, add=encoded, label=token.key)


def remove_token(record: RoamingRecord, attribute: str, key: str) -> ValueChange | None:
    """Delete every value holding ``key`` (a purge); None if there is none."""
    old = record.raw_values(attribute, key)
    return ValueChange(attribute, delete=old, label=key) if old else None


def put_blob(
    record: RoamingRecord, attribute: str, blob: bytes, replaces: Iterable[StoredBlob] = ()
) -> ValueChange | None:
    """Add a non-token value (a wrapped roaming key), replacing the given stored values."""
    old = tuple(b.raw for b in replaces)
    if len(old) == 1 and _same_blob(old[0], blob):
        return None
    return ValueChange(attribute, delete=old, add=blob, label=f"{attribute}:{len(blob)} bytes")


def _same_blob(raw: bytes, blob: bytes) -> bool:
    try:
        return parse_dn_binary(raw)[0] == blob
    except TokenError:
        return False


@dataclass(frozen=True)
class AppliedChanges:
    """What was written: the exact LDAP modifies sent, in order, and the new timestamp."""

    modifications: tuple[dict, ...]
    changes: tuple[ValueChange, ...]
    timestamp: RoamingTimestamp | None

    @property
    def changed(self) -> bool:
        return bool(self.modifications)

    def describe(self) -> list[str]:
        return describe_changes(self.changes)


def describe_changes(changes: Iterable[ValueChange]) -> list[str]:
    """One line per change, for logs and --diff (no key material, only names and sizes)."""
    lines = []
    for change in changes:
        verb = (
            "replace"
            if change.delete and change.add is not None
            else ("add" if change.add is not None else "delete")
        )
        lines.append(f"{verb} {change.attribute} {change.label}".rstrip())
    return lines


_OPERATION_NAMES = {ldap3.MODIFY_ADD: "add", ldap3.MODIFY_DELETE: "delete",
                    ldap3.MODIFY_REPLACE: "replace"}  # fmt: skip


def modify_operations(dn: str, modifications: Iterable[dict]) -> tuple[dict, ...]:
    """LDAP modifies as ``operations`` entries, the shape every credroam module reports (kind,
    target, details): per attribute the values deleted and added, counted, not shown (they
    hold sealed keys; ``describe_changes`` names the items)."""
    return tuple(
        {
            "kind": "ldap_modify",
            "target": dn,
            "changes": {
                attribute: [
                    {"op": _OPERATION_NAMES[op], "values": len(values)} for op, values in ops
                ]
                for attribute, ops in modlist.items()
            },
        }
        for modlist in modifications
    )


def build_modifications(
    record: RoamingRecord,
    changes: Sequence[ValueChange],
    now: int,
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
) -> tuple[list[dict], RoamingTimestamp | None]:
    """The LDAP modifies for ``changes`` (empty when there is nothing to do) and the final stamp.

    Changes are packed into modifies of at most about ``max_request_bytes``; a single change is
    never split, so every item is either fully old or fully new. Each modify replaces the exact
    timestamp value that precedes it (read, or written by the previous modify) with an advanced
    one: that is the optimistic check, and it leaves the bump in the directory once all is done.
    """
    if not changes:
        return [], None
    batches: list[list[ValueChange]] = [[]]
    size = 0
    for change in changes:
        change_size = sum(len(v) for v in change.delete) + 2 * len(change.add or b"")
        if batches[-1] and size + change_size > max_request_bytes:
            batches.append([])
            size = 0
        batches[-1].append(change)
        size += change_size
    modifications = []
    previous_raw, stamp = record.timestamp_raw, record.timestamp
    for batch in batches:
        stamp = _next_stamp(stamp, now)
        stamp_raw = encode_roaming_timestamp(stamp)
        modlist = _modlist(record.dn, batch)
        ops = [(ldap3.MODIFY_DELETE, [previous_raw])] if previous_raw is not None else []
        modlist[ROAMING_TIMESTAMP] = [*ops, (ldap3.MODIFY_ADD, [stamp_raw])]
        modifications.append(modlist)
        previous_raw = stamp_raw
    return modifications, stamp


def _next_stamp(previous: RoamingTimestamp | None, now: int) -> RoamingTimestamp:
    """The advanced stamp; a fresh one at ``now`` when the one read is at the largest FILETIME.

    A stamp that cannot advance must not block every write; the exact value read is still
    deleted by the modify, so the optimistic check holds.
    """
    try:
        return advance_roaming_timestamp(previous, now)
    except TimestampError:
        return advance_roaming_timestamp(None, now)


def _modlist(dn: str, changes: Sequence[ValueChange]) -> dict[str, list[tuple]]:
    deletes: dict[str, list[bytes]] = {}
    adds: dict[str, list[bytes]] = {}
    for change in changes:
        deletes.setdefault(change.attribute, []).extend(change.delete)
        if change.add is not None:
            adds.setdefault(change.attribute, []).append(
                format_dn_binary(change.add, dn).encode("utf-8")
            )
    modlist: dict[str, list[tuple]] = {}
    for attribute in dict.fromkeys([*deletes, *adds]):
        # Never send a delete without values: LDAP would remove the whole attribute.
        ops = [(ldap3.MODIFY_DELETE, deletes[attribute])] if deletes.get(attribute) else []
        if adds.get(attribute):
            ops.append((ldap3.MODIFY_ADD, adds[attribute]))
        modlist[attribute] = ops
    return modlist


def apply_changes(
    conn: ldap3.Connection,
    record: RoamingRecord,
    changes: Sequence[ValueChange],
    *,
    now: int,
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
) -> AppliedChanges:
    """Write ``changes`` optimistically; nothing is sent when there are none.

    ``now`` is the FILETIME written as the second half of msPKIRoamingTimeStamp. Raises
    :class:`ConcurrentModification` when a value read is gone or a value added already exists
    (someone wrote in between), :class:`DirectoryError` for anything else (e.g. no right to
    write another user's values, a DC that went away).
    """
    changes = tuple(changes)
    missing = {c.attribute for c in changes if c.attribute in CREDROAM_ATTRIBUTES}
    if missing and not record.credroam_schema:
        raise DirectoryError(
            f"cannot write {', '.join(sorted(missing))} of {record.dn}: credroam's schema "
            f"(auxiliary class credroamUser) is not installed on {conn.server.host}"
        )
    modifications, stamp = build_modifications(record, changes, now, max_request_bytes)
    done: list[dict] = []
    for modlist in modifications:
        try:
            conn.modify(record.dn, modlist)
        except ldap3.core.exceptions.LDAPException as exc:
            raise DirectoryError(
                f"writing the roaming values of {record.dn} to {conn.server.host} failed: {exc}"
            ) from exc
        result = conn.result or {}
        code = result.get("result", 0)
        if code in _CONFLICT_RESULTS and _NOT_IN_SCHEMA not in str(result.get("message")):
            raise ConcurrentModification(
                f"the roaming values of {record.dn} changed on {conn.server.host} since they "
                f"were read ({_CONFLICT_RESULTS[code]}: {result.get('message', '')})".rstrip(),
                applied=done,
            )
        check_result(conn, f"writing {', '.join(sorted(modlist))} of {record.dn}")
        done.append(modlist)
    return AppliedChanges(tuple(done), changes, stamp)


# --- helpers -------------------------------------------------------------------------------


def _entries(conn: ldap3.Connection) -> list[dict]:
    return [r for r in (conn.response or []) if r.get("type") == "searchResEntry"]


def _lower_keys(raw: dict) -> dict[str, list[bytes]]:
    merged: dict[str, list[bytes]] = {}
    for name, values in raw.items():
        merged.setdefault(name.lower(), []).extend(values)
    return merged


def _text(value: bytes | None) -> str | None:
    return value.decode("utf-8", "replace") if value is not None else None


def _guid(value: bytes | None) -> uuid.UUID | None:
    return uuid.UUID(bytes_le=value) if value is not None and len(value) == 16 else None


def _dn_key(dn: str) -> tuple | None:
    """A DN reduced for comparison: attribute types and values case-folded, spacing ignored."""
    try:
        return tuple((attr.lower(), value.lower()) for attr, value, _ in parse_dn(dn, strip=True))
    except Exception:  # ldap3 raises several types for a malformed DN
        return None
