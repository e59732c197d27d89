"""Operations on one user's roaming values by an administrator (or the user): plan them, purely.

What ``credroam_tokens`` does, without any I/O: it reads the user's
:class:`~.directory.RoamingRecord` (one search), calls one of the planners here, and writes the
returned :class:`~.directory.ValueChange` list with :func:`~.directory.apply_changes`, the sync
engine's own writer: one optimistic LDAP modify that deletes the exact values read and replaces
the exact ``msPKIRoamingTimeStamp`` read with an advanced one. So every write here moves the
timestamp (and the object's ``uSNChanged``) exactly as a sync does, and every agent's fast path
notices it.

How each operation meets the hosts' reconciliation (README, "Reconciliation rules"):

- **remove** writes a tombstone dated after every value of the key: on each host the tombstone
  is the newest version, so the host deletes its copy at its next sync (keeping a recovery copy).
  A certificate or request takes its sealed private key (``%9\\<same id>``) with it, as a sync
  does (R35).
- **prune** removes tombstones past their days (what a sync purges), tombstones archived
  certificates that expired more than a given number of days ago (and their keys), tombstones
  live tokens over the size limit, deletes values too large to decode at all and, when asked,
  values that fail their checks (every host skips those).
- **purge**, form ``tombstone``: every live token becomes a tombstone; every host deletes its
  copies at its next sync, and the tombstones go after the tombstone days. The wrapped roaming
  keys stay: they hold no credential, and a host that uploads later still seals for the same key.
  Form ``clear``: every value of every roaming attribute is deleted at once, as Windows'
  documented recovery clears the attributes (credroam advances ``msPKIRoamingTimeStamp`` instead
  of clearing it, so agents notice). A host that keeps its base sees its items absent, takes that
  for replication lag while it saw them within the tombstone days, and deletes its copies only
  after those days (R14-R16); a host without a base uploads its copies again (R1).
- **export** is the directory values exactly as read (sealed keys stay sealed), in a versioned
  JSON document (:data:`EXPORT_FORMAT`, :data:`EXPORT_VERSION`); **import** writes back every
  exported live token the directory lacks or holds only as a tombstone, dated after what the
  directory holds so hosts download it again, and every wrapped roaming key record it lacks.
  A token the directory holds live with other content is left alone and reported. Importing
  the same export again changes nothing.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..cryptocompat import load_der_certificate
from ..errors import CredroamError
from ..timestamps import TICKS_PER_DAY, TimestampError, from_filetime
from ..tokens import (
    Token,
    TokenError,
    TokenFlags,
    TokenLimits,
    TokenType,
    decode_token,
    format_dn_binary,
    parse_dn_binary,
    parse_key,
    validate_identifier,
)
from .certelement import parse_certificate_token
from .directory import (
    KEY_ENVELOPES,
    ROAMING_KEYS,
    ROAMING_TIMESTAMP,
    TOKEN_ATTRIBUTES,
    RoamingRecord,
    StoredToken,
    ValueChange,
    decode_record,
    put_blob,
    put_token,
    remove_token,
)

__all__ = [
    "ADMIN_LIMITS",
    "EXPORT_FORMAT",
    "EXPORT_VERSION",
    "PRUNE_KINDS",
    "PURGE_FORMS",
    "TokenInfo",
    "TokenOpsError",
    "after_changes",
    "check_export",
    "describe_record",
    "diff_lines",
    "export_document",
    "import_changes",
    "matching_keys",
    "prune_changes",
    "purge_changes",
    "remove_changes",
    "same_export",
]

EXPORT_FORMAT = "credroam-tokens-export"
EXPORT_VERSION = 1
PRUNE_KINDS = ("tombstones", "archived", "oversize", "malformed")
PURGE_FORMS = ("tombstone", "clear")
# What an administrator reads: every value up to the policy template's largest token, however
# many (a sync reads at most 10000 per attribute; an admin must see and clean the rest too).
ADMIN_LIMITS = TokenLimits(max_token_size=100000, max_tokens=1_000_000)
_VALUE_ATTRIBUTES = (*TOKEN_ATTRIBUTES, ROAMING_KEYS)
# A certificate or request owns the sealed private key of the same identifier (R35).
_OWNER_TYPES = (
    TokenType.CERTIFICATE,
    TokenType.REQUEST,
    TokenType.CNG_CERTIFICATE,
    TokenType.CNG_REQUEST,
)
_CERTIFICATE_TYPES = (TokenType.CERTIFICATE, TokenType.CNG_CERTIFICATE)


class TokenOpsError(CredroamError, ValueError):
    """An operation's input is unusable (unknown token, a malformed or foreign export)."""


