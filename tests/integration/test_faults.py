"""Faults against the real lab, through the real agent: each leaves a valid local store and a
valid directory, and the next sync completes.

The agent runs as on a host (the zipapp under Debian's python3, started as root for alice, in
the host's network and mount namespaces). Where a fault must strike at one moment of a sync,
the agent's test hook (``credroam_agent.testhook``) stops it at that step (SIGSTOP, after a line
on stderr this test waits for), the fault is made, and the agent is resumed; or the hook kills
it there (SIGKILL). No sleeps: every wait is for a line, a process state or an exit.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager

import ldap3
import pytest
from ldap3.protocol.microsoft import security_descriptor_control

from credroam.roaming.directory import read_roaming
from credroam.roaming.sync import SyncStep
from tests.integration import test_agent
from tests.integration.roaming_lab import connect_as, replicate
from tests.integration.test_agent import (
    DC1_ONLY,
    PYZ,
    STORE,
    directory_keys,
    events,
    new_certificate,
    stopped,
    store_files,
    uid,
)
from tests.lab import Account, ClientHost, Lab

pytestmark = pytest.mark.integration
# The agent tests' lab preparation (schema, local accounts, agent configuration, zipapp).
pyz, agent_lab, alice = test_agent.pyz, test_agent.agent_lab, test_agent.alice

HOOK = "CREDROAM_AGENT_TEST_HOOK"
CLEAN_ENV = ("env", "-i", "PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8")
# Reads the user's store and state file with the agent's own code, as the user: what a listing
# skipped and what the state file could not give are the problems (none: both valid).
CHECK_LOCAL = """import sys
sys.path.insert(0, {pyz!r})
from credroam.roaming.state import StateFile
from credroam.roaming.store.file import FileStore
store = FileStore({store!r})
items = store.items()
state = StateFile({state!r})
state.load()
print(len(items), *store.problems, *state.problems, sep="\\n")
"""


def _argv(host: ClientHost, *args: str, hook: str | None = None, config: str = DC1_ONLY):
    env = (f"{HOOK}={hook}",) if hook else ()
    return [*host.exec, *CLEAN_ENV, *env, "/usr/bin/python3", str(PYZ), "--config", config,
            "--user", "alice", *args]  # fmt: skip


def login(host: ClientHost, account: Account, hook: str | None = None):
    """``credroam-agent login`` for alice on ``host``, her password on stdin as PAM gives it."""
    return subprocess.run(
        _argv(host, "login", hook=hook),
        input=f"{account.password}\0",
        capture_output=True,
        text=True,
        timeout=300,
    )


class Paused:
    """An agent stopped by its test hook at one step; ``resume`` lets it finish."""

    def __init__(self, process: subprocess.Popen, pid: int, stderr: str) -> None:
        self.process, self.pid, self.stderr = process, pid, stderr

    def resume(self) -> subprocess.CompletedProcess[str]:
        os.kill(self.pid, signal.SIGCONT)
        out, err = self.process.communicate(timeout=300)
        return subprocess.CompletedProcess(self.process.args, self.process.returncode, out,
                                           self.stderr + err)  # fmt: skip


def _stopped_state(pid: int) -> bool:
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().rsplit(")", 1)[1].split()[0] == "T"


@contextmanager
def paused_login(host: ClientHost, account: Account, step: str) -> Iterator[Paused]:
    process = subprocess.Popen(
        _argv(host, "login", hook=f"stop:{step}"),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    process.stdin.write(f"{account.password}\0")
    process.stdin.close()
    process.stdin = None  # given: communicate() must not flush it again
    seen = []
    for line in process.stderr:
        seen.append(line)
        if f"test hook: stop at {step}" in line:
            break
    else:
        process.wait(timeout=60)
        pytest.fail(f"the agent ended before {step}: {''.join(seen)}")
    pid = int(line.rsplit("pid ", 1)[1].split(")")[0])
    deadline = time.monotonic() + 60
    while not _stopped_state(pid):  # the SIGSTOP follows the line at once
        assert time.monotonic() < deadline, f"agent {pid} never stopped"
        time.sleep(0.01)
    paused = Paused(process, pid, "".join(seen))
    try:
        yield paused
    finally:
        if process.poll() is None:
            os.kill(pid, signal.SIGCONT)
            process.wait(timeout=300)


def local_problems(lab: Lab, host: ClientHost) -> list[str]:
    """What alice's store listing and state file reported on ``host`` (empty: both valid)."""
    home = "/home/alice"
    script = CHECK_LOCAL.format(
        pyz=str(PYZ), store=f"{home}/{STORE}", state=f"{home}/.local/state/credroam/state.json"
    )
    run = host.run("runuser", "-u", "alice", "--", "/usr/bin/python3", "-c", script)
    return run.stdout.splitlines()[1:]


