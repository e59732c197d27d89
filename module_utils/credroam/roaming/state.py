"""The per-user state file: the last-synced base of reconciliation, kept on the host.

JSON, versioned, checked field by field on load. Written atomically (temporary file, fsync,
rename, mode 0600); the copy it replaces is kept as ``<name>.prev`` (like Windows' state.da~)
and used when the main copy is damaged. The file is only as trustworthy as the user's own
profile, but it is still parsed as hostile input: a bad file gives ``StateError`` naming the
file, and the caller continues as with a lost base, which reconciliation handles safely (it
never deletes on the strength of absence without a base).

Format, version 1::

    {"format": "credroam-state", "version": 1, "last_sync": <FILETIME|null>,
     "directory_timestamp": <FILETIME|null>,
     "entries": [{"key": "%3\\\\<id>", "store": "MY", "kind": "certificate",
                  "modified": <FILETIME>, "content_hash": "<hex>", "tombstone": false,
                  "archived": false, "last_seen_in_directory": <FILETIME>,
                  "owner": "<key>" | null}, ...]}

Beside it, ``<name>.head`` (:class:`SyncHeader`) holds only what the sync's fast path compares,
so that a sync with nothing to do reads a few hundred bytes instead of the whole base::

    {"format": "credroam-state-head", "version": 1, "state_file": [<dev>, <ino>, <size>,
     <mtime_ns>], "user_dn": "...", "settings": "<hex>", "dc": {"service_name": "...",
     "invocation_id": "<hex>", "host_name": "..."}, "usn_changed": <int>,
     "directory_timestamp": "<hex of the raw msPKIRoamingTimeStamp>" | null,
     "local_marker": "<text>", "last_full_sync": <FILETIME>, "due": <FILETIME> | null}

It describes one state file (``state_file``, its identity when the head was written): a state
file replaced, restored or rewritten since no longer matches, and the next sync is a full one.
A damaged or missing head only costs that full sync; it is never used to plan anything.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from typing import Any

from ..errors import CredroamError
from ..tokens import TokenType
from .fsutil import atomic_write, ensure_private_dir, read_private
from .model import Base, BaseEntry, ItemKind, StoreName
from .store import StoreError, split_item_key

__all__ = [
    "FORMAT",
    "HEAD_FORMAT",
    "HEAD_VERSION",
    "MAX_STATE_SIZE",
    "VERSION",
    "StateError",
    "StateFile",
    "SyncHeader",
    "decode_state",
    "encode_state",
    "load_state",
    "save_state",
]

FORMAT = "credroam-state"
VERSION = 1
MAX_STATE_SIZE = 16 * 1024 * 1024  # 10000 tokens with generous keys fit many times over
_MAX_ENTRIES = 100_000
_MAX_KEY = 200
_MAX_HASH = 128
_FILETIME_MAX = 0xFFFFFFFFFFFFFFFF
_PREV_SUFFIX = ".prev"
HEAD_FORMAT = "credroam-state-head"
HEAD_VERSION = 1
_HEAD_SUFFIX = ".head"
_MAX_HEAD_SIZE = 16 * 1024
# The token types each kind of item is held as, and the stores it may be filed in (a private
# key is filed with its owner, a certificate or a request).
_TYPES_OF_KIND = {
    ItemKind.CERTIFICATE: (TokenType.CERTIFICATE, TokenType.CNG_CERTIFICATE),
    ItemKind.REQUEST: (TokenType.REQUEST, TokenType.CNG_REQUEST),
    ItemKind.KEY: (TokenType.CNG_KEY,),
}
_STORES_OF_KIND = {
    ItemKind.CERTIFICATE: (StoreName.MY,),
    ItemKind.REQUEST: (StoreName.REQUEST,),
    ItemKind.KEY: (StoreName.MY, StoreName.REQUEST),
}
_OWNER_TYPES = _TYPES_OF_KIND[ItemKind.CERTIFICATE] + _TYPES_OF_KIND[ItemKind.REQUEST]


class StateError(CredroamError, ValueError):
    """The state file is unreadable or malformed; ``path`` names it."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"state file {path}: {reason}")
        self.path = path
        self.reason = reason


