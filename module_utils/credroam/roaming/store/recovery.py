"""The file store's recovery area: copies of items deleted locally, sealed, kept for a time.

A copy is kept when sync deletes an item locally that may still be wanted (reconcile's
``LocalDeletion.keep_copy``). Copies hold private keys, so they do not stay in plaintext and do
not stay forever. Layout (folders 0700, files 0600)::

    <root>/recovery/<name>.<kept>.<tag>.sealed            an ordinary deletion: removed by the
                                                          first sync after the retention
    <root>/recovery/undecided/<name>.<kept>.<tag>.sealed  the order against a deletion elsewhere
                                                          could not be decided (R18): kept until
                                                          the user or an admin resolves it

``<name>`` is the item's file name in the store (``<ID>.key.pem``), ``<kept>`` the FILETIME at
which the copy was kept, ``<tag>`` 8 random hex digits (two copies of one item never share a
name). A deletion moves the file in as ``....unsealed``; the same sync then seals it
(:func:`tend`): envelope's AES-256-GCM record of the PEM bytes under the user's roaming key,
bound to the user's objectGUID and ``<name>`` (:func:`envelope.recovery_copy_aad`), so a copy
opens only for its user and item (:func:`open_copy`). Without a roaming key a copy stays
``.unsealed`` (0600, where the item itself was a moment before) and is reported, and the next
sync that has the key seals it. Copies made by earlier credroam releases (``<name>.<modified>.
<tag>``, plaintext) are sealed the same way; their retention counts from that sync.
"""

from __future__ import annotations

import os
import re
import secrets
import stat
from collections.abc import Callable
from dataclasses import dataclass

from ..envelope import EnvelopeError, open_private_key, recovery_copy_aad, seal_private_key
from ..fsutil import atomic_write, ensure_private_dir, read_private

__all__ = ["RECOVERY", "UNDECIDED", "RecoveryCopy", "copies", "keep", "open_copy", "tend"]

RECOVERY = "recovery"
UNDECIDED = "undecided"
_SEALED, _UNSEALED = "sealed", "unsealed"
_MAX_COPY = 2 * 1024 * 1024  # a store payload (1 MiB) as PEM, sealed
_ITEM_NAME = r"(?P<name>[0-9A-F]{40}(?:\.[a-z]+)+?\.pem)"
_COPY_NAME = re.compile(
    _ITEM_NAME + r"\.(?P<kept>[0-9]{1,20})\.(?P<tag>[0-9a-f]{8})\.(?P<form>sealed|unsealed)"
)
_LEGACY_NAME = re.compile(_ITEM_NAME + r"\.[0-9]{1,20}(?:\.[0-9a-f]{8})?")


@dataclass(frozen=True)
class RecoveryCopy:
    """One copy in the recovery area. ``kept`` is None for a copy an earlier release made."""

    path: str
    name: str  # the item's file name, e.g. <ID>.key.pem
    kept: int | None
    sealed: bool
    undecided: bool


def _folder(root: str, undecided: bool) -> str:
    folder = os.path.join(root, RECOVERY)
    return os.path.join(folder, UNDECIDED) if undecided else folder


def keep(
    path: str,
    root: str,
    *,
    kept: int,
    undecided: bool,
    inside: Callable[[str, str], str],
) -> str:
    """Move the store file ``path`` into the recovery area, unsealed, without replacing a file.

    The hard link fails rather than overwrite should a name be taken; ``inside`` (the store's
    path check) keeps every name inside its folder. Returns the copy's path.
    """
    folder = ensure_private_dir(_folder(root, undecided))
    name = os.path.basename(path)
    for _ in range(8):
        target = inside(folder, f"{name}.{kept}.{secrets.token_hex(4)}.{_UNSEALED}")
        try:
            os.link(path, target, follow_symlinks=False)
        except FileExistsError:
            continue
        os.unlink(path)
        return target
    raise FileExistsError(f"no free recovery name for {name} in {folder}")


