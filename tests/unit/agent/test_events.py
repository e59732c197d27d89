"""Events: one line each, with the Windows credential-roaming event ID, never a secret."""

from __future__ import annotations

import io
import json

from credroam.roaming.model import (
    Item,
    ItemKind,
    LeftAlone,
    Policy,
    Refusal,
    RefusalCause,
    StoreName,
)
from credroam.roaming.reconcile import reconcile
from credroam_agent.events import EventId, EventLog, left_alone_event, refusal_event

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


def _refused(policy: Policy, *sizes: int) -> list[Refusal]:
    local = {
        f"%3\\{n:040X}": Item(f"%3\\{n:040X}", StoreName.MY, ItemKind.CERTIFICATE, NOW - n, "h", s)
        for n, s in enumerate(sizes, start=1)
    }
    return list(reconcile(local, {}, None, policy, NOW).refused)


def test_refusals_of_reconcile_map_to_too_large_and_too_many_by_their_cause():
    (too_large,) = _refused(Policy(max_token_size=100), 500)
    assert refusal_event(too_large.cause) is EventId.TOKEN_TOO_LARGE
    (too_many,) = _refused(Policy(max_tokens=1), 10, 10)
    assert refusal_event(too_many.cause) is EventId.TOO_MANY_TOKENS
    # What sync refuses itself (reconcile's refuse_uploads): keys it has no roaming key for.
    assert refusal_event(RefusalCause.CALLER) is EventId.ROAMING_KEY


def test_a_key_refused_with_its_too_large_certificate_is_a_too_large_event_too():
    cert = Item("%3\\" + "A" * 40, StoreName.MY, ItemKind.CERTIFICATE, NOW - 2, "c", 5000)
    key = Item("%9\\" + "A" * 40, StoreName.MY, ItemKind.KEY, NOW - 2, "k", 50, owner=cert.key)
    local = {item.key: item for item in (cert, key)}
    plan = reconcile(local, {}, None, Policy(max_token_size=1000), NOW)
    causes = {refused.item.key: refused.cause for refused in plan.refused}
    assert causes == {cert.key: RefusalCause.TOKEN_SIZE, key.key: RefusalCause.TOKEN_SIZE}
    assert {refusal_event(cause) for cause in causes.values()} == {EventId.TOKEN_TOO_LARGE}


def test_what_reconcile_leaves_alone_is_1012_when_unusable_else_1001():
    unusable = LeftAlone("%9\\" + "A" * 40, "left alone: there but cannot be used", unusable=True)
    cannot_roam = LeftAlone("%9\\" + "B" * 40, "left alone: its certificate is not here", False)
    assert left_alone_event(unusable) is EventId.ATTRIBUTE_PROBLEM
    assert left_alone_event(cannot_roam) is EventId.LOCAL_STORE_READ
