"""The watch loop's triggers, driven deterministically: a fake clock and a scripted inbox whose
``get(timeout)`` advances that clock (the loop's only wait), a recording ``sync_once``. The real
sources (inotify, polling, the dbus-monitor reader) are tested on their own, against the kernel
and a stand-in monitor; on a real D-Bus in tests/integration/test_agent_triggers.py."""

from __future__ import annotations

import random
import stat
import threading
from collections.abc import Callable, Iterable
from pathlib import Path

import pytest

from agent.credroam_agent import triggers
from agent.credroam_agent.triggers import (
    Backoff,
    Debounce,
    Event,
    Inbox,
    InotifyUnavailable,
    InotifyWatcher,
    LogindWatcher,
    PollingWatcher,
    logind_match_rule,
    parse_session_signal,
    session_object_path,
)

MINUTE = 60.0
HOUR = 60 * MINUTE


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class ScriptedInbox(Inbox):
    """Events at fixed times on the fake clock; waiting moves the clock. STOP at ``until``."""

    def __init__(self, clock: FakeClock, script: Iterable[tuple[float, Event]], until: float):
        self.clock = clock
        self.script = sorted([*script, (until, Event(triggers.STOP))], key=lambda s: s[0])
        self.waits: list[float] = []

    def put(self, event: Event) -> None:
        raise AssertionError("no source runs in these tests")

    def get(self, timeout: float) -> Event | None:
        assert timeout >= 0, "the loop asked to wait for a deadline already past"
        self.waits.append(timeout)
        at, event = self.script[0]
        if at <= self.clock.now + timeout:
            self.script.pop(0)
            self.clock.now = max(self.clock.now, at)
            return event
        self.clock.now += timeout
        return None


class Recorder:
    """sync_once: records (time, reason); answers with ``codes(call number)`` (default 0)."""

    def __init__(self, clock: FakeClock, codes: Callable[[int], int] = lambda _n: 0):
        self.clock = clock
        self.codes = codes
        self.calls: list[tuple[float, str]] = []

    def __call__(self, reason: str) -> int:
        self.calls.append((self.clock.now, reason))
        return self.codes(len(self.calls))

    @property
    def reasons(self) -> list[str]:
        return [reason for _, reason in self.calls]


def drive(
    script: Iterable[tuple[float, Event]] = (),
    until: float = 10 * MINUTE,
    codes: Callable[[int], int] = lambda _n: 0,
    seed: int = 7,
    logs: list[str] | None = None,
    **options,
) -> Recorder:
    clock = FakeClock()
    recorder = Recorder(clock, codes)
    result = triggers.run(
        recorder,
        watch_paths=[],
        sources=[],
        clock=clock,
        inbox=ScriptedInbox(clock, script, until),
        rng=random.Random(seed),
        log=(logs.append if logs is not None else lambda _m: None),
        **options,
    )
    assert result == 0
    return recorder


def store(at: float) -> tuple[float, Event]:
    return at, Event(triggers.STORE, "MY/X.cert.pem")


# --- reasons and the start ----------------------------------------------------------------


def test_the_watch_syncs_once_at_start_and_then_waits():
    recorder = drive(until=30 * MINUTE)
    assert recorder.calls == [(0.0, "start")]


def test_no_start_sync_when_asked():
    assert drive(until=30 * MINUTE, initial_sync=False).calls == []


def test_lock_and_unlock_each_sync_at_once():
    script = [(100.0, Event(triggers.LOCK)), (400.0, Event(triggers.UNLOCK))]
    assert drive(script).calls == [(0.0, "start"), (100.0, "lock"), (400.0, "unlock")]


def test_a_crashing_sync_is_logged_and_the_watch_goes_on():
    def codes(n: int) -> int:
        if n == 2:
            raise RuntimeError("store unreadable")
        return 0

    logs: list[str] = []
    script = [(100.0, Event(triggers.LOCK)), (200.0, Event(triggers.UNLOCK))]
    recorder = drive(script, codes=codes, logs=logs)
    assert recorder.reasons == ["start", "lock", "unlock"]
    assert any("sync (lock) failed: RuntimeError: store unreadable" in line for line in logs)


