"""The agent's fault-test hook is inert unless set, and signals itself only at its step."""

from __future__ import annotations

import signal

import pytest

from credroam.roaming.sync import SyncStep
from credroam_agent import testhook


@pytest.fixture
def sent(monkeypatch) -> list[int]:
    signals: list[int] = []
    monkeypatch.setattr(testhook.os, "kill", lambda pid, sig: signals.append(sig))
    return signals


def test_without_the_variable_the_hook_does_nothing_at_any_step(sent):
    hook = testhook.checkpoint({})
    for step in SyncStep.ALL:
        hook(step)
    assert sent == []


@pytest.mark.parametrize(
    ("action", "expected"), [("kill", signal.SIGKILL), ("stop", signal.SIGSTOP)]
)
def test_the_hook_signals_the_agent_at_its_step_only(sent, capsys, action, expected):
    hook = testhook.checkpoint({testhook.ENV: f"{action}:{SyncStep.STORE_HALF_WRITTEN}"})
    for step in SyncStep.ALL:
        hook(step)
    assert sent == [expected]
    assert f"test hook: {action} at store-half-written (pid " in capsys.readouterr().err


def test_a_value_naming_no_step_is_reported_and_ignored(sent, capsys):
    hook = testhook.checkpoint({testhook.ENV: "kill:somewhere"})
    for step in SyncStep.ALL:
        hook(step)
    assert sent == [] and "ignoring" in capsys.readouterr().err
