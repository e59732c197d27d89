"""credroam_tokens: every argument is checked before any network I/O (a bad one is reported as
such even with no DC); its choices are the core's."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("ansible", reason="a module test: needs Ansible (.venv/bin/pytest runs it)")

import credroam_tokens
from ansible.module_utils.testing import patch_module_args

from credroam.roaming import tokenops

# An address nothing listens on: a module that reached the network would fail differently.
CONNECTION = {"server": "192.0.2.1", "bind_user": "admin@lab.example", "bind_password": "pw"}


def run_module(args: dict, monkeypatch, capsys) -> dict:
    def no_network(*_args, **_kwargs):
        raise AssertionError("the module went to the network before checking its arguments")

    monkeypatch.setattr(credroam_tokens, "connect_or_fail", no_network)
    with patch_module_args({**CONNECTION, **args}), pytest.raises(SystemExit):
        credroam_tokens.main()
    return json.loads(capsys.readouterr().out)


def test_the_modules_choices_are_the_cores():
    assert credroam_tokens.PRUNE_KINDS == tokenops.PRUNE_KINDS
    assert credroam_tokens.PURGE_FORMS == tokenops.PURGE_FORMS


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"operation": "purge"}, "set confirm=true"),
        ({"operation": "remove"}, "needs token"),
        ({"operation": "export"}, "needs path"),
        ({"operation": "prune", "prune": ["archived"]}, "archived_older_than_days"),
        ({"operation": "prune", "tombstone_days": 0}, "tombstone_days"),
        ({"operation": "export", "path": "/nonexistent/folder/a.json"}, "does not exist"),
    ],
)
def test_bad_arguments_fail_before_any_network_io(args, message, monkeypatch, capsys):
    result = run_module({"user": "alice", **args}, monkeypatch, capsys)
    assert result["failed"] and message in result["msg"]


def test_an_import_file_that_is_not_an_export_is_refused_before_any_network_io(
    tmp_path, monkeypatch, capsys
):
    path = tmp_path / "x.json"
    path.write_text(json.dumps({"format": tokenops.EXPORT_FORMAT, "version": 9, "values": []}))
    result = run_module(
        {"user": "alice", "operation": "import", "path": str(path)}, monkeypatch, capsys
    )
    assert result["failed"] and f"cannot import {path}" in result["msg"]
    assert "version 9 is not supported" in result["msg"]


@pytest.mark.parametrize(
    ("user", "selector"),
    [
        ("alice", {"sam_account_name": "alice"}),
        ("alice@lab.example", {"upn": "alice@lab.example"}),
        ("CN=Alice,OU=Roaming,DC=lab,DC=example", {"dn": "CN=Alice,OU=Roaming,DC=lab,DC=example"}),
    ],
)
def test_the_user_is_found_by_name_upn_or_dn(user, selector):
    assert credroam_tokens.user_selector(user) == selector
