"""The core has one import identity in tests: ``ansible.module_utils.credroam`` is ``credroam``."""

from __future__ import annotations

import importlib

import pytest

import credroam.errors
import credroam.roaming.sync


def test_both_names_are_one_module_object() -> None:
    pytest.importorskip("ansible", reason="the Ansible name exists only where Ansible does")
    aliased = importlib.import_module("ansible.module_utils.credroam.roaming.sync")
    assert aliased is credroam.roaming.sync
    assert aliased.__spec__.name == "credroam.roaming.sync"  # its own spec, not the alias's
    from ansible.module_utils.credroam.errors import DirectoryError

    assert DirectoryError is credroam.errors.DirectoryError


def test_an_error_raised_under_one_name_is_caught_under_the_other() -> None:
    pytest.importorskip("ansible", reason="the Ansible name exists only where Ansible does")
    glue = importlib.import_module("ansible.module_utils.credroam_ansible")
    with pytest.raises(glue.DirectoryError):
        raise credroam.errors.DirectoryError("raised through the core's own name")


def test_a_monkeypatch_under_one_name_is_seen_under_the_other(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pytest.importorskip("ansible", reason="the Ansible name exists only where Ansible does")
    aliased = importlib.import_module("ansible.module_utils.credroam.roaming.sync")
    monkeypatch.setattr(credroam.roaming.sync, "DEFAULT_MAX_ATTEMPTS", 99)
    assert aliased.DEFAULT_MAX_ATTEMPTS == 99
