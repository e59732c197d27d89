"""Events: one line each, with the Windows credential-roaming event ID, never a secret."""

from __future__ import annotations

import io
import json

from credroam.roaming.model import Item, ItemKind, Policy, StoreName
from credroam.roaming.reconcile import reconcile
from credroam_agent.events import EventId, EventLog, refusal_event

NOW = 134_000_000_000_000_000


def test_an_event_is_one_line_with_its_id_level_and_context():
    stream = io.StringIO()
    log = EventLog(stream, {"user": "alice"})
    log.emit(EventId.CANNOT_REACH_AD, "dc1.lab.example: timed out\nafter 10 s", dc="dc1")
    (line,) = stream.getvalue().splitlines()
    assert line.startswith("credroam-agent event=1010 level=error user=alice dc=dc1: ")
    assert line.endswith("dc1.lab.example: timed out after 10 s")


def test_the_ids_are_windows_credential_roaming_ids():
    assert {e.name: int(e) for e in EventId} == {
        "SUCCESS": 1,
        "SELF_HEAL_DONE": 2,
        "CONFLICT": 501,
        "SELF_HEAL_NEEDED": 502,
        "LOCAL_STORE_READ": 1001,
        "LOCAL_STORE_WRITE": 1002,
        "DIRECTORY_READ": 1003,
        "DIRECTORY_WRITE": 1004,
        "STATE_READ": 1005,
        "STATE_WRITE": 1006,
        "ROAMING_KEY": 1007,
        "TOO_MANY_TOKENS": 1008,
        "CANNOT_REACH_AD": 1010,
        "TOKEN_TOO_LARGE": 1011,
        "ATTRIBUTE_PROBLEM": 1012,
    }


def test_success_is_no_problem_and_anything_else_is():
    log = EventLog(io.StringIO())
    log.emit(EventId.SUCCESS, "sync done")
    assert not log.problems
    log.emit(EventId.CONFLICT, "both changed")
    assert [e.id for e in log.problems] == [EventId.CONFLICT]
    assert json.loads(log.as_json([("exit", 1)]))["events"][1]["event"] == 501


def _refused(policy: Policy, *sizes: int) -> list[str]:
    local = {
        f"%3\\{n:040X}": Item(f"%3\\{n:040X}", StoreName.MY, ItemKind.CERTIFICATE, NOW - n, "h", s)
        for n, s in enumerate(sizes, start=1)
    }
    plan = reconcile(local, {}, None, policy, NOW)
    return [refusal.reason for refusal in plan.refused]


def test_refusals_of_reconcile_map_to_too_large_and_too_many():
    (too_large,) = _refused(Policy(max_token_size=100), 500)
    assert refusal_event(too_large) is EventId.TOKEN_TOO_LARGE
    (too_many,) = _refused(Policy(max_tokens=1), 10, 10)
    assert refusal_event(too_many) is EventId.TOO_MANY_TOKENS
    assert refusal_event("no roaming key to seal the private key") is EventId.ROAMING_KEY
