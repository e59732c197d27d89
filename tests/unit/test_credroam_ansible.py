"""The Ansible glue every directory module shares: failures name the DC, opt-outs are loud."""

from __future__ import annotations

import importlib
import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("ansible", reason="a module test: needs Ansible (.venv/bin/pytest runs it)")

from ansible.module_utils.credroam.errors import DirectoryError
from ansible.module_utils.credroam.gpo.model import GpoError
from ansible.module_utils.credroam.gpo.sysvol import SysvolError
from ansible.module_utils.credroam_ansible import (
    DIRECTORY_FAILURES,
    connect_or_fail,
    exit_with_diff,
    failure_message,
    ldap_argument_spec,
)
from ansible.module_utils.testing import patch_module_args
from ldap3.core.exceptions import LDAPSocketReceiveError


class Failed(Exception):
    pass


class RecordingModule:
    def __init__(self, **params):
        self.params = {name: spec.get("default") for name, spec in ldap_argument_spec().items()}
        self.params.update(params)
        self.warnings: list[str] = []

    def warn(self, message: str) -> None:
        self.warnings.append(message)

    def fail_json(self, **result):
        raise Failed(result["msg"])


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_an_ldap3_network_error_after_the_bind_is_a_failure_naming_the_dc():
    error = LDAPSocketReceiveError("connection reset by peer")
    assert isinstance(error, DIRECTORY_FAILURES)
    message = failure_message(error, {"server": "dc2.lab.example"})
    assert message.startswith("LDAP error talking to dc2.lab.example: LDAPSocketReceiveError")


@pytest.mark.parametrize(
    "error",
    [
        GpoError("link target 'OU=Nope,DC=lab,DC=example' does not exist"),
        SysvolError("cannot open an SMB session to dc2.lab.example as admin: timed out"),
        DirectoryError("reading CN=Schema failed on dc1: noSuchObject"),
    ],
    ids=lambda error: type(error).__name__,
)
def test_credroam_errors_are_not_labelled_as_ldap_errors(error):
    # They name their own cause (a missing OU, an SMB server); "LDAP error" would mislead.
    assert isinstance(error, DIRECTORY_FAILURES)
    assert failure_message(error, {"server": "dc1"}) == str(error)


def test_our_own_errors_keep_their_message():
    error = DirectoryError("reading CN=Schema failed on dc1: noSuchObject")
    assert failure_message(error, {"server": "dc1"}) == str(error)


def test_turning_certificate_validation_off_warns_and_an_unreachable_dc_is_named():
    port = closed_port()
    module = RecordingModule(
        server="127.0.0.1", port=port, validate_certs=False, bind_user="u", bind_password="p"
    )
    with pytest.raises(Failed, match=rf"127\.0\.0\.1:{port}"):
        connect_or_fail(module)
    assert len(module.warnings) == 1
    assert "certificate validation is off" in module.warnings[0]


def test_validation_on_is_silent():
    module = RecordingModule(
        server="127.0.0.1", port=closed_port(), bind_user="u", bind_password="p"
    )
    with pytest.raises(Failed):
        connect_or_fail(module)
    assert module.warnings == []


class ExitingModule:
    def __init__(self, diff: bool) -> None:
        self._diff = diff
        self.result: dict | None = None

    def exit_json(self, **result):
        self.result = result


@pytest.mark.parametrize("diff_mode", [True, False])
def test_the_diff_is_returned_only_in_diff_mode(diff_mode):
    module = ExitingModule(diff_mode)
    exit_with_diff(module, {"changed": True, "diff": {"before": "a\n", "after": "b\n"}})
    expected = {"changed": True}
    if diff_mode:
        expected["diff"] = {"before": "a\n", "after": "b\n"}
    assert module.result == expected


# --- every module: arguments checked before any traffic, missing libraries named -----------

LIBRARY = Path(__file__).resolve().parents[2] / "library"
# Modules that reach the DCs themselves (credroam_sync runs the agent, which finds its own DCs).
DIRECTORY_MODULES = sorted(
    path.stem
    for path in LIBRARY.glob("*.py")
    if "server" in importlib.import_module(path.stem).argument_spec()
)


def run_module(name: str, args: dict, capsys) -> dict:
    """main() of a library module as Ansible runs it; its JSON answer."""
    module = importlib.import_module(name)
    with patch_module_args(args), pytest.raises(SystemExit):
        module.main()
    return json.loads(capsys.readouterr().out)


def dead_dc(**args) -> dict:
    """Arguments aimed at a loopback port nothing listens on: a module that checked its
    arguments first fails with the argument's message, never with an unreachable DC."""
    return {
        "server": "127.0.0.1",
        "port": closed_port(),
        "bind_user": "Administrator@lab.example",
        "bind_password": "secret",
        **args,
    }


