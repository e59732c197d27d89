"""The agent's triggers with real parts, on a lab client host (its own /etc, /home, /run).

- A real SSH login as alice (password through PAM) to a host whose /etc/pam.d/sshd runs the
  PAM hook: the hook starts the agent (a stand-in that records its uid, argv and stdin length,
  and whether stdin is alice's password, never the password) as alice with the password on
  stdin, without the logon waiting for it, after making /run/user/<uid>; the session's close
  runs `purge`.
- A real dbus-daemon started in the host (its own config and socket): logind-style Lock and
  Unlock signals sent with dbus-send make the watch loop sync with reasons lock and unlock;
  with the default sender filter, only those of the owner of org.freedesktop.login1 count.
- A file added to a watched folder makes it sync (inotify), with reason store.

The watch loop runs as alice in the host under Debian's /usr/bin/python3, as the agent will.
The tests wait for what they expect with generous bounds, never a fixed sleep.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import queue
import shutil
import socket
import subprocess
import tempfile
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.lab import REPO, ClientHost, Lab

pytestmark = pytest.mark.integration

HOOK = REPO / "agent" / "pam" / "pam-hook"
AGENT_DIR = REPO / "agent"
TEST_SSH_PORT = 2222  # a second sshd of the test's own, with password logons
WAIT = 30.0  # seconds: generous bound for anything the tests wait for


def wait_for(check: Callable[[], object], what: str, timeout: float = WAIT) -> object:
    """Poll ``check`` until it returns something true; fail naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.05)


@pytest.fixture(scope="module")
def host(lab: Lab) -> ClientHost:
    return lab.client(0)


@pytest.fixture(scope="module")
def alice_uid(lab: Lab, host: ClientHost) -> Iterator[int]:
    """alice as a local account of the host, with her AD password (the lab maps by name);
    removed afterwards (with what the hook made for her) when this module made her."""
    made = host.run("id", "-u", "alice", check=False).returncode != 0
    if made:
        host.run("useradd", "--create-home", "--shell", "/bin/sh", "alice")
    subprocess.run(
        [*host.exec, "chpasswd"], input=f"alice:{lab.user('alice').password}\n", text=True,
        check=True, capture_output=True,
    )  # fmt: skip
    uid = int(host.run("id", "-u", "alice").stdout)
    yield uid
    if made:
        host.run("userdel", "--remove", "alice")
        host.run("rm", "-rf", f"/run/user/{uid}")


@pytest.fixture
def shared_dir(alice_uid: int) -> Iterator[Path]:
    """A folder under the machine's /tmp (shared with the hosts) that alice may write."""
    path = Path(tempfile.mkdtemp(prefix="credroam-triggers-"))
    path.chmod(0o755)
    os.chown(path, alice_uid, -1)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


# --- (a) the PAM hook on a real SSH login ---------------------------------------------------

STAND_IN = """\
#!/usr/bin/python3
# credroam-agent stand-in: records each call (never the password), login waits for a release.
import hashlib, json, os, sys, time
data = sys.stdin.buffer.read()
record = {
    "argv": sys.argv[1:], "uid": os.getuid(), "gid": os.getgid(),
    "stdin_len": len(data), "stdin_is_password": hashlib.sha256(data).hexdigest() == EXPECTED,
    "xdg_runtime_dir": os.environ.get("XDG_RUNTIME_DIR"), "home": os.environ.get("HOME"),
}
with open(os.path.join(FOLDER, sys.argv[1] + ".started"), "w") as out:
    json.dump(record, out)
deadline = time.monotonic() + 120
while sys.argv[1] == "login" and not os.path.exists(os.path.join(FOLDER, "release")):
    if time.monotonic() > deadline:
        break
    time.sleep(0.05)
open(os.path.join(FOLDER, sys.argv[1] + ".finished"), "w").close()
"""


def pam_lines(agent: Path) -> tuple[str, str]:
    command = f"{HOOK} --agent {agent} --login-timeout 60 --purge-timeout 30"
    return (
        f"auth optional pam_exec.so expose_authtok quiet {command}",
        f"session optional pam_exec.so quiet {command}",
    )


