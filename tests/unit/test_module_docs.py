"""Every module in the tree renders with ansible-doc, as a user reads it, and its documentation
agrees with its argument spec (what ansible-test's validate-modules would check, which cannot run
offline here); secrets are no_log.

ansible-doc merges the doc fragments (credroam_ldap, credroam_sysvol, lab_forest,
ansible.builtin.action_common_attributes), so what is checked is what users see.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
from pathlib import Path

import pytest

pytest.importorskip("ansible", reason="a module test: needs Ansible (.venv/bin/pytest runs it)")

import yaml

REPO = Path(__file__).resolve().parents[2]
LIBRARY = REPO / "library"
ROLE_LIBRARIES = sorted(REPO.glob("roles/*/library"))
MODULES = sorted(path.stem for path in LIBRARY.glob("*.py"))
ALL_MODULES = MODULES + sorted(path.stem for lib in ROLE_LIBRARIES for path in lib.glob("*.py"))
SECRET_WORDS = ("password", "secret", "private_key")


@pytest.fixture(scope="module")
def rendered() -> dict:
    """ansible-doc's JSON for every module, in one run (library/ comes from ansible.cfg)."""
    search_path = os.pathsep.join(str(path) for path in [LIBRARY, *ROLE_LIBRARIES])
    run = subprocess.run(
        [str(REPO / ".venv/bin/ansible-doc"), "-M", search_path, "--json", *ALL_MODULES],
        cwd=REPO,
        env={**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg")},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout or "{}") | {"_stderr": run.stderr}


@pytest.mark.parametrize("name", ALL_MODULES)
def test_the_module_renders_with_ansible_doc(rendered, name):
    assert name in rendered, f"ansible-doc could not render {name}:\n{rendered['_stderr']}"
    doc = rendered[name]["doc"]
    assert doc["short_description"] and doc["description"]


@pytest.mark.parametrize("name", ALL_MODULES)
def test_the_module_has_examples_and_return_values(rendered, name):
    entry = rendered[name]
    examples = yaml.safe_load(entry.get("examples") or "")
    assert isinstance(examples, list) and examples, f"{name}: no EXAMPLES"
    assert any(name in task for task in examples), f"{name}: no example uses the module"
    assert isinstance(entry.get("return"), dict) and entry["return"], f"{name}: no RETURN"


@pytest.mark.parametrize("name", ALL_MODULES)
def test_the_module_declares_check_and_diff_support_and_related_modules(rendered, name):
    doc = rendered[name]["doc"]
    attributes = doc.get("attributes") or {}
    for attribute in ("check_mode", "diff_mode"):
        assert attributes.get(attribute, {}).get("support") in ("full", "partial", "none"), (
            f"{name}: attributes.{attribute}.support"
        )
    assert doc.get("seealso"), f"{name}: no seealso"
    for related in doc["seealso"]:
        if "module" in related:
            assert related["module"] in ALL_MODULES, f"{name}: seealso {related['module']}"


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
def test_documentation_matches_the_argument_spec(rendered, name):
    module = importlib.import_module(name)
    compare(rendered[name]["doc"]["options"], module.argument_spec(), name)


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
