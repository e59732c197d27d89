"""Render credroam's administrative templates (ADMX, ADML, legacy DIMS.adm) with jinja2.

Ansible-side helper (jinja2 is not a core dependency). The values, ranges and defaults come from
the settings tables in ``credroam.gpo.settings`` only, so the templates can never disagree
with what the ``ad_gpo`` module writes to Registry.pol.
"""

from __future__ import annotations

import os

try:
    from ansible.module_utils.credroam.gpo.settings import (
        AGENT_POLICY,
        CREDENTIAL_ROAMING,
        PolicyTable,
    )
except ImportError:  # tests import the core as ``credroam``
    from credroam.gpo.settings import AGENT_POLICY, CREDENTIAL_ROAMING, PolicyTable

# Template file -> where it goes. Central-store paths are relative to SYSVOL\<domain>\Policies;
# DIMS.adm (2003-era editors) belongs in the GPO's own Adm folder, so "{guid}" is filled in.
ADMIN_TEMPLATES = {
    "credroam.admx.j2": "PolicyDefinitions\\credroam.admx",
    "credroam.adml.j2": "PolicyDefinitions\\en-US\\credroam.adml",
    "DIMS.adm.j2": "{guid}\\Adm\\DIMS.adm",
}


def _table_view(table: PolicyTable) -> dict:
    return {
        "name": table.name,
        "key": table.key,
        "settings": [
            {
                "option": s.option,
                "value_name": s.value_name,
                "kind": s.kind,
                "display": s.display,
                "explain": s.explain,
                "minimum": s.minimum,
                "maximum": s.maximum,
                "default": s.default,
                "max_length": s.max_length,
            }
            for s in table.settings
        ],
    }


def template_context() -> dict:
    return {"roaming": _table_view(CREDENTIAL_ROAMING), "agent": _table_view(AGENT_POLICY)}


def render_admin_templates(template_dir: str, guid: str) -> dict[str, bytes]:
    """{SYSVOL Policies-relative path: file bytes} for every administrative template.

    ADMX/ADML are UTF-8 XML; DIMS.adm is UTF-16LE with a BOM, as the ADM editor expects.
    """
    import jinja2  # imported here so that a module that publishes nothing does not need it

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(template_dir),
        undefined=jinja2.StrictUndefined,
        autoescape=jinja2.select_autoescape(enabled_extensions=("admx.j2", "adml.j2")),
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    context = template_context()
    files = {}
    for name, destination in ADMIN_TEMPLATES.items():
        text = env.get_template(name).render(**context)
        path = destination.format(guid=guid)
        if name.endswith(".adm.j2"):
            files[path] = b"\xff\xfe" + text.replace("\n", "\r\n").encode("utf-16-le")
        else:
            files[path] = text.encode("utf-8")
    return files


def template_dir_exists(template_dir: str) -> bool:
    return all(os.path.isfile(os.path.join(template_dir, name)) for name in ADMIN_TEMPLATES)
