"""When `credroam-agent watch` syncs: the triggers of Windows' credential roaming client.

Windows roams a user's credentials at logon, when the user's store changes, at session lock and
unlock, and at every Group Policy refresh (90 minutes plus a random 0-30). Logon is the PAM
hook's job (agent/pam/pam-hook); the rest is ``run``, a loop that calls the CLI's
``sync_once(reason)`` (its exit code: 0 ok, 1 problems, 2 configuration error, 3 directory
unreachable) with one of these reasons:

    start    the watch began (the policy version seen then is the baseline)
    store    a watched folder changed (inotify, debounced; polling where inotify is unavailable)
    lock     logind's Lock signal of a session (org.freedesktop.login1.Session, system bus)
    unlock   logind's Unlock signal
    refresh  the policy refresh timer (refresh_minutes + random 0..jitter_minutes)
    policy   ``policy_version()`` returned something new (checked every policy_check_minutes
             and at each refresh)
    retry    the previous sync returned 3: retried with a bounded, jittered exponential backoff

Design: event sources (threads) put ``Event``s in an ``Inbox``; the loop owns every timer
(debounce, refresh, policy check, retry) as a deadline on an injected clock and waits for the
next event at most until the earliest deadline. Tests inject the clock and an inbox that
advances that clock (the inbox's ``get(timeout)`` is the loop's only sleep) and drive the loop
deterministically; the real sources are tested on their own.

Session signals: ``dbus-monitor`` (Debian's dbus-bin, present wherever a system bus is, since
the ``dbus`` package depends on it) in ``--profile`` mode prints one tab-separated line per
message, which is all a Lock/Unlock trigger needs; no D-Bus library is needed in the agent
(python3-dbus and python3-gi are not on every host, and jeepney would be one more dependency
to ship for two signals). The bus filters by match rule, sender ``org.freedesktop.login1`` by
default, so another local process cannot make the agent sync by sending look-alike signals.

Standard library only: everything here runs under Debian 12's /usr/bin/python3.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import queue
import random
import select
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

__all__ = [
    "Backoff",
    "Debounce",
    "Event",
    "Inbox",
    "InotifyUnavailable",
    "InotifyWatcher",
    "LogindWatcher",
    "PollingWatcher",
    "logind_match_rule",
    "parse_session_signal",
    "run",
    "session_object_path",
    "store_watcher",
]

# Exit codes of sync_once (the CLI's contract).
EXIT_OK, EXIT_PROBLEMS, EXIT_CONFIG, EXIT_UNREACHABLE = 0, 1, 2, 3

STORE, LOCK, UNLOCK, STOP = "store", "lock", "unlock", "stop"
START, REFRESH, POLICY, RETRY = "start", "refresh", "policy", "retry"
# When several timers are due at once, one sync runs under the first of these.
REASON_PRIORITY = (POLICY, REFRESH, STORE, RETRY)

LOGIND_NAME = "org.freedesktop.login1"
SESSION_INTERFACE = "org.freedesktop.login1.Session"
SESSION_PATH_PREFIX = "/org/freedesktop/login1/session/"
_SIGNAL_REASONS = {"Lock": LOCK, "Unlock": UNLOCK}

Log = Callable[[str], None]


def _stderr_line(message: str) -> None:
    print(f"credroam-agent watch: {message}", file=sys.stderr, flush=True)


# --- events and the inbox ------------------------------------------------------------------


@dataclass(frozen=True)
class Event:
    """Something a source saw: ``kind`` is STORE, LOCK, UNLOCK or STOP; ``detail`` says where."""

    kind: str
    detail: str = ""


class Inbox:
    """The sources' events to the loop (thread-safe). ``get(timeout)`` is the loop's one wait."""

    def __init__(self) -> None:
        self._queue: queue.Queue[Event] = queue.Queue()

    def put(self, event: Event) -> None:
        self._queue.put(event)

    def get(self, timeout: float) -> Event | None:
        """The next event, or None once ``timeout`` seconds passed without one."""
        try:
            return self._queue.get(timeout=max(0.0, timeout))
        except queue.Empty:
            return None


class EventSource(Protocol):
    def start(self, inbox: Inbox) -> None: ...

    def close(self) -> None: ...


# --- timers: debounce and backoff ----------------------------------------------------------


@dataclass
class Debounce:
    """A burst of store events becomes one sync: due ``quiet_seconds`` after the last event,
    but never later than ``max_seconds`` after the first (a store that keeps changing still
    syncs)."""

    quiet_seconds: float = 2.0
    max_seconds: float = 30.0
    first: float | None = None
    last: float | None = None

    def note(self, now: float) -> None:
        if self.first is None:
            self.first = now
        self.last = now

    def due_at(self) -> float | None:
        if self.first is None or self.last is None:
            return None
        return min(self.last + self.quiet_seconds, self.first + self.max_seconds)

    def clear(self) -> None:
        self.first = self.last = None


@dataclass(frozen=True)
class Backoff:
    """Waits between retries while no DC answers: ``initial_seconds`` doubling per failure up
    to ``max_seconds``, each drawn uniformly from its upper half so that hosts that lost the
    same DC do not come back at the same instant."""

    initial_seconds: float = 30.0
    max_seconds: float = 1800.0
    factor: float = 2.0

    def ceiling(self, failures: int) -> float:
        """The longest wait after ``failures`` consecutive failures (1 or more)."""
        exponent = min(max(failures, 1) - 1, 64)  # bounded: no float overflow after long outages
        return min(self.max_seconds, self.initial_seconds * self.factor**exponent)

    def delay(self, failures: int, rng: random.Random) -> float:
        ceiling = self.ceiling(failures)
        return rng.uniform(ceiling / 2, ceiling)


def refresh_delay(refresh_seconds: float, jitter_seconds: float, rng: random.Random) -> float:
    """Seconds to the next policy refresh: the interval plus a random 0..jitter, as Windows."""
    return refresh_seconds + rng.uniform(0.0, jitter_seconds)


# --- the loop ------------------------------------------------------------------------------


_UNKNOWN = object()  # no policy version seen yet


@dataclass
class _Loop:
    sync_once: Callable[[str], int]
    inbox: Inbox
    clock: Callable[[], float]
    rng: random.Random
    log: Log
    refresh_seconds: float
    jitter_seconds: float
    policy_version: Callable[[], Hashable | None] | None
    policy_check_seconds: float
    debounce: Debounce
    backoff: Backoff
    failures: int = 0
    retry_at: float | None = None
    next_refresh: float = 0.0
    next_policy_check: float | None = None
    policy_seen: object = field(default=_UNKNOWN)

    def run(self, initial_sync: bool) -> None:
        now = self.clock()
        self.next_refresh = now + refresh_delay(self.refresh_seconds, self.jitter_seconds, self.rng)
        if self.policy_version is not None:
            self.policy_seen = self._read_policy_version()
            self.next_policy_check = now + self.policy_check_seconds
        if initial_sync:
            self._sync(START)
        while True:
            self._fire_due_timers()
            event = self.inbox.get(self._next_deadline() - self.clock())
            if event is None:
                continue
            if event.kind == STOP:
                return
            if event.kind == STORE:
                self.debounce.note(self.clock())
            elif event.kind in (LOCK, UNLOCK):
                self._sync(event.kind)

    def _next_deadline(self) -> float:
        deadlines = (
            self.next_refresh,
            self.retry_at,
            self.debounce.due_at(),
            self.next_policy_check,
        )
        return min(d for d in deadlines if d is not None)

    def _fire_due_timers(self) -> None:
        """One sync for every timer due now, under the reason that says most."""
        now = self.clock()
        due: set[str] = set()
        due_at = self.debounce.due_at()
        if due_at is not None and due_at <= now:
            due.add(STORE)
        if self.retry_at is not None and self.retry_at <= now:
            due.add(RETRY)
        if self.next_refresh <= now:
            self.next_refresh = now + refresh_delay(
                self.refresh_seconds, self.jitter_seconds, self.rng
            )
            due.add(REFRESH)
        if self.next_policy_check is not None and (REFRESH in due or self.next_policy_check <= now):
            self.next_policy_check = now + self.policy_check_seconds
            if self._policy_changed():
                due.add(POLICY)
        for reason in REASON_PRIORITY:
            if reason in due:
                self._sync(reason)
                return

    def _read_policy_version(self) -> object:
        assert self.policy_version is not None
        try:
            version = self.policy_version()
        except Exception as exc:  # a broken lookup must not end the watch
            self.log(f"policy version check failed: {exc}")
            return _UNKNOWN
        return _UNKNOWN if version is None else version

    def _policy_changed(self) -> bool:
        """A new policy version (a first one after an unknown start is a baseline, no change)."""
        if self.policy_version is None:
            return False
        version = self._read_policy_version()
        if version is _UNKNOWN:
            return False
        changed = self.policy_seen is not _UNKNOWN and version != self.policy_seen
        self.policy_seen = version
        return changed

    def _sync(self, reason: str) -> None:
        # The sync sees the store as it is now: the pending burst and retry are covered by it.
        self.debounce.clear()
        self.retry_at = None
        try:
            code = self.sync_once(reason)
        except Exception as exc:  # a crashing sync must not end the watch
            self.log(f"sync ({reason}) failed: {type(exc).__name__}: {exc}")
            code = EXIT_PROBLEMS
        if code == EXIT_UNREACHABLE:
            self.failures += 1
            wait = self.backoff.delay(self.failures, self.rng)
            self.retry_at = self.clock() + wait
            self.log(f"sync ({reason}): no DC answered; retry {self.failures} in {wait:.0f} s")
        else:
            self.failures = 0


def run(
    sync_once: Callable[[str], int],
    *,
    watch_paths: Sequence[str | os.PathLike[str]],
    refresh_minutes: float = 90,
    jitter_minutes: float = 30,
    policy_version: Callable[[], Hashable | None] | None = None,
    policy_check_minutes: float = 15,
    stop: threading.Event | None = None,
    clock: Callable[[], float] = time.monotonic,
    inbox: Inbox | None = None,
    sources: Sequence[EventSource] | None = None,
    bus_address: str | None = None,
    session_path: str | None = None,
    logind_sender: str | None = LOGIND_NAME,
    debounce: Debounce | None = None,
    backoff: Backoff | None = None,
    rng: random.Random | None = None,
    initial_sync: bool = True,
    log: Log = _stderr_line,
) -> int:
    """Call ``sync_once(reason)`` on every trigger until ``stop`` is set; returns 0.

    ``policy_version()`` returns the user's applicable GPO versions (anything comparable), or
    None when it cannot tell (e.g. no DC answers); it is called at start, every
    ``policy_check_minutes`` and at each refresh. ``sources`` default to a watcher of
    ``watch_paths`` (inotify, polling where inotify is unavailable) and logind's session
    signals on the system bus (``bus_address``, else $DBUS_SYSTEM_BUS_ADDRESS, else the
    standard socket), for the session ``session_path`` (default: $XDG_SESSION_ID's; any
    session when unknown, as under a systemd user unit). ``clock`` and ``inbox`` are
    injectable for tests (the inbox's ``get(timeout)`` is the only wait).
    """
    inbox = inbox or Inbox()
    if sources is None:
        sources = [
            store_watcher(watch_paths, log=log),
            LogindWatcher(
                bus_address=bus_address or os.environ.get("DBUS_SYSTEM_BUS_ADDRESS"),
                session_path=session_path or session_object_path(os.environ.get("XDG_SESSION_ID")),
                sender=logind_sender,
                log=log,
            ),
        ]
    loop = _Loop(
        sync_once=sync_once,
        inbox=inbox,
        clock=clock,
        rng=rng or random.Random(),
        log=log,
        refresh_seconds=refresh_minutes * 60,
        jitter_seconds=jitter_minutes * 60,
        policy_version=policy_version,
        policy_check_seconds=policy_check_minutes * 60,
        debounce=debounce or Debounce(),
        backoff=backoff or Backoff(),
    )
    started: list[EventSource] = []
    try:
        for source in sources:
            source.start(inbox)
            started.append(source)
        if stop is not None:
            _forward_stop(stop, inbox)
        loop.run(initial_sync)
    finally:
        for source in reversed(started):
            source.close()
    return EXIT_OK


def _forward_stop(stop: threading.Event, inbox: Inbox) -> None:
    """Wake the loop when ``stop`` is set (from a signal handler or another thread)."""

    def forward() -> None:
        stop.wait()
        inbox.put(Event(STOP))

    threading.Thread(target=forward, name="credroam-stop", daemon=True).start()


# --- store watchers ------------------------------------------------------------------------


def _is_own_file(name: str) -> bool:
    """Names the store and the sync write for themselves: the store's .lock, .tmp-* files of
    atomic writes (their final rename is an event of its own)."""
    return name.startswith(".")


def store_watcher(paths: Iterable[str | os.PathLike[str]], *, log: Log = _stderr_line):
    """inotify on ``paths`` (recursive), or polling when the kernel or libc refuse inotify."""
    try:
        return InotifyWatcher(paths, log=log)
    except InotifyUnavailable as exc:
        log(f"inotify unavailable ({exc}); polling the store every 30 s")
        return PollingWatcher(paths, log=log)


class InotifyUnavailable(OSError):
    """The kernel or libc offers no inotify instance (or no watch) here."""


IN_CLOSE_WRITE = 0x00000008
IN_MOVED_FROM = 0x00000040
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_DELETE = 0x00000200
IN_DELETE_SELF = 0x00000400
IN_MOVE_SELF = 0x00000800
IN_Q_OVERFLOW = 0x00004000
IN_IGNORED = 0x00008000
IN_ONLYDIR = 0x01000000
IN_ISDIR = 0x40000000
IN_NONBLOCK = 0o4000
IN_CLOEXEC = 0o2000000

# A finished write, a rename in or out, a new or deleted entry; not every write() of a file.
_STORE_MASK = (
    IN_CLOSE_WRITE
    | IN_MOVED_FROM
    | IN_MOVED_TO
    | IN_CREATE
    | IN_DELETE
    | IN_DELETE_SELF
    | IN_MOVE_SELF
    | IN_ONLYDIR
)
# On the nearest existing parent of a watched folder that does not exist yet.
_ANCESTOR_MASK = IN_CREATE | IN_MOVED_TO | IN_ONLYDIR
_EVENT_HEADER = struct.Struct("iIII")  # struct inotify_event: wd, mask, cookie, len


class _Libc:
    def __init__(self) -> None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            self.init1 = libc.inotify_init1
            self.add_watch = libc.inotify_add_watch
            self.rm_watch = libc.inotify_rm_watch
        except (OSError, AttributeError) as exc:
            raise InotifyUnavailable(errno.ENOSYS, f"no inotify in libc: {exc}") from exc
        self.init1.argtypes = [ctypes.c_int]
        self.add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
        self.rm_watch.argtypes = [ctypes.c_int, ctypes.c_int]


class InotifyWatcher:
    """Watches folders and their subfolders (also those made later, and folders that do not
    exist yet, through their nearest parent) and puts one STORE event per batch of changes."""

    def __init__(self, paths: Iterable[str | os.PathLike[str]], *, log: Log = _stderr_line):
        self.roots = [Path(p).absolute() for p in paths]
        self.log = log
        self._libc = _Libc()
        self._fd = self._libc.init1(IN_NONBLOCK | IN_CLOEXEC)
        if self._fd < 0:
            code = ctypes.get_errno()
            raise InotifyUnavailable(code, f"inotify_init1: {os.strerror(code)}")
        self._store_wds: dict[int, Path] = {}
        self._ancestor_wds: dict[int, Path] = {}
        self._wake_r, self._wake_w = os.pipe()
        self._thread: threading.Thread | None = None
        try:
            self._arm()
        except InotifyUnavailable:
            self._close_fds()
            raise

    def start(self, inbox: Inbox) -> None:
        self._thread = threading.Thread(
            target=self._read_events, args=(inbox,), name="credroam-inotify", daemon=True
        )
        self._thread.start()
        self.log(f"watching store changes in {', '.join(map(str, self.roots))} (inotify)")

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"x")
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._close_fds()

    def _close_fds(self) -> None:
        for fd in (self._fd, self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)

    def _add(self, path: Path, mask: int) -> int | None:
        wd = self._libc.add_watch(self._fd, os.fsencode(path), mask)
        if wd >= 0:
            return wd
        code = ctypes.get_errno()
        if code in (errno.ENOENT, errno.ENOTDIR):
            return None  # gone meanwhile: its parent's event re-arms
        raise InotifyUnavailable(code, f"inotify_add_watch {path}: {os.strerror(code)}")

    def _arm(self) -> bool:
        """Watch every root that exists (recursively) and the nearest parent of each that does
        not; True when a root folder newly came into view."""
        appeared = False
        for root in self.roots:
            if root.is_dir():
                appeared |= root not in self._store_wds.values()
                self._watch_tree(root)
                continue
            ancestor = next((p for p in root.parents if p.is_dir()), None)
            if ancestor is not None and ancestor not in self._ancestor_wds.values():
                wd = self._add(ancestor, _ANCESTOR_MASK)
                if wd is not None:
                    self._ancestor_wds[wd] = ancestor
        return appeared

    def _watch_tree(self, top: Path) -> None:
        for folder, subfolders, _files in os.walk(top):
            subfolders[:] = [name for name in subfolders if not _is_own_file(name)]
            wd = self._add(Path(folder), _STORE_MASK)
            if wd is not None:
                self._store_wds[wd] = Path(folder)

    def _read_events(self, inbox: Inbox) -> None:
        poller = select.poll()
        poller.register(self._fd, select.POLLIN)
        poller.register(self._wake_r, select.POLLIN)
        while True:
            ready = {fd for fd, _ in poller.poll()}
            if self._wake_r in ready:
                return
            try:
                data = os.read(self._fd, 65536)
            except BlockingIOError:
                continue
            except OSError as exc:
                self.log(f"inotify read failed ({exc}); store changes are no longer seen")
                return
            detail = self._handle(data)
            if detail:
                inbox.put(Event(STORE, detail))

    def _handle(self, data: bytes) -> str:
        """Update the watches for a batch of raw events; what changed ('' when nothing did)."""
        changed: list[str] = []
        rearm = False
        offset = 0
        while offset + _EVENT_HEADER.size <= len(data):
            wd, mask, _cookie, length = _EVENT_HEADER.unpack_from(data, offset)
            raw_name = data[offset + _EVENT_HEADER.size : offset + _EVENT_HEADER.size + length]
            offset += _EVENT_HEADER.size + length
            name = os.fsdecode(raw_name.split(b"\0", 1)[0])
            if mask & IN_Q_OVERFLOW:
                changed.append("(event queue overflowed)")
                rearm = True
            elif wd in self._ancestor_wds:
                rearm = True
            elif wd in self._store_wds:
                folder = self._store_wds[wd]
                if mask & IN_IGNORED:
                    del self._store_wds[wd]
                    rearm = True
                elif name and not _is_own_file(name):
                    changed.append(str(folder / name))
                    if mask & IN_ISDIR and mask & (IN_CREATE | IN_MOVED_TO):
                        self._watch_tree(folder / name)
                elif mask & (IN_DELETE_SELF | IN_MOVE_SELF):
                    changed.append(str(folder))
                    if mask & IN_MOVE_SELF and not folder.is_dir():
                        # Moved out of the tree (a move inside it came first as IN_MOVED_TO,
                        # which renamed the watch): it would go on reporting under its old name.
                        # Its IN_IGNORED then re-arms.
                        self._libc.rm_watch(self._fd, wd)
        if rearm and self._arm():
            changed.append("(a watched folder appeared)")
        return ", ".join(dict.fromkeys(changed))


@dataclass(frozen=True)
class _Seen:
    size: int
    mtime_ns: int
    inode: int


class PollingWatcher:
    """The fallback: lists the folders every ``interval_seconds`` and puts a STORE event when a
    file appeared, went, or changed size, mtime or inode."""

    def __init__(
        self,
        paths: Iterable[str | os.PathLike[str]],
        *,
        interval_seconds: float = 30.0,
        log: Log = _stderr_line,
    ) -> None:
        self.roots = [Path(p).absolute() for p in paths]
        self.interval_seconds = interval_seconds
        self.log = log
        self._closed = threading.Event()
        self._thread: threading.Thread | None = None
        self._last = self.snapshot()

    def snapshot(self) -> dict[str, _Seen]:
        seen: dict[str, _Seen] = {}
        for root in self.roots:
            for folder, subfolders, files in os.walk(root):
                subfolders[:] = [name for name in subfolders if not _is_own_file(name)]
                for name in files:
                    if _is_own_file(name):
                        continue
                    path = os.path.join(folder, name)
                    with contextlib.suppress(OSError):
                        info = os.lstat(path)
                        seen[path] = _Seen(info.st_size, info.st_mtime_ns, info.st_ino)
        return seen

    def changes(self) -> str:
        """What changed since the last call ('' when nothing did)."""
        current = self.snapshot()
        changed = sorted(
            path
            for path in current.keys() | self._last.keys()
            if current.get(path) != self._last.get(path)
        )
        self._last = current
        return ", ".join(changed)

    def start(self, inbox: Inbox) -> None:
        self._thread = threading.Thread(
            target=self._poll, args=(inbox,), name="credroam-poll", daemon=True
        )
        self._thread.start()
        self.log(f"watching store changes in {', '.join(map(str, self.roots))} (polling)")

    def _poll(self, inbox: Inbox) -> None:
        while not self._closed.wait(self.interval_seconds):
            detail = self.changes()
            if detail:
                inbox.put(Event(STORE, detail))

    def close(self) -> None:
        self._closed.set()
        if self._thread is not None:
            self._thread.join(timeout=10)


# --- logind's session signals --------------------------------------------------------------


def session_object_path(session_id: str | None) -> str | None:
    """logind's object path of a session id (systemd's bus label escaping), None for none."""
    if not session_id:
        return None
    label = "".join(
        char
        if ("a" <= char.lower() <= "z") or (index > 0 and char.isdigit() and char.isascii())
        else "".join(f"_{byte:02x}" for byte in char.encode())
        for index, char in enumerate(session_id)
    )
    return SESSION_PATH_PREFIX + label


def logind_match_rule(session_path: str | None, sender: str | None = LOGIND_NAME) -> str:
    """The D-Bus match rule for the Session signals: from ``sender`` (the bus resolves the
    well-known name to its owner), for one session's object path when it is known."""
    parts = ["type='signal'", f"interface='{SESSION_INTERFACE}'"]
    if sender:
        parts.append(f"sender='{sender}'")
    if session_path:
        parts.append(f"path='{session_path}'")
    return ",".join(parts)


