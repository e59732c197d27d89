"""Where Windows' own credential roaming is on: what credroam leaves to Windows, what it roams.

On a Windows host whose own client roams (the policy's DIMSRoaming, which credroam's GPO sets
to turn roaming on, and no per-user ``KeyRoaming\\Disabled`` of 0xFFFFFFFF), Windows already
keeps the user's certificates and requests in step with the native tokens of
``msPKIAccountCredentials``, and roams its own private keys (DPAPI-protected) to other Windows
hosts. Two writers of the same tokens would fight, so there credroam roams only what Windows
cannot: the private keys in credroam's envelopes (``credroamKeyEnvelopes``), which Linux hosts
sealed and no Windows client can open. It brings them one way, Linux to Windows (rules N1-N5):

- N1: certificates and requests are Windows': this host uploads, downloads, tombstones,
  archives and purges none of them (the native tokens credroam's Linux hosts write are what
  Windows' client downloads).
- N2: Windows' own private keys are never uploaded into envelopes (Windows roams them itself,
  and a key it will not export must stay where it is).
- N3: a live envelope key is downloaded when its certificate is in the local store without a
  private key (what Windows' client brought from a Linux host's native token): it is written
  with that certificate, archived as the certificate is, so the store holds the pair and
  Windows' own roaming carries it on to the user's other Windows hosts.
- N4: a key whose certificate is not here (not yet roamed in, or smart-card), whose
  certificate already has a private key here (Windows', or a TPM's: never replaced), whose
  envelope is a tombstone, or whose envelope cannot be used (``hold_keys``) is left alone:
  Windows removes a certificate with its key when the certificate's native token is
  tombstoned.
- N5: the base keeps what it held and records what both sides now hold at the same version,
  seen now, and the keys downloaded, so if native roaming is turned off later the three-way
  merge resumes from what really agreed (``reconcile``'s rules, unchanged).

:func:`native_roaming_on` is the pure decision of whether a host is such a host;
``sync.sync_user(..., native_roaming=True)`` plans with :func:`native_plan` instead of
``reconcile``.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import replace

from .model import Base, BaseEntry, Item, ItemKind, Plan

__all__ = ["KEY_ROAMING_OFF", "native_plan", "native_roaming_on"]

# HKCU\Software\Microsoft\Cryptography\DIMS\KeyRoaming\Disabled: 0 on, 1 self-healing,
# 0xFFFFFFFF off (spec, section 6).
KEY_ROAMING_OFF = 0xFFFFFFFF


def native_roaming_on(
    *, windows: bool, policy_enabled: bool, key_roaming_disabled: int | None
) -> bool:
    """Whether Windows' own client roams this user's credentials on this host.

    ``policy_enabled`` is the policy's DIMSRoaming (``enabled`` in the settings tables);
    ``key_roaming_disabled`` the user's ``KeyRoaming\\Disabled`` value (None: not set).
    Self-healing (1) still roams.
    """
    return windows and policy_enabled and key_roaming_disabled != KEY_ROAMING_OFF


def native_plan(
    local: Mapping[str, Item],
    directory: Mapping[str, Item],
    base: Base | None,
    now: int,
    *,
    private_key_owners: Collection[str],
    directory_timestamp: int | None = None,
    hold_keys: Collection[str] = (),
) -> Plan:
    """The plan of one sync on a host whose Windows roams natively (rules N1-N5 above).

    ``private_key_owners`` are the local certificates that have a private key here, listed as
    an item or not (``WindowsStore.private_key_owners``); ``hold_keys`` the directory values
    sync could not use. Pure: the same inputs give the same plan.
    """
    downloads = tuple(
        _with_owner(item, local[item.owner])  # type: ignore[index]
        for key, item in sorted(directory.items())
        if _downloadable(item, local, private_key_owners, hold_keys)
    )
    entries: dict[str, BaseEntry] = dict(base.entries) if base is not None else {}
    for key, item in local.items():
        other = directory.get(key)
        if other is not None and other.version == item.version:
            entries[key] = BaseEntry.of(item, now)
    for item in downloads:
        entries[item.key] = BaseEntry.of(item, now)
    return Plan(
        download=downloads,
        base=Base(entries=entries, directory_timestamp=directory_timestamp, last_sync=now),
    )


def _downloadable(
    item: Item,
    local: Mapping[str, Item],
    private_key_owners: Collection[str],
    hold_keys: Collection[str],
) -> bool:
    if item.kind is not ItemKind.KEY or item.tombstone or item.key in hold_keys:
        return False
    if item.key in local or item.owner is None:
        return False
    owner = local.get(item.owner)
    return (
        owner is not None
        and owner.kind is ItemKind.CERTIFICATE
        and not owner.smartcard
        and owner.key not in private_key_owners
    )


def _with_owner(item: Item, owner: Item) -> Item:
    """The key as it is written here: archived and expiring with the local certificate."""
    return replace(item, archived=owner.archived, expires=owner.expires)
