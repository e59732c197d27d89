"""Hypothesis profiles: ``ci`` (the default, what ``make test`` runs) and ``hunt`` (``make hunt``).

``ci`` is derandomized with the example database off: every run, on every machine, draws the
same examples, so a test run never passes or fails by chance. ``hunt`` draws fresh random
examples, many of them, to find new bugs; a bug it finds is pinned in its test as an
``@example`` so that ``ci`` runs it from then on.

Select a profile with ``HYPOTHESIS_PROFILE=hunt`` (or hypothesis' own ``--hypothesis-profile``
pytest option). ``HYPOTHESIS_HUNT_EXAMPLES`` sets the hunt's examples per test. Loaded from
``tests/conftest.py``, before any test module is imported, so every ``@settings`` inherits it.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

__all__ = ["HUNT_EXAMPLES", "PROFILE", "examples"]

HUNT_EXAMPLES = int(os.environ.get("HYPOTHESIS_HUNT_EXAMPLES", "2000"))

settings.register_profile(
    "ci",
    derandomize=True,
    database=None,
    deadline=None,  # a slow shared machine must not fail a test (no wall-clock thresholds)
    print_blob=True,
)
settings.register_profile(
    "hunt",
    derandomize=False,
    database=None,  # every example fresh: a hunt does not replay old failures, @example does
    deadline=None,
    max_examples=HUNT_EXAMPLES,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)

PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "ci")
settings.load_profile(PROFILE)


def examples(ci: int) -> int:
    """``max_examples`` for a test that needs more than the profile's default in ``ci``.

    The larger of ``ci`` and the active profile's count: a hunt runs every test at least
    ``HUNT_EXAMPLES`` times, an explicit count never caps it.
    """
    return max(ci, settings.default.max_examples)
