"""What each command does for one user, over the core's public functions.

Every operation runs as the user (see :mod:`.identity`) and reports through an
:class:`~.events.EventLog`; its return value is the exit code:
0 done, 1 done with problems, 2 configuration error, 3 directory unreachable.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import ldap3
from ldap3.core.exceptions import LDAPException

from credroam.errors import DirectoryError
from credroam.roaming.directory import find_user
from credroam.roaming.envelope import KeyCacheError, read_key_cache
from credroam.roaming.fsutil import (
    LockHeld,
    UnsafePath,
    atomic_write,
    ensure_private_dir,
    read_private,
)
from credroam.roaming.roamingkey import RoamingKeyError, obtain_roaming_key
from credroam.roaming.state import StateFile
from credroam.roaming.store import CertificateStore, StoreError
from credroam.roaming.store.mirror import Mirror, MirrorReport, make_mirrors, sync_mirrors
from credroam.roaming.sync import SyncBusy, SyncReport, sync_user
from credroam.timestamps import filetime_now, from_filetime
from credroam.tokens import TokenError

from . import dcs, policy, testhook, windows
from .config import AgentConfig, ConfigError, PolicyInForce
from .enroll import enroll_outstanding
from .events import EventId, EventLog, left_alone_event, refusal_event
from .identity import LocalUser

EXIT_OK = 0
EXIT_PROBLEMS = 1
EXIT_CONFIG = 2
EXIT_UNREACHABLE = 3

Clock = Callable[[], int]


@dataclass(frozen=True)
class Paths:
    """The user's files on this host (``key_cache`` None: no private runtime folder)."""

    store: str
    state: str
    key_cache: str | None
    policy_cache: str


def paths_for(config: AgentConfig, user: LocalUser) -> Paths:
    """The configured paths for ``user``; ConfigError when one the agent cannot do without
    lives in a runtime folder this session does not have."""

    def required(name: str) -> str:
        path = config.path_for(name, user.home, user.runtime_dir)
        if path is None:
            raise ConfigError(
                f"{config.path}: paths.{name} is under $XDG_RUNTIME_DIR, which the session of "
                f"{user.name} does not have"
            )
        return path

    return Paths(
        store=required("store"),
        state=required("state"),
        key_cache=config.path_for("key_cache", user.home, user.runtime_dir),
        policy_cache=required("policy_cache"),
    )


@dataclass
class Session:
    """One run of the agent for one user."""

    config: AgentConfig
    user: LocalUser
    events: EventLog
    clock: Clock = filetime_now
    report: dict = field(default_factory=dict)  # what --json prints besides the events

    @property
    def paths(self) -> Paths:
        return paths_for(self.config, self.user)

    def exit_code(self) -> int:
        return EXIT_PROBLEMS if self.events.problems else EXIT_OK

    @property
    def mirrors(self) -> list[Mirror]:
        """The mirrors of the file store the config's ``stores`` names, for this user (the NSS
        mirror's state beside the state file)."""
        state_dir = os.path.dirname(self.paths.state)
        return make_mirrors(self.config.stores, home=self.user.home, state_dir=state_dir)

    def fresh(self) -> Session:
        """The same user and configuration with an empty event record (one per watch sync)."""
        events = EventLog(self.events.stream, {"user": self.user.name})
        return Session(self.config, self.user, events, self.clock)


def policy_in_force(
    session: Session,
    bound: dcs.Bound | None,
    user_dn: str | None,
    password: str | None = None,
    *,
    fresh: bool = True,
) -> PolicyInForce:
    """THE policy seam: Group Policy (the user's applicable GPOs, read as the user through
    ``bound`` when ``fresh``, else the user's last good policy from the cache) over the config
    file. Without any readable or cached GPO policy, the config file alone is in force."""
    cache_dir = session.paths.policy_cache
    user_dn = user_dn or _remembered_dn(cache_dir)
    if user_dn is None:
        return PolicyInForce(session.config)
    try:
        if bound is not None and fresh:
            smb = policy.SmbCredentials(
                server=bound.dc,
                username=session.config.principal_for(session.user.name) if password else None,
                password=password,
            )
            resolved = policy.read_policy(bound.conn, user_dn, smb, cache_dir)
            _remember_dn(cache_dir, user_dn)
        else:
            resolved = policy.cached_policy(cache_dir, user_dn)
    except (policy.PolicyUnavailableError, OSError) as exc:
        session.events.note(f"Group Policy not read ({exc}); the config file's policy applies")
        return PolicyInForce(session.config)
    if resolved is None:
        return PolicyInForce(session.config)
    for problem in resolved.problems:
        session.events.note(f"Group Policy: {problem}")
    note = f"cached: {resolved.stale_reason}" if resolved.from_cache else ""
    return PolicyInForce(session.config, resolved.settings, note)