def _filetime(value: Any, what: str, nullable: bool = False) -> int | None:
    if value is None and nullable:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _FILETIME_MAX:
        raise ValueError(f"{what} is not a FILETIME: {value!r:.60}")
    return value


def _text(value: Any, what: str, limit: int, nullable: bool = False) -> str | None:
    if value is None and nullable:
        return None
    if not isinstance(value, str) or len(value) > limit or not value.isprintable():
        raise ValueError(f"{what} is not a printable string of at most {limit} chars")
    return value


def _flag(value: Any, what: str) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{what} is not true/false: {value!r:.60}")
    return value


_ENTRY_FIELDS = frozenset(
    {
        "key",
        "store",
        "kind",
        "modified",
        "content_hash",
        "tombstone",
        "archived",
        "last_seen_in_directory",
        "owner",
    }
)


def _entry(raw: Any, index: int) -> BaseEntry:
    what = f"entries[{index}]"
    if not isinstance(raw, dict) or set(raw) != _ENTRY_FIELDS:
        raise ValueError(f"{what} must be an object with exactly {sorted(_ENTRY_FIELDS)}")
    key = _text(raw["key"], f"{what}.key", _MAX_KEY)
    if not key:
        raise ValueError(f"{what}.key is empty")
    try:
        store, kind = StoreName(raw["store"]), ItemKind(raw["kind"])
    except ValueError:
        raise ValueError(f"{what}: unknown store or kind") from None
    owner = _text(raw["owner"], f"{what}.owner", _MAX_KEY, nullable=True)
    _check_identity(key, store, kind, owner, what)  # type: ignore[arg-type]
    return BaseEntry(
        key=key,
        store=store,
        kind=kind,
        modified=_filetime(raw["modified"], f"{what}.modified"),  # type: ignore[arg-type]
        content_hash=_text(raw["content_hash"], f"{what}.content_hash", _MAX_HASH),  # type: ignore[arg-type]
        tombstone=_flag(raw["tombstone"], f"{what}.tombstone"),
        archived=_flag(raw["archived"], f"{what}.archived"),
        last_seen_in_directory=_filetime(  # type: ignore[arg-type]
            raw["last_seen_in_directory"], f"{what}.last_seen_in_directory"
        ),
        owner=owner,
    )


def _check_identity(
    key: str, store: StoreName, kind: ItemKind, owner: str | None, what: str
) -> None:
    """Refuse a key or owner that sync could not use: unsafe, or disagreeing with its kind.

    The keys are later turned into paths and tokens, which validate them again and would fail
    on every run; refused here, the file is a lost base instead.
    """
    try:
        token_type, identifier = split_item_key(key)
        owner_parts = split_item_key(owner) if owner is not None else None
    except StoreError as exc:
        raise ValueError(f"{what}: {exc}") from None
    if token_type not in _TYPES_OF_KIND[kind] or store not in _STORES_OF_KIND[kind]:
        raise ValueError(f"{what}: key {key} cannot be a {kind} item in store {store}")
    if kind is not ItemKind.KEY:
        if owner_parts is not None:
            raise ValueError(f"{what}: a {kind} item has no owner, yet names {owner}")
        return
    if owner_parts is None or owner_parts[0] not in _OWNER_TYPES or owner_parts[1] != identifier:
        raise ValueError(
            f"{what}: private key {key} needs the certificate or request of the same "
            f"identifier as owner, not {owner}"
        )


def decode_state(data: bytes) -> Base:
    """Parse and check a state document. Raises ValueError saying what is wrong."""
    try:
        document = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ValueError(f"not JSON ({exc.__class__.__name__}: {exc})") from None
    if not isinstance(document, dict):
        raise ValueError("top level is not an object")
    if document.get("format") != FORMAT:
        raise ValueError(f"format is not {FORMAT!r}")
    if document.get("version") != VERSION:
        raise ValueError(f"unsupported version {document.get('version')!r:.20} (want {VERSION})")
    expected = {"format", "version", "last_sync", "directory_timestamp", "entries"}
    if set(document) != expected:
        raise ValueError(f"fields must be exactly {sorted(expected)}")
    raw_entries = document["entries"]
    if not isinstance(raw_entries, list) or len(raw_entries) > _MAX_ENTRIES:
        raise ValueError(f"entries must be a list of at most {_MAX_ENTRIES}")
    entries: dict[str, BaseEntry] = {}
    for index, raw in enumerate(raw_entries):
        entry = _entry(raw, index)
        if entry.key in entries:
            raise ValueError(f"entries[{index}]: duplicate key {entry.key!r}")
        entries[entry.key] = entry
    return Base(
        entries=entries,
        directory_timestamp=_filetime(document["directory_timestamp"], "directory_timestamp", True),
        last_sync=_filetime(document["last_sync"], "last_sync", True),
    )


