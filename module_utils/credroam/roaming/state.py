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
"""

from __future__ import annotations

import json
import os
from typing import Any

from ..errors import CredroamError
from ..tokens import TokenType
from .fsutil import atomic_write, ensure_private_dir, read_private
from .model import Base, BaseEntry, ItemKind, StoreName
from .store import StoreError, split_item_key

__all__ = [
    "FORMAT",
    "MAX_STATE_SIZE",
    "VERSION",
    "StateError",
    "StateFile",
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


class StateFile:
    """The state file of one user, as the sync engine's ``BaseStore`` (load/save).

    ``load`` never raises for a damaged file: it returns None (base lost, handled safely by
    reconciliation) and keeps the reason in ``problems`` for the report.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.problems: list[str] = []

    def load(self) -> Base | None:
        try:
            return load_state(self.path, self.problems)
        except StateError as exc:
            self.problems.append(f"{exc}; syncing without a base")
            return None

    def save(self, base: Base) -> None:
        save_state(self.path, base)
