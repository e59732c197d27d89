"""Who the agent works for, and making sure it works as that user and nobody else.

The roaming attributes are the user's own (the Private-Information property set): the agent
binds as the user and touches only the user's store, state and key cache, as the user. Started
as root (PAM, Ansible) with ``--user`` (or PAM's ``PAM_USER``), it drops to that user first,
after creating ``/run/user/<uid>`` (0700, the user's) when nothing provides it, as pam_systemd
would. Started as anyone else, it refuses to work on another user's files.
"""

from __future__ import annotations

import os
import pwd
import stat
from dataclasses import dataclass

__all__ = ["IdentityError", "LocalUser", "become_user"]


class IdentityError(PermissionError):
    """The agent may not work for this user as it runs (a configuration error, exit 2)."""


@dataclass(frozen=True)
class LocalUser:
    name: str
    uid: int
    gid: int
    home: str
    runtime_dir: str | None  # the session's private tmpfs folder, if there is one


def _runtime_dir_of(uid: int) -> str | None:
    """$XDG_RUNTIME_DIR if it is the user's own private folder, else /run/user/<uid> if so."""
    for candidate in (os.environ.get("XDG_RUNTIME_DIR"), f"/run/user/{uid}"):
        if not candidate:
            continue
        try:
            info = os.stat(candidate, follow_symlinks=False)
        except OSError:
            continue
        if stat.S_ISDIR(info.st_mode) and info.st_uid == uid and not info.st_mode & 0o077:
            return candidate
    return None


def _make_runtime_dir(entry: pwd.struct_passwd) -> str:
    """As root: /run/user/<uid>, 0700 and owned by the user (what pam_systemd provides)."""
    path = f"/run/user/{entry.pw_uid}"
    os.makedirs("/run/user", mode=0o755, exist_ok=True)
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        info = os.stat(path, follow_symlinks=False)
        if not stat.S_ISDIR(info.st_mode) or info.st_uid not in (0, entry.pw_uid):
            raise IdentityError(f"{path} exists but is not a folder of {entry.pw_name}") from None
    os.chown(path, entry.pw_uid, entry.pw_gid, follow_symlinks=False)
    os.chmod(path, 0o700)
    return path


def _drop_privileges(entry: pwd.struct_passwd) -> None:
    os.initgroups(entry.pw_name, entry.pw_gid)
    os.setresgid(entry.pw_gid, entry.pw_gid, entry.pw_gid)
    os.setresuid(entry.pw_uid, entry.pw_uid, entry.pw_uid)
    if os.geteuid() != entry.pw_uid or os.getuid() != entry.pw_uid:
        raise IdentityError(f"could not drop privileges to {entry.pw_name}")


def _lookup(name: str) -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(name)
    except KeyError:
        raise IdentityError(f"no local user {name!r} on this host") from None


def become_user(name: str | None, *, make_runtime_dir: bool = False) -> LocalUser:
    """Work as user ``name`` from here on (``None``: the user the agent runs as).

    As root, ``name`` (or ``$PAM_USER``) is required: the agent never works on a store as root.
    ``make_runtime_dir`` (login) creates /run/user/<uid> when the session has no runtime folder.
    The process environment is set for the user (HOME, USER, LOGNAME, XDG_RUNTIME_DIR).
    """
    euid = os.geteuid()
    if euid == 0:
        name = name or os.environ.get("PAM_USER")
        if not name:
            raise IdentityError("running as root: name the user with --user (or PAM_USER)")
        entry = _lookup(name)
        if entry.pw_uid == 0:
            raise IdentityError("refusing to roam credentials of root")
        runtime = _runtime_dir_of(entry.pw_uid)
        if runtime is None and make_runtime_dir:
            runtime = _make_runtime_dir(entry)
        _drop_privileges(entry)
    else:
        entry = pwd.getpwuid(euid)
        if name is not None and name != entry.pw_name:
            raise IdentityError(
                f"running as {entry.pw_name}: refusing to work on the store of {name} "
                "(run as that user, or as root with --user to drop to it)"
            )
        runtime = _runtime_dir_of(euid)
    os.umask(0o077)
    os.environ.update(HOME=entry.pw_dir, USER=entry.pw_name, LOGNAME=entry.pw_name)
    if runtime:
        os.environ["XDG_RUNTIME_DIR"] = runtime
    else:
        os.environ.pop("XDG_RUNTIME_DIR", None)
    return LocalUser(entry.pw_name, entry.pw_uid, entry.pw_gid, entry.pw_dir, runtime)
