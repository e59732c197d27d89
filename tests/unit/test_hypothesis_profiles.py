"""`make test` leaves nothing to chance: the ci profile is the default, derandomized, no
example database; a hunt is never capped by a test's own budget."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.hypothesis_profiles import HUNT_EXAMPLES, PROFILE, examples

pytestmark = pytest.mark.skipif(
    os.environ.get("HYPOTHESIS_PROFILE", "ci") != "ci", reason="another profile was asked for"
)

DRAWN: list[int] = []


def test_the_ci_profile_is_loaded_by_default_and_is_derandomized_without_a_database() -> None:
    assert PROFILE == "ci"
    assert settings.default.derandomize is True
    assert settings.default.database is None


@settings(max_examples=20)
@given(st.integers())
def _draw(value: int) -> None:
    DRAWN.append(value)


def test_two_runs_of_a_property_test_draw_the_same_examples() -> None:
    _draw()
    first = list(DRAWN)
    DRAWN.clear()
    _draw()
    assert first == DRAWN


def test_a_hunt_is_never_capped_by_a_tests_ci_budget() -> None:
    assert examples(300) == 300  # ci: the test's own budget (more than the default 100)
    with settings_profile("hunt"):
        assert examples(300) == max(300, HUNT_EXAMPLES)


@contextlib.contextmanager
def settings_profile(name: str) -> Iterator[None]:
    settings.load_profile(name)
    try:
        yield
    finally:
        settings.load_profile(PROFILE)
