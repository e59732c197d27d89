"""Every module's documentation agrees with its argument spec (what ansible-test's
validate-modules would check, which cannot run offline here), and secrets are no_log."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

pytest.importorskip("ansible", reason="a module test: needs Ansible (.venv/bin/pytest runs it)")

import yaml

LIBRARY = Path(__file__).resolve().parents[2] / "library"
MODULES = sorted(path.stem for path in LIBRARY.glob("*.py"))
FRAGMENTS = {
    "credroam_ldap": "doc_fragments.credroam_ldap",
    "credroam_sysvol": "doc_fragments.credroam_sysvol",
}
SECRET_WORDS = ("password", "secret", "private_key")


def documented_options(module) -> dict:
    doc = yaml.safe_load(module.DOCUMENTATION)
    options = dict(doc.get("options") or {})
    for fragment in doc.get("extends_documentation_fragment") or []:
        fragment_module = importlib.import_module(FRAGMENTS[fragment])
        options.update(yaml.safe_load(fragment_module.ModuleDocFragment.DOCUMENTATION)["options"])
    return options


def compare(documented: dict, spec: dict, where: str) -> None:
    assert set(documented) == set(spec), f"{where}: documented and accepted options differ"
    for name, option in spec.items():
        doc = documented[name]
        label = f"{where}.{name}"
        assert doc.get("type", "str") == option.get("type", "str"), label
        assert doc.get("default") == option.get("default"), label
        assert sorted(doc.get("choices") or []) == sorted(option.get("choices") or []), label
        assert bool(doc.get("required")) == bool(option.get("required")), label
        if "options" in option:
            compare(doc.get("suboptions") or {}, option["options"], label)


@pytest.mark.parametrize("name", MODULES)
def test_documentation_matches_the_argument_spec(name):
    module = importlib.import_module(name)
    compare(documented_options(module), module.argument_spec(), name)


@pytest.mark.parametrize("name", MODULES)
def test_examples_and_return_are_valid_yaml(name):
    module = importlib.import_module(name)
    assert yaml.safe_load(module.EXAMPLES)
    assert isinstance(yaml.safe_load(module.RETURN), dict)


def secret_options(spec: dict, prefix: str = ""):
    for name, option in spec.items():
        if any(word in name for word in SECRET_WORDS):
            yield prefix + name, option
        yield from secret_options(option.get("options") or {}, f"{prefix}{name}.")


@pytest.mark.parametrize("name", MODULES)
def test_secrets_are_never_logged(name):
    spec = importlib.import_module(name).argument_spec()
    for option_name, option in secret_options(spec):
        assert option.get("no_log") is True, f"{name}: {option_name} must be no_log"
