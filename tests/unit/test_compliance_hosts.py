"""The host checks, pure: what the compliance play read on an agent host, judged. Each broken
state fails exactly the check meant for it; what could not be read is "unknown", never a pass."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from credroam.compliance.checks import (
    CHECKS,
    HOST_CHECKS,
    HostFacts,
    HostWanted,
    Sizing,
    host_results,
    parse_agent_version,
)
from credroam.compliance.report import build_report, hosts_section
from credroam.roaming.model import Policy

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
HOOK = "/usr/lib/credroam/pam-hook"
PAM_SSHD = f"""@include common-auth
auth optional pam_exec.so expose_authtok quiet {HOOK} --agent /usr/bin/credroam-agent
account include common-account
session optional pam_exec.so quiet {HOOK} --agent /usr/bin/credroam-agent --purge-timeout 30
"""
UNITS = ("credroam-agent.service", "credroam-agent-purge.service")
WANTED = HostWanted(agent_version="0.1.0", max_sync_age_hours=24)


def status(last_sync: datetime | None) -> str:
    """What `credroam-agent status --json` prints (the fields the check reads, and others)."""
    at = last_sync.isoformat() if last_sync else None
    return json.dumps({"exit": 3, "user": "alice", "last_successful_sync": at, "events": []})


def healthy(**changes) -> dict:
    """A host as playbooks/compliance.yml hands it over after a good rollout."""
    facts = {
        "host": "client1",
        "agent_path": "/usr/lib/credroam/credroam-agent.pyz",
        "agent_sha256": "ab" * 32,
        "record_path": "/usr/lib/credroam/VERSION",
        "record": f"credroam-agent 0.1.0\nsha256 {'ab' * 32}\n",
        "reports": "credroam-agent 0.1.0",
        "run_error": "",
        "hook_path": HOOK,
        "hook": {"owner": "root", "executable": True},
        "pam": {"sshd": PAM_SSHD, "login": PAM_SSHD},
        "units": dict.fromkeys(UNITS, True),
        "units_enabled": dict.fromkeys(UNITS, True),
        "syncs": {"alice": status(NOW - timedelta(hours=2)), "bob": status(None)},
    }
    return {**facts, **changes}


def failing(facts: dict, wanted: HostWanted = WANTED) -> dict[tuple[str, str], str]:
    results = host_results(HostFacts.from_mapping(facts), wanted, NOW)
    return {(r.check, r.subject.name): r.status for r in results if r.status != "pass"}


def messages(facts: dict, check: str) -> str:
    results = host_results(HostFacts.from_mapping(facts), WANTED, NOW)
    return " | ".join(r.message for r in results if r.check == check)


def test_a_healthy_host_passes_every_host_check_and_a_user_who_never_synced_is_not_judged():
    results = host_results(HostFacts.from_mapping(healthy()), WANTED, NOW)
    assert {(r.check, r.subject.name, r.status) for r in results} == {
        ("host.agent", "client1", "pass"),
        ("host.pam", "client1", "pass"),
        ("host.units", "client1", "pass"),
        ("host.last_sync", "client1/alice", "pass"),
    }
    assert set(HOST_CHECKS) == {c for c in CHECKS if c.startswith("host.")}
    assert all(r.where == "client1" for r in results), "every host result names its host"


@pytest.mark.parametrize(
    ("changes", "said"),
    [
        (
            {
                "record": "credroam-agent 0.0.9\nsha256 " + "ab" * 32,
                "reports": "credroam-agent 0.0.9",
            },
            "agent 0.0.9 on client1, older than the wanted 0.1.0",
        ),
        ({"record": None, "agent_sha256": None, "reports": ""}, "no agent installed on client1"),
        ({"reports": "", "run_error": "python3: not found"}, "does not run: python3: not found"),
        ({"agent_sha256": "cd" * 32}, "differs from the one recorded at install"),
        ({"reports": "credroam-agent 0.2.0"}, "records 'credroam-agent 0.1.0'"),
        ({"record": None}, "no install record /usr/lib/credroam/VERSION"),
    ],
)
def test_a_stale_or_broken_agent_fails_host_agent(changes, said):
    facts = healthy(**changes)
    found = failing(facts)
    assert found.pop(("host.agent", "client1")) == "fail"
    if not facts["reports"]:  # no agent to ask: the syncs are not known
        assert found == {("host.last_sync", "client1"): "unknown"}
    else:
        assert found == {}
    assert said in messages(facts, "host.agent")


def test_a_newer_agent_than_wanted_passes_and_an_empty_wanted_version_accepts_any():
    newer = {
        "record": f"credroam-agent 0.3.1\nsha256 {'ab' * 32}",
        "reports": "credroam-agent 0.3.1",
    }
    assert failing(healthy(**newer)) == {}
    old = {"record": f"credroam-agent 0.0.1\nsha256 {'ab' * 32}", "reports": "credroam-agent 0.0.1"}
    assert failing(healthy(**old), HostWanted(agent_version="")) == {}


def test_versions_compare_as_numbers_not_text():
    assert parse_agent_version("credroam-agent 0.10.0") > parse_agent_version("0.9.3")
    assert parse_agent_version("credroam-agent 0.1.0-dirty") is None
    with pytest.raises(ValueError, match="not a version"):
        HostWanted(agent_version="latest")
    with pytest.raises(ValueError, match="at least 1"):
        HostWanted(max_sync_age_hours=0)


@pytest.mark.parametrize(
    ("changes", "said"),
    [
        ({"hook": None}, f"PAM hook {HOOK} missing on client1"),
        ({"hook": {"owner": "alice", "executable": True}}, "owned by alice"),
        ({"hook": {"owner": "root", "executable": False}}, "not executable"),
        ({"pam": {"sshd": "", "login": PAM_SSHD}}, "/etc/pam.d/sshd on client1 missing or empty"),
        (
            {"pam": {"sshd": PAM_SSHD.replace("expose_authtok ", ""), "login": PAM_SSHD}},
            "/etc/pam.d/sshd on client1 has no auth line",
        ),
        (
            {"pam": {"sshd": PAM_SSHD, "login": PAM_SSHD.replace("session optional", "#session")}},
            "/etc/pam.d/login on client1 has no session line",
        ),
    ],
)
def test_a_missing_pam_hook_or_line_fails_only_host_pam(changes, said):
    facts = healthy(**changes)
    assert failing(facts) == {("host.pam", "client1"): "fail"}
    assert said in messages(facts, "host.pam")


def test_a_unit_not_installed_or_not_enabled_fails_only_host_units():
    missing = healthy(units={**dict.fromkeys(UNITS, True), UNITS[1]: False})
    assert failing(missing) == {("host.units", "client1"): "fail"}
    assert f"{UNITS[1]} not installed" in messages(missing, "host.units")
    disabled = healthy(units_enabled={UNITS[0]: False, UNITS[1]: True})
    assert failing(disabled) == {("host.units", "client1"): "fail"}
    assert f"{UNITS[0]} not enabled" in messages(disabled, "host.units")


def test_a_last_sync_older_than_allowed_fails_only_host_last_sync_for_that_user():
    facts = healthy(syncs={"alice": status(NOW - timedelta(hours=30)), "bob": status(NOW)})
    assert failing(facts) == {("host.last_sync", "client1/alice"): "fail"}
    assert "30 hours ago, over 24" in messages(facts, "host.last_sync")
    assert failing(facts, HostWanted("0.1.0", max_sync_age_hours=48)) == {}


def test_a_status_that_is_not_the_agents_json_is_unknown_not_passed():
    facts = healthy(syncs={"alice": "Traceback (most recent call last):"})
    assert failing(facts) == {("host.last_sync", "client1/alice"): "unknown"}
    assert "not its JSON report" in messages(facts, "host.last_sync")


def test_an_unread_host_is_unknown_for_every_host_check():
    facts = {"host": "client2", "error": "unreachable"}
    assert failing(facts) == {(check, "client2"): "unknown" for check in HOST_CHECKS}


def test_facts_with_an_unknown_key_are_refused_naming_the_host():
    with pytest.raises(ValueError, match="host facts of client1: unknown keys agent_versoin"):
        HostFacts.from_mapping({**healthy(), "agent_versoin": "0.1.0"})


def test_the_report_lists_each_host_with_its_agent_and_last_syncs():
    hosts = [
        HostFacts.from_mapping(healthy()),
        HostFacts.from_mapping({"host": "c0", "error": "x"}),
    ]
    section = hosts_section(hosts)
    assert section["checked"] is True
    assert [h["host"] for h in section["hosts"]] == ["c0", "client1"]
    assert section["hosts"][1] == {
        "host": "client1",
        "error": "",
        "agent": "credroam-agent 0.1.0",
        "last_syncs": {"alice": (NOW - timedelta(hours=2)).isoformat(), "bob": None},
    }
    unchecked = build_report(
        forest={"domain": "d", "server": "s", "dcs": [], "users_base_dn": "b"},
        results=[],
        users=[],
        policy=Policy(),
        sizing=Sizing(),
        threshold="high",
        unknown_blocks=True,
        generated_at="2026-12-01T12:00:00+00:00",
    )
    assert unchecked["hosts"]["checked"] is False and unchecked["hosts"]["hosts"] == []
