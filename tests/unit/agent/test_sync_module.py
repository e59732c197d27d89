"""credroam_sync drives the real agent (in process, against the fake directory): the module
and the agent share one code path, and the module reads what the agent reports."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("ansible", reason="a module test: needs Ansible (.venv/bin/pytest runs it)")

import credroam_sync
from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.testing import patch_module_args

from tests.unit.agent.agent_fixtures import (
    PASSWORD,
    certificate_and_key,
    files,
    install,
)


def without_lock(store_files: dict) -> dict:
    return {name: content for name, content in store_files.items() if name != ".lock"}


@pytest.fixture
def module_on(monkeypatch, capsys):
    """Run the module with its agent command answered by ``host``'s agent."""

    def run(host, args: dict) -> dict:
        def run_command(module, command, data=None, **kwargs):
            assert command[:3] == ["/usr/bin/credroam-agent", "--user", "alice"]
            stdin = b"" if data is None else data.encode()
            code, out, err = host.run(*command[3:], stdin=stdin, capsys=capsys)
            return code, out, err

        monkeypatch.setattr(AnsibleModule, "run_command", run_command)
        with patch_module_args(args), pytest.raises(SystemExit):
            credroam_sync.main()
        return json.loads(capsys.readouterr().out)

    return run


def test_the_module_seeds_the_directory_through_the_agent_and_a_second_run_changes_nothing(
    host, directory, module_on
):
    thumb = install(host.store, *certificate_and_key())
    args = {"users": ["alice"], "passwords": {"alice": PASSWORD}, "_ansible_diff": True}

    before, writes = files(host.store), directory.writes
    planned = module_on(host, {**args, "_ansible_check_mode": True})
    assert planned["changed"] is True
    assert planned["users"]["alice"]["uploads"] == [f"%3\\{thumb}", f"%9\\{thumb}"]
    assert [op["kind"] for op in planned["users"]["alice"]["operations"]] == ["ldap_modify"]
    # Check mode writes nothing: the sync's lock file is all a dry run leaves in the store.
    assert directory.writes == writes and without_lock(files(host.store)) == before

    done = module_on(host, args)
    assert done["changed"] is True
    assert done["users"]["alice"]["uploads"] == [f"%3\\{thumb}", f"%9\\{thumb}"]
    assert done["users"]["alice"]["exit"] == 0 and directory.writes > writes
    (modify,) = done["users"]["alice"]["operations"]  # one LDAP modify, values only counted
    assert modify["kind"] == "ldap_modify" and modify["target"]
    writes = directory.writes
    assert f"directory %3\\{thumb}: as on this host" in done["diff"][0]["after"]
    assert PASSWORD not in json.dumps(done)

    again = module_on(host, args)
    assert again["changed"] is False and directory.writes == writes