# --- debounce -----------------------------------------------------------------------------


def test_a_burst_of_store_changes_is_one_sync_after_the_quiet_period():
    script = [store(100.0), store(100.5), store(101.0)]
    recorder = drive(script, debounce=Debounce(quiet_seconds=2, max_seconds=30))
    assert recorder.calls == [(0.0, "start"), (103.0, "store")]


def test_a_store_that_keeps_changing_still_syncs_at_the_maximum_delay():
    script = [store(100.0 + second) for second in range(100)]  # one change a second
    recorder = drive(script, until=300.0, debounce=Debounce(quiet_seconds=2, max_seconds=30))
    store_syncs = [at for at, reason in recorder.calls if reason == "store"]
    assert store_syncs[:3] == [130.0, 161.0, 192.0]
    assert store_syncs[-1] == 201.0  # quiet 2 s after the last change at 199


def test_a_lock_sync_covers_the_pending_store_changes():
    script = [store(100.0), (101.0, Event(triggers.LOCK))]
    recorder = drive(script, debounce=Debounce(quiet_seconds=5, max_seconds=30))
    assert recorder.calls == [(0.0, "start"), (101.0, "lock")]


# --- refresh and jitter -------------------------------------------------------------------


def refresh_gaps(seed: int, hours: float = 48) -> list[float]:
    recorder = drive(until=hours * HOUR, seed=seed)
    times = [at for at, reason in recorder.calls if reason == "refresh"]
    return [later - earlier for earlier, later in zip([0.0, *times], times, strict=False)]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_policy_refreshes_come_every_90_minutes_plus_0_to_30(seed):
    gaps = refresh_gaps(seed)
    assert len(gaps) >= 48 * 60 // 120
    assert all(90 * MINUTE <= gap <= 120 * MINUTE for gap in gaps)
    assert len(set(gaps)) == len(gaps)  # jittered: no two hosts share a rhythm


def test_the_jitter_is_the_seeded_generator_s():
    assert refresh_gaps(5, hours=12) == refresh_gaps(5, hours=12)
    assert refresh_gaps(5, hours=12) != refresh_gaps(6, hours=12)


def test_refresh_and_jitter_are_settable():
    recorder = drive(until=2 * HOUR + 1, refresh_minutes=10, jitter_minutes=0)
    refreshes = [at for at, reason in recorder.calls if reason == "refresh"]
    assert refreshes == [10 * MINUTE * n for n in range(1, 13)]


# --- policy version -----------------------------------------------------------------------


class Versions:
    """policy_version(): the GPO versions in force at the fake time."""

    def __init__(self, clock_of: Callable[[], FakeClock], changes: dict[float, object]):
        self.clock_of = clock_of
        self.changes = sorted(changes.items(), key=lambda item: item[0])

    def __call__(self) -> object:
        now = self.clock_of().now
        current = None
        for at, version in self.changes:
            if at <= now:
                current = version
        if isinstance(current, Exception):
            raise current
        return current


def drive_with_versions(changes: dict[float, object], until: float, **options) -> Recorder:
    holder: dict[str, FakeClock] = {}
    versions = Versions(lambda: holder["clock"], changes)
    clock = FakeClock()
    holder["clock"] = clock
    recorder = Recorder(clock)
    triggers.run(
        recorder,
        watch_paths=[],
        sources=[],
        clock=clock,
        inbox=ScriptedInbox(clock, [], until),
        rng=random.Random(3),
        log=lambda _m: None,
        policy_version=versions,
        **options,
    )
    return recorder


def test_a_new_gpo_version_syncs_at_the_next_check():
    v1, v2 = (("{GPO-1}", 65537),), (("{GPO-1}", 131074),)
    recorder = drive_with_versions({0: v1, 20 * MINUTE: v2}, until=80 * MINUTE)
    assert recorder.calls == [(0.0, "start"), (30 * MINUTE, "policy")]


def test_an_unchanged_version_brings_no_sync_between_refreshes():
    recorder = drive_with_versions({0: (("{GPO-1}", 1),)}, until=85 * MINUTE)
    assert recorder.reasons == ["start"]