def encode_state(base: Base) -> bytes:
    entries = [
        {
            "key": e.key,
            "store": str(e.store),
            "kind": str(e.kind),
            "modified": e.modified,
            "content_hash": e.content_hash,
            "tombstone": e.tombstone,
            "archived": e.archived,
            "last_seen_in_directory": e.last_seen_in_directory,
            "owner": e.owner,
        }
        for e in sorted(base.entries.values(), key=lambda entry: entry.key)
    ]
    document = {
        "format": FORMAT,
        "version": VERSION,
        "last_sync": base.last_sync,
        "directory_timestamp": base.directory_timestamp,
        "entries": entries,
    }
    return json.dumps(document, indent=1, sort_keys=True).encode("utf-8") + b"\n"


def _load_one(path: str) -> Base | None:
    """The base in ``path``; None if the file does not exist; StateError if it is bad."""
    try:
        data = read_private(path, MAX_STATE_SIZE)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StateError(path, f"cannot read: {exc.strerror or exc}") from exc
    try:
        return decode_state(data)
    except ValueError as exc:
        raise StateError(path, str(exc)) from exc


def load_state(path: str, problems: list[str] | None = None) -> Base | None:
    """The saved base, or None when there is none yet (first use).

    When the main copy is damaged, the previous copy is used and the damage is appended to
    ``problems``. Raises StateError (naming the main file) when no copy is usable: the caller
    logs it and syncs without a base.
    """
    try:
        return _load_one(path)
    except StateError as main_error:
        try:
            previous = _load_one(path + _PREV_SUFFIX)
        except StateError as prev_error:
            raise StateError(path, f"{main_error.reason}; previous copy: {prev_error}") from None
        if previous is None:
            raise
        if problems is not None:
            problems.append(f"{main_error}; using the previous copy {path}{_PREV_SUFFIX}")
        return previous


def save_state(path: str, base: Base) -> None:
    """Write ``base`` atomically (0600); the replaced copy becomes ``<path>.prev`` if valid."""
    ensure_private_dir(os.path.dirname(os.path.abspath(path)))
    try:
        current = read_private(path, MAX_STATE_SIZE)
        decode_state(current)
    except (OSError, ValueError):
        current = None  # missing or damaged: never overwrite a good previous copy with it
    if current is not None:
        atomic_write(path + _PREV_SUFFIX, current)
    atomic_write(path, encode_state(base))


@dataclass(frozen=True)
class SyncHeader:
    """What the last full sync proved, for the next sync's "nothing changed" check.

    ``dc`` (service_name, invocation_id, host_name), ``usn_changed`` and
    ``directory_timestamp`` (the raw msPKIRoamingTimeStamp) are the directory as read by a full
    sync that wrote nothing there; ``local_marker`` the local stores' change marker, unchanged
    across that sync; ``settings`` a digest of what else the plan depended on (policy, roaming
    key); ``due`` the earliest time at which the same inputs would give another plan (the next
    certificate to expire), or None.
    """

    user_dn: str
    settings: str
    dc: tuple[str, str, str]
    usn_changed: int
    directory_timestamp: bytes | None
    local_marker: str
    last_full_sync: int
    due: int | None


_HEAD_FIELDS = frozenset(
    {
        "format",
        "version",
        "state_file",
        "user_dn",
        "settings",
        "dc",
        "usn_changed",
        "directory_timestamp",
        "local_marker",
        "last_full_sync",
        "due",
    }
)
_DC_FIELDS = ("service_name", "invocation_id", "host_name")


