"""Small filesystem helpers: atomic private writes, no-follow reads, an exclusive lock file.

Everything here refuses to follow a symbolic link in the last path component (O_NOFOLLOW), and
creates files 0600 and directories 0700 whatever the umask, because the files hold private
keys, sealed keys and sync state.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
import time
from collections.abc import Callable, Iterator

from ..errors import CredroamError

__all__ = [
    "DIR_MODE",
    "FILE_MODE",
    "LockHeld",
    "UnsafePath",
    "append_durably",
    "atomic_write",
    "ensure_private_dir",
    "exclusive_lock",
    "read_private",
]

FILE_MODE = 0o600
DIR_MODE = 0o700
_TEMP_PREFIX = ".tmp-"
_READ_CHUNK = 64 * 1024


class UnsafePath(CredroamError, OSError):
    """A path is a symbolic link, not a regular file/directory, or escapes its folder."""


class LockHeld(CredroamError, OSError):
    """Another process (or thread) holds the lock file."""


def ensure_private_dir(path: str) -> str:
    """Create ``path`` (and parents) 0700 if missing; check an existing one is ours and private.

    Refused with ``UnsafePath`` naming the directory: a symlink or non-directory, one owned by
    another user, or one group or others may write to (they may have planted files in it).
    One of ours that group or others may only read or search is tightened to 0700: nothing can
    have been planted in it, and from now on nothing in it is disclosed.
    """
    with contextlib.suppress(FileExistsError):
        os.makedirs(path, mode=DIR_MODE)
        os.chmod(path, DIR_MODE)  # makedirs honours the umask
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno in (errno.ENOTDIR, errno.ELOOP):
            raise UnsafePath(errno.ENOTDIR, "not a real directory (symlink or file)", path) from exc
        raise
    try:
        info = os.fstat(fd)
        if info.st_uid != os.geteuid():
            raise UnsafePath(
                errno.EPERM,
                f"directory owned by uid {info.st_uid}, not by this user ({os.geteuid()})",
                path,
            )
        mode = stat.S_IMODE(info.st_mode)
        if mode & 0o022:
            raise UnsafePath(
                errno.EPERM,
                f"directory has mode {mode:04o}: group or others may write to it "
                f"(make it {DIR_MODE:04o} after checking its content)",
                path,
            )
        if mode & 0o077:
            os.fchmod(fd, DIR_MODE)
    finally:
        os.close(fd)
    return path


def atomic_write(path: str, data: bytes, mode: int = FILE_MODE) -> None:
    """Replace ``path`` with ``data`` so that a reader sees the old or the new file, never a mix.

    A temporary file in the same directory is written, fsynced, renamed over ``path`` and the
    directory fsynced. On any error the temporary file is removed and ``path`` is untouched.
    A symbolic link at ``path`` is replaced, never followed.
    """
    directory = os.path.dirname(path) or "."
    temp = os.path.join(directory, f"{_TEMP_PREFIX}{os.path.basename(path)}.{os.getpid()}")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    with contextlib.suppress(FileNotFoundError):
        os.unlink(temp)  # left by a crashed earlier run of this process id
    fd = os.open(temp, flags, mode)
    try:
        try:
            os.fchmod(fd, mode)  # os.open honours the umask
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise
    _fsync_dir(directory)


def append_durably(path: str, data: bytes, mode: int = FILE_MODE) -> None:
    """Append ``data`` to ``path`` (created ``mode`` if missing) and fsync it before returning.

    For a write-ahead journal: once this returns, ``data`` survives a crash or power cut. A new
    file's directory entry is fsynced as well. A symbolic link at ``path`` is refused.
    """
    flags = os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC
    created = True
    try:
        try:
            fd = os.open(path, flags | os.O_CREAT | os.O_EXCL, mode)
        except FileExistsError:
            created = False
            fd = os.open(path, flags | os.O_NONBLOCK)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UnsafePath(errno.ELOOP, "refusing to follow a symbolic link", path) from exc
        raise
    try:
        if created:
            os.fchmod(fd, mode)  # os.open honours the umask
        elif not stat.S_ISREG(os.fstat(fd).st_mode):
            raise UnsafePath(errno.EINVAL, "not a regular file", path)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    if created:
        _fsync_dir(os.path.dirname(path) or ".")


def _fsync_dir(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_private(
    path: str, max_size: int, check: Callable[[os.stat_result], None] | None = None
) -> bytes:
    """Read a regular file without following a symlink; refuse one larger than ``max_size``.

    The open does not block (a FIFO or device planted at ``path`` is refused, not waited on).
    ``check``, if given, is called with the ``fstat`` of the opened file before anything is
    read, so that what it accepts (owner, mode) is the file read; it raises to refuse it.

    Memory follows the file, not the limit: the first read asks for the size ``fstat`` gave (plus
    one byte, to notice a file that grew since); only a file that did grow is read on, in
    chunks, up to the limit. A file over the limit is refused, whenever it got there.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UnsafePath(errno.ELOOP, "refusing to follow a symbolic link", path) from exc
        raise
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise UnsafePath(errno.EINVAL, "not a regular file", path)
        if check is not None:
            check(info)
        if info.st_size > max_size:
            raise UnsafePath(errno.EFBIG, f"file larger than {max_size} bytes", path)
        data = _read_up_to(fd, min(info.st_size, max_size) + 1, max_size + 1)
    finally:
        os.close(fd)
    if len(data) > max_size:
        raise UnsafePath(errno.EFBIG, f"file larger than {max_size} bytes", path)
    return data


def _read_up_to(fd: int, expected: int, limit: int) -> bytes:
    """Bytes of ``fd`` until end of file or ``limit``: ``expected`` first, then in chunks."""
    chunks: list[bytes] = []
    total = 0
    while total < limit:
        want = expected - total if total < expected else min(_READ_CHUNK, limit - total)
        chunk = os.read(fd, want)
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
    return b"".join(chunks)  # one chunk (the usual case) is returned as is, not copied


@contextlib.contextmanager
def exclusive_lock(path: str, timeout: float | None = 0, what: str = "") -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created 0600) for the ``with`` block.

    ``timeout`` 0 fails at once, None waits as long as it takes, a number waits that many
    seconds. Raises ``LockHeld`` naming the lock file and ``what`` it protects. The lock goes
    with the process, so a crashed sync never leaves a stale lock behind.
    """
    flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(path, flags, FILE_MODE)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UnsafePath(errno.ELOOP, "lock file is a symbolic link", path) from exc
        raise
    try:
        _acquire(fd, path, timeout, what)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _acquire(fd: int, path: str, timeout: float | None, what: str) -> None:
    if timeout is None:
        fcntl.flock(fd, fcntl.LOCK_EX)
        return
    deadline = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                subject = f" ({what})" if what else ""
                raise LockHeld(
                    errno.EWOULDBLOCK,
                    f"another credroam sync holds the lock{subject}; try again when it ends",
                    path,
                ) from None
            time.sleep(0.05)
