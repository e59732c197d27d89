"""The report document and what the role renders from it: JSON valid against the schema in the
repository, JUnit XML with one test case per check and subject, a self-contained HTML report."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from pathlib import Path

import pytest

REASON = "the role's templates and report schema: needs jinja2 and jsonschema (.venv/bin/pytest)"
jinja2 = pytest.importorskip("jinja2", reason=REASON)
jsonschema = pytest.importorskip("jsonschema", reason=REASON)

import yaml

from credroam.compliance.checks import (
    CHECKS,
    HostFacts,
    HostWanted,
    Result,
    Sizing,
    Subject,
    host_results,
)
from credroam.compliance.report import build_report
from credroam.roaming.model import Policy

ROLE = Path(__file__).resolve().parents[2] / "roles" / "compliance"
SCHEMA = json.loads((ROLE / "files" / "report.schema.json").read_text())
ALICE = "CN=alice,OU=Roaming,DC=lab,DC=example"
BOB = "CN=bob <&>,OU=Roaming,DC=lab,DC=example"  # markup in a name must come out escaped


def report(threshold: str = "high") -> dict:
    results = [
        Result(
            "gpo.version",
            Subject("dc", "dc2.lab"),
            "fail",
            "GPT.INI version 0 on dc2.lab",
            "\\\\dc2.lab\\SYSVOL\\...\\GPT.INI",
        ),
        Result("gpo.version", Subject("dc", "dc1.lab"), "pass", "version 65536"),
        Result("user.limits", Subject("user", ALICE), "pass", "3 tokens"),
        Result("user.limits", Subject("user", BOB), "fail", "2001 tokens, over <2000>"),
        Result("user.tokens", Subject("user", BOB), "unknown", "could not read <it>"),
    ]
    return build_report(
        forest={
            "domain": "lab.example",
            "server": "dc1.lab",
            "dcs": ["dc1.lab", "dc2.lab"],
            "users_base_dn": "OU=Roaming,DC=lab,DC=example",
        },
        results=results,
        users=[
            {"user": ALICE, "tokens": 3, "bytes": 4500},
            {"user": BOB, "tokens": 2001, "bytes": 3_000_000},
        ],
        policy=Policy(),
        sizing=Sizing(),
        threshold=threshold,
        unknown_blocks=True,
        generated_at="2026-12-01T09:00:00+00:00",
    )


def render(template: str, document: dict) -> str:
    # Plain Jinja2 with Ansible's settings (no autoescape): the templates use built-ins only.
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(ROLE / "templates"), autoescape=False)
    return env.get_template(template).render(report=document)


def test_the_report_validates_against_the_schema_in_the_repository():
    document = report()
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    jsonschema.validate(document, SCHEMA)
    assert document["verdict"] == {
        "passed": False,
        "fail_on_severity": "high",
        "unknown_blocks": True,
        "blocking": 2,
    }
    assert set(document["checks"]) == set(CHECKS)
    assert [u["subject"]["name"] for u in document["unreadable"]] == [BOB]


def test_a_report_missing_a_field_or_with_an_unknown_status_is_rejected_by_the_schema():
    document = report()
    del document["verdict"]
    with pytest.raises(jsonschema.ValidationError, match="verdict"):
        jsonschema.validate(document, SCHEMA)
    document = report()
    document["results"][0]["status"] = "skipped"
    with pytest.raises(jsonschema.ValidationError, match="skipped"):
        jsonschema.validate(document, SCHEMA)


def test_below_the_threshold_the_run_passes():
    assert report("critical")["verdict"]["passed"] is True


def test_junit_has_one_test_case_per_check_and_subject_with_failures_and_errors():
    document = report()
    root = ET.fromstring(render("junit.xml.j2", document))
    cases = root.findall("./testsuite/testcase")
    assert len(cases) == len(document["results"])
    assert (root.get("tests"), root.get("failures"), root.get("errors")) == ("5", "2", "1")
    by_name = {(c.get("classname"), c.get("name")): c for c in cases}
    failure = by_name[("credroam.user.limits", f"user {BOB}")].find("failure")
    assert failure.get("message") == "2001 tokens, over <2000>" and failure.get("type") == "high"
    assert "fix: Prune" in failure.text
    assert by_name[("credroam.user.tokens", f"user {BOB}")].find("error") is not None
    assert list(by_name[("credroam.gpo.version", "dc dc1.lab")]) == []


def test_the_html_is_self_contained_with_summary_chart_and_escaped_names():
    html = render("report.html.j2", report())
    for external in ("<script", "<link", "src=", "href=", "url(", "@import"):
        assert external not in html
    assert html.index('id="summary"') < html.index('id="token-chart"') < html.index("<h2>Checks")
    assert "FAILED" in html and "bob &lt;&amp;&gt;" in html and "bob <&>" not in html
    assert html.count('class="bar"') == 4  # two users, count and size
    assert "limit 131070000 off scale" in html  # the total-bytes limit is far beyond the data
    assert 'class="limit"' in html  # the token limit (2000) is within the scale (2001 tokens)


def test_every_role_variable_is_prefixed_documented_and_defaulted_consistently():
    defaults = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())
    specs = yaml.safe_load((ROLE / "meta" / "argument_specs.yml").read_text())
    options = specs["argument_specs"]["main"]["options"]
    assert all(name.startswith("compliance_") for name in (*defaults, *options))
    assert set(defaults) == set(options)
    for name, option in options.items():
        if "default" in option and "{{" not in str(defaults[name]):  # inventory-derived
            assert option["default"] == defaults[name], name


def test_host_results_reach_every_output_and_the_html_lists_each_host():
    stale = HostFacts(
        host="client<2>",
        agent_path="/usr/lib/credroam/credroam-agent.pyz",
        agent_sha256="ab",
        record="credroam-agent 0.0.9\nsha256 ab\n",
        reports="credroam-agent 0.0.9",
        hook_path="/usr/lib/credroam/pam-hook",
        hook={"owner": "root", "executable": True},
    )
    unread = HostFacts(host="client3", error="unreachable")
    now = datetime(2026, 12, 1, tzinfo=UTC)
    results = [
        *host_results(stale, HostWanted("0.1.0"), now),
        *host_results(unread, HostWanted("0.1.0"), now),
    ]
    document = build_report(
        forest={"domain": "lab.example", "server": "dc1", "dcs": ["dc1"], "users_base_dn": "b"},
        results=results,
        users=[],
        policy=Policy(),
        sizing=Sizing(),
        threshold="high",
        unknown_blocks=True,
        generated_at="2026-12-01T09:00:00+00:00",
        hosts=[stale, unread],
    )
    jsonschema.validate(document, SCHEMA)
    assert document["schema_version"] == "1.1"
    root = ET.fromstring(render("junit.xml.j2", document))
    names = {(c.get("classname"), c.get("name")) for c in root.findall("./testsuite/testcase")}
    assert ("credroam.host.agent", "host client<2>") in names
    html = render("report.html.j2", document)
    hosts = html[html.index('<table id="hosts">') : html.index("<h2>Tokens per user")]
    assert "client&lt;2&gt;" in hosts and "credroam-agent 0.0.9" in hosts
    assert '<td class="fail">host.agent</td>' in hosts.replace("\n", "")
    assert "could not read: unreachable" in hosts