_DN_FILE = "user.dn"  # the user's DN, so a cached policy is found without a DC (purge, watch)


def _remembered_dn(cache_dir: str) -> str | None:
    with contextlib.suppress(OSError, UnicodeDecodeError):
        return read_private(os.path.join(cache_dir, _DN_FILE), 4096).decode() or None
    return None


def _remember_dn(cache_dir: str, user_dn: str) -> None:
    if _remembered_dn(cache_dir) != user_dn:
        atomic_write(os.path.join(ensure_private_dir(cache_dir), _DN_FILE), user_dn.encode())


def policy_version(session: Session) -> object | None:
    """The versions now of the GPOs the cached policy was made from, for ``watch`` to notice a
    policy change (one search, bound with the user's ticket); None when it cannot tell."""
    cache_dir = session.paths.policy_cache
    user_dn = _remembered_dn(cache_dir)
    resolved = policy.cached_policy(cache_dir, user_dn) if user_dn else None
    if resolved is None:
        return None
    try:
        bound = dcs.bind_as_user(session.config, session.user.name, None)
    except DirectoryError:
        return None
    try:
        return policy.gpo_version_key(bound.conn, resolved)
    except policy.PolicyUnavailableError:
        return None
    finally:
        bound.conn.unbind()


def _bind(session: Session, password: str | None) -> dcs.Bound | None:
    try:
        bound = dcs.bind_as_user(session.config, session.user.name, password)
    except DirectoryError as exc:
        session.events.emit(EventId.CANNOT_REACH_AD, f"{exc}; the local store was left as it is")
        return None
    session.events.context.update(dc=bound.dc, bind=bound.method)
    return bound


def _find_dn(session: Session, conn: ldap3.Connection) -> str | None:
    account = session.config.account_for(session.user.name)
    try:
        entry = find_user(conn, session.config.directory.base_dn, sam_account_name=account)
    except DirectoryError as exc:
        session.events.emit(EventId.DIRECTORY_READ, str(exc))
        return None
    return entry.dn


def _verify_password(session: Session, bound: dcs.Bound, password: str) -> bool:
    """Whether ``password`` is the user's current one: a simple bind with it succeeds (on the
    DC already used). Proven so, it may rewrap the roaming key after a password change."""
    if bound.password_verified:
        return True
    directory = replace(session.config.directory, dcs=(bound.dc,), bind_method="simple")
    simple_only = replace(session.config, directory=directory)
    try:
        check = dcs.bind_as_user(simple_only, session.user.name, password)
    except DirectoryError:
        return False
    check.conn.unbind()
    return True


def _roaming_key(
    session: Session,
    bound: dcs.Bound,
    user_dn: str,
    password: str | None,
    dry_run: bool,
    as_json: bool = False,
    one_time_secret: str | None = None,
) -> tuple[bytes | None, tuple[bytes, ...]]:
    """The roaming key, and the keys that lost to it (the sync re-seals what they sealed)."""
    cache = session.paths.key_cache
    if cache is None:
        session.events.emit(
            EventId.ROAMING_KEY,
            "no private runtime folder ($XDG_RUNTIME_DIR) for the key cache: private keys are "
            "neither uploaded nor opened (log in through credroam-agent login)",
        )
        return None, ()
    verified = password is not None and _verify_password(session, bound, password)
    try:
        key, changes = obtain_roaming_key(
            bound.conn,
            user_dn,
            password=password,
            cache_path=cache,
            now=session.clock(),
            check_mode=dry_run,
            password_verified=verified,
            recovery_public_keys=session.config.recovery_public_keys,
            one_time_secret=one_time_secret,
        )
    except RoamingKeyError as exc:
        hint = "" if one_time_secret else f" ({ONE_TIME_HINT})"
        session.events.emit(
            EventId.ROAMING_KEY, f"{exc}; private keys are held, the rest syncs{hint}"
        )
        return None, ()
    except DirectoryError as exc:
        session.events.emit(EventId.DIRECTORY_WRITE, f"roaming key records: {exc}")
        return None, ()
    for problem in changes.problems:
        session.events.emit(EventId.ROAMING_KEY, problem)
    if dry_run and as_json:  # stdout carries the JSON report alone
        session.report["roaming_key"] = list(changes.actions)
    elif dry_run:
        for action in changes.actions:
            print(f"roaming key: {action}")
    return key, changes.retired


