"""Administrative templates: well-formed, and every value and range taken from the tables."""

from __future__ import annotations

import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

pytest.importorskip("jinja2", reason="templates render with jinja2, Ansible's (.venv/bin/pytest)")

from credroam_gpo_templates import ADMIN_TEMPLATES, render_admin_templates

from credroam.gpo.settings import AGENT_POLICY, CREDENTIAL_ROAMING
from tests.unit.conftest import SHARED_FIXTURES

TEMPLATES = Path(__file__).resolve().parents[2] / "roles" / "roaming_gpo" / "templates"
NS = {"p": "http://schemas.microsoft.com/GroupPolicy/2006/07/PolicyDefinitions"}
GUID = "{0D7B3F37-6B3C-4F4B-9B0E-2B9A1C6E5D41}"


@pytest.fixture(scope="module")
def rendered() -> dict[str, bytes]:
    return render_admin_templates(str(TEMPLATES), GUID)


def test_every_template_is_rendered_to_its_place(rendered):
    assert set(rendered) == {
        "PolicyDefinitions\\credroam.admx",
        "PolicyDefinitions\\en-US\\credroam.adml",
        f"{GUID}\\Adm\\DIMS.adm",
    }
    assert set(ADMIN_TEMPLATES) == {p.name for p in TEMPLATES.glob("*.j2")}


def test_admx_policies_match_the_agent_table(rendered):
    root = ET.fromstring(rendered["PolicyDefinitions\\credroam.admx"])
    policies = {p.get("name"): p for p in root.iterfind("p:policies/p:policy", NS)}
    assert set(policies) == {s.value_name for s in AGENT_POLICY.settings}
    for setting in AGENT_POLICY.settings:
        policy = policies[setting.value_name]
        assert policy.get("class") == "User"
        assert policy.get("key") == AGENT_POLICY.key
        if setting.kind == "bool":
            assert policy.get("valueName") == setting.value_name
            assert policy.find("p:enabledValue/p:decimal", NS).get("value") == "1"
            assert policy.find("p:disabledValue/p:decimal", NS).get("value") == "0"
        elif setting.kind == "int":
            element = policy.find("p:elements/p:decimal", NS)
            assert element.get("valueName") == setting.value_name
            assert int(element.get("minValue")) == setting.minimum
            assert int(element.get("maxValue")) == setting.maximum
        else:
            element = policy.find("p:elements/p:text", NS)
            assert element.get("valueName") == setting.value_name
            assert int(element.get("maxLength")) == setting.max_length


def test_adml_defines_every_string_and_presentation_the_admx_uses(rendered):
    admx = rendered["PolicyDefinitions\\credroam.admx"].decode()
    adml = ET.fromstring(rendered["PolicyDefinitions\\en-US\\credroam.adml"])
    strings = {s.get("id"): s.text for s in adml.iterfind(".//p:stringTable/p:string", NS)}
    presentations = {p.get("id"): p for p in adml.iterfind(".//p:presentationTable/*", NS)}
    assert set(re.findall(r"\$\(string\.(\w+)\)", admx)) <= set(strings)
    assert set(re.findall(r"\$\(presentation\.(\w+)\)", admx)) == set(presentations)
    interval = AGENT_POLICY.setting("sync_interval_minutes")
    box = presentations[interval.value_name].find("p:decimalTextBox", NS)
    assert int(box.get("defaultValue")) == interval.default
    assert (
        f"Range {interval.minimum} to {interval.maximum}"
        in strings[interval.value_name + "_Explain"]
    )


def adm_text(rendered) -> str:
    raw = rendered[f"{GUID}\\Adm\\DIMS.adm"]
    assert raw.startswith(b"\xff\xfe"), "ADM files are UTF-16LE with a BOM"
    return raw[2:].decode("utf-16-le")


def test_dims_adm_matches_the_credential_roaming_table(rendered):
    text = adm_text(rendered)
    assert re.search(r"^CLASS USER\r$", text, re.M)
    assert f'KEYNAME "{CREDENTIAL_ROAMING.key}"' in text
    policies = dict(re.findall(r"POLICY !!(\w+)\r\n(.*?)END POLICY", text, re.S))
    assert set(policies) == {s.value_name for s in CREDENTIAL_ROAMING.settings}
    for setting in CREDENTIAL_ROAMING.settings:
        body = policies[setting.value_name]
        assert f'VALUENAME "{setting.value_name}"' in body
        if setting.kind == "int":
            limits = f"MIN {setting.minimum} MAX {setting.maximum} DEFAULT {setting.default}"
            assert limits in body
        else:
            assert "VALUEON NUMERIC 1" in body and "VALUEOFF NUMERIC 0" in body


def test_dims_adm_defines_every_string_it_references(rendered):
    text = adm_text(rendered)
    body, strings = text.split("[strings]")
    defined = set(re.findall(r"^(\w+)=\"[^\"\r\n]*\"\r$", strings, re.M))
    assert set(re.findall(r"!!(\w+)", body)) <= defined


# --- Microsoft's ADMX schema ----------------------------------------------------------------
ADMX_SCHEMA = SHARED_FIXTURES / "admx-schema"
XML_FILES = ("PolicyDefinitions\\credroam.admx", "PolicyDefinitions\\en-US\\credroam.adml")


@pytest.fixture(scope="module")
def admx_schema(tmp_path_factory) -> Path:
    """The schema's entry point, as libxml2 can read it.

    Its patterns write ``\\$``, which .NET reads as ``$`` and libxml2 rejects; the fixture's
    README says to read it as ``$`` on a temporary copy, so the fixture itself is only read.
    """
    if not ADMX_SCHEMA.is_dir():
        pytest.skip(f"shared fixture {ADMX_SCHEMA} is absent")
    if shutil.which("xmllint") is None:
        pytest.fail("xmllint (Debian libxml2-utils) is needed: run make deps")
    folder = tmp_path_factory.mktemp("admx-schema")
    for xsd in ADMX_SCHEMA.glob("*.xsd"):
        (folder / xsd.name).write_text(xsd.read_text(encoding="utf-8-sig").replace("\\$", "$"))
    return folder / "PolicyDefinitionFiles.xsd"


def schema_errors(schema: Path, document: bytes, tmp_path: Path) -> str:
    """What xmllint finds wrong with ``document`` under ``schema`` ("" when it validates)."""
    path = tmp_path / "document.xml"
    path.write_bytes(document)
    run = subprocess.run(
        ["xmllint", "--noout", "--nonet", "--schema", str(schema), str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    return "" if run.returncode == 0 else run.stderr


@pytest.mark.parametrize("name", XML_FILES)
def test_rendered_template_validates_against_microsofts_admx_schema(
    rendered, admx_schema, tmp_path, name
):
    assert schema_errors(admx_schema, rendered[name], tmp_path) == ""


def test_the_schema_check_rejects_a_string_reference_windows_would_not_resolve(
    rendered, admx_schema, tmp_path
):
    admx = rendered["PolicyDefinitions\\credroam.admx"]
    broken = admx.replace(b'displayName="$(string.', b'displayName="(string.', 1)
    assert broken != admx
    assert "displayName" in schema_errors(admx_schema, broken, tmp_path)
