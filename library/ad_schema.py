#!/usr/bin/python
"""Ansible module ad_schema: extend the AD schema (attributes, classes, auxiliary class links)."""

from __future__ import annotations

DOCUMENTATION = r"""
module: ad_schema
short_description: Extend the Active Directory schema with attributes and classes, forest-safe
description:
  - Finds the schema master (the C(fSMORoleOwner) of the schema naming context) from O(server) and
    writes there, with the same credentials and TLS settings.
  - Adds missing C(attributeSchema) and C(classSchema) objects, adds auxiliary classes to existing
    classes (for credroam, C(credroamUser) to C(user)), then writes C(schemaUpdateNow).
  - An existing object that shares a name, cn or OID with a definition but differs in what
    defines it (OID, syntax, single-valued, linked, required searchFlags bits, property set) is
    never modified; the module fails, shows both definitions and writes nothing.
    Objects that exist and match are reported in RV(verified).
  - O(preset=credroam) brings credroam's definitions, kept in one table in
    C(module_utils/credroam/schema/definitions.py). They are the four native roaming attributes,
    verified on a 2008 R2+ schema and added only where missing, and credroam's own linked,
    confidential DN-Binary attributes C(credroamKeyEnvelopes) and C(credroamRoamingKeys) on the
    auxiliary class C(credroamUser), which is added to C(user).
  - Runs from the controller (ldap3); check mode and diff mode show the exact LDAP adds and
    modifies that would be executed (RV(operations)).
version_added: "0.1.0"
author: credroam
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - credroam_ldap
attributes:
  check_mode:
    support: full
    details: RV(added) and RV(modlist) list the LDAP operations that would be executed.
  diff_mode:
    support: full
  platform:
    platforms: posix
    details: Runs on the controller (delegated to localhost) and reaches the DCs over the network.
seealso:
  - module: ad_gpo
  - module: ad_gpo_info
options:
  preset:
    description:
      - V(credroam) adds credroam's own definitions to O(attributes), O(classes) and O(extend).
    type: str
    choices: [credroam, none]
    default: none
  oid_base:
    description:
      - Arc under which definitions given by O(attributes[].oid_index) / O(classes[].oid_index)
        get their OIDs, as C(<oid_base>.1.<index>) (attributes) and C(<oid_base>.2.<index>)
        (classes).
      - The default is derived, with Microsoft's documented oidgen method, from credroam's fixed
        GUID 3a71eca5-4273-4a26-b0b8-d236a98a134f under 1.2.840.113556.1.8000.2554, that is
        C(1.2.840.113556.1.8000.2554.14961.60581.17011.18982.45240.13776553.9048911).
      - Changing it for a forest where credroam's attributes already exist makes the run fail
        with a conflict (the OIDs differ), by design.
    type: str
  attributes:
    description: Attribute definitions (in addition to the preset's).
    type: list
    elements: dict
    default: []
    suboptions:
      name:
        description: lDAPDisplayName.
        type: str
        required: true
      cn:
        description: Common name of the schema object; defaults to O(attributes[].name).
        type: str
      attribute_id:
        description: The OID; give this or O(attributes[].oid_index).
        type: str
      oid_index:
        description: Last arc under C(<oid_base>.1).
        type: int
      syntax:
        description: Attribute syntax; mapped to attributeSyntax, oMSyntax and oMObjectClass.
        type: str
        required: true
        choices: [boolean, integer, enumeration, large-integer, octet-string, sid, oid,
                  unicode-string, ia5-string, printable-string, numeric-string,
                  case-sensitive-string, generalized-time, utc-time, nt-security-descriptor,
                  dn, dn-binary, dn-string]
      single_valued:
        description: isSingleValued.
        type: bool
        default: false
      linked:
        description:
          - A forward link. Without O(attributes[].link_id) the DC allocates the linkID
            (linkID written as 1.2.840.113556.1.2.50; Windows Server 2003+ and Samba 4 do this).
          - Multi-valued linked values replicate one by one, so writes through two DCs merge.
        type: bool
        default: false
      link_id:
        description: An explicit, even, forward linkID (for forests that cannot allocate one).
        type: int
      search_flags:
        description: searchFlags bits; an existing attribute must have at least these.
        type: int
        default: 0
      confidential:
        description: Adds searchFlags 128 (reading needs the control access right).
        type: bool
        default: false
      rodc_filtered:
        description: Adds searchFlags 512 (not replicated to read-only DCs).
        type: bool
        default: false
      security_guid:
        description:
          - attributeSecurityGUID, a GUID or V(private-information) (the property set whose
            default ACE lets each user read and write only their own values).
        type: str
      description:
        description: adminDescription.
        type: str
      native:
        description: Microsoft's own attribute; verified or added, never made defunct.
        type: bool
        default: false
  classes:
    description: Class definitions (in addition to the preset's).
    type: list
    elements: dict
    default: []
    suboptions:
      name:
        description: lDAPDisplayName.
        type: str
        required: true
      cn:
        description: Common name; defaults to O(classes[].name).
        type: str
      governs_id:
        description: The OID; give this or O(classes[].oid_index).
        type: str
      oid_index:
        description: Last arc under C(<oid_base>.2).
        type: int
      category:
        description: objectClassCategory.
        type: str
        choices: [auxiliary, structural, abstract]
        default: auxiliary
      subclass_of:
        description: subClassOf.
        type: str
        default: top
      may_contain:
        description: mayContain; entries missing from an existing class of ours are added.
        type: list
        elements: str
        default: []
      must_contain:
        description: mustContain (must match exactly on an existing class).
        type: list
        elements: str
        default: []
      description:
        description: adminDescription.
        type: str
      native:
        description: Not ours; verified, never made defunct.
        type: bool
        default: false
  extend:
    description: Auxiliary classes to add to existing classes.
    type: list
    elements: dict
    default: []
    suboptions:
      class:
        description: lDAPDisplayName of the class to extend, e.g. V(user).
        type: str
        required: true
      auxiliary:
        description: Auxiliary classes to add to its auxiliaryClass.
        type: list
        elements: str
        required: true
  state:
    description:
      - V(present) adds what is missing.
      - V(absent) is refused unless O(defunct=true), because AD schema objects cannot be
        deleted, only made defunct, which is irreversible in practice (OIDs and names stay taken).
    type: str
    choices: [present, absent]
    default: present
  defunct:
    description:
      - With O(state=absent), remove our auxiliary classes from the classes they extend and set
        isDefunct on our own (non-native) classes and attributes.
    type: bool
    default: false
  wait_for_replication:
    description:
      - After a change (or always, when nothing changed), wait until every DC of the forest (the
        nTDSDSA objects under CN=Sites) shows the definitions. Fails after
        O(replication_timeout) seconds naming the DCs that lag and what they lack.
    type: bool
    default: false
  replication_timeout:
    description: Seconds to wait for every DC.
    type: int
    default: 300
  dc_addresses:
    description:
      - Map of DC DNS name to the address to connect to, for DCs whose names the controller
        cannot resolve (the certificate is still checked against the DNS name).
      - Used for the schema master and for O(wait_for_replication).
    type: dict
    default: {}
"""