# What a user whose password was reset does (README, Key recovery).
ONE_TIME_HINT = (
    "after a password reset, the helpdesk can give a one-time secret for "
    "`credroam-agent login --one-time-secret`"
)


def _report_events(session: Session, report: SyncReport) -> None:
    emit = session.events.emit
    for problem in report.store_problems:
        emit(EventId.LOCAL_STORE_READ, problem)
    for key, how in report.conflicts:
        emit(EventId.CONFLICT, how, token=key)
    for refused in report.refused:
        emit(
            refusal_event(refused.cause), f"not uploaded: {refused.reason}", token=refused.item.key
        )
    for left_alone in report.left_alone:
        emit(left_alone_event(left_alone), left_alone.warning)
    for rejected in report.rejected:
        emit(EventId.ATTRIBUTE_PROBLEM, f"skipped: {rejected.describe()}", check=rejected.check)
    for key, error in report.local_errors:
        emit(EventId.LOCAL_STORE_WRITE, error, token=key)


def _summary(report: SyncReport) -> str:
    counts = {
        "uploaded": report.uploaded,
        "downloaded": report.downloaded,
        "tombstoned": report.tombstoned,
        "archived": report.archived,
        "purged": report.purged,
        "deleted locally": report.deleted_local,
        "re-sealed under the winning roaming key": report.resealed,
        "losing roaming keys' records removed": report.retired_keys,
    }
    done = [f"{len(v)} {name}" for name, v in counts.items() if v]
    return ", ".join(done) or "nothing to do"


def plan_fields(report: SyncReport) -> dict[str, list]:
    """What a sync moved (or, dry run, would move), as ``--json`` reports it: key lists per
    action; refused and conflicts as [key, reason] pairs; directory_changes readable lines;
    operations the LDAP modifies (values counted, never shown)."""
    fields = {
        "upload": report.uploaded,
        "download": report.downloaded,
        "tombstone": report.tombstoned,
        "archive": report.archived,
        "purge": report.purged,
        "delete_local": report.deleted_local,
        "refused": [[r.item.key, r.reason] for r in report.refused],
        "conflicts": [list(c) for c in report.conflicts],
        "directory_changes": report.directory_changes,
        "operations": report.operations,  # the LDAP modifies, as every credroam module shows them
    }
    return {name: list(value) for name, value in fields.items()}


def _print_plan(session: Session, report: SyncReport, as_json: bool) -> None:
    plan = plan_fields(report)
    if as_json:
        session.report["plan"] = plan
        return
    for action in ("upload", "download", "tombstone", "archive", "purge", "delete_local"):
        for key in plan[action]:
            print(f"{action} {key}")
    if not any(plan[a] for a in ("upload", "download", "tombstone", "archive", "purge")) and (
        not report.deleted_local
    ):
        print("nothing to do")


def _open_store(session: Session) -> tuple[CertificateStore, StateFile] | None:
    paths = session.paths
    try:
        store = windows.open_store(session.config, paths.store)
    except StoreError as exc:
        session.events.emit(EventId.LOCAL_STORE_READ, str(exc))
        return None
    return store, StateFile(paths.state)


