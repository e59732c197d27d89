"""The PAM hook without a lab: pam_exec's stdin and environment given by hand, a stand-in
agent, and the unprivileged account `nobody` as the user (the hook runs as root, as under PAM).
The real SSH login through PAM is tests/integration/test_agent_triggers.py."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import io
import json
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

HOOK = Path(__file__).resolve().parents[3] / "agent" / "pam" / "pam-hook"
WAIT = 30.0

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="the hook hands over from root")


def load_hook():
    loader = importlib.machinery.SourceFileLoader("credroam_pam_hook", str(HOOK))
    spec = importlib.util.spec_from_loader(loader.name, loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


hook = load_hook()
NOBODY = pwd.getpwnam("nobody")


@pytest.mark.parametrize(
    ("written", "password"),
    [(b"secret\0", b"secret"), (b"secret", b"secret"), (b"pa\0ss\0", b"pa\0ss"), (b"", b"")],
)
def test_the_password_is_what_pam_exec_wrote_without_its_trailing_nul(written, password):
    assert hook.read_password(io.BytesIO(written)) == password


def test_the_agent_gets_the_user_s_environment_and_the_ticket_cache_only(monkeypatch):
    monkeypatch.setenv("KRB5CCNAME", "FILE:/tmp/krb5cc_65534")
    monkeypatch.setenv("PAM_SERVICE", "sshd")
    monkeypatch.setenv("LD_PRELOAD", "/tmp/evil.so")
    monkeypatch.delenv("LANG", raising=False)
    env = hook.user_environment(NOBODY, "/run/user/65534")
    assert env == {
        "HOME": NOBODY.pw_dir,
        "USER": "nobody",
        "LOGNAME": "nobody",
        "SHELL": NOBODY.pw_shell,
        "PATH": hook.SAFE_PATH,
        "XDG_RUNTIME_DIR": "/run/user/65534",
        "KRB5CCNAME": "FILE:/tmp/krb5cc_65534",
        "PAM_SERVICE": "sshd",
    }


@needs_root
def test_the_runtime_folder_is_made_0700_for_the_user(tmp_path):
    base = tmp_path / "user"
    path = hook.ensure_runtime_dir(NOBODY, str(base))
    assert path == str(base / str(NOBODY.pw_uid))
    info = os.stat(path)
    assert (info.st_uid, info.st_mode & 0o7777) == (NOBODY.pw_uid, 0o700)
    assert hook.ensure_runtime_dir(NOBODY, str(base)) == path  # as pam_systemd left it: fine


@needs_root
@pytest.mark.parametrize("case", ["someone else's", "too open", "a symlink"])
def test_a_runtime_folder_that_is_not_the_user_s_is_left_alone(tmp_path, case):
    base = tmp_path / "user"
    base.mkdir()
    path = base / str(NOBODY.pw_uid)
    if case == "a symlink":
        (tmp_path / "target").mkdir(mode=0o700)
        os.chown(tmp_path / "target", NOBODY.pw_uid, NOBODY.pw_gid)
        path.symlink_to(tmp_path / "target")
    else:
        path.mkdir(mode=0o700)
        os.chown(path, 0 if case == "someone else's" else NOBODY.pw_uid, NOBODY.pw_gid)
        path.chmod(0o755 if case == "too open" else 0o700)
    before = os.lstat(path)
    assert hook.ensure_runtime_dir(NOBODY, str(base)) is None
    after = os.lstat(path)
    assert (after.st_uid, after.st_mode) == (before.st_uid, before.st_mode)


STAND_IN = """#!/bin/sh
# credroam-agent stand-in: records its uid, argv and stdin length; login waits for a release.
length=$(wc -c)
printf '{"argv": "%s", "uid": %s, "stdin_len": %s, "xdg": "%s"}' "$*" "$(id -u)" "$length" \
  "$XDG_RUNTIME_DIR" > "$(dirname "$0")/$1.json"
n=0
while [ "$1" = login ] && [ ! -e "$(dirname "$0")/release" ] && [ $n -lt 1200 ]; do
  sleep 0.05; n=$((n + 1))
done
"""


def run_hook(folder: Path, pam_type: str, user: str, stdin: bytes, *options: str):
    env = {"PATH": "/usr/bin:/bin", "PAM_TYPE": pam_type, "PAM_USER": user}
    argv = ["/usr/bin/python3", str(HOOK), "--runtime-base", str(folder / "run-user"), *options]
    return subprocess.run(argv, input=stdin, env=env, capture_output=True, timeout=WAIT)


@pytest.fixture
def open_tmp() -> Iterator[Path]:
    """Like tmp_path, but a folder the user may enter (pytest's own are root's, 0700)."""
    path = Path(tempfile.mkdtemp(prefix="credroam-pam-hook-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def agent(open_tmp: Path) -> Path:
    folder = open_tmp / "agent"
    folder.mkdir()
    folder.chmod(0o777)  # the stand-in writes there as the user
    script = folder / "credroam-agent"
    script.write_text(STAND_IN)
    script.chmod(0o755)
    return script


def wait_for_json(path: Path) -> dict:
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        if path.exists() and path.read_text():
            return json.loads(path.read_text())
        time.sleep(0.05)
    pytest.fail(f"{path} never appeared")


@needs_root
def test_auth_starts_login_as_the_user_with_the_password_and_returns_at_once(open_tmp, agent):
    try:
        done = run_hook(open_tmp, "auth", "nobody", b"Pass-word1\0", "--agent", str(agent))
        # The hook has exited while the agent waits for its release: the logon went on.
        assert done.returncode == 0
        record = wait_for_json(agent.parent / "login.json")
    finally:
        (agent.parent / "release").touch()
    runtime = open_tmp / "run-user" / str(NOBODY.pw_uid)
    assert record == {
        "argv": "login --user nobody",
        "uid": NOBODY.pw_uid,
        "stdin_len": len(b"Pass-word1"),
        "xdg": str(runtime),
    }


@needs_root
def test_session_close_runs_purge_as_the_user(open_tmp, agent):
    done = run_hook(open_tmp, "close_session", "nobody", b"", "--agent", str(agent))
    assert done.returncode == 0
    record = json.loads((agent.parent / "purge.json").read_text())  # synchronous: already there
    assert (record["argv"], record["uid"], record["stdin_len"]) == (
        "purge --user nobody",
        NOBODY.pw_uid,
        0,
    )


@needs_root
@pytest.mark.parametrize(
    ("pam_type", "user", "options"),
    [
        ("auth", "root", ()),  # root never roams
        ("auth", "no-such-user-here", ()),
        ("account", "nobody", ()),
        ("auth", "nobody", ("--no-such-option",)),
    ],
)
def test_nothing_runs_and_the_logon_never_fails(open_tmp, agent, pam_type, user, options):
    done = run_hook(open_tmp, pam_type, user, b"pw\0", "--agent", str(agent), *options)
    assert done.returncode == 0
    assert sorted(p.name for p in agent.parent.iterdir()) == ["credroam-agent"]


@needs_root
def test_an_agent_that_hangs_is_stopped_at_the_timeout(open_tmp):
    hanging = open_tmp / "hanging-agent"
    hanging.write_text("#!/bin/sh\nexec sleep 600\n")
    hanging.chmod(0o755)
    started = time.monotonic()
    done = run_hook(
        open_tmp, "close_session", "nobody", b"", "--agent", str(hanging), "--purge-timeout", "0.5"
    )
    assert done.returncode == 0
    assert b"purge for nobody: stopped after 0.5 s" in done.stderr
    assert time.monotonic() - started < WAIT
