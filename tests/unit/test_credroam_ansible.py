"""The Ansible glue every directory module shares: failures name the DC, opt-outs are loud."""

from __future__ import annotations

import socket

import pytest

pytest.importorskip("ansible", reason="a module test: needs Ansible (.venv/bin/pytest runs it)")

from ansible.module_utils.credroam.errors import DirectoryError
from ansible.module_utils.credroam_ansible import (
    DIRECTORY_FAILURES,
    connect_or_fail,
    failure_message,
    ldap_argument_spec,
)
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