@contextlib.contextmanager
def hooked_pam(host: ClientHost, agent: Path) -> Iterator[None]:
    """The host's /etc/pam.d/sshd with the hook after common-auth and at the session's end,
    restored afterwards. The host's /etc is its own copy: the machine's file is untouched."""
    original = host.run("cat", "/etc/pam.d/sshd").stdout
    auth_line, session_line = pam_lines(agent)
    lines = original.splitlines()
    at = lines.index("@include common-auth") + 1
    hooked = "\n".join([*lines[:at], auth_line, *lines[at:], session_line, ""])
    write_host_file(host, "/etc/pam.d/sshd", hooked)
    try:
        yield
    finally:
        write_host_file(host, "/etc/pam.d/sshd", original)


def write_host_file(host: ClientHost, path: str, text: str) -> None:
    subprocess.run([*host.exec, "sh", "-c", f'cat > "{path}"'], input=text, text=True, check=True)


@contextlib.contextmanager
def password_sshd(host: ClientHost, folder: Path) -> Iterator[None]:
    """A second sshd on the host (port 2222) that accepts passwords, through the same PAM
    service `sshd`; the lab's own sshd and its config stay as they are."""
    config = folder / "sshd_config"
    config.write_text(
        textwrap.dedent(f"""\
            ListenAddress {host.ip}:{TEST_SSH_PORT}
            HostKey /etc/ssh/ssh_host_ed25519_key
            PidFile none
            PasswordAuthentication yes
            KbdInteractiveAuthentication no
            PubkeyAuthentication no
            UsePAM yes
            PrintMotd no
            """)
    )  # fmt: skip
    log = open(folder / "sshd.log", "wb")  # noqa: SIM115 - closed below, after the process
    process = subprocess.Popen(
        [*host.exec, "/usr/sbin/sshd", "-D", "-e", "-f", str(config)],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_for(lambda: sshd_answers(host.ip, process), f"sshd on {host.ip}:{TEST_SSH_PORT}")
        yield
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


def sshd_answers(ip: str, process: subprocess.Popen) -> bool:
    if process.poll() is not None:
        pytest.fail(f"the test's sshd exited with {process.returncode}")
    try:
        with socket.create_connection((ip, TEST_SSH_PORT), timeout=2) as sock:
            return sock.recv(4).startswith(b"SSH-")
    except OSError:
        return False


def ssh_with_password(host: ClientHost, folder: Path, password: str, command: str):
    """ssh as alice with a password, typed by SSH_ASKPASS (no extra package), host key checked."""
    public_key = " ".join(host.run("cat", "/etc/ssh/ssh_host_ed25519_key.pub").stdout.split()[:2])
    known_hosts = folder / "known_hosts"
    known_hosts.write_text(f"[{host.ip}]:{TEST_SSH_PORT} {public_key}\n")
    secret = folder / "password"
    secret.write_text(password)
    secret.chmod(0o600)
    askpass = folder / "askpass"
    askpass.write_text(f"#!/bin/sh\ncat {secret}\n")
    askpass.chmod(0o700)
    env = {**os.environ, "SSH_ASKPASS": str(askpass), "SSH_ASKPASS_REQUIRE": "force"}
    env.pop("DISPLAY", None)
    argv = [
        "ssh", "-p", str(TEST_SSH_PORT), "-o", f"UserKnownHostsFile={known_hosts}",
        "-o", "StrictHostKeyChecking=yes", "-o", "PreferredAuthentications=password",
        "-o", "PubkeyAuthentication=no", "-o", "NumberOfPasswordPrompts=1",
        "-o", "ConnectTimeout=10", "-o", "IdentitiesOnly=yes", "-F", "/dev/null",
        f"alice@{host.ip}", command,
    ]  # fmt: skip
    return subprocess.run(
        argv, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60
    )


def test_an_ssh_login_hands_the_password_to_the_agent_as_alice_without_waiting(
    lab: Lab, host: ClientHost, alice_uid: int, shared_dir: Path
):
    password = lab.user("alice").password
    machine_pam = Path("/etc/pam.d/sshd").read_text()
    agent = shared_dir / "credroam-agent"
    expected = hashlib.sha256(password.encode()).hexdigest()
    agent.write_text(
        STAND_IN.replace("EXPECTED", repr(expected)).replace("FOLDER", repr(str(shared_dir)))
    )
    agent.chmod(0o755)
    with hooked_pam(host, agent), password_sshd(host, shared_dir):
        assert Path("/etc/pam.d/sshd").read_text() == machine_pam  # the host's copy changed
        login = ssh_with_password(host, shared_dir, password, "stat -c '%a %U' /run/user/$(id -u)")
        assert login.returncode == 0, login.stderr
        # The logon finished while the agent's login still runs: the hook did not wait for it.
        assert not (shared_dir / "login.finished").exists()
        assert login.stdout.split() == ["700", "alice"]
        started = json.loads(
            wait_for(lambda: read_if_exists(shared_dir / "login.started"), "the agent's login")
        )
        assert started == {
            "argv": ["login", "--user", "alice"],
            "uid": alice_uid,
            "gid": started["gid"],
            "stdin_len": len(password),
            "stdin_is_password": True,
            "xdg_runtime_dir": f"/run/user/{alice_uid}",
            "home": "/home/alice",
        }
        (shared_dir / "release").touch()
        wait_for(lambda: (shared_dir / "login.finished").exists(), "the agent's login to end")
        purge = json.loads(
            wait_for(lambda: read_if_exists(shared_dir / "purge.started"), "purge at logoff")
        )
        assert (purge["argv"], purge["uid"], purge["stdin_len"]) == (
            ["purge", "--user", "alice"],
            alice_uid,
            0,
        )
    assert "pam-hook" not in host.run("cat", "/etc/pam.d/sshd").stdout  # restored
    assert password not in (shared_dir / "sshd.log").read_text(errors="replace")


def read_if_exists(path: Path) -> str | None:
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    return text or None  # written in one go; empty while being written


# --- (b) and (c): the watch loop as alice in the host -----------------------------------------

DRIVER = """\
import json, signal, sys, threading
sys.path.insert(0, AGENT_DIR)
from credroam_agent import triggers

def say(**fields):
    print(json.dumps(fields), flush=True)

def sync_once(reason):
    say(sync=reason)
    return 0

stop = threading.Event()
signal.signal(signal.SIGTERM, lambda *_: stop.set())
triggers.run(
    sync_once, watch_paths=WATCH_PATHS, logind_sender=LOGIND_SENDER,
    stop=stop, log=lambda message: say(log=message),
)
say(stopped=True)
"""


KINDS = ("sync", "log", "stopped")


class Watch:
    """The watch loop running as alice in the host; its lines arrive on a queue."""

    def __init__(
        self,
        host: ClientHost,
        watch_paths: list[str],
        bus_address: str | None,
        logind_sender: str | None = None,
    ):
        # logind_sender None: signals from dbus-send, which cannot own org.freedesktop.login1.
        code = (
            DRIVER.replace("AGENT_DIR", repr(str(AGENT_DIR)))
            .replace("WATCH_PATHS", repr(watch_paths))
            .replace("LOGIND_SENDER", repr(logind_sender))
        )
        self.process = subprocess.Popen(
            [*host.exec, "setpriv", "--reuid=alice", "--regid=alice", "--init-groups",
             "env", "-i", "HOME=/home/alice", "XDG_SESSION_ID=2", "PATH=/usr/bin:/bin",
             *([f"DBUS_SYSTEM_BUS_ADDRESS={bus_address}"] if bus_address else []),
             "/usr/bin/python3", "-c", code],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        # Syncs and logs come from different threads of the loop: each kind in its own order.
        self.queues: dict[str, queue.Queue] = {kind: queue.Queue() for kind in KINDS}
        self.seen: list[dict] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            fields = json.loads(line)
            self.queues[next(iter(fields))].put(fields)

    def _next(self, kind: str, what: str) -> dict:
        try:
            line = self.queues[kind].get(timeout=WAIT)
        except queue.Empty:
            self.process.kill()
            stderr = self.process.stderr.read() if self.process.stderr else ""
            pytest.fail(f"no {what} within {WAIT:g} s; seen {self.seen}; stderr: {stderr}")
        self.seen.append(line)
        return line

    def until_log(self, text: str) -> None:
        while text not in self._next("log", f"log {text!r}")["log"]:
            pass

    def next_sync(self) -> str:
        return self._next("sync", "sync")["sync"]

    def end(self) -> dict:
        return self._next("stopped", "the loop's end")

    def stop(self) -> int:
        self.process.terminate()
        return self.process.wait(timeout=WAIT)


@pytest.fixture
def system_bus(host: ClientHost, shared_dir: Path) -> Iterator[str]:
    """A dbus-daemon of the system type in the host, with its own config and socket."""
    socket_path = shared_dir / "system_bus_socket"
    config = shared_dir / "bus.conf"
    config.write_text(
        textwrap.dedent(f"""\
            <!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
             "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
            <busconfig>
              <type>system</type>
              <listen>unix:path={socket_path}</listen>
              <auth>EXTERNAL</auth>
              <policy context="default">
                <allow user="*"/>
                <allow send_type="signal"/>
                <allow receive_type="signal"/>
                <allow send_destination="org.freedesktop.DBus"/>
                <allow own="org.freedesktop.login1"/>
                <allow receive_type="method_return"/>
                <allow receive_type="error"/>
              </policy>
            </busconfig>
            """)
    )  # fmt: skip
    daemon = subprocess.Popen(
        [*host.exec, "dbus-daemon", "--nofork", f"--config-file={config}", "--print-address"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    try:
        assert daemon.stdout is not None
        address = daemon.stdout.readline().strip()  # printed once it listens
        assert address.startswith(f"unix:path={socket_path}"), address
        yield f"unix:path={socket_path}"
    finally:
        daemon.terminate()
        daemon.wait(timeout=WAIT)


def send_session_signal(host: ClientHost, bus: str, session: str, member: str) -> None:
    host.run(
        "dbus-send", f"--bus={bus}", "--type=signal",
        f"/org/freedesktop/login1/session/{session}", f"org.freedesktop.login1.Session.{member}",
    )  # fmt: skip


def test_lock_and_unlock_on_a_real_bus_trigger_syncs(host: ClientHost, system_bus, shared_dir):
    watch = Watch(host, [str(shared_dir / "store")], system_bus)
    try:
        assert watch.next_sync() == "start"
        watch.until_log(f"watching session Lock/Unlock on {system_bus}")
        # Session 3 is not this one (XDG_SESSION_ID=2): its Unlock, sent first, is not ours.
        send_session_signal(host, system_bus, "_33", "Unlock")
        send_session_signal(host, system_bus, "_32", "Lock")
        assert watch.next_sync() == "lock"
        send_session_signal(host, system_bus, "_32", "Unlock")
        assert watch.next_sync() == "unlock"
    finally:
        assert watch.stop() == 0
    assert watch.end() == {"stopped": True}


def test_a_file_added_to_the_store_triggers_a_sync(host: ClientHost, shared_dir: Path):
    store = shared_dir / "store" / "MY"
    host.run(
        "setpriv", "--reuid=alice", "--regid=alice", "--init-groups", "mkdir", "-p", str(store)
    )
    watch = Watch(host, [str(shared_dir / "store")], None)
    try:
        assert watch.next_sync() == "start"
        watch.until_log("watching store changes in")
        host.run(
            "setpriv", "--reuid=alice", "--regid=alice", "--init-groups",
            "sh", "-c", f"echo pem > {store}/ABC.cert.pem",
        )  # fmt: skip
        assert watch.next_sync() == "store"
    finally:
        assert watch.stop() == 0


FAKE_LOGIND = """\
import sys
import dbus
bus = dbus.bus.BusConnection(sys.argv[1])
assert bus.request_name("org.freedesktop.login1") == dbus.bus.REQUEST_NAME_REPLY_PRIMARY_OWNER
for member in sys.argv[3:]:
    signal = dbus.lowlevel.SignalMessage(sys.argv[2], "org.freedesktop.login1.Session", member)
    bus.send_message(signal)
bus.flush()
"""


def test_only_logind_s_own_signals_count(host: ClientHost, system_bus):
    """With the default sender filter, a look-alike Lock from another process is ignored; the
    signals of the owner of org.freedesktop.login1 (python3-dbus playing logind) count."""
    if host.run("/usr/bin/python3", "-c", "import dbus", check=False).returncode != 0:
        pytest.skip("python3-dbus, the stand-in logind, is not installed")
    watch = Watch(host, [], system_bus, logind_sender="org.freedesktop.login1")
    try:
        assert watch.next_sync() == "start"
        watch.until_log(f"watching session Lock/Unlock on {system_bus}")
        send_session_signal(host, system_bus, "_32", "Lock")  # a look-alike: not from logind
        session = "/org/freedesktop/login1/session/_32"
        host.run("/usr/bin/python3", "-c", FAKE_LOGIND, system_bus, session, "Unlock", "Lock")
        assert watch.next_sync() == "unlock"
        assert watch.next_sync() == "lock"
    finally:
        assert watch.stop() == 0