@pytest.mark.parametrize(
    ("name", "args", "message"),
    [
        (
            "ad_gpo",
            {"name": "Roaming", "credential_roaming": {"tombstone_days": -1}},
            "invalid GPO settings: ",
        ),
        (
            "ad_gpo",
            {"name": "Roaming", "credential_roaming": {"max_tokens": 0}},
            "invalid GPO settings: ",
        ),
        ("ad_gpo", {"name": "Roaming", "smb_port": 0}, "invalid SMB settings: smb_port 0"),
        (
            "ad_gpo",
            {"name": "Roaming", "bind_user": "CN=admin,DC=lab,DC=example"},
            "invalid SMB settings: bind user 'CN=admin,DC=lab,DC=example' is a DN",
        ),
        ("ad_gpo", {"name": "Roaming", "timeout": 0}, "invalid connection settings: timeout"),
        ("ad_gpo_info", {"name": "Roaming", "smb_port": 70000}, "invalid SMB settings"),
        ("ad_gpo_info", {"name": "Roaming", "port": 0}, "invalid connection settings: port 0"),
        ("ad_schema", {"preset": "credroam", "replication_timeout": 0}, "replication_timeout"),
        ("ad_schema", {"preset": "credroam", "timeout": -1}, "invalid connection settings"),
        (
            "ad_schema",
            {"attributes": [{"name": "x", "syntax": "dn-binary"}]},
            "invalid schema definition: ",
        ),
    ],
)
def test_a_bad_argument_is_reported_before_any_network_traffic(name, args, message, capsys):
    result = run_module(name, dead_dc(**args), capsys)
    assert result["failed"] is True
    assert result["msg"].startswith(message), result["msg"]
    assert "cannot reach" not in result["msg"]


def required_args(name: str) -> dict:
    """What a module needs besides the connection before it would talk to a DC."""
    if name != "credroam_recovery":
        return {"name": "Roaming", "preset": "credroam", "user": "alice"}
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    secret = "one-time-secret-1"
    return {
        "operation": "recover",
        "user": "alice",
        "one_time_secret": secret,
        "recovery_key": pem.decode(),
    }


@pytest.mark.parametrize("name", DIRECTORY_MODULES)
def test_an_unreachable_dc_is_named_after_the_arguments_passed(name, capsys):
    args = dead_dc(**required_args(name))
    args = {key: value for key, value in args.items() if key in module_options(name)}
    result = run_module(name, args, capsys)
    assert result["msg"].startswith(f"cannot reach the domain controller 127.0.0.1:{args['port']}")


def module_options(name: str) -> set[str]:
    return set(importlib.import_module(name).argument_spec())


# Runs one module with the named top-level packages made unimportable, as on a controller
# whose Python lacks them.
HIDDEN_LIBRARY_RUNNER = """
import importlib.abc, json, runpy, sys

hidden, module_utils, module_path, args = sys.argv[1:]
hidden = set(hidden.split(","))


class Hide(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path, target=None):
        if fullname.split(".")[0] in hidden:
            raise ModuleNotFoundError(f"No module named {fullname!r}", name=fullname)
        return None


sys.meta_path.insert(0, Hide())
import ansible.module_utils
from ansible.module_utils.testing import patch_module_args

ansible.module_utils.__path__.append(module_utils)
with patch_module_args(json.loads(args)):
    runpy.run_path(module_path, run_name="__main__")
"""


@pytest.mark.parametrize(
    ("name", "hidden", "package"),
    [
        ("ad_schema", "ldap3", "ldap3"),
        ("ad_gpo", "ldap3", "ldap3"),
        ("ad_gpo_info", "ldap3", "ldap3"),
        ("ad_gpo", "smbclient,smbprotocol", "smbprotocol"),
        ("ad_gpo_info", "smbclient,smbprotocol", "smbprotocol"),
    ],
)
def test_a_missing_library_is_named_by_the_module(name, hidden, package):
    args = dead_dc(name="Roaming", preset="credroam", user="alice")
    args = {key: value for key, value in args.items() if key in module_options(name)}
    run = subprocess.run(
        [
            sys.executable,
            "-c",
            HIDDEN_LIBRARY_RUNNER,
            hidden,
            str(LIBRARY.parent / "module_utils"),
            str(LIBRARY / f"{name}.py"),
            json.dumps(args),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    result = json.loads(run.stdout)
    assert result["failed"] is True, result
    assert result["msg"].startswith(f"Failed to import the required Python library ({package})")