def copies(root: str, problems: list[str]) -> list[RecoveryCopy]:
    """Every copy in the recovery area; anything else found there is added to ``problems``."""
    found = []
    for undecided in (False, True):
        folder = _folder(root, undecided)
        try:
            info = os.lstat(folder)
        except FileNotFoundError:
            continue
        if not stat.S_ISDIR(info.st_mode):  # a symlink would lead the sealing elsewhere
            problems.append(f"{folder} is not a real directory; left alone")
            continue
        names = sorted(os.listdir(folder))
        for entry in names:
            path = os.path.join(folder, entry)
            if not undecided and entry == UNDECIDED:
                continue
            copy = _parse(path, entry, undecided)
            if copy is None or not stat.S_ISREG(os.lstat(path).st_mode):
                if not entry.startswith(".tmp-"):
                    problems.append(f"{path}: not a recovery copy; left alone")
                continue
            found.append(copy)
    return found


def _parse(path: str, entry: str, undecided: bool) -> RecoveryCopy | None:
    match = _COPY_NAME.fullmatch(entry)
    if match is not None:
        sealed = match["form"] == _SEALED
        return RecoveryCopy(path, match["name"], int(match["kept"]), sealed, undecided)
    legacy = _LEGACY_NAME.fullmatch(entry)
    if legacy is not None:
        return RecoveryCopy(path, legacy["name"], None, False, undecided)
    return None


def _seal(copy: RecoveryCopy, roaming_key: bytes, user_id: str, now: int) -> None:
    """Replace an unsealed copy by its sealed record (same folder; a legacy copy gets ``now``)."""
    plaintext = read_private(copy.path, _MAX_COPY)
    sealed = seal_private_key(roaming_key, plaintext, recovery_copy_aad(user_id, copy.name))
    kept = copy.kept if copy.kept is not None else now
    tag = secrets.token_hex(4)
    target = os.path.join(os.path.dirname(copy.path), f"{copy.name}.{kept}.{tag}.{_SEALED}")
    atomic_write(target, sealed)
    os.unlink(copy.path)


def tend(
    root: str,
    *,
    roaming_key: bytes | None,
    user_id: str | None,
    retention_ticks: int,
    now: int,
) -> list[str]:
    """Seal what is unsealed, remove ordinary copies older than the retention: one line for
    each thing done and each problem, for the sync report.

    Copies of undecided deletions are never removed here. Copies that cannot be sealed (no
    roaming key, or no user id to bind them to) are kept as they are and reported; a copy that
    fails is reported and the others are still tended.
    """
    done: list[str] = []
    problems: list[str] = []
    waiting = 0
    for copy in copies(root, problems):
        try:
            if not copy.undecided and copy.kept is not None and now - copy.kept >= retention_ticks:
                os.unlink(copy.path)
                done.append(f"removed the recovery copy {copy.path} (past its retention)")
            elif not copy.sealed and roaming_key is not None and user_id:
                _seal(copy, roaming_key, user_id, now)
                done.append(f"sealed the recovery copy of {copy.name}")
            elif not copy.sealed:
                waiting += 1
        except (OSError, EnvelopeError) as exc:
            problems.append(f"recovery copy {copy.path}: {exc}; left as it is")
    if waiting:
        problems.append(
            f"{waiting} recovery cop{'y' if waiting == 1 else 'ies'} in {_folder(root, False)} "
            "not sealed: no roaming key at this sync; sealed at the next sync that has one"
        )
    undecided = [copy for copy in copies(root, []) if copy.undecided]
    if undecided:
        problems.append(
            f"{len(undecided)} recovery cop{'y' if len(undecided) == 1 else 'ies'} in "
            f"{_folder(root, True)} wait for the user or an admin to decide (edited here, "
            "deleted elsewhere, order unknown): restore or remove each"
        )
    return done + problems


def open_copy(copy: RecoveryCopy, roaming_key: bytes, user_id: str) -> bytes:
    """The PEM bytes a copy holds (for restoring it). Raises EnvelopeError or OSError."""
    data = read_private(copy.path, _MAX_COPY)
    if not copy.sealed:
        return data
    return open_private_key(roaming_key, data, recovery_copy_aad(user_id, copy.name))