# --- listing ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class TokenInfo:
    """One directory value as an administrator sees it (nothing secret: no key material)."""

    attribute: str
    size: int  # bytes of the binary part (a value that fails its checks: of the LDAP value)
    key: str | None = None  # None for values that are not tokens or fail their checks
    type: str | None = None
    identifier: str | None = None
    modified: int | None = None  # FILETIME
    tombstone: bool = False
    archived: bool | None = None  # certificates only
    subject: str | None = None
    expires: int | None = None  # FILETIME, certificates only
    problem: str | None = None  # why the value fails its checks

    def as_dict(self) -> dict[str, Any]:
        return {
            "attribute": self.attribute,
            "key": self.key,
            "type": self.type,
            "identifier": self.identifier,
            "modified": _iso(self.modified),
            "size": self.size,
            "tombstone": self.tombstone,
            "archived": self.archived,
            "subject": self.subject,
            "expires": _iso(self.expires),
            "problem": self.problem,
        }

    def line(self) -> str:
        """One line for --diff: which value, in which state."""
        if self.problem is not None:
            return f"{self.attribute} undecodable value ({self.size} bytes): {self.problem}"
        if self.key is None:
            return f"{self.attribute} record ({self.size} bytes)"
        state = "tombstone" if self.tombstone else ("archived" if self.archived else "live")
        return (
            f"{self.attribute} {self.key} {state} {self.size} bytes modified {_iso(self.modified)}"
        )


def _iso(filetime: int | None) -> str | None:
    if filetime is None:
        return None
    try:
        return from_filetime(filetime).isoformat()
    except TimestampError:
        return f"FILETIME {filetime}"


def _token_info(stored: StoredToken) -> TokenInfo:
    token = stored.token
    info = {
        "attribute": stored.attribute,
        "size": token.encoded_size,
        "key": token.key,
        "type": token.type.name,
        "identifier": token.identifier,
        "modified": token.last_modified,
        "tombstone": token.is_tombstone,
    }
    if token.type in _CERTIFICATE_TYPES and not token.is_tombstone:
        try:
            element = parse_certificate_token(token)
            subject = load_der_certificate(element.der).subject.rfc4514_string()
        except (TokenError, ValueError) as exc:
            return TokenInfo(**info, problem=str(exc))
        info.update(archived=element.archived, subject=subject, expires=element.expires)
    return TokenInfo(**info)


def describe_record(record: RoamingRecord) -> list[TokenInfo]:
    """Every roaming value of the user: tokens, wrapped roaming keys and values that fail."""
    infos = [_token_info(stored) for stored in record.tokens]
    infos += [TokenInfo(blob.attribute, len(blob.blob)) for blob in record.blobs]
    infos += [
        TokenInfo(rejected.attribute, len(rejected.raw), problem=str(rejected.error))
        for rejected in record.rejected
        if rejected.attribute != ROAMING_TIMESTAMP
    ]
    return infos


def diff_lines(record: RoamingRecord) -> str:
    return "".join(f"{line}\n" for line in sorted(info.line() for info in describe_record(record)))


def after_changes(record: RoamingRecord, changes: Sequence[ValueChange]) -> RoamingRecord:
    """The record as it will read once ``changes`` are written: the diff's "after" side."""
    raw: dict[str, list[bytes]] = {}
    for value in (*record.tokens, *record.blobs, *record.rejected):
        if value.attribute != ROAMING_TIMESTAMP:
            raw.setdefault(value.attribute.lower(), []).append(value.raw)
    for change in changes:
        values = raw.setdefault(change.attribute.lower(), [])
        for deleted in change.delete:
            if deleted in values:
                values.remove(deleted)
        if change.add is not None:
            values.append(format_dn_binary(change.add, record.dn).encode("utf-8"))
    return decode_record(record.dn, raw, record.limits)


