"""The roaming model: items, versions, policy, the last-synced base and the plan.

Pure data shared by ``reconcile`` (which decides), ``sync`` (which applies), the stores and the
state file. The conventions every caller relies on (FILETIME ints, the content hash, the order
of versions, how long a plan holds) are set out in ``reconcile``'s docstring and the README.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import NamedTuple

from ..errors import CredroamError
from ..timestamps import TICKS_PER_DAY, TICKS_PER_SECOND

__all__ = [
    "MAX_PLAN_AGE",
    "Base",
    "BaseEntry",
    "Conflict",
    "Item",
    "ItemKind",
    "LeftAlone",
    "LocalDeletion",
    "Plan",
    "Policy",
    "ReconcileError",
    "Refusal",
    "RefusalCause",
    "StoreName",
    "Version",
    "content_hash",
    "newest",
]

# How long after its ``now`` a plan may still be written. One sync reads, plans and writes within
# seconds; the bound only has to stay far below the tombstone days minus the replication lag
# (R32). Fifteen minutes is also AD's default MaxConnIdleTime.
MAX_PLAN_AGE = 15 * 60 * TICKS_PER_SECOND


class ReconcileError(CredroamError, ValueError):
    """Inputs to ``reconcile`` are inconsistent (a caller bug, not a roaming conflict)."""


class StoreName(StrEnum):
    """The two roamed certificate stores of a user."""

    MY = "MY"
    REQUEST = "REQUEST"


class ItemKind(StrEnum):
    CERTIFICATE = "certificate"
    REQUEST = "request"
    KEY = "key"


def content_hash(payload: bytes) -> str:
    """Lower-case hex SHA-256 of an item's canonical payload (DER certificate or request,
    PKCS#8 DER key): what ``Item.content_hash`` holds, whoever computes it.

    Versions at equal times are ordered by it, the same way on every host; SHA-256 rather than
    the tokens' own SHA-1 so that a collision cannot be crafted to steer that tie-break.
    """
    return hashlib.sha256(payload).hexdigest()


class Version(NamedTuple):
    """What makes two copies of one item equal; ordered so that the larger version wins."""

    modified: int
    tombstone: bool
    archived: bool
    content_hash: str


@dataclass(frozen=True, slots=True)
class Item:
    """One roamed item (certificate, request or private key) as one side holds it.

    ``key`` is ``%<token type>\\<identifier>`` (as in Windows' state file), unique across hosts
    and the directory. ``owner`` is, for a private key, the key of the certificate or request it
    belongs to: a key follows its owner (a refusal of one refuses both, a key is deleted with its
    owner and never roams without it). A key carries its owner's ``expires``, so both are
    archived together. ``size`` is the payload size in
    bytes (0 for a tombstone). ``smartcard`` items are backed by a card or HSM.
    """

    key: str
    store: StoreName
    kind: ItemKind
    modified: int
    content_hash: str
    size: int
    tombstone: bool = False
    archived: bool = False
    expires: int | None = None
    smartcard: bool = False
    owner: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.key, str) or not self.key:
            raise ReconcileError(f"item key must be a non-empty str, got {self.key!r}")
        for name in ("modified", "size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ReconcileError(f"item {self.key}: {name} must be an int >= 0, not {value!r}")
        if self.expires is not None and (
            isinstance(self.expires, bool) or not isinstance(self.expires, int)
        ):
            raise ReconcileError(f"item {self.key}: expires must be a FILETIME int or None")
        object.__setattr__(self, "store", StoreName(self.store))
        object.__setattr__(self, "kind", ItemKind(self.kind))

    @property
    def version(self) -> Version:
        if self.tombstone:  # a tombstone's identity is its time alone
            return Version(self.modified, True, False, "")
        return Version(self.modified, False, self.archived, self.content_hash)


def newest(items: Iterable[Item]) -> Item:
    """The winning copy among several copies of one key (same order as reconciliation)."""
    return max(items, key=lambda item: item.version)


@dataclass(frozen=True, slots=True)
class Policy:
    """Roaming policy (spec section 4). Ranges are those of the legacy policy template."""

    tombstone_days: int = 60
    max_tokens: int = 2000
    max_token_size: int = 65535
    archive_expired: bool = True
    # Smart-card certificates (public) may roam when this is on, as Windows'
    # RoamSmartCardCertificates allows; their private keys live on the card and never roam.
    roam_smartcard_certificates: bool = False
    # Keep a recovery copy of every item removed locally because it was deleted elsewhere.
    # A copy is always kept when the removed item held local changes the directory never saw.
    keep_deleted_copy: bool = True
    # Days a recovery copy of an ordinary deletion is kept (None: the tombstone days); copies
    # of deletions whose order could not be decided (R18) are kept until resolved.
    recovery_retention_days: int | None = None
    # A sync whose fast check proves nothing changed stops there; a full sync (every item
    # compared) still runs at least this often (agent setting FullSyncIntervalHours).
    full_sync_interval_hours: int = 4

    def __post_init__(self) -> None:
        for name, low, high in (
            ("tombstone_days", 1, 3650),
            ("max_tokens", 1, 10000),
            ("max_token_size", 1, 100000),
            ("full_sync_interval_hours", 1, 168),
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise ReconcileError(
                    f"policy {name} must be an int in {low}..{high}, not {value!r}"
                )
        retention = self.recovery_retention_days
        if retention is not None and (
            isinstance(retention, bool) or not isinstance(retention, int) or retention < 1
        ):
            raise ReconcileError(
                f"policy recovery_retention_days must be an int of at least 1, not {retention!r}"
            )

    @property
    def tombstone_ticks(self) -> int:
        return self.tombstone_days * TICKS_PER_DAY

    @property
    def full_sync_interval_ticks(self) -> int:
        return self.full_sync_interval_hours * 3600 * TICKS_PER_SECOND

    @property
    def recovery_retention_ticks(self) -> int:
        return (self.recovery_retention_days or self.tombstone_days) * TICKS_PER_DAY


@dataclass(frozen=True, slots=True)
class BaseEntry:
    """The version of one item both sides held after the last sync that agreed on it.

    ``last_seen_in_directory`` is the time of the last sync at which the directory held it.
    ``store``, ``kind`` and ``owner`` let a tombstone be written for an item no side holds.
    """

    key: str
    store: StoreName
    kind: ItemKind
    modified: int
    content_hash: str
    tombstone: bool
    archived: bool
    last_seen_in_directory: int
    owner: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "store", StoreName(self.store))
        object.__setattr__(self, "kind", ItemKind(self.kind))

    @classmethod
    def of(cls, item: Item, last_seen_in_directory: int) -> BaseEntry:
        version = item.version
        return cls(
            key=item.key,
            store=item.store,
            kind=item.kind,
            modified=version.modified,
            content_hash=version.content_hash,
            tombstone=version.tombstone,
            archived=version.archived,
            last_seen_in_directory=last_seen_in_directory,
            owner=item.owner,
        )

    @property
    def version(self) -> Version:
        return Version(self.modified, self.tombstone, self.archived, self.content_hash)

    def tombstone_at(self, modified: int) -> Item:
        return Item(
            key=self.key,
            store=self.store,
            kind=self.kind,
            modified=modified,
            content_hash="",
            size=0,
            tombstone=True,
            owner=self.owner,
        )


@dataclass(frozen=True, slots=True)
class Base:
    """The last-synced state of one user on one host (the state file).

    ``directory_timestamp`` is the msPKIRoamingTimeStamp last-change value read at that sync;
    the caller replaces it with the value it wrote when the plan changed the directory.
    """

    entries: Mapping[str, BaseEntry] = field(default_factory=dict)
    directory_timestamp: int | None = None
    last_sync: int | None = None


@dataclass(frozen=True, slots=True)
class LocalDeletion:
    """Remove ``item`` from the local store; ``keep_copy``: move it to recovery instead.

    ``undecided``: the order against a deletion elsewhere could not be decided (R18); its copy
    is kept until the user or an admin resolves it, whatever the retention.
    """

    item: Item
    keep_copy: bool
    reason: str
    undecided: bool = False


class RefusalCause(StrEnum):
    """Why an upload was refused (R25), for whoever maps refusals to events."""

    TOKEN_SIZE = "token size"  # larger than Policy.max_token_size
    TOKEN_COUNT = "token count"  # the directory would hold more than Policy.max_tokens
    CALLER = "caller"  # reconcile's refuse_uploads (sync's: a key with no roaming key to seal it)


@dataclass(frozen=True, slots=True)
class Refusal:
    """An upload not made (whole item, never partially) and why; the rest still roams."""

    item: Item
    reason: str
    cause: RefusalCause


@dataclass(frozen=True, slots=True)
class LeftAlone:
    """An item the plan leaves alone on both sides, and the warning that reports it.

    ``unusable``: it is there but cannot be used (R34: a directory value that cannot be
    opened, or a local one the store cannot give); otherwise it cannot roam now (R36: a key
    whose certificate or request is not here or does not roam).
    """

    key: str
    warning: str
    unusable: bool


@dataclass(frozen=True, slots=True)
class Conflict:
    """Both sides changed one item since the base; ``winner`` is what both now get."""

    key: str
    local: Item | None
    directory: Item | None
    winner: Item | None
    reason: str


@dataclass(frozen=True, slots=True)
class Plan:
    """What to write, and the base to save once every write succeeded.

    Each action carries the item exactly as it must be stored after the write:
    ``upload``/``archive_directory``: write this version to the directory (payload read from
    the local store); ``download``: write it locally (payload read from the directory);
    ``archive_local``: write it locally (the same content, archived: the directory's payload,
    else the local copy's);
    ``tombstone_directory``: write this tombstone; ``purge_directory``: remove this
    tombstone from the directory. The local store is written in that order: ``download``
    (certificates and requests before their keys), ``archive_local``, ``delete_local`` (keys
    before their certificates or requests).
    """

    upload: tuple[Item, ...] = ()
    download: tuple[Item, ...] = ()
    delete_local: tuple[LocalDeletion, ...] = ()
    tombstone_directory: tuple[Item, ...] = ()
    purge_directory: tuple[Item, ...] = ()
    archive_local: tuple[Item, ...] = ()
    archive_directory: tuple[Item, ...] = ()
    conflicts: tuple[Conflict, ...] = ()
    refused: tuple[Refusal, ...] = ()
    left_alone: tuple[LeftAlone, ...] = ()
    base: Base = field(default_factory=Base)

    @property
    def warnings(self) -> tuple[str, ...]:
        """For a person: what the plan leaves alone, then what it refuses, and why."""
        return (
            *(left.warning for left in self.left_alone),
            *(f"{r.item.key} not roamed: {r.reason}" for r in self.refused),
        )

    @property
    def changes_directory(self) -> bool:
        return bool(
            self.upload
            or self.tombstone_directory
            or self.purge_directory
            or self.archive_directory
        )

    @property
    def changes_local(self) -> bool:
        return bool(self.download or self.delete_local or self.archive_local)

    @property
    def is_empty(self) -> bool:
        """True when nothing is to be written (refusals and warnings may still be reported)."""
        return not (self.changes_directory or self.changes_local)

    @property
    def needs_interim_base(self) -> bool:
        """Whether the caller must save :meth:`interim_base` before the local writes."""
        return self.changes_directory or bool(self.delete_local)

    def interim_base(self, old: Base | None, local: Collection[str] = ()) -> Base:
        """The base to save once the directory half is written, before the local half.

        ``base`` (saved last) holds only once every local write is done; ``old`` no longer
        does once the directory changed. Between the two, a sync that stops (a crash, a full
        disk) must leave a base that neither takes an item it uploaded and the user then
        deleted for one new elsewhere (it would come back), nor takes an item it removed
        locally for one the user deleted (its tombstone would beat a newer edit made
        elsewhere). So: ``base``, except that an item still to be downloaded keeps its ``old``
        entry when the local store (``local``, the keys it held when planned) holds a version
        of it (the next sync plans the download again) and has none when it holds none (the
        next sync downloads it again: with the old entry it would take the absence for a
        deletion made now, and that newer deletion would beat what this plan let win), and
        an item to be removed locally
        that ``base`` forgets (R16, R23: its deletion elsewhere was purged) gets a tombstone
        at its own time: the copy still here is then an old copy of a deleted item (R20),
        and once it is gone, nothing is to be done (R31) until a newer version arrives
        (R21). An item to be archived locally is here already, in the same content: ``base``
        is right for it either way.
        """
        entries = dict(self.base.entries)
        before = old.entries if old is not None else {}
        for item in self.download:
            if item.key in before and item.key in local:
                entries[item.key] = before[item.key]
            else:
                entries.pop(item.key, None)
        for deletion in self.delete_local:
            item = deletion.item
            if item.key not in entries:
                gone = replace(
                    item, content_hash="", size=0, tombstone=True, archived=False, expires=None
                )
                entries[item.key] = BaseEntry.of(gone, self.made_at or item.modified)
        return Base(
            entries=entries,
            directory_timestamp=self.base.directory_timestamp,
            last_sync=old.last_sync if old is not None else None,
        )

    @property
    def made_at(self) -> int | None:
        """The ``now`` the plan was made for (None for a plan not made by ``reconcile``)."""
        return self.base.last_sync

    def is_current(self, clock: int) -> bool:
        """Whether the plan may still be written at ``clock`` (FILETIME), see R32.

        False once more than ``MAX_PLAN_AGE`` has passed since ``made_at``, or when the clock
        went back before it: the caller then re-reads and re-plans at ``clock``.
        """
        return self.made_at is not None and 0 <= clock - self.made_at <= MAX_PLAN_AGE