def _file_identity(path: str) -> list[int] | None:
    """What changes whenever ``path`` is replaced or rewritten (atomic_write makes a new inode)."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return None
    return [info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns]


def encode_header(header: SyncHeader, state_file: list[int]) -> bytes:
    document = {
        "format": HEAD_FORMAT,
        "version": HEAD_VERSION,
        "state_file": state_file,
        "user_dn": header.user_dn,
        "settings": header.settings,
        "dc": dict(zip(_DC_FIELDS, header.dc, strict=True)),
        "usn_changed": header.usn_changed,
        "directory_timestamp": (
            header.directory_timestamp.hex() if header.directory_timestamp is not None else None
        ),
        "local_marker": header.local_marker,
        "last_full_sync": header.last_full_sync,
        "due": header.due,
    }
    return json.dumps(document, sort_keys=True).encode("utf-8") + b"\n"


def decode_header(data: bytes) -> tuple[SyncHeader, list[int]]:
    """The header and the state file identity it was written for; ValueError if malformed."""
    try:
        document = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ValueError(f"not JSON ({exc.__class__.__name__})") from None
    if not isinstance(document, dict) or set(document) != _HEAD_FIELDS:
        raise ValueError(f"fields must be exactly {sorted(_HEAD_FIELDS)}")
    if document["format"] != HEAD_FORMAT or document["version"] != HEAD_VERSION:
        raise ValueError(f"not a {HEAD_FORMAT} of version {HEAD_VERSION}")
    identity = document["state_file"]
    if not isinstance(identity, list) or len(identity) != 4:
        raise ValueError("state_file is not [dev, ino, size, mtime_ns]")
    for number in identity:
        _filetime(number, "state_file")
    dc = document["dc"]
    if not isinstance(dc, dict) or set(dc) != set(_DC_FIELDS):
        raise ValueError(f"dc must have exactly {list(_DC_FIELDS)}")
    stamp = _text(document["directory_timestamp"], "directory_timestamp", 64, nullable=True)
    try:
        raw_stamp = bytes.fromhex(stamp) if stamp is not None else None
    except ValueError:
        raise ValueError("directory_timestamp is not hex") from None
    header = SyncHeader(
        user_dn=_text(document["user_dn"], "user_dn", 2048),  # type: ignore[arg-type]
        settings=_text(document["settings"], "settings", _MAX_HASH),  # type: ignore[arg-type]
        dc=tuple(_text(dc[name], f"dc.{name}", 2048) for name in _DC_FIELDS),  # type: ignore[arg-type]
        usn_changed=_filetime(document["usn_changed"], "usn_changed"),  # type: ignore[arg-type]
        directory_timestamp=raw_stamp,
        local_marker=_text(document["local_marker"], "local_marker", 4096),  # type: ignore[arg-type]
        last_full_sync=_filetime(document["last_full_sync"], "last_full_sync"),  # type: ignore[arg-type]
        due=_filetime(document["due"], "due", nullable=True),
    )
    return header, identity


class StateFile:
    """The state file of one user, as the sync engine's ``BaseStore`` (load/save), and its
    head (load_header/save_header/clear_header) for the fast path.

    ``load`` never raises for a damaged file: it returns None (base lost, handled safely by
    reconciliation) and keeps the reason in ``problems`` for the report. ``load_header``
    returns None for a missing, damaged or outdated head: the sync is then a full one.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.head_path = path + _HEAD_SUFFIX
        self.problems: list[str] = []

    def load_header(self) -> SyncHeader | None:
        try:
            header, identity = decode_header(read_private(self.head_path, _MAX_HEAD_SIZE))
        except (OSError, ValueError):
            return None  # missing or damaged: a full sync, which writes a new one
        return header if identity == _file_identity(self.path) else None

    def save_header(self, header: SyncHeader) -> None:
        """Write the head for the state file as it is now (call after ``save``)."""
        identity = _file_identity(self.path)
        if identity is None:
            raise StateError(self.path, "no state file to describe in its head")
        atomic_write(self.head_path, encode_header(header, identity))

    def clear_header(self) -> None:
        """Forget the head (before a sync writes anything): the next sync is a full one."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.head_path)

    def load(self) -> Base | None:
        try:
            return load_state(self.path, self.problems)
        except StateError as exc:
            self.problems.append(f"{exc}; syncing without a base")
            return None

    def save(self, base: Base) -> None:
        save_state(self.path, base)