def assert_valid(lab: Lab, host: ClientHost, account: Account) -> None:
    """A valid local store and state file on ``host``, and a valid directory on every DC."""
    assert local_problems(lab, host) == []
    for dc in range(len(lab.dcs)):
        conn = connect_as(lab, account, dc)
        try:
            assert read_roaming(conn, account.dn).rejected == ()
        finally:
            conn.unbind()


def assert_next_sync_completes(lab: Lab, host: ClientHost, account: Account) -> None:
    done = login(host, account)
    assert done.returncode == 0, done.stderr
    assert events(done) == [1], done.stderr
    assert_valid(lab, host, account)


def _pair(thumb: str) -> set[str]:
    return {f"%3\\{thumb}", f"%9\\{thumb}"}


def test_the_dc_stopped_between_the_read_and_the_write(agent_lab, alice):
    lab, host = agent_lab, agent_lab.client(0)
    assert login(host, alice).returncode == 0  # the roaming key exists and is cached
    thumb, _ = new_certificate(host, "alice", "written while the DC dies")
    before = store_files(lab, host, "alice")

    with paused_login(host, alice, SyncStep.PLANNED) as agent, stopped(lab.dc(0)):
        failed = agent.resume()  # its modify gets no answer (timeout = 5 s in the config)
    # The write is reported with the DC at fault (1004: the directory could not be written).
    assert failed.returncode == 1 and events(failed) == [1004], failed.stderr
    assert "to dc1.lab.example failed" in failed.stderr and "timed out" in failed.stderr
    assert store_files(lab, host, "alice") == before
    assert_valid(lab, host, alice)
    assert_next_sync_completes(lab, host, alice)
    assert _pair(thumb) <= directory_keys(lab, alice)


def test_the_network_cut_in_the_hosts_namespace_mid_sync(agent_lab, alice):
    lab, host = agent_lab, agent_lab.client(0)
    assert login(host, alice).returncode == 0
    thumb, _ = new_certificate(host, "alice", "written while the link is down")
    before = store_files(lab, host, "alice")

    with paused_login(host, alice, SyncStep.PLANNED) as agent:
        host.run("ip", "link", "set", "eth0", "down")
        try:
            failed = agent.resume()
        finally:
            host.run("ip", "link", "set", "eth0", "up")
    assert failed.returncode in (1, 3) and set(events(failed)) & {1004, 1010}, failed.stderr
    assert "dc1.lab.example" in failed.stderr
    assert store_files(lab, host, "alice") == before
    assert_valid(lab, host, alice)
    assert_next_sync_completes(lab, host, alice)
    assert _pair(thumb) <= directory_keys(lab, alice)


@contextmanager
def writes_denied(lab: Lab, account: Account) -> Iterator[None]:
    """An ACE denying the user (SELF) every property write on their own object, first in its
    DACL; the DACL put back as it was afterwards (on every DC)."""
    admin = lab.ldap_connection()
    dacl_only = security_descriptor_control(sdflags=0x04)
    admin.search(account.dn, "(objectClass=*)", ldap3.BASE, attributes=["nTSecurityDescriptor"],
                 controls=dacl_only)  # fmt: skip
    original = admin.response[0]["raw_attributes"]["nTSecurityDescriptor"][0]
    lab.dc(0).run(
        "samba-tool", "dsacl", "set", f"--objectdn={account.dn}", "--sddl=(D;;WP;;;PS)",
        f"-U{lab.admin.upn}%{lab.admin.password}", "-H", f"ldap://{lab.dc(0).ip}",
    )  # fmt: skip
    try:
        yield
    finally:
        admin.modify(account.dn, {"nTSecurityDescriptor": [(ldap3.MODIFY_REPLACE, [original])]},
                     controls=dacl_only)  # fmt: skip
        admin.unbind()
        for index in range(1, len(lab.dcs)):
            replicate(lab, 0, index)


def test_an_ldap_modify_refused_by_an_acl(agent_lab, alice):
    lab, host = agent_lab, agent_lab.client(0)
    assert login(host, alice).returncode == 0
    thumb, _ = new_certificate(host, "alice", "refused by the ACL")
    before = store_files(lab, host, "alice")

    with writes_denied(lab, alice):
        refused = login(host, alice)
    assert refused.returncode == 1, refused.stderr
    assert 1004 in events(refused) and "insufficientAccessRights" in refused.stderr
    assert store_files(lab, host, "alice") == before
    assert not _pair(thumb) & directory_keys(lab, alice)
    assert_valid(lab, host, alice)
    assert_next_sync_completes(lab, host, alice)
    assert _pair(thumb) <= directory_keys(lab, alice)


