"""Local change markers: a cheap text that changes whenever a local store's content may have.

The sync's fast path compares the marker its last full sync recorded with the one taken now;
only equal markers let it skip listing the stores. A marker is built from ``lstat`` of a few
paths (no file is read): each path's device, inode, mode, size, mtime and ctime. A folder's
mtime and ctime move when an entry is added, removed or renamed in it, and the file store
writes every file by rename (a new inode), so an item written through the store, added,
removed or replaced by a copy shows. What a marker of folders cannot see is a file rewritten in
place (same name, same inode); the file store's marker therefore covers its index too, and
the full sync at least every ``Policy.full_sync_interval_hours`` (and the agent's ``force_full``
when a file watch saw a change) bound how long such an edit waits.

Timestamps are coarse (the kernel's clock tick), so a change within the same tick as the
last one can leave every stat alike. As git does for its index ("racy git"), a marker is not
given (None) while any path changed less than ``SETTLE_TICKS`` ago: the sync is then a full
one, and a later sync records the marker once it has settled.

Anything else the agent keeps (the application-store mirrors, ``store.mirror.Mirror``)
contributes its own marker: a callable returning text, any value with a stable ``repr`` (the
mirrors' ``change_marker`` returns tuples of stat fields), or None for "cannot tell" (see
:func:`combine`): ``sync_user(..., local_markers=[m.change_marker for m in mirrors])``.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Hashable, Iterable

from ..timestamps import TICKS_PER_SECOND, filetime_from_unix_ns

__all__ = ["SETTLE_TICKS", "ChangeMarker", "combine", "stat_marker"]

# A change younger than this may share its timestamps with the next one (kernel ticks are a
# few milliseconds; two seconds also covers file systems with coarse times).
SETTLE_TICKS = 2 * TICKS_PER_SECOND

ChangeMarker = Callable[[], "Hashable | None"]


def stat_marker(paths: Iterable[str], now: int) -> str | None:
    """A digest of the ``lstat`` of ``paths`` (missing ones count as missing), or None when
    one of them changed less than ``SETTLE_TICKS`` before ``now`` (a FILETIME)."""
    digest = hashlib.sha256()
    for path in paths:
        try:
            info = os.lstat(path)
        except FileNotFoundError:
            digest.update(f"{path}\0-\n".encode("utf-8", "surrogateescape"))
            continue
        if filetime_from_unix_ns(info.st_ctime_ns) > now - SETTLE_TICKS:
            return None
        fields = (info.st_dev, info.st_ino, info.st_mode, info.st_size)
        times = (info.st_mtime_ns, info.st_ctime_ns)
        digest.update(f"{path}\0{fields}{times}\n".encode("utf-8", "surrogateescape"))
    return digest.hexdigest()


def combine(markers: Iterable[ChangeMarker]) -> str | None:
    """One marker of several stores: None as soon as one of them cannot give one."""
    parts = []
    for marker in markers:
        part = marker()
        if part is None:
            return None
        parts.append(part if isinstance(part, str) else repr(part))
    return hashlib.sha256("\n".join(parts).encode("utf-8")).hexdigest()
