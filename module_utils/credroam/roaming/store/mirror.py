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

import os
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from ..model import Item, ItemKind, StoreName
from . import CertificateStore, StoreError, split_item_key

# The names the agent config's ``stores`` list takes. "file" is the canonical store itself.
MIRROR_NAMES = ("file", "nss", "networkmanager")

__all__ = [
    "MIRROR_NAMES",
    "Credential",
    "Mirror",
    "MirrorReport",
    "make_mirrors",
    "mirrored_credentials",
    "sync_mirrors",
]


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


def make_mirrors(names: Iterable[str], *, home: str, state_dir: str) -> list[Mirror]:
    """The mirrors the agent config's ``stores`` names, at their usual places under ``home``.

    ``nss``: ``<home>/.pki/nssdb``, state ``<state_dir>/nss-mirror.json``; ``networkmanager``:
    ``<home>/.local/share/credroam/networkmanager``. "file" must be named (it is the
    canonical copy every mirror follows); an unknown or repeated name is refused.
    """
    # Imported here: both modules import this one.
    from .networkmanager import NetworkManagerMirror
    from .nss import NssMirror

    names = list(names)
    unknown = [name for name in names if name not in MIRROR_NAMES]
    if unknown:
        raise StoreError(f"stores: unknown {', '.join(map(repr, unknown))}; known: {MIRROR_NAMES}")
    if len(set(names)) != len(names):
        raise StoreError(f"stores: a store is named twice in {names}")
    if "file" not in names:
        raise StoreError("stores: 'file' (the canonical local copy) cannot be left out")
    made: dict[str, Mirror] = {
        "nss": NssMirror(
            os.path.join(home, ".pki", "nssdb"), os.path.join(state_dir, "nss-mirror.json")
        ),
        "networkmanager": NetworkManagerMirror(
            os.path.join(home, ".local", "share", "credroam", "networkmanager")
        ),
    }
    return [made[name] for name in names if name != "file"]


def sync_mirrors(mirrors: Sequence[Mirror], store: CertificateStore) -> list[MirrorReport]:
    """Each mirror's ``sync_with(store)``, in order; one failing never stops the others."""
    return [mirror.sync_with(store) for mirror in mirrors]