def test_a_version_change_found_at_a_refresh_names_the_policy():
    recorder = drive_with_versions(
        {0: "v1", 60 * MINUTE: "v2"}, until=130 * MINUTE, policy_check_minutes=1000
    )
    assert recorder.reasons == ["start", "policy"]
    assert 90 * MINUTE <= recorder.calls[1][0] <= 120 * MINUTE


def test_an_unknown_or_failing_version_is_no_change():
    changes = {0: None, 10 * MINUTE: "v1", 20 * MINUTE: OSError("no DC"), 40 * MINUTE: "v1"}
    recorder = drive_with_versions(changes, until=80 * MINUTE, policy_check_minutes=5)
    assert recorder.reasons == ["start"]


# --- backoff while no DC answers ----------------------------------------------------------


def test_retries_back_off_exponentially_within_bounds_while_no_dc_answers():
    backoff = Backoff(initial_seconds=30, max_seconds=600)
    recorder = drive(until=3 * HOUR, codes=lambda _n: 3, backoff=backoff, refresh_minutes=10**6)
    retries = [at for at, reason in recorder.calls if reason == "retry"]
    gaps = [later - earlier for earlier, later in zip([0.0, *retries], retries, strict=False)]
    ceilings = [30, 60, 120, 240, 480, 600, 600, 600]
    for gap, ceiling in zip(gaps, ceilings, strict=False):
        assert ceiling / 2 <= gap <= ceiling
    assert all(300 <= gap <= 600 for gap in gaps[5:])  # bounded: never longer than the maximum
    assert len(gaps) > len(ceilings)


def test_retries_stop_once_a_sync_reaches_a_dc():
    recorder = drive(until=HOUR, codes=lambda n: 3 if n <= 3 else 0, refresh_minutes=10**6)
    assert recorder.reasons == ["start", "retry", "retry", "retry"]


def test_a_successful_event_sync_resets_the_backoff():
    # start fails, the unlock at 10 s succeeds: no retry follows.
    script = [(10.0, Event(triggers.UNLOCK))]
    recorder = drive(script, until=HOUR, codes=lambda n: 3 if n == 1 else 0, refresh_minutes=10**6)
    assert recorder.reasons == ["start", "unlock"]


@pytest.mark.parametrize("failures", [1, 2, 7, 64, 10_000])
def test_the_backoff_ceiling_is_bounded(failures):
    backoff = Backoff()
    assert backoff.initial_seconds <= backoff.ceiling(failures) <= backoff.max_seconds
    delay = backoff.delay(failures, random.Random(failures))
    assert backoff.ceiling(failures) / 2 <= delay <= backoff.ceiling(failures)


def test_other_exit_codes_bring_no_retry():
    for code in (1, 2):
        recorder = drive(until=HOUR, codes=lambda _n, code=code: code, refresh_minutes=10**6)
        assert recorder.reasons == ["start"]


# --- stop ---------------------------------------------------------------------------------


def test_setting_stop_from_another_thread_ends_the_watch():
    stop = threading.Event()
    reasons: list[str] = []
    synced = threading.Event()

    def sync_once(reason: str) -> int:
        reasons.append(reason)
        synced.set()
        return 0

    worker = threading.Thread(
        target=triggers.run,
        args=(sync_once,),
        kwargs={"watch_paths": [], "sources": [], "stop": stop, "log": lambda _m: None},
    )
    worker.start()
    assert synced.wait(10)
    stop.set()
    worker.join(10)
    assert not worker.is_alive()
    assert reasons == ["start"]


# --- logind signals -----------------------------------------------------------------------

SESSION_2 = "/org/freedesktop/login1/session/_32"


def profile_line(member: str, path: str = SESSION_2, interface: str = triggers.SESSION_INTERFACE):
    return f"sig\t1796115885.9\t7\t:1.4\t<none>\t{path}\t{interface}\t{member}\n"


@pytest.mark.parametrize(
    ("session_id", "label"), [("2", "_32"), ("c1", "c1"), ("12", "_312"), ("a_b", "a_5fb")]
)
def test_session_paths_are_escaped_as_systemd_does(session_id, label):
    assert session_object_path(session_id) == f"/org/freedesktop/login1/session/{label}"


