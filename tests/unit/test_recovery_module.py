"""credroam_recovery: arguments refused before any network I/O, and a run against the fake
directory (one-time record; rotation in check mode, for real, and again with nothing to do)."""

from __future__ import annotations

import json
import types
from typing import Any

import pytest

pytest.importorskip("ansible", reason="a module test: needs Ansible (.venv/bin/pytest runs it)")

import credroam_recovery
from ansible.module_utils.testing import patch_module_args
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from credroam.roaming.envelope import public_key_id
from tests.unit.test_key_recovery import recovery_ids
from tests.unit.test_roamingkey import obtain, public_pem, values
from tests.unit.test_sync import USER_DN, FakeDirectory

BASE_ARGS = {"server": "dc1.lab.example", "bind_user": "admin@lab.example", "bind_password": "pw"}
SECRET = "helpdesk-one-time-9F3K"


def private_pem(key: rsa.RSAPrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


@pytest.fixture(scope="module")
def keys() -> tuple[rsa.RSAPrivateKey, rsa.RSAPrivateKey]:
    return tuple(rsa.generate_private_key(public_exponent=65537, key_size=2048) for _ in "ab")


def run_module(args: dict[str, Any], monkeypatch, capsys, directory=None) -> dict:
    def connect(*_args, **_kwargs):
        if directory is None:
            raise AssertionError("the module must not connect")
        directory.unbind = lambda: None
        return directory

    monkeypatch.setattr(credroam_recovery, "connect_or_fail", connect)
    root = types.SimpleNamespace(default_naming_context="DC=lab,DC=example")
    monkeypatch.setattr(credroam_recovery, "read_root_dse", lambda conn: root)
    monkeypatch.setattr(credroam_recovery, "roaming_key_holders", lambda *a: iter([USER_DN]))
    with patch_module_args({**BASE_ARGS, **args}), pytest.raises(SystemExit):
        credroam_recovery.main()
    out = capsys.readouterr().out
    assert SECRET not in out and "PRIVATE KEY" not in out
    return json.loads(out)


def test_bad_arguments_fail_before_any_connection(keys, tmp_path, monkeypatch, capsys):
    old = private_pem(keys[0])
    cases = [
        ({"operation": "recover", "user": "alice"}, "recovery_key or"),
        (
            {"operation": "recover", "user": "alice", "recovery_key": "junk"},
            "recovery_key: cannot load",
        ),
        (
            {"operation": "recover", "recovery_key": old, "one_time_secret": SECRET},
            "needs user",
        ),
        (
            {
                "operation": "recover",
                "user": "a",
                "recovery_key": old,
                "one_time_secret": "x",
            },
            "at least 12 characters",
        ),
        ({"operation": "rotate", "recovery_key": old}, "needs new_recovery_public_key"),
        (
            {
                "operation": "rotate",
                "recovery_key": old,
                "new_recovery_public_key": public_pem(keys[0]).decode(),
            },
            "is the current recovery key's own",
        ),
        (
            {
                "operation": "rotate",
                "recovery_key_file": str(tmp_path / "absent.pem"),
                "new_recovery_public_key": "x",
            },
            f"cannot read {tmp_path / 'absent.pem'}",
        ),
    ]
    for args, message in cases:
        result = run_module(args, monkeypatch, capsys)
        assert result["failed"] and message in result["msg"], (args, result["msg"])


def test_recover_then_rotate_with_check_mode_and_a_second_run(keys, tmp_path, monkeypatch, capsys):
    old, new = keys
    directory = FakeDirectory()
    key, _ = obtain(directory, str(tmp_path / "k"), recovery_public_keys=[public_pem(old)])
    recover = {
        "operation": "recover",
        "user": "alice",
        "one_time_secret": SECRET,
        "recovery_key": private_pem(old),
        "_ansible_diff": True,
    }
    result = run_module(recover, monkeypatch, capsys, directory)
    assert result["changed"] and len(result["operations"]) == 1
    assert obtain(directory, str(tmp_path / "k2"), password=SECRET)[0] == key
    assert "password record" in result["diff"][0]["after"]

    rotate = {
        "operation": "rotate",
        "recovery_key": private_pem(old),
        "new_recovery_public_key": public_pem(new).decode(),
        "_ansible_diff": True,
    }
    before = values(directory)
    checked = run_module({**rotate, "_ansible_check_mode": True}, monkeypatch, capsys, directory)
    assert checked["changed"] and len(checked["operations"]) == 1
    assert values(directory) == before
    done = run_module(rotate, monkeypatch, capsys, directory)
    assert done["changed"] and recovery_ids(directory) == [public_key_id(public_pem(new))]
    assert f"for recovery key {public_key_id(public_pem(new))[:16]}" in done["diff"][0]["after"]
    again = run_module(rotate, monkeypatch, capsys, directory)
    assert not again["changed"] and again["operations"] == [] and again["diff"] == []