EXAMPLES = r"""
- name: Extend the schema for credroam and wait for every DC
  ad_schema:
    server: dc1.example.com
    ca_cert: /etc/credroam/ad-ca.pem
    bind_user: schema-admin@example.com
    bind_password: "{{ vault_schema_admin_password }}"
    preset: credroam
    wait_for_replication: true
  delegate_to: localhost
  run_once: true

- name: Refused with an explanation (schema objects cannot be deleted)
  ad_schema:
    server: dc1.example.com
    bind_user: schema-admin@example.com
    bind_password: "{{ vault_schema_admin_password }}"
    preset: credroam
    state: absent
"""

RETURN = r"""
schema_master:
  description: DNS name of the schema master that was written to (or would be).
  type: str
  returned: always
operations:
  description:
    - Every write performed (or, in check mode, that would be), in order, also when a later
      write failed; kind is ldap_add (with objectClass and attributes) or ldap_modify (with
      changes, e.g. auxiliaryClass on user); target is the DN.
  type: list
  elements: dict
  returned: always
  sample:
    - {kind: ldap_add, target: "CN=credroam-User,CN=Schema,...", objectClass: classSchema,
       attributes: {governsID: ["1.2.840..."]}}
    - {kind: ldap_modify, target: "CN=User,CN=Schema,...",
       changes: {auxiliaryClass: {op: add, values: [credroamUser]}}}
verified:
  description: Names of definitions that already exist and match.
  type: list
  elements: str
  returned: always
replication:
  description: With O(wait_for_replication), the DCs checked and how many seconds it took.
  type: dict
  returned: when wait_for_replication
"""