def _one_sync(
    session: Session,
    bound: dcs.Bound,
    user_dn: str,
    in_force: PolicyInForce,
    key: bytes | None,
    dry_run: bool,
    *,
    retired: tuple[bytes, ...] = (),
    mirrors: Sequence[Mirror] = (),
    force_full: bool = False,
) -> SyncReport | None:
    """One ``sync_user``; ``mirrors`` give their change markers to its fast path (their
    content is synced by :func:`_sync_mirrors`, around this)."""
    opened = _open_store(session)
    if opened is None:
        return None
    store, state = opened
    emit = session.events.emit
    try:
        report = sync_user(
            bound.conn,
            user_dn,
            store,
            state,
            in_force.roaming_policy(),
            key,
            session.clock,
            check_mode=dry_run,
            retired_keys=retired,
            force_full=force_full,
            local_markers=[mirror.change_marker for mirror in mirrors],
            native_roaming=windows.native_roaming(session.config, in_force.enabled),
            checkpoint=testhook.checkpoint(),  # inert unless a fault test sets it
        )
    except SyncBusy as exc:
        emit(EventId.LOCAL_STORE_READ, str(exc))
        return None
    except TokenError as exc:  # a local item the core cannot turn into a token
        emit(EventId.LOCAL_STORE_READ, f"cannot roam a local item: {exc}; nothing was written")
        return None
    except LDAPException as exc:
        emit(EventId.CANNOT_REACH_AD, f"lost {bound.dc} during the sync: {exc}")
        return None
    except DirectoryError as exc:
        emit(EventId.DIRECTORY_WRITE, str(exc))
        return None
    except (StoreError, UnsafePath) as exc:
        emit(EventId.LOCAL_STORE_WRITE, str(exc))
        return None
    except OSError as exc:
        emit(EventId.STATE_WRITE, f"{exc}")
        return None
    for problem in state.problems:
        emit(EventId.STATE_READ, problem)
    if state.problems:  # synced from the previous copy or without a base: rebuilt by this sync
        emit(EventId.SELF_HEAL_NEEDED, f"the state file {state.path} is rebuilt by this sync")
    _report_events(session, report)
    if not dry_run:
        # Every sync of this run, in order (the one after enrollment too), for --json callers.
        # full_sync_reason None: the fast path proved that nothing changed.
        synced = {**plan_fields(report), "full_sync_reason": report.full_sync_reason}
        session.report.setdefault("synced", []).append(synced)
        healed = bool(state.problems) and not report.local_errors
        emit(
            EventId.SELF_HEAL_DONE if healed else EventId.SUCCESS,
            f"sync done: {_summary(report)}",
        )
    return report


def _sync_mirrors(session: Session, mirrors: Sequence[Mirror], when: str) -> None:
    """Each mirror's ``sync_with`` the file store (``when``: "before" the directory sync, so
    what an application imported roams in it, or "after", so what it downloaded reaches the
    applications). A mirror that cannot be written is one event 1002 per problem; the file
    store is left as it is and the next sync converges the mirror again."""
    if not mirrors:
        return
    opened = _open_store(session)
    if opened is None:
        return
    try:
        reports = sync_mirrors(mirrors, opened[0])
    except LockHeld:
        return  # another sync of this user runs (and syncs the mirrors); this one's sync says so
    for report in reports:
        for problem in report.problems:
            session.events.emit(
                EventId.LOCAL_STORE_WRITE,
                f"{problem}; the file store is kept, the mirror is retried at the next sync",
            )
    session.report.setdefault("mirrors", []).extend(
        {"when": when, **_mirror_fields(report)} for report in reports
    )


def _mirror_fields(report: MirrorReport) -> dict[str, object]:
    return {
        "mirror": report.mirror,
        "written": list(report.written),
        "removed": list(report.removed),
        "pulled": list(report.pulled),
        "deleted": list(report.deleted),
        "problems": list(report.problems),
    }