def parse_session_signal(line: str, session_path: str | None) -> Event | None:
    """The LOCK/UNLOCK event of one ``dbus-monitor --profile`` line, else None.

    Profile lines are tab-separated: type, timestamp, serial, sender, destination, path,
    interface, member."""
    fields = line.rstrip("\n").split("\t")
    if len(fields) < 8 or fields[0] != "sig":
        return None
    path, interface, member = fields[5], fields[6], fields[7]
    if interface != SESSION_INTERFACE or member not in _SIGNAL_REASONS:
        return None
    if not path.startswith(SESSION_PATH_PREFIX) or session_path not in (None, path):
        return None
    return Event(_SIGNAL_REASONS[member], path)


def _is_ready_line(line: str) -> bool:
    """dbus-monitor's first message is the bus's NameAcquired, delivered once its match rules
    are in place: from then on no Lock or Unlock is missed."""
    fields = line.rstrip("\n").split("\t")
    return len(fields) >= 8 and fields[0] == "sig" and fields[7] == "NameAcquired"


class LogindWatcher:
    """Puts LOCK and UNLOCK events from logind's Session signals, read from ``dbus-monitor``;
    restarts it (bounded backoff) when it exits, e.g. when the bus restarts. Without a bus or
    dbus-monitor the watch goes on without session triggers (logged)."""

    def __init__(
        self,
        *,
        bus_address: str | None = None,
        session_path: str | None = None,
        sender: str | None = LOGIND_NAME,
        monitor: str = "dbus-monitor",
        log: Log = _stderr_line,
        restart: Backoff = Backoff(initial_seconds=5, max_seconds=300),
    ) -> None:
        self.bus_address = bus_address
        self.session_path = session_path
        self.sender = sender
        self.monitor = monitor
        self.log = log
        self.restart = restart
        self._closed = threading.Event()
        self._process: subprocess.Popen[str] | None = None
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def argv(self) -> list[str]:
        bus = ["--address", self.bus_address] if self.bus_address else ["--system"]
        rule = logind_match_rule(self.session_path, self.sender)
        return [self.monitor, *bus, "--profile", rule]

    def start(self, inbox: Inbox) -> None:
        self._thread = threading.Thread(
            target=self._watch, args=(inbox,), name="credroam-logind", daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        self._closed.set()
        with self._lock:
            if self._process is not None and self._process.poll() is None:
                self._process.terminate()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _watch(self, inbox: Inbox) -> None:
        failures = 0
        rng = random.Random()
        while not self._closed.is_set():
            try:
                if self._monitor_once(inbox):
                    failures = 0
            except FileNotFoundError:
                self.log(f"session signals unavailable: no {self.monitor} (package dbus-bin)")
                return
            failures += 1
            wait = self.restart.delay(failures, rng)
            if self._closed.is_set():
                return
            self.log(f"session signals: {self.monitor} ended; restarting in {wait:.0f} s")
            if self._closed.wait(wait):
                return

    def _monitor_once(self, inbox: Inbox) -> bool:
        """Run dbus-monitor until it ends; True when it got as far as listening."""
        try:
            with self._lock:
                if self._closed.is_set():
                    return False
                self._process = subprocess.Popen(
                    self.argv(),
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.DEVNULL,
                    text=True,
                    errors="replace",
                )
        except FileNotFoundError:
            raise
        except OSError as exc:
            self.log(f"session signals unavailable: cannot run {self.monitor} ({exc})")
            return False
        listening = False
        assert self._process.stdout is not None
        with self._process:
            for line in self._process.stdout:
                if not listening and _is_ready_line(line):
                    listening = True
                    where = self.bus_address or "the system bus"
                    self.log(f"watching session Lock/Unlock on {where}")
                event = parse_session_signal(line, self.session_path)
                if event is not None:
                    inbox.put(event)
        return listening