import traceback
from typing import Any

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.credroam.schema.definitions import (
    CREDROAM_OID_BASE,
    SYNTAXES,
    SchemaDefinitionError,
    SchemaDefinitions,
    definitions_from_params,
)
from ansible.module_utils.credroam.schema.plan import (
    SchemaConflict,
    SchemaPlan,
    plan_defunct,
    plan_present,
)
from ansible.module_utils.credroam_ansible import (
    DIRECTORY_FAILURES,
    LDAP_REQUIRED_IF,
    connect_or_fail,
    failure_message,
    ldap_argument_spec,
    require_libraries,
    validate_connection,
)

try:
    from ansible.module_utils.credroam.connection import close, connect, read_root_dse
    from ansible.module_utils.credroam.schema.directory import (
        apply_plan,
        connect_schema_master,
        read_schema,
        wait_for_replication,
    )

    CORE_IMPORT_ERROR = None
except ImportError:  # reported by require_libraries once the module is built
    CORE_IMPORT_ERROR = traceback.format_exc()

ABSENT_REFUSED = (
    "state=absent refused: Active Directory cannot delete attributeSchema or classSchema "
    "objects; they can only be made defunct (isDefunct=TRUE), which keeps their names and OIDs "
    "taken and their values unreadable. Set defunct=true to do that explicitly."
)


def argument_spec() -> dict[str, Any]:
    attribute = {
        "name": {"type": "str", "required": True},
        "cn": {"type": "str"},
        "attribute_id": {"type": "str"},
        "oid_index": {"type": "int"},
        "syntax": {"type": "str", "required": True, "choices": sorted(SYNTAXES)},
        "single_valued": {"type": "bool", "default": False},
        "linked": {"type": "bool", "default": False},
        "link_id": {"type": "int"},
        "search_flags": {"type": "int", "default": 0},
        "confidential": {"type": "bool", "default": False},
        "rodc_filtered": {"type": "bool", "default": False},
        "security_guid": {"type": "str"},
        "description": {"type": "str"},
        "native": {"type": "bool", "default": False},
    }
    klass = {
        "name": {"type": "str", "required": True},
        "cn": {"type": "str"},
        "governs_id": {"type": "str"},
        "oid_index": {"type": "int"},
        "category": {
            "type": "str",
            "default": "auxiliary",
            "choices": ["auxiliary", "structural", "abstract"],
        },
        "subclass_of": {"type": "str", "default": "top"},
        "may_contain": {"type": "list", "elements": "str", "default": []},
        "must_contain": {"type": "list", "elements": "str", "default": []},
        "description": {"type": "str"},
        "native": {"type": "bool", "default": False},
    }
    extension = {
        "class": {"type": "str", "required": True},
        "auxiliary": {"type": "list", "elements": "str", "required": True},
    }
    return {
        **ldap_argument_spec(),
        "preset": {"type": "str", "default": "none", "choices": ["credroam", "none"]},
        "oid_base": {"type": "str"},
        "attributes": {"type": "list", "elements": "dict", "default": [], "options": attribute},
        "classes": {"type": "list", "elements": "dict", "default": [], "options": klass},
        "extend": {"type": "list", "elements": "dict", "default": [], "options": extension},
        "state": {"type": "str", "default": "present", "choices": ["present", "absent"]},
        "defunct": {"type": "bool", "default": False},
        "wait_for_replication": {"type": "bool", "default": False},
        "replication_timeout": {"type": "int", "default": 300},
        "dc_addresses": {"type": "dict", "default": {}},
    }


