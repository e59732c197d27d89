"""What every mirror of the file store shares: the credentials it mirrors and its report.

A mirror puts the canonical local copy (``file.FileStore``) where applications look for it
(the NSS database in ``nss``, NetworkManager's files in ``networkmanager``). The agent calls
``mirror.sync_with(file_store)`` before each directory sync (so a credential an application
imported roams in that sync) and after it (so what the sync downloaded reaches the
applications). Each call converges from scratch, so a mirror that could not be written is
retried by the next call; it never writes, and never deletes, the canonical copy except for
what its own source side says (the NSS database is a source, NetworkManager's folder is not).

``change_marker()`` is cheap (a few ``stat`` calls, no tool run): equal markers mean nothing
was written to the mirror since the marker was taken.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Protocol

from ..model import Item, ItemKind, StoreName
from . import CertificateStore, split_item_key

__all__ = ["Credential", "Mirror", "MirrorReport", "mirrored_credentials"]


@dataclass(frozen=True, slots=True)
class Credential:
    """One certificate of the MY store and, if the store holds it, its private key."""

    thumbprint: str  # the item identifier: upper-case SHA-1 of the certificate DER
    certificate: Item
    key: Item | None

    @property
    def archived(self) -> bool:
        return self.certificate.archived


@dataclass
class MirrorReport:
    """What one ``sync_with`` did, by certificate thumbprint, and what it could not do."""

    mirror: str  # e.g. "NSS database sql:/home/alice/.pki/nssdb"
    written: list[str] = field(default_factory=list)  # put into the mirror
    removed: list[str] = field(default_factory=list)  # removed from the mirror
    pulled: list[str] = field(default_factory=list)  # new in the mirror, added to the file store
    deleted: list[str] = field(default_factory=list)  # removed in the mirror, so in the store
    problems: list[str] = field(default_factory=list)  # each names the item or file at fault

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def changed_store(self) -> bool:
        """The file store changed: the directory sync has something to upload."""
        return bool(self.pulled or self.deleted)


class Mirror(Protocol):
    """A place applications read credentials from, kept in step with the file store."""

    def sync_with(self, store: CertificateStore) -> MirrorReport: ...

    def change_marker(self) -> Hashable: ...

    def watch_paths(self) -> list[str]: ...


def mirrored_credentials(store: CertificateStore) -> dict[str, Credential]:
    """The MY store's certificates (live and archived) with their keys, by thumbprint.

    Requests and their keys are not mirrored: no application can use them.
    """
    items = store.items()
    keys = {item.owner: item for item in items.values() if item.kind is ItemKind.KEY}
    found: dict[str, Credential] = {}
    for item in items.values():
        if item.kind is not ItemKind.CERTIFICATE or item.store is not StoreName.MY:
            continue
        _, thumbprint = split_item_key(item.key)
        found[thumbprint] = Credential(thumbprint, item, keys.get(item.key))
    return found