def _seed_directory(lab: Lab, account: Account) -> str:
    """A certificate and key that host 0 uploads, for host 1 to download."""
    thumb, _ = new_certificate(lab.client(0), "alice", "to download")
    assert login(lab.client(0), account).returncode == 0
    return thumb


@contextmanager
def mounted(host: ClientHost, *mount: str, target: str) -> Iterator[None]:
    """A mount in the host's own mount namespace, unmounted afterwards."""
    # Made by alice herself: folders root made above her store would lock her out of them.
    host.run("runuser", "-u", "alice", "--", "mkdir", "-p", "-m", "700", target)
    host.run("mount", *mount, target)
    try:
        yield
    finally:
        host.run("umount", target)
        assert target not in host.run("cat", "/proc/self/mounts").stdout


def test_the_store_on_a_tiny_full_filesystem(agent_lab, alice):
    lab, host = agent_lab, agent_lab.client(1)
    thumb = _seed_directory(lab, alice)
    store = f"/home/alice/{STORE}"
    alice_id = uid(host, "alice")
    options = f"size=16k,mode=0700,uid={alice_id},gid={alice_id}"
    try:
        with mounted(host, "-t", "tmpfs", "-o", options, "tmpfs", target=store):
            fill = f"dd if=/dev/zero of={store}/filler bs=4096 2>/dev/null; true"
            host.run("runuser", "-u", "alice", "--", "sh", "-c", fill)
            full = login(host, alice)
            assert full.returncode == 1, full.stderr
            assert {1002, 1006} & set(events(full)), full.stderr
            assert "No space left on device" in full.stderr
            assert local_problems(lab, host) == []
            host.run("rm", f"{store}/filler")
            assert_next_sync_completes(lab, host, alice)
            assert {f"MY/{thumb}.cert.pem", f"MY/{thumb}.key.pem"} <= set(
                host.run("sh", "-c", f"cd {store} && find MY -type f").stdout.split()
            )
    finally:
        host.run("rm", "-rf", "/home/alice/.local")  # the state named the tmpfs's items


def test_a_read_only_store(agent_lab, alice):
    lab, host = agent_lab, agent_lab.client(1)
    _seed_directory(lab, alice)
    assert login(host, alice).returncode == 0  # the store exists, in sync
    later, _ = new_certificate(lab.client(0), "alice", "arrives after the store is writable")
    assert login(lab.client(0), alice).returncode == 0
    store = f"/home/alice/{STORE}"
    before = store_files(lab, host, "alice")
    with mounted(host, "--bind", store, target=store):
        host.run("mount", "-o", "remount,bind,ro", store)
        refused = login(host, alice)
    assert refused.returncode == 1, refused.stderr
    assert "Read-only file system" in refused.stderr
    assert store_files(lab, host, "alice") == before
    assert_valid(lab, host, alice)
    assert_next_sync_completes(lab, host, alice)
    assert f"MY/{later}.cert.pem" in store_files(lab, host, "alice")


def test_two_syncs_of_one_user_at_once_on_one_host(agent_lab, alice):
    lab, host = agent_lab, agent_lab.client(0)
    assert login(host, alice).returncode == 0
    thumb, _ = new_certificate(host, "alice", "synced by the first of two")
    with paused_login(host, alice, SyncStep.PLANNED) as first:
        second = login(host, alice)
        done = first.resume()
    assert second.returncode == 1 and events(second) == [1001], second.stderr
    assert "another credroam sync of" in second.stderr
    assert done.returncode == 0 and events(done) == [1], done.stderr
    assert _pair(thumb) <= directory_keys(lab, alice)
    assert_valid(lab, host, alice)
    assert_next_sync_completes(lab, host, alice)


@pytest.mark.parametrize(
    "step",
    [SyncStep.DIRECTORY_WRITTEN, SyncStep.STORE_HALF_WRITTEN, SyncStep.BASE_NOT_SAVED],
)
def test_the_agent_killed_at_a_step_of_applying_its_plan(agent_lab, alice, step):
    # One plan that writes at every step: host 1 uploads its own certificate and key and
    # downloads the pair host 0 roamed (two local writes, so the store can be half written).
    lab, host = agent_lab, agent_lab.client(1)
    roamed = _seed_directory(lab, alice)
    own, _ = new_certificate(host, "alice", "host 1's own")

    killed = login(host, alice, hook=f"kill:{step}")
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert f"test hook: kill at {step}" in killed.stderr
    assert_valid(lab, host, alice)
    assert_next_sync_completes(lab, host, alice)
    files = store_files(lab, host, "alice")
    for thumb in (roamed, own):
        assert {f"MY/{thumb}.cert.pem", f"MY/{thumb}.key.pem"} <= set(files)
    assert _pair(roamed) | _pair(own) <= directory_keys(lab, alice)
    assert_next_sync_completes(lab, host, alice)  # and nothing is left to do
