"""Integration fixtures: the session's own lab forest `citest`, brought up by the real playbook.

Fixtures:
  lab              (session) tests.lab.Lab for lab `citest`: 172.29.200.0/24, 2 DCs, 3 clients.
  lab_admin_ldap   (function) bound LDAPS connection to dc1 as Administrator, CA validated.
  rolled_out       (session) playbooks/site.yml run once on it, shared by the modules of
                   rollout.SHARING_THE_ROLLOUT (which run last, in that order).

CREDROAM_KEEP_LAB=1 reuses a running `citest` and leaves it up at the end (fast dev loops);
otherwise the session starts from a clean lab and always tears it down, also on failure.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import ldap3
import pytest

from tests.integration.rollout import SHARING_THE_ROLLOUT, site
from tests.lab import Lab, LabNotUpError, PlaybookRun, lab_playbook

# CREDROAM_TEST_LAB / CREDROAM_TEST_SUBNET: a lab of one's own, so that engineers running
# integration tests at the same time never share (or tear down) each other's lab.
CITEST = {
    "name": os.environ.get("CREDROAM_TEST_LAB", "citest"),
    "subnet": os.environ.get("CREDROAM_TEST_SUBNET", "172.29.200.0/24"),
    "dc_count": 2,
    "client_count": 3,
}
INTEGRATION = Path(__file__).resolve().parent


def _running_citest() -> Lab | None:
    try:
        lab = Lab.load(CITEST["name"])
    except LabNotUpError:
        return None
    # A kept lab of another shape (e.g. made by hand with fewer clients) is rebuilt.
    shaped = len(lab.dcs) == CITEST["dc_count"] and len(lab.clients) == CITEST["client_count"]
    return lab if lab.is_up() and shaped else None


def _require(run_state: str, playbook_run) -> None:
    if playbook_run.returncode != 0:
        pytest.fail(f"lab {CITEST['name']} {run_state} failed:\n{playbook_run.output[-6000:]}")


@pytest.fixture(scope="session")
def lab() -> Iterator[Lab]:
    keep = os.environ.get("CREDROAM_KEEP_LAB") == "1"
    running = _running_citest() if keep else None
    if running is None:
        # A leftover from an interrupted session would make `present` refuse: start clean.
        _require("teardown", lab_playbook(**CITEST, state="absent"))
    try:
        if running is None:
            _require("bring-up", lab_playbook(**CITEST, state="present"))
        yield Lab.load(CITEST["name"])
    finally:
        if not keep:
            _require("teardown", lab_playbook(**CITEST, state="absent"))


@pytest.fixture
def lab_admin_ldap(lab: Lab) -> Iterator[ldap3.Connection]:
    connection = lab.ldap_connection()
    try:
        yield connection
    finally:
        connection.unbind()


@pytest.fixture(scope="session")
def rolled_out(lab: Lab) -> PlaybookRun:
    return site(lab)


# `make test` runs the integration tests in two sessions side by side, each on a lab of its own:
# `-m second_lab` and `-m "not second_lab"`. The second: the modules sharing the rollout, after
# these, chosen so that the two sessions take about as long.
BEFORE_THE_ROLLOUT_ON_THE_SECOND_LAB = (
    "test_connection",
    "test_filters",
    "test_gpo",
    "test_gpo_info",
    "test_tokens",
)


@pytest.hookimpl(tryfirst=True)  # before `-m` selects
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The modules sharing the session's rollout moved last, in their order (rollout.py says
    why), and the second lab's modules marked `second_lab`."""

    def in_here(item: pytest.Item) -> bool:  # not e.g. tests/unit/test_compliance.py
        return item.path.parent == INTEGRATION

    def rank(item: pytest.Item) -> int:
        if not in_here(item) or item.path.stem not in SHARING_THE_ROLLOUT:
            return 0
        return SHARING_THE_ROLLOUT.index(item.path.stem) + 1

    second_lab = {*BEFORE_THE_ROLLOUT_ON_THE_SECOND_LAB, *SHARING_THE_ROLLOUT}
    for item in items:
        if in_here(item) and item.path.stem in second_lab:
            item.add_marker(pytest.mark.second_lab)
    items.sort(key=rank)  # stable: every other test keeps its place
