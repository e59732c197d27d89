"""inventories/staging.example explains every variable a platform team sets: each option of the
sync_agent role is in it (set, or shown commented out) under a comment saying what it does."""

from __future__ import annotations

import re
from itertools import takewhile
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
STAGING = REPO / "inventories" / "staging.example" / "group_vars" / "all" / "main.yml"
AGENT_SPEC = REPO / "roles" / "sync_agent" / "meta" / "argument_specs.yml"
# Chosen from the connection, never set in an inventory.
NOT_FOR_INVENTORIES = {"sync_agent_platform"}
# A comment line that is words, not a commented-out `name: value`.
EXPLANATION = re.compile(r"^# (?![\w-]+:( |$))")


def agent_options() -> list[str]:
    spec = yaml.safe_load(AGENT_SPEC.read_text())
    return sorted(set(spec["argument_specs"]["main"]["options"]) - NOT_FOR_INVENTORIES)


def explained(lines: list[str], name: str) -> bool:
    """``name`` is set (or shown as `# name: ...`) with an explaining comment above it in its
    paragraph (the lines up to the blank one before it)."""
    setting = re.compile(rf"^(# )?{re.escape(name)}:")
    for at, line in enumerate(lines):
        if setting.match(line):
            paragraph = takewhile(str.strip, reversed(lines[:at]))
            return any(EXPLANATION.match(above) for above in paragraph)
    return False


@pytest.mark.parametrize("name", agent_options())
def test_every_agent_variable_is_in_the_staging_example_with_its_explanation(name):
    assert explained(STAGING.read_text().splitlines(), name), (
        f"{name} is not set or not explained in {STAGING.relative_to(REPO)}"
    )


def test_the_staging_example_is_valid_yaml_and_its_agent_values_fit_the_role():
    values = yaml.safe_load(STAGING.read_text())
    spec = yaml.safe_load(AGENT_SPEC.read_text())["argument_specs"]["main"]["options"]
    types = {"str": str, "bool": bool, "int": int, "list": list, "dict": dict, "path": str}
    for name, value in values.items():
        if name in spec:
            assert isinstance(value, types[spec[name]["type"]]), (name, value)
            if "choices" in spec[name]:  # of the value, or of each element of a list
                chosen = value if isinstance(value, list) else [value]
                assert set(chosen) <= set(spec[name]["choices"]), (name, value)