def _enroll(session: Session) -> bool:
    """Run the enrollment command on outstanding requests; True when a certificate was issued."""
    command = session.config.enrollment_command
    if not command:
        return False
    opened = _open_store(session)
    if opened is None:
        return False
    try:
        result = enroll_outstanding(
            opened[0], command, session.clock, timeout=session.config.enrollment_timeout
        )
    except LockHeld:
        return False  # another sync runs (already reported); it processes the requests
    except (OSError, StoreError) as exc:
        session.events.emit(EventId.LOCAL_STORE_WRITE, f"enrollment: {exc}")
        return False
    for request, certificate in result.issued:
        session.events.emit(EventId.SUCCESS, f"enrolled: {request} issued as {certificate}")
    for request, why in result.deferred:
        print(f"enrollment of {request} deferred: {why}", file=sys.stderr)
    for request, why in result.failed:
        session.events.emit(EventId.LOCAL_STORE_WRITE, f"enrollment of {request}: {why}")
    return result.changed


def run_sync(
    session: Session,
    password: str | None = None,
    *,
    dry_run: bool = False,
    as_json: bool = False,
    refresh_policy: bool = True,
    force_full: bool = False,
    one_time_secret: str | None = None,
) -> int:
    """Bind, obtain the roaming key, reconcile, process enrollment requests (then roam what
    was issued); the mirrors are synced with the file store before and after (not in a dry
    run). The local store is not touched unless the directory was reached. ``force_full``
    skips the sync's fast path (a store watch saw a change its markers may not show).
    ``one_time_secret`` (login after a reset) opens the helpdesk's record of the key, which
    the record for ``password`` then replaces."""
    bound = _bind(session, password)
    if bound is None:
        return EXIT_UNREACHABLE
    try:
        user_dn = _find_dn(session, bound.conn)
        if user_dn is None:
            return session.exit_code()
        in_force = policy_in_force(session, bound, user_dn, password, fresh=refresh_policy)
        if not in_force.enabled:
            print(f"roaming is off ({in_force.source('enabled')})", file=sys.stderr)
            return session.exit_code()
        key, retired = _roaming_key(
            session, bound, user_dn, password, dry_run, as_json, one_time_secret
        )
        mirrors = session.mirrors
        if dry_run:
            report = _one_sync(
                session, bound, user_dn, in_force, key, True, retired=retired, mirrors=mirrors
            )
            if report is not None:
                _print_plan(session, report, as_json)
            return session.exit_code()
        _sync_mirrors(session, mirrors, "before")
        _one_sync(
            session, bound, user_dn, in_force, key, False,
            retired=retired, mirrors=mirrors, force_full=force_full,
        )  # fmt: skip
        # Requests are processed after reconciling (Windows roams before autoenrollment), even
        # when that sync had a problem: enrollment is local, and what it issues roams next.
        if _enroll(session):
            _one_sync(
                session, bound, user_dn, in_force, key, False, retired=retired, mirrors=mirrors
            )
        _sync_mirrors(session, mirrors, "after")
        return session.exit_code()
    finally:
        bound.conn.unbind()


def read_password(stream) -> str:
    """The password as pam_exec's expose_authtok writes it (NUL-terminated), or a line."""
    return read_secrets(stream, 1)[0]


def read_secrets(stream, count: int) -> list[str]:
    """The first ``count`` secrets on ``stream``: each NUL-terminated (pam_exec's
    expose_authtok writes the password so) or, without any NUL, one a line (one secret: the
    whole text but its line end). Missing ones are empty strings."""
    data = stream.buffer.read() if hasattr(stream, "buffer") else stream.read()
    text = data.decode("utf-8") if isinstance(data, bytes) else data
    if "\0" in text:
        fields = text.split("\0")[:count]
    elif count == 1:
        fields = [text[:-2] if text.endswith("\r\n") else text.removesuffix("\n")]
    else:
        fields = [line.removesuffix("\r") for line in text.split("\n")[:count]]
    return fields + [""] * (count - len(fields))


# --- status ------------------------------------------------------------------------------------


def _iso(filetime: int | None) -> str | None:
    return from_filetime(filetime).isoformat() if filetime else None


def _key_cache_status(paths: Paths) -> str:
    if paths.key_cache is None:
        return "no runtime folder"
    try:
        read_key_cache(paths.key_cache)
    except FileNotFoundError:
        return f"absent ({paths.key_cache})"
    except (KeyCacheError, OSError) as exc:
        return f"unusable: {exc}"
    return f"present ({paths.key_cache})"


