"""credroam_sync: the agent's command per user, its JSON report as the module's result."""

from __future__ import annotations

import json
from typing import Any

import pytest

pytest.importorskip("ansible", reason="a module test: needs Ansible (.venv/bin/pytest runs it)")

import credroam_sync
from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.testing import patch_module_args

from credroam.roaming.model import Item, ItemKind, Refusal, RefusalCause, StoreName
from credroam.roaming.sync import SyncReport
from credroam_agent.operations import plan_fields

CERT, KEY = "%3\\" + "A" * 40, "%9\\" + "A" * 40


def agent_json(*reports: SyncReport, dry_run: bool = False, exit_code: int = 0) -> str:
    """What ``credroam-agent ... --json`` prints, built with the agent's own report fields."""
    out: dict[str, Any] = {"exit": exit_code, "events": [{"id": 1, "message": "sync done"}]}
    if dry_run:
        out["plan"] = plan_fields(reports[0])
    else:
        out["synced"] = [plan_fields(report) for report in reports]
    return json.dumps(out)


class Agent:
    def __init__(self, *answers: tuple[int, str]):
        self.answers, self.calls = list(answers), []

    def __call__(self, module, command, data=None, **kwargs):
        self.calls.append((command, data))
        code, out = self.answers.pop(0)
        return code, out, ""


def run_module(args: dict, monkeypatch, capsys, agent: Agent) -> dict:
    def run_command(module, command, data=None, **kwargs):
        return agent(module, command, data, **kwargs)

    monkeypatch.setattr(AnsibleModule, "run_command", run_command)
    with patch_module_args(args), pytest.raises(SystemExit):
        credroam_sync.main()
    return json.loads(capsys.readouterr().out)


UPLOADED = SyncReport("CN=alice", uploaded=(CERT, KEY), directory_changes=(f"add {CERT}",))


def test_a_password_runs_login_with_it_on_stdin_as_the_user_and_reports_what_moved(
    monkeypatch, capsys
):
    agent = Agent((0, agent_json(UPLOADED)))
    args = {"users": ["alice"], "passwords": {"alice": "s3cret"}, "_ansible_diff": True}
    result = run_module(args, monkeypatch, capsys, agent)
    ((command, data),) = agent.calls
    assert command == ["/usr/bin/credroam-agent", "--user", "alice", "login", "--json"]
    assert data == "s3cret"
    assert result["changed"] is True
    assert result["users"]["alice"]["uploads"] == [CERT, KEY]
    assert result["users"]["alice"]["directory_changes"] == [f"add {CERT}"]
    assert "s3cret" not in json.dumps(result)
    (diff,) = result["diff"]
    assert f"directory {CERT}: absent or older" in diff["before"]
    assert f"directory {CERT}: as on this host" in diff["after"]


def test_check_mode_asks_the_agent_for_a_dry_run_and_reports_the_plan(monkeypatch, capsys):
    agent = Agent((0, agent_json(UPLOADED, dry_run=True)))
    args = {"users": ["bob"], "agent_config": "/etc/x.toml", "_ansible_check_mode": True}
    result = run_module(args, monkeypatch, capsys, agent)
    ((command, data),) = agent.calls
    assert command[1:] == [
        "--user",
        "bob",
        "--config",
        "/etc/x.toml",
        "sync",
        "--json",
        "--dry-run",
    ]
    assert data is None  # no password: the agent binds with a ticket or keytab
    assert result["changed"] is True and result["users"]["bob"]["uploads"] == [CERT, KEY]


def test_nothing_moved_is_not_changed_and_every_sync_of_a_run_counts(monkeypatch, capsys):
    quiet = SyncReport("CN=alice")
    agent = Agent((0, agent_json(quiet)), (0, agent_json(quiet, UPLOADED)))
    result = run_module({"users": ["alice", "carol"]}, monkeypatch, capsys, agent)
    assert result["users"]["alice"]["uploads"] == []
    assert result["users"]["carol"]["uploads"] == [CERT, KEY]  # the sync after enrollment
    assert result["changed"] is True
    again = run_module({"users": ["alice"]}, monkeypatch, capsys, Agent((0, agent_json(quiet))))
    assert again["changed"] is False


def test_a_refusal_alone_changes_nothing_and_problems_are_warned(monkeypatch, capsys):
    key = Item(KEY, StoreName.MY, ItemKind.KEY, 1, "k1", 500, owner=CERT)
    refused = SyncReport("CN=alice", refused=(Refusal(key, "no roaming key", RefusalCause.CALLER),))
    agent = Agent((1, agent_json(refused, exit_code=1)))
    warnings: list[str] = []
    monkeypatch.setattr(AnsibleModule, "warn", lambda module, text: warnings.append(text))
    result = run_module({"users": ["alice"]}, monkeypatch, capsys, agent)
    assert result["changed"] is False
    assert result["users"]["alice"]["refused"] == [[KEY, "no roaming key"]]
    assert warnings == ["credroam-agent synced alice with problems; see users.alice.events"]


def test_an_agent_that_cannot_sync_fails_naming_the_user(monkeypatch, capsys):
    agent = Agent((3, json.dumps({"exit": 3, "events": [{"id": 1010}]})))
    result = run_module({"users": ["alice"]}, monkeypatch, capsys, agent)
    assert result["failed"] and "alice" in result["msg"] and "exit 3" in result["msg"]


def test_a_password_for_a_user_not_synced_is_refused_before_anything_runs(monkeypatch, capsys):
    agent = Agent()
    args = {"users": ["alice"], "passwords": {"mallory": "x"}}
    result = run_module(args, monkeypatch, capsys, agent)
    assert result["failed"] and "mallory" in result["msg"] and agent.calls == []