def test_no_session_id_is_no_session_path():
    assert session_object_path(None) is None
    assert session_object_path("") is None


def test_the_match_rule_asks_the_bus_for_logind_s_signals_only():
    rule = logind_match_rule(SESSION_2)
    assert rule == (
        "type='signal',interface='org.freedesktop.login1.Session',"
        "sender='org.freedesktop.login1',path='/org/freedesktop/login1/session/_32'"
    )
    assert logind_match_rule(None, sender=None) == (
        "type='signal',interface='org.freedesktop.login1.Session'"
    )


def test_lock_and_unlock_lines_become_events():
    assert parse_session_signal(profile_line("Lock"), SESSION_2) == Event("lock", SESSION_2)
    assert parse_session_signal(profile_line("Unlock"), None) == Event("unlock", SESSION_2)


@pytest.mark.parametrize(
    "line",
    [
        "#type\ttimestamp\tserial\tsender\tdestination\tpath\tinterface\tmember\n",
        profile_line("PauseDevice"),
        profile_line("Lock", path="/org/freedesktop/login1/session/_33"),  # another session
        profile_line("Lock", path="/org/freedesktop/login1/user/_1000"),
        profile_line("Lock", interface="org.example.Session"),
        "mc\t1.0\t2\t:1.4\torg.freedesktop.login1\t/x\torg.freedesktop.login1.Session\tLock\n",
        "sig\tshort\n",
        "",
    ],
)
def test_other_lines_are_no_events(line):
    assert parse_session_signal(line, SESSION_2) is None


def stand_in_monitor(tmp_path: Path, lines: list[str]) -> Path:
    """An executable printing dbus-monitor --profile lines, then waiting to be stopped."""
    data = tmp_path / "lines"
    data.write_text("".join(lines))
    script = tmp_path / "dbus-monitor"
    script.write_text(f'#!/bin/sh\necho "$@" > {tmp_path}/argv\ncat {data}\nexec sleep 600\n')
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script


def test_the_logind_watcher_reads_the_monitor_and_reports_when_listening(tmp_path):
    acquired = profile_line("NameAcquired", "/org/freedesktop/DBus", "org.freedesktop.DBus")
    lines = [
        acquired,
        profile_line("Lock"),
        profile_line("Lock", path="/x"),
        profile_line("Unlock"),
    ]
    monitor = stand_in_monitor(tmp_path, lines)
    logs: list[str] = []
    watcher = LogindWatcher(
        bus_address="unix:path=/run/test-bus", session_path=SESSION_2, monitor=str(monitor),
        log=logs.append,
    )  # fmt: skip
    inbox = Inbox()
    watcher.start(inbox)
    try:
        assert inbox.get(10) == Event("lock", SESSION_2)
        assert inbox.get(10) == Event("unlock", SESSION_2)
    finally:
        watcher.close()
    assert logs == ["watching session Lock/Unlock on unix:path=/run/test-bus"]
    argv = (tmp_path / "argv").read_text().split()
    assert argv[:3] == ["--address", "unix:path=/run/test-bus", "--profile"]


def test_without_dbus_monitor_the_watch_goes_on_without_session_triggers(tmp_path):
    logs: list[str] = []
    logged = threading.Event()
    watcher = LogindWatcher(
        monitor=str(tmp_path / "absent"), log=lambda m: (logs.append(m), logged.set())
    )
    watcher.start(Inbox())
    assert logged.wait(10)
    watcher.close()
    assert logs == [f"session signals unavailable: no {tmp_path / 'absent'} (package dbus-bin)"]


# --- store watchers -----------------------------------------------------------------------


def next_store_event(inbox: Inbox) -> Event:
    event = inbox.get(10)
    assert event is not None, "no store event within 10 s"
    assert event.kind == "store"
    return event


@pytest.fixture
def watched(tmp_path):
    root = tmp_path / "store"
    (root / "MY").mkdir(parents=True)
    inbox = Inbox()
    watcher = InotifyWatcher([root], log=lambda _m: None)
    watcher.start(inbox)
    yield root, inbox
    watcher.close()


