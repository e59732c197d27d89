"""The agent works as the user: root drops to the user first, anyone else works only for
itself. Each case runs in a child process, since dropping privileges cannot be undone."""

from __future__ import annotations

import json
import os
import pwd
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
CHILD = """
import json, os, sys
sys.path[:0] = [{agent!r}, {core!r}]
from credroam_agent.identity import IdentityError, become_user
try:
    user = become_user({name!r})
except IdentityError as exc:
    print(json.dumps({{"refused": str(exc)}}))
else:
    print(json.dumps({{"uid": os.getuid(), "euid": os.geteuid(), "gid": os.getgid(),
                       "groups": os.getgroups(), "home": os.environ["HOME"], "name": user.name}}))
"""
root_only = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to drop privileges")


def in_child(name: str | None, *, as_user: str | None = None, env: dict | None = None) -> dict:
    code = CHILD.format(agent=str(REPO / "agent"), core=str(REPO / "module_utils"), name=name)
    prefix = []
    if as_user:
        entry = pwd.getpwnam(as_user)
        prefix = ["setpriv", f"--reuid={entry.pw_uid}", f"--regid={entry.pw_gid}", "--clear-groups"]
    done = subprocess.run(
        [*prefix, "/usr/bin/python3", "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, **(env or {})},
        cwd="/",
    )
    return json.loads(done.stdout)


@root_only
def test_root_drops_to_the_user_for_good():
    nobody = pwd.getpwnam("nobody")
    seen = in_child("nobody")
    assert (seen["uid"], seen["euid"], seen["gid"]) == (nobody.pw_uid,) * 2 + (nobody.pw_gid,)
    assert 0 not in seen["groups"]
    assert seen["home"] == nobody.pw_dir


@root_only
def test_root_without_a_user_refuses_to_work_on_a_store():
    env = {"PAM_USER": ""}
    assert "--user" in in_child(None, env=env)["refused"]


@root_only
def test_root_takes_the_user_from_pam():
    assert in_child(None, env={"PAM_USER": "nobody"})["name"] == "nobody"


@root_only
def test_a_user_refuses_to_work_on_another_users_store():
    refused = in_child("root", as_user="nobody")["refused"]
    assert "running as nobody" in refused and "root" in refused


@root_only
def test_root_itself_is_never_roamed():
    assert "root" in in_child("root")["refused"]