def status(session: Session, *, as_json: bool = False) -> int:
    """Local versus directory (what a sync would do), last sync, key cache, policy, problems."""
    paths = session.paths
    info: dict[str, object] = {"user": session.user.name, "store": paths.store}
    opened = _open_store(session)
    if opened is not None:
        store, state = opened
        local = store.items()
        info["local_items"] = len(local)
        base = state.load()
        info["last_successful_sync"] = _iso(base.last_sync if base else None)
        for problem in (*store.problems, *state.problems):
            session.events.emit(EventId.LOCAL_STORE_READ, problem)
    info["key_cache"] = _key_cache_status(paths)
    code = EXIT_OK
    bound = _bind(session, None)
    if bound is None:
        info["directory"] = "unreachable"
        code = EXIT_UNREACHABLE
        in_force = policy_in_force(session, None, None)
    else:
        try:
            info["dc"] = bound.dc
            user_dn = _find_dn(session, bound.conn)
            in_force = policy_in_force(session, bound, user_dn)
            if user_dn is not None and opened is not None:
                key = _cached_key(paths)
                report = _one_sync(
                    session, bound, user_dn, in_force, key, True, mirrors=session.mirrors
                )
                if report is not None:
                    info["pending"] = {
                        "upload": len(report.uploaded),
                        "download": len(report.downloaded),
                        "tombstone": len(report.tombstoned),
                        "archive": len(report.archived),
                        "refused": len(report.refused),
                        "conflicts": len(report.conflicts),
                    }
        finally:
            bound.conn.unbind()
    info["policy"] = {
        name: {"value": value, "source": in_force.source(name)}
        for name, value in in_force.values.items()
    }
    info["problems"] = [e.as_dict() for e in session.events.problems]
    code = max(code, session.exit_code())
    info["healthy"] = code == EXIT_OK
    _print_status(session, info, as_json)
    return code


def _cached_key(paths: Paths) -> bytes | None:
    if paths.key_cache is None:
        return None
    with contextlib.suppress(OSError, KeyCacheError):
        return read_key_cache(paths.key_cache)
    return None


def _print_status(session: Session, info: dict, as_json: bool) -> None:
    if as_json:
        session.report.update(info)
        return
    for name, value in info.items():
        if name == "policy":
            for setting, detail in value.items():
                print(f"policy {setting}: {detail['value']} ({detail['source']})")
        elif name == "problems":
            for problem in value:
                print(f"problem {problem['event']}: {problem['message']}")
        else:
            print(f"{name}: {value}")


# --- purge -------------------------------------------------------------------------------------


def purge(session: Session, *, always: bool = False) -> int:
    """At logoff, when the policy asks (``remove_at_logoff``) or ``always``: remove the roamed
    credentials (items the directory holds as they are here), the state file and the key
    cache from this host. Items with changes never synced are kept. The directory is never
    touched."""
    in_force = policy_in_force(session, None, None)
    if not always and not in_force.value("remove_at_logoff"):
        print("purge skipped: the policy does not remove credentials at logoff", file=sys.stderr)
        return EXIT_OK
    opened = _open_store(session)
    if opened is None:
        return session.exit_code()
    store, state = opened
    removed, kept = [], []
    try:
        with store.lock(0), store.batch():
            base = state.load()
            entries = base.entries if base else {}
            for key, item in store.items().items():
                entry = entries.get(key)
                if entry is not None and not entry.tombstone and entry.version == item.version:
                    store.delete(item)
                    removed.append(key)
                else:
                    kept.append(key)
            # Without its items the base would read as local deletions: it goes too, so the
            # next logon is a first sync that downloads (and uploads what was kept).
            for path in (state.path, state.path + ".prev"):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
    except (OSError, StoreError) as exc:
        session.events.emit(EventId.LOCAL_STORE_WRITE, f"purge: {exc}")
        return EXIT_PROBLEMS
    if session.paths.key_cache:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(session.paths.key_cache)
    for key in kept:
        print(f"kept {key}: not in the directory as it is here", file=sys.stderr)
    print(f"purged {len(removed)} roamed item(s) and the key cache")
    return session.exit_code()