def test_inotify_sees_a_file_added_to_a_subfolder(watched):
    root, inbox = watched
    (root / "MY" / "ABC.cert.pem").write_text("pem")
    assert str(root / "MY" / "ABC.cert.pem") in next_store_event(inbox).detail


def test_inotify_ignores_the_store_s_own_lock_and_temporary_files(watched):
    root, inbox = watched
    (root / ".lock").write_text("")
    (root / "MY" / ".tmp-1234").write_text("partial")
    (root / "MY" / ".tmp-1234").rename(root / "MY" / "ABC.cert.pem")  # an atomic write
    detail = next_store_event(inbox).detail
    assert detail == str(root / "MY" / "ABC.cert.pem")


def test_inotify_watches_folders_made_later(watched):
    root, inbox = watched
    (root / "archive").mkdir()
    assert str(root / "archive") in next_store_event(inbox).detail
    (root / "archive" / "OLD.cert.pem").write_text("pem")
    assert str(root / "archive" / "OLD.cert.pem") in next_store_event(inbox).detail


def test_inotify_waits_for_a_store_folder_that_does_not_exist_yet(tmp_path):
    root = tmp_path / "home" / "store"
    inbox = Inbox()
    watcher = InotifyWatcher([root], log=lambda _m: None)
    watcher.start(inbox)
    try:
        (tmp_path / "home").mkdir()
        (tmp_path / "other").mkdir()  # the ancestor's other news re-arms, reports nothing
        root.mkdir()
        assert next_store_event(inbox).detail == "(a watched folder appeared)"
        (root / "NEW.cert.pem").write_text("pem")
        assert str(root / "NEW.cert.pem") in next_store_event(inbox).detail
    finally:
        watcher.close()


def test_polling_reports_added_changed_and_removed_files(tmp_path):
    (tmp_path / "MY").mkdir()
    watcher = PollingWatcher([tmp_path], log=lambda _m: None)
    assert watcher.changes() == ""
    cert = tmp_path / "MY" / "ABC.cert.pem"
    cert.write_text("pem")
    (tmp_path / ".lock").write_text("")
    assert watcher.changes() == str(cert)
    cert.write_text("longer pem")
    assert watcher.changes() == str(cert)
    cert.unlink()
    assert watcher.changes() == str(cert)
    assert watcher.changes() == ""


def test_polling_is_the_fallback_when_inotify_is_unavailable(tmp_path, monkeypatch):
    def refuse(*_args, **_kwargs):
        raise InotifyUnavailable(24, "inotify_init1: Too many open files")

    monkeypatch.setattr(triggers, "InotifyWatcher", refuse)
    logs: list[str] = []
    watcher = triggers.store_watcher([tmp_path], log=logs.append)
    assert isinstance(watcher, PollingWatcher)
    assert logs == [
        "inotify unavailable ([Errno 24] inotify_init1: Too many open files); "
        "polling the store every 30 s"
    ]


def test_inotify_follows_a_folder_renamed_inside_the_store(watched):
    root, inbox = watched
    (root / "MY").rename(root / "MINE")
    assert str(root / "MINE") in next_store_event(inbox).detail
    (root / "MINE" / "ABC.cert.pem").write_text("pem")
    assert next_store_event(inbox).detail == str(root / "MINE" / "ABC.cert.pem")


def test_inotify_forgets_a_folder_moved_out_of_the_store(watched, tmp_path):
    root, inbox = watched
    (root / "MY").rename(tmp_path / "elsewhere")
    assert str(root / "MY") in next_store_event(inbox).detail
    (tmp_path / "elsewhere" / "OUT.cert.pem").write_text("pem")  # no longer the store's
    (root / "IN.cert.pem").write_text("pem")
    assert next_store_event(inbox).detail == str(root / "IN.cert.pem")


def test_the_polling_thread_puts_a_store_event(tmp_path):
    inbox = Inbox()
    watcher = PollingWatcher([tmp_path], interval_seconds=0.05, log=lambda _m: None)
    watcher.start(inbox)
    try:
        (tmp_path / "ABC.cert.pem").write_text("pem")
        assert next_store_event(inbox).detail == str(tmp_path / "ABC.cert.pem")
    finally:
        watcher.close()