def definitions(params: dict[str, Any]) -> SchemaDefinitions:
    return definitions_from_params(
        attributes=params["attributes"],
        classes=params["classes"],
        extend=params["extend"],
        oid_base=params["oid_base"] or CREDROAM_OID_BASE,
        preset=params["preset"],
    )


def plan_for(
    params: dict[str, Any], defs: SchemaDefinitions, entries: list[dict[str, Any]], schema_dn: str
) -> SchemaPlan:
    """The writes ``state`` asks for; raises SchemaConflict before planning any."""
    if params["state"] == "absent":
        return plan_defunct(defs, entries, schema_dn)
    return plan_present(defs, entries, schema_dn)


def validated_definitions(module: AnsibleModule) -> SchemaDefinitions:
    """Every argument checked, before any network traffic; the definitions to apply."""
    params = module.params
    try:
        defs = definitions(params)
    except SchemaDefinitionError as exc:
        module.fail_json(msg=f"invalid schema definition: {exc}")
    if params["state"] == "absent" and not params["defunct"]:
        module.fail_json(msg=ABSENT_REFUSED)
    if not (defs.attributes or defs.classes or defs.extensions):
        module.fail_json(msg="nothing to do: give preset, attributes, classes or extend")
    if params["replication_timeout"] <= 0:
        module.fail_json(
            msg=f"replication_timeout must be positive, not {params['replication_timeout']}"
        )
    return defs


def run(module: AnsibleModule) -> dict[str, Any]:
    params = module.params
    defs = validated_definitions(module)
    base = validate_connection(module)
    addresses = params["dc_addresses"]
    conn = connect_or_fail(module, base)
    result: dict[str, Any] = {"changed": False, "operations": [], "verified": []}
    done: list[dict[str, Any]] = []
    try:
        root = read_root_dse(conn)
        result["schema_master"], conn = connect_schema_master(conn, root, base, addresses, connect)
        entries = read_schema(conn, root.schema_naming_context, defs)
        plan = plan_for(params, defs, entries, root.schema_naming_context)
        result["verified"] = plan.verified
        if module._diff:
            result["diff"] = {"before": plan.before, "after": plan.after}
        if module.check_mode:
            done.extend(op.as_operation() for phase in plan.phases() for op in phase)
        elif plan.changed:
            apply_plan(conn, plan, done)
        result.update(changed=bool(done), operations=done)
        if params["wait_for_replication"] and not module.check_mode:
            if params["state"] == "absent":
                module.warn("wait_for_replication is not checked for state=absent")
            else:
                result["replication"] = wait_for_replication(
                    conn, root, base, defs, addresses, params["replication_timeout"], connect
                )
    except SchemaConflict as exc:
        module.fail_json(msg=f"schema conflict, nothing was written:\n{exc}", **result)
    except DIRECTORY_FAILURES as exc:
        # The writes made before the failure are reported: the run changed the schema.
        result.update(changed=bool(done), operations=done)
        module.fail_json(msg=failure_message(exc, params), **result)
    finally:
        close(conn)
    return result


def main() -> None:
    module = AnsibleModule(
        argument_spec=argument_spec(),
        required_if=LDAP_REQUIRED_IF,
        supports_check_mode=True,
    )
    require_libraries(module, CORE_IMPORT_ERROR, "ldap3")
    module.exit_json(**run(module))


if __name__ == "__main__":
    main()
