"""credroam_info refuses bad arguments before any network I/O, naming the argument at fault."""

from __future__ import annotations

import json
from typing import Any

import pytest

pytest.importorskip("ansible", reason="a module test: needs Ansible (.venv/bin/pytest runs it)")

import credroam_info
from ansible.module_utils.testing import patch_module_args

BASE_ARGS = {
    "server": "dc1.lab.example",
    "bind_user": "audit@lab.example",
    "bind_password": "secret",
}


def run_module(args: dict[str, Any], monkeypatch, capsys) -> dict:
    def no_network(*_args, **_kwargs):
        raise AssertionError("the module must not connect")

    monkeypatch.setattr(credroam_info, "connect_or_fail", no_network)
    monkeypatch.setattr(credroam_info, "connect", no_network)
    with patch_module_args({**BASE_ARGS, **args}), pytest.raises(SystemExit):
        credroam_info.main()
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"credential_roaming": {"max_tokens": 0}}, "credential_roaming: "),
        ({"credential_roaming": {"tombstone_days": 4000}}, "between 1 and 3650"),
        ({"page_size": 5000}, "page_size must be 1-1000"),
        ({"sizing": {"machines": 0}}, "sizing: every value must be at least 1"),
        ({"checks": ["user.limits", "user.nonsense"]}, "checks: unknown user.nonsense"),
        ({"fail_on_severity": "severe"}, "fail_on_severity"),
        ({"agent_version": "latest"}, "hosts: agent_version 'latest' is not a version"),
        ({"max_sync_age_hours": 0}, "hosts: max_sync_age_hours must be at least 1"),
        ({"hosts": [{"host": "client1", "agnt": 1}]}, "host facts of client1: unknown keys agnt"),
        ({"hosts": [{"error": "x"}]}, "host facts of ?: no host name"),
        (
            {"schema_attributes": [{"name": "credroamX", "syntax": "nonsense"}]},
            "invalid schema definition: attribute 'credroamX'.syntax must be one of",
        ),
    ],
)
def test_bad_arguments_fail_before_any_connection(args, message, monkeypatch, capsys):
    result = run_module(args, monkeypatch, capsys)
    assert result["failed"] and message in result["msg"]


def test_the_password_is_never_logged():
    assert credroam_info.argument_spec()["bind_password"]["no_log"] is True
