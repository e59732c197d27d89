"""The main job as `make run` runs it on the lab: playbooks/site.yml, then playbooks/summary.yml,
whose output ends with a summary for a person, and a live proof that alice's certificate roams.
A second run changes nothing and says the demonstration certificate is already everywhere."""

from __future__ import annotations

import re
from itertools import takewhile

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from tests.integration.roaming_lab import clear_everywhere
from tests.integration.rollout import playbook, site
from tests.integration.test_agent import directory_keys, store_files
from tests.lab import Lab, PlaybookRun

pytestmark = pytest.mark.integration

DEMO_SUBJECT = "credroam demonstration for alice"  # playbooks/summary.yml
MADE = re.compile(
    r"Live proof: alice's demonstration certificate (?P<thumb>[0-9A-F]{40}), made on client1, "
    r"found with a working key on client2 and client3 (?P<seconds>\d+\.\d) s later\.$"
)
ALREADY = re.compile(
    r"Live proof: alice's demonstration certificate (?P<thumb>[0-9A-F]{40}) is already on "
    r"client1, client2, client3, its key working on each \(nothing changed\)\.$"
)


def main_job(lab: Lab) -> tuple[PlaybookRun, PlaybookRun]:
    return site(lab), playbook(lab, "playbooks/summary.yml")


def summary_lines(run: PlaybookRun) -> list[str]:
    """The summary: the first thing after the play recap, its header and indented lines
    (the output is stdout then stderr, where Ansible's warnings may follow)."""
    after = run.output.rsplit("PLAY RECAP", 1)[1].split("\n\n", 1)[1].lstrip("\n")
    header, *rest = after.splitlines()
    return [header, *takewhile(lambda line: line.startswith("  "), rest)]


@pytest.fixture(scope="module")
def first_run(lab: Lab, rolled_out: PlaybookRun) -> tuple[PlaybookRun, PlaybookRun]:
    """The session's rollout (site.yml), then summary.yml for the first time: alice has nothing
    roamed and nothing on any host yet."""
    clear_everywhere(lab, lab.user("alice"))
    for host in lab.clients:
        host.ssh("rm -rf ~alice/.local ~alice/.cache /run/user/$(id -u alice)", check=False)
    return rolled_out, playbook(lab, "playbooks/summary.yml")


def test_the_summary_names_forest_gpo_and_hosts_and_ends_the_output(first_run, lab):
    lines = summary_lines(first_run[1])
    assert lines[0] == "credroam summary"
    assert lines[1] == "  Forest LAB.EXAMPLE, DCs dc1.lab.example, dc2.lab.example"
    gpo = re.fullmatch(
        r"  GPO \"Credential Roaming\" \{[0-9A-F-]{36}\}, version (\d+) \(user\), linked to (.*)",
        lines[2],
    )
    assert gpo is not None, lines[2]
    assert int(gpo[1]) >= 1 and gpo[2] == lab.roaming_ou_dn
    for number, line in enumerate(lines[3:6], start=1):
        assert re.fullmatch(
            rf"  client{number}: credroam-agent \d+\.\d+\.\d+; last sync alice 20\d\d-\S+, "
            r"bob never, carol never",
            line,
        ), line
    assert len(lines) == 7, lines


def test_the_first_run_makes_alices_certificate_on_client1_and_it_roams_with_its_key(
    first_run, lab
):
    proof = MADE.fullmatch(summary_lines(first_run[1])[6].strip())
    assert proof is not None, summary_lines(first_run[1])[6]
    thumb = proof["thumb"]
    assert {f"%3\\{thumb}", f"%9\\{thumb}"} <= directory_keys(lab, lab.user("alice"))
    for host in lab.clients:
        files = store_files(lab, host, "alice")
        certificate = x509.load_pem_x509_certificate(files[f"MY/{thumb}.cert.pem"])
        assert certificate.subject.rfc4514_string() == f"CN={DEMO_SUBJECT}"
        key = serialization.load_pem_private_key(files[f"MY/{thumb}.key.pem"], None)
        assert key.public_key() == certificate.public_key()


def test_a_second_run_changes_nothing_and_finds_the_certificate_everywhere(first_run, lab):
    made = MADE.fullmatch(summary_lines(first_run[1])[6].strip())
    rollout, summary = main_job(lab)
    assert rollout.changed == 0
    assert summary.changed == 0
    already = ALREADY.fullmatch(summary_lines(summary)[6].strip())
    assert already is not None, summary_lines(summary)
    assert made is not None and already["thumb"] == made["thumb"]