# --- remove, prune, purge --------------------------------------------------------------------


def _values_of(record: RoamingRecord, attribute: str, key: str) -> list[StoredToken]:
    return [s for s in record.tokens if s.attribute == attribute and s.token.key == key]


def _tombstone(record: RoamingRecord, attribute: str, key: str, now: int) -> ValueChange | None:
    """A tombstone of ``key`` in place of its values, dated after all of them; None when the
    newest value already is one (nothing to do) or there is no value."""
    values = _values_of(record, attribute, key)
    if not values:
        return None
    newest = record.stored(attribute)[key].token
    if newest.is_tombstone and len(values) == 1:
        return None
    latest = max(s.token.last_modified for s in values)
    token_type, identifier = parse_key(key)
    modified = latest if newest.is_tombstone else max(now, latest + 1)
    return put_token(
        record, attribute, Token(token_type, identifier, modified, TokenFlags.TOMBSTONE, b"")
    )


def _with_owned_keys(keys: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """(attribute, key) pairs plus the sealed private key each certificate or request owns."""
    chosen = dict.fromkeys(keys)
    for _, key in list(chosen):
        token_type, identifier = parse_key(key)
        if token_type in _OWNER_TYPES:
            chosen.setdefault((KEY_ENVELOPES, f"%{TokenType.CNG_KEY.value}\\{identifier}"))
    return list(chosen)


def _tombstones(
    record: RoamingRecord, pairs: Iterable[tuple[str, str]], now: int
) -> list[ValueChange]:
    changes = (
        _tombstone(record, attribute, key, now) for attribute, key in _with_owned_keys(pairs)
    )
    return [change for change in changes if change is not None]


def matching_keys(record: RoamingRecord, token: str) -> list[tuple[str, str]]:
    """(attribute, key) of every token named by ``token``: an item key ``%<type>\\<id>``, or a
    bare identifier (a thumbprint names the certificate and its sealed key). Raises
    TokenOpsError when ``token`` is neither."""
    if token.startswith("%"):
        try:
            parse_key(token)
        except TokenError as exc:
            raise TokenOpsError(f"token {token!r:.100}: {exc}") from None
    elif not any(_is_identifier(kind, token) for kind in TokenType):
        raise TokenOpsError(
            f"token {token!r:.100} is neither an item key (%<type>\\<identifier>) nor an "
            "identifier of any token type"
        )
    found = [(s.attribute, s.token.key) for s in record.tokens if _named(s.token, token)]
    return list(dict.fromkeys(found))


def _named(token: Token, name: str) -> bool:
    return token.key == name if name.startswith("%") else token.identifier == name


def _is_identifier(kind: TokenType, identifier: str) -> bool:
    try:
        validate_identifier(kind, identifier)
    except TokenError:
        return False
    return True


def remove_changes(record: RoamingRecord, token: str, now: int) -> list[ValueChange]:
    """Tombstones for every token ``token`` names (see :func:`matching_keys`), with their keys."""
    return _tombstones(record, matching_keys(record, token), now)


def prune_changes(
    record: RoamingRecord,
    now: int,
    kinds: Iterable[str],
    *,
    tombstone_days: int = 60,
    max_token_size: int = 65535,
    archived_older_than_days: int | None = None,
) -> list[ValueChange]:
    """The changes of a prune; ``kinds`` from :data:`PRUNE_KINDS`.

    ``tombstones``: delete tombstones older than ``tombstone_days`` (the sync's own purge rule).
    ``archived``: tombstone archived certificates that expired more than
    ``archived_older_than_days`` ago, and their sealed keys. ``oversize``: tombstone live tokens
    over ``max_token_size`` bytes, delete values too large to decode. ``malformed``: delete
    values that fail their checks (other than size).
    """
    kinds = set(kinds)
    unknown = kinds - set(PRUNE_KINDS)
    if unknown:
        raise TokenOpsError(f"unknown prune kind(s) {sorted(unknown)}; known: {PRUNE_KINDS}")
    if "archived" in kinds and archived_older_than_days is None:
        raise TokenOpsError("pruning archived certificates needs archived_older_than_days")
    changes: list[ValueChange] = []
    if "tombstones" in kinds:
        cutoff = now - tombstone_days * TICKS_PER_DAY
        for attribute in TOKEN_ATTRIBUTES:
            for key, stored in record.stored(attribute).items():
                if stored.token.is_tombstone and stored.token.last_modified < cutoff:
                    changes.append(remove_token(record, attribute, key))
    doomed: list[tuple[str, str]] = []
    if "archived" in kinds:
        cutoff = now - archived_older_than_days * TICKS_PER_DAY
        doomed += [
            (info.attribute, info.key)
            for info in map(_token_info, record.tokens)
            if info.archived and info.expires is not None and info.expires < cutoff
        ]
    if "oversize" in kinds:
        doomed += [
            (s.attribute, s.token.key)
            for s in record.tokens
            if not s.token.is_tombstone and s.token.encoded_size > max_token_size
        ]
    changes += _tombstones(record, doomed, now)
    for rejected in record.rejected:
        if rejected.attribute == ROAMING_TIMESTAMP:
            continue
        too_big = rejected.check == "size-limit"
        if ("oversize" in kinds and too_big) or ("malformed" in kinds and not too_big):
            changes.append(ValueChange(rejected.attribute, delete=(rejected.raw,),
                                       label=f"undecodable value ({rejected.check})"))  # fmt: skip
    return _merged(changes)


def _merged(changes: Sequence[ValueChange]) -> list[ValueChange]:
    """One change per (attribute, key): a value deleted by one change is not deleted twice."""
    seen: set[bytes] = set()
    merged = []
    for change in changes:
        delete = tuple(raw for raw in change.delete if raw not in seen)
        seen.update(delete)
        if delete or change.add is not None:
            merged.append(ValueChange(change.attribute, delete, change.add, change.label))
    return merged


def purge_changes(record: RoamingRecord, form: str, now: int) -> list[ValueChange]:
    """Every token tombstoned (``tombstone``), or every roaming value deleted (``clear``)."""
    if form == "tombstone":
        pairs = [(s.attribute, s.token.key) for s in record.tokens if not s.token.is_tombstone]
        return _tombstones(record, dict.fromkeys(pairs), now)
    if form != "clear":
        raise TokenOpsError(f"unknown purge form {form!r}; known: {PURGE_FORMS}")
    values: dict[str, list[bytes]] = {}
    for value in (*record.tokens, *record.blobs, *record.rejected):
        if value.attribute != ROAMING_TIMESTAMP:
            values.setdefault(value.attribute, []).append(value.raw)
    return [
        ValueChange(attribute, delete=tuple(raws), label=f"all {len(raws)} values")
        for attribute, raws in values.items()
    ]


# --- export and import -----------------------------------------------------------------------


def export_document(record: RoamingRecord, *, server: str, exported_at: str) -> dict[str, Any]:
    """The user's roaming values exactly as read, as the versioned export document.

    ``values`` holds each LDAP value (DN-Binary, base64 of its bytes), tokens, wrapped roaming
    keys and values that fail their checks alike, so nothing is lost; ``tokens`` is the listing
    for people (not read back). ``msPKIRoamingTimeStamp`` is kept for reference only.
    """
    values = [
        {"attribute": value.attribute, "value": base64.b64encode(value.raw).decode("ascii")}
        for value in (*record.tokens, *record.blobs, *record.rejected)
        if value.attribute != ROAMING_TIMESTAMP
    ]
    stamp = record.timestamp_raw
    return {
        "format": EXPORT_FORMAT,
        "version": EXPORT_VERSION,
        "exported_at": exported_at,
        "server": server,
        "user": {
            "dn": record.dn,
            "object_guid": str(record.object_guid) if record.object_guid else None,
        },
        "roaming_timestamp": base64.b64encode(stamp).decode("ascii") if stamp else None,
        "values": values,
        "tokens": [info.as_dict() for info in describe_record(record)],
    }


def same_export(first: Mapping[str, Any], second: Mapping[str, Any]) -> bool:
    """Whether two exports hold the same user and values (the time and the listing aside)."""
    keys = ("format", "version", "user", "values")
    return all(first.get(k) == second.get(k) for k in keys)


def check_export(document: Any) -> list[tuple[str, bytes]]:
    """(attribute, binary part) of each value of an export document, after checking its
    format, version and every value (no directory needed: a module calls it before any I/O)."""
    if not isinstance(document, Mapping) or document.get("format") != EXPORT_FORMAT:
        raise TokenOpsError(f"not a credroam token export (format {EXPORT_FORMAT!r} expected)")
    if document.get("version") != EXPORT_VERSION:
        raise TokenOpsError(
            f"export version {document.get('version')!r} is not supported (this is "
            f"version {EXPORT_VERSION})"
        )
    values = document.get("values")
    if not isinstance(values, list):
        raise TokenOpsError("the export has no list of values")
    known = {name.lower(): name for name in _VALUE_ATTRIBUTES}
    parsed = []
    for index, value in enumerate(values):
        try:
            attribute = known[str(value["attribute"]).lower()]
            raw = base64.b64decode(value["value"], validate=True)
            blob, _ = parse_dn_binary(raw, ADMIN_LIMITS.max_token_size)
        except (KeyError, TypeError, binascii.Error, TokenError) as exc:
            raise TokenOpsError(f"export value {index} is malformed: {exc!r:.200}") from None
        parsed.append((attribute, blob))
    return parsed


def _export_values(document: Mapping[str, Any], record: RoamingRecord) -> list[tuple[str, bytes]]:
    """(attribute, binary part) of each exported value, after checking the document is of
    ``record``'s user."""
    parsed = check_export(document)
    user = document.get("user") or {}
    exported_guid = user.get("object_guid") if isinstance(user, Mapping) else None
    if exported_guid and record.object_guid and exported_guid != str(record.object_guid):
        raise TokenOpsError(
            f"the export is of {user.get('dn')} (objectGUID {exported_guid}), not of "
            f"{record.dn} ({record.object_guid}): sealed keys are bound to their own user"
        )
    return parsed


def import_changes(
    record: RoamingRecord, document: Mapping[str, Any], now: int
) -> tuple[list[ValueChange], list[str]]:
    """The changes that bring an export's live tokens and key records back; and notes on what
    was left alone (values that fail their checks, tokens the directory holds with other
    content)."""
    notes: list[str] = []
    exported: dict[tuple[str, str], Token] = {}
    records: list[bytes] = []
    for attribute, blob in _export_values(document, record):
        if attribute == ROAMING_KEYS:
            records.append(blob)
            continue
        try:
            token = decode_token(blob, ADMIN_LIMITS)
        except TokenError as exc:
            notes.append(f"{attribute}: an exported value fails its checks, not imported: {exc}")
            continue
        if token.is_tombstone:
            continue  # nothing to bring back
        current = exported.get((attribute, token.key))
        if current is None or token.last_modified > current.last_modified:
            exported[(attribute, token.key)] = token
    changes: list[ValueChange] = []
    for (attribute, key), token in exported.items():
        held = _values_of(record, attribute, key)
        live = [s.token for s in held if not s.token.is_tombstone]
        if any(t.data == token.data and t.provider_data == token.provider_data for t in live):
            continue  # already there
        if live:
            notes.append(f"{attribute} {key}: the directory holds other content, left alone")
            continue
        latest = max((s.token.last_modified for s in held), default=0)
        modified = max(now, token.last_modified, latest + 1)
        restored = Token(token.type, token.identifier, modified, token.flags, token.data,
                         token.provider_data)  # fmt: skip
        changes.append(put_token(record, attribute, restored, ADMIN_LIMITS))
    present = {blob.blob for blob in record.blobs_in(ROAMING_KEYS)}
    for blob in dict.fromkeys(records):
        if blob not in present:
            changes.append(put_blob(record, ROAMING_KEYS, blob))
    return [change for change in changes if change is not None], notes
