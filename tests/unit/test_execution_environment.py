"""The execution environment: `ansible-builder create` makes its build context from
execution-environment.yml (no container engine runs here, so the image is not built), and the
context holds what the content needs at the repository's pins."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
BUILDER = REPO / ".venv" / "bin" / "ansible-builder"
# Collections whose modules ship inside ansible-core itself.
BUILTIN = {"ansible.builtin", "ansible.legacy"}


def pins(path: Path) -> dict[str, str]:
    found = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, version = line.split("==")
            found[name.lower()] = version
    return found


@pytest.fixture(scope="module")
def context(tmp_path_factory) -> Path:
    if not BUILDER.exists():
        pytest.skip("ansible-builder is not in the venv (make deps)")
    out = tmp_path_factory.mktemp("ee")
    run = subprocess.run(
        [str(BUILDER), "create", "-f", "execution-environment.yml", "-c", str(out),
         "--output-filename", "Containerfile"],
        cwd=REPO, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    return out


def test_the_context_has_a_containerfile_on_the_pinned_ansible_core_and_runner(context):
    containerfile = (context / "Containerfile").read_text()
    core = pins(REPO / "requirements.txt")["ansible-core"]
    assert f'ARG ANSIBLE_INSTALL_REFS="ansible-core=={core} ansible-runner==' in containerfile
    assert re.search(r'^ARG EE_BASE_IMAGE="[^"]+"$', containerfile, re.MULTILINE)
    assert "COPY _build/collections/ /usr/share/ansible/collections/" in containerfile


def test_python_requirements_are_the_runtime_subset_at_the_repositorys_pins(context):
    repository = pins(REPO / "requirements.txt")
    built = pins(context / "_build" / "requirements.txt")
    assert built == pins(REPO / "ee" / "requirements.txt")
    assert {name: repository[name] for name in built} == built
    assert {"ldap3", "cryptography", "smbprotocol", "pywinrm", "gssapi"} <= set(built)
    assert not {"pytest", "ruff", "molecule", "ansible-lint", "hypothesis"} & set(built)


def test_system_dependencies_come_from_bindep(context):
    bindep = (context / "_build" / "bindep.txt").read_text()
    assert bindep == (REPO / "ee" / "bindep.txt").read_text()
    assert "krb5-devel [compile platform:rpm]" in bindep


def used_collections() -> set[str]:
    """Every collection whose modules the roles, playbooks and scenarios name (FQCN)."""
    names = set()
    for path in [*REPO.glob("roles/**/*.yml"), *REPO.glob("playbooks/*.yml"),
                 *REPO.glob("molecule/**/*.yml")]:  # fmt: skip
        for match in re.finditer(r"^\s*-?\s*([a-z_]+\.[a-z_]+)\.[a-z_]+:", path.read_text(), re.M):
            names.add(match.group(1))
    return names - BUILTIN


def test_every_collection_the_content_uses_is_in_the_image_as_the_ansible_package_ships_it(
    context,
):
    installed = {}
    for manifest in (context / "_build" / "collections").glob(
        "ansible_collections/*/*/MANIFEST.json"
    ):
        info = json.loads(manifest.read_text())["collection_info"]
        installed[f"{info['namespace']}.{info['name']}"] = info["version"]
    assert used_collections() <= set(installed), used_collections()
    venv = REPO / ".venv/lib/python3.11/site-packages/ansible_collections"
    for name, version in installed.items():
        shipped = json.loads((venv / name.replace(".", "/") / "MANIFEST.json").read_text())
        assert shipped["collection_info"]["version"] == version


def test_the_definition_is_version_3():
    definition = yaml.safe_load((REPO / "execution-environment.yml").read_text())
    assert definition["version"] == 3
