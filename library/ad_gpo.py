#!/usr/bin/python
"""Create and maintain a Group Policy object end to end: GPC over LDAP, GPT over SMB, links."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: ad_gpo
short_description: Create, update, link and remove an Active Directory Group Policy object
description:
  - Manages both halves of a GPO from Linux, without Windows tools; the groupPolicyContainer
    object (C(displayName), C(gPCFileSysPath), C(flags), C(versionNumber),
    C(gPCFunctionalityVersion), C(gPCUserExtensionNames), child containers C(CN=User) and
    C(CN=Machine)) over LDAP, and the template folder in SYSVOL (C(GPT.INI),
    C(User\\Registry.pol)) over SMB.
  - User registry policy comes from O(credential_roaming) and O(credroam_agent) (named settings
    with range checks) and from O(registry_values) (any user registry policy).
  - The user version is bumped in C(GPT.INI) and C(versionNumber) together, and only when the
    Registry.pol content changes (compared entry by entry, not byte by byte); a second run with
    the same settings changes nothing.
  - A GPO whose directory and SYSVOL versions differ is reported (RV(version_mismatch), a
    warning) and repaired with O(repair_version_mismatch).
  - Links (C(gPLink) of OUs, the domain or sites) are managed here too, because a GPO without its
    links is not a rollout step of its own; read-only queries are left to an C(_info) module.
  - The GPO folder's NT ACL follows the GPC's C(nTSecurityDescriptor) (allow ACEs inherited to
    files and folders, directory rights mapped to file rights, as GPMC and C(samba-tool gpo
    create) set it), and every file and folder inside carries that same ACL, as C(samba-tool
    ntacl sysvolreset) sets it; so C(samba-tool gpo aclcheck) and C(samba-tool ntacl
    sysvolcheck) are clean. The folder's ACL is set before anything is created in it, and every
    ACL is rewritten whenever it differs (after a O(security_filtering) change, or when someone
    changed it).
  - A run plans before it writes; every option is checked, every SYSVOL server reached, every
    O(security_filtering) group resolved and every O(links) target read first, so a mistake
    fails the run with nothing written. If a write then fails, the run reports C(changed),
    the RV(operations) done and the RV(operations_left); running it again completes the GPO.
  - SYSVOL is not replicated between Samba DCs; the GPO's folder is kept on every DC in
    O(sysvol_servers), each compared and written on its own, all with the same version. A
    lagging copy is reported (RV(lagging_sysvols), a warning) and repaired with
    O(repair_version_mismatch).
version_added: "0.1.0"
author: credroam
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - credroam_ldap
  - credroam_sysvol
attributes:
  check_mode:
    support: full
    details: RV(operations) lists the LDAP and SMB writes that would be performed.
  diff_mode:
    support: full
  platform:
    platforms: posix
    details: Runs on the controller (delegated to localhost) and reaches the DCs over the network.
seealso:
  - module: ad_gpo_info
  - module: ad_schema
options:
  name:
    description:
      - Display name of the GPO. The GPO is found by this name, which must be unique, unless
        O(guid) is given; with O(guid), a different name renames the GPO.
    type: str
  guid:
    description:
      - GUID of an existing GPO (with or without braces). On creation a new GUID is generated
        unless this is given.
    type: str
  state:
    description: V(absent) removes the links, the SYSVOL folder and the container objects.
    type: str
    choices: [present, absent]
    default: present
  credential_roaming:
    description:
      - Credential roaming settings, written as REG_DWORD values under
        C(HKCU\\Software\\Policies\\Microsoft\\Cryptography\\AutoEnrollment). Options left out
        are not managed.
    type: dict
    suboptions:
      enabled: {description: C(DIMSRoaming), type: bool}
      tombstone_days: {description: "C(DIMSRoamingTombstoneDays), 1-3650.", type: int}
      max_tokens: {description: "C(DIMSRoamingMaxNumTokens), 1-10000.", type: int}
      max_token_size: {description: "C(DIMSRoamingMaxTokenSize), 1-100000 bytes.", type: int}
      roam_unaffiliated_keys: {description: C(RoamUnaffiliatedKeys), type: bool}
      roam_unused_dpapi_keys: {description: C(RoamUnusedDpapiKeys), type: bool}
      roam_smartcard_certificates: {description: C(RoamSmartCardCertificates), type: bool}
  credroam_agent:
    description:
      - Settings of the credroam sync agent, under C(HKCU\\Software\\Policies\\credroam) (the
        same values the published ADMX describes).
    type: dict
    suboptions:
      sync_interval_minutes: {description: "C(SyncIntervalMinutes), 5-1440.", type: int}
      archive_expired: {description: C(ArchiveExpired), type: bool}
      remove_at_logoff: {description: C(RemoveAtLogoff), type: bool}
      recovery_retention_days:
        description: >-
          C(RecoveryRetentionDays), 1-3650: days a recovery copy is kept (unset: the tombstone
          days).
        type: int
      full_sync_interval_hours:
        description: >-
          C(FullSyncIntervalHours), 1-168: a full sync at least this often, even when the fast
          check finds nothing changed (default 4).
        type: int
      recovery_key_fingerprint:
        description: C(RecoveryKeyFingerprint), SHA-256 hex of the recovery public key.
        type: str
  registry_values:
    description:
      - Further user registry policy values. Keys are relative to HKCU (a C(HKCU\\) prefix is
        accepted). V(absent) writes a C(**del.<value>) entry, which makes clients delete it.
    type: list
    elements: dict
    default: []
    suboptions:
      key: {description: Registry key., type: str, required: true}
      value: {description: Value name (empty for the default value)., type: str, required: true}
      type:
        description: Value type.
        type: str
        choices: [REG_SZ, REG_EXPAND_SZ, REG_BINARY, REG_DWORD, REG_MULTI_SZ, REG_QWORD]
      data:
        description:
          - Integer for REG_DWORD/REG_QWORD, string for REG_SZ/REG_EXPAND_SZ, list of strings for
            REG_MULTI_SZ, hex string for REG_BINARY.
        type: raw
      state: {description: Set or delete., type: str, choices: [present, absent], default: present}
  registry_exclusive:
    description: Drop every Registry.pol entry not given by the options above.
    type: bool
    default: false
  links:
    description:
      - Containers (OU, domain or site DNs) to link the GPO to, or unlink it from. Not given
        means links are not managed.
    type: list
    elements: dict
    suboptions:
      target: {description: DN of the container., type: str, required: true}
      state: {description: Link or unlink., type: str, choices: [present, absent], default: present}
      enabled: {description: Link enabled., type: bool, default: true}
      enforced: {description: Link enforced (no override)., type: bool, default: false}
      order:
        description:
          - Link order as in GPMC, 1 being the highest precedence. Without it an existing link
            keeps its place and a new one gets the lowest precedence.
        type: int
  links_exclusive:
    description: Unlink the GPO from every container not listed in O(links).
    type: bool
    default: false
  repair_version_mismatch:
    description:
      - When C(versionNumber) and a C(GPT.INI) disagree (or C(GPT.INI) is missing, or a SYSVOL's
        C(Registry.pol) differs from the first one's), set every copy and the GPC to the highest
        version (one higher when a copy at that version held other content), recreating
        missing folders.
    type: bool
    default: false
  security_filtering:
    description:
      - Groups (sAMAccountName, DN or SID) that get "Apply Group Policy" on the GPO; every other
        Apply Group Policy ACE, including the default one of Authenticated Users, is removed.
        Each group also gets Read; Authenticated Users keep Read, which clients need.
      - Not given means the ACL is not managed.
    type: list
    elements: str
  publish_admx:
    description:
      - Render credroam's administrative templates and write them to SYSVOL; C(credroam.admx)
        and C(en-US\\credroam.adml) to the central store (C(Policies\\PolicyDefinitions)), and the
        legacy C(DIMS.adm) to the GPO's C(Adm) folder. Files already identical are not written.
    type: bool
    default: false
  admx_template_dir:
    description:
      - Folder on the controller with C(credroam.admx.j2), C(credroam.adml.j2) and C(DIMS.adm.j2)
        (the roaming_gpo role's C(templates)). Required with O(publish_admx).
    type: path
requirements: [ldap3, smbprotocol, jinja2 (for publish_admx)]
notes:
  - Supports check mode and diff mode. In check mode nothing is written; RV(operations) lists
    what would be.
"""

EXAMPLES = r"""
- name: Credential roaming GPO linked to the roaming OU
  ad_gpo:
    server: dc1.lab.example
    ca_cert: /etc/credroam/lab-ca.pem
    bind_user: Administrator@LAB.EXAMPLE
    bind_password: "{{ admin_password }}"
    name: Credential Roaming
    credential_roaming:
      enabled: true
      tombstone_days: 60
      max_tokens: 2000
      max_token_size: 65535
    links:
      - target: OU=RoamingUsers,DC=lab,DC=example
        enforced: true
    # SYSVOL is not replicated between Samba DCs: keep the GPO's folder on both.
    sysvol_servers: [dc1.lab.example, dc2.lab.example]
  delegate_to: localhost
"""

RETURN = r"""
guid:
  description: GUID of the GPO, with braces (in check mode, a new GPO gets a GUID that is not kept).
  returned: when the GPO exists or would exist
  type: str
  sample: "{6C1F5E6B-9B7E-4E0F-8E7A-1E4F8A3D2C10}"
dn:
  description: DN of the groupPolicyContainer.
  returned: when the GPO exists or would exist
  type: str
gpt_path:
  description: gPCFileSysPath (UNC path of the GPT folder).
  returned: when the GPO exists or would exist
  type: str
version:
  description: Version after the run, as user, computer and the combined number.
  returned: state=present
  type: dict
  sample: {user: 2, computer: 0, number: 131072}
sysvol_versions:
  description: GPT.INI version on each SYSVOL server after the run (null when missing).
  returned: state=present
  type: dict
  sample: {dc1.lab.example: 131072, dc2.lab.example: 131072}
lagging_sysvols:
  description: SYSVOL servers whose copy lagged before the run (see O(sysvol_servers)).
  returned: state=present
  type: list
  elements: str
version_mismatch:
  description: The directory and SYSVOL versions (or contents) disagree and were left so.
  returned: state=present
  type: bool
version_mismatch_found:
  description: The versions disagreed before the run (repaired or not).
  returned: state=present
  type: bool
registry_values:
  description: Registry.pol entries after the run (key, value, type, data or state=absent).
  returned: state=present
  type: list
  elements: dict
links:
  description: Containers linking the GPO after the run, with enabled, enforced and order.
  returned: state=present and links given
  type: dict
security_filtering:
  description: SIDs holding Apply Group Policy after the run.
  returned: state=present and security_filtering given
  type: list
  elements: str
operations:
  description:
    - Every write performed (or, in check mode, that would be), in order, also when a later
      write failed; kind is one of ldap_add, ldap_modify, ldap_delete, smb_mkdir, smb_write,
      smb_set_acl (the NT ACL of the GPO folder or of a file or folder in it),
      smb_remove_tree; target is the DN or the Policies-relative path; SMB operations name
      their server.
  returned: always
  type: list
  elements: dict
  sample:
    - {kind: smb_write, target: "{6C1F5E6B-9B7E-4E0F-8E7A-1E4F8A3D2C10}\\GPT.INI",
       server: dc1.lab.example, size: 58}
operations_left:
  description: The planned writes not made because one failed, in order (see RV(operations)).
  returned: failure after some writes
  type: list
  elements: dict
"""

import traceback

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.credroam.gpo.model import GpoError
from ansible.module_utils.credroam.gpo.settings import (
    AGENT_POLICY,
    CREDENTIAL_ROAMING,
    policy_entries,
    registry_value_entry,
)
from ansible.module_utils.credroam_ansible import (
    DIRECTORY_FAILURES,
    LDAP_REQUIRED_IF,
    connect_or_fail,
    exit_with_diff,
    failure_message,
    ldap_argument_spec,
    require_libraries,
    validate_connection,
)
from ansible.module_utils.credroam_sysvol_ansible import (
    SYSVOL_MUTUALLY_EXCLUSIVE,
    gpo_engine,
    sysvol_argument_spec,
    validate_sysvol,
)

try:
    from ansible.module_utils.credroam.connection import close
    from ansible.module_utils.credroam.gpo.engine import (
        GpoApplier,
        GpoIncomplete,
        GpoRequest,
        LinkRequest,
    )

    CORE_IMPORT_ERROR = None
except ImportError:  # reported by require_libraries once the module is built
    CORE_IMPORT_ERROR = traceback.format_exc()


def _dict_option(table) -> dict:
    options = {}
    for setting in table.settings:
        kind = {"bool": "bool", "int": "int", "text": "str"}[setting.kind]
        options[setting.option] = {"type": kind}
    return {"type": "dict", "options": options}


def argument_spec() -> dict:
    spec = ldap_argument_spec()
    spec.update(
        name={"type": "str"},
        guid={"type": "str"},
        state={"type": "str", "default": "present", "choices": ["present", "absent"]},
        credential_roaming=_dict_option(CREDENTIAL_ROAMING),
        credroam_agent=_dict_option(AGENT_POLICY),
        registry_values={
            "type": "list",
            "elements": "dict",
            "default": [],
            "options": {
                "key": {"type": "str", "required": True, "no_log": False},
                "value": {"type": "str", "required": True},
                "type": {
                    "type": "str",
                    "choices": [
                        "REG_SZ",
                        "REG_EXPAND_SZ",
                        "REG_BINARY",
                        "REG_DWORD",
                        "REG_MULTI_SZ",
                        "REG_QWORD",
                    ],
                },
                "data": {"type": "raw"},
                "state": {"type": "str", "default": "present", "choices": ["present", "absent"]},
            },
        },
        registry_exclusive={"type": "bool", "default": False},
        links={
            "type": "list",
            "elements": "dict",
            "options": {
                "target": {"type": "str", "required": True},
                "state": {"type": "str", "default": "present", "choices": ["present", "absent"]},
                "enabled": {"type": "bool", "default": True},
                "enforced": {"type": "bool", "default": False},
                "order": {"type": "int"},
            },
        },
        links_exclusive={"type": "bool", "default": False},
        repair_version_mismatch={"type": "bool", "default": False},
        security_filtering={"type": "list", "elements": "str"},
        publish_admx={"type": "bool", "default": False},
        admx_template_dir={"type": "path"},
        **sysvol_argument_spec(),
    )
    return spec


def build_request(params: dict, check_mode: bool) -> GpoRequest:
    entries = policy_entries(CREDENTIAL_ROAMING, params.get("credential_roaming"))
    entries += policy_entries(AGENT_POLICY, params.get("credroam_agent"))
    entries += [registry_value_entry(item) for item in params.get("registry_values") or []]
    links = None
    if params.get("links") is not None:
        links = [LinkRequest(**item) for item in params["links"]]
    return GpoRequest(
        name=params.get("name"),
        guid=params.get("guid"),
        state=params["state"],
        entries=entries,
        registry_exclusive=params["registry_exclusive"],
        links=links,
        links_exclusive=params["links_exclusive"],
        repair_version_mismatch=params["repair_version_mismatch"],
        security_filtering=params.get("security_filtering"),
        check_mode=check_mode,
    )


def main() -> None:
    module = AnsibleModule(
        argument_spec=argument_spec(),
        required_if=[*LDAP_REQUIRED_IF, ("publish_admx", True, ("admx_template_dir",))],
        required_one_of=[("name", "guid")],
        mutually_exclusive=SYSVOL_MUTUALLY_EXCLUSIVE,
        supports_check_mode=True,
    )
    require_libraries(module, CORE_IMPORT_ERROR, "ldap3", "smbprotocol")
    params = module.params
    if params["publish_admx"]:
        require_libraries(module, None, "jinja2")
    # Every argument is checked before the first packet: a bad value is reported as such even
    # when the DC is down.
    try:
        request = build_request(params, module.check_mode)
    except GpoError as exc:
        module.fail_json(msg=f"invalid GPO settings: {exc}")
    validate_sysvol(module)
    conn = connect_or_fail(module, validate_connection(module))
    applier = None
    try:
        applier = gpo_engine(GpoApplier, conn, params)
        if params["publish_admx"] and params["state"] == "present":
            request.files = _admin_templates(module, applier, request)
        result = applier.apply(request)
    except GpoIncomplete as exc:
        # Some writes were made: the run changed the GPO, and says what it left undone.
        module.fail_json(
            msg=f"{failure_message(exc.cause, params)}; {exc.summary}",
            changed=bool(exc.done),
            operations=exc.done,
            operations_left=exc.left,
        )
    except DIRECTORY_FAILURES as exc:
        # Raised while planning: every check comes before the first write.
        msg = f"{failure_message(exc, params)}; nothing was written"
        module.fail_json(msg=msg, operations=[])
    finally:
        if applier is not None:
            applier.close()
        close(conn)  # a DC that went away must not hide the cause
    warnings = result.pop("warnings")
    for warning in warnings:
        module.warn(warning)
    exit_with_diff(module, result)


def _admin_templates(module: AnsibleModule, applier: GpoApplier, request: GpoRequest) -> dict:
    from ansible.module_utils.credroam_gpo_templates import (
        render_admin_templates,
        template_dir_exists,
    )

    template_dir = module.params["admx_template_dir"]
    if not template_dir_exists(template_dir):
        module.fail_json(msg=f"admx_template_dir {template_dir} lacks the credroam templates")
    gpc = applier.find(request.name, request.guid)
    guid = gpc.guid if gpc else None
    if guid is None:
        from ansible.module_utils.credroam.gpo.model import new_gpo_guid

        request.guid = guid = new_gpo_guid()
    return render_admin_templates(template_dir, guid)


if __name__ == "__main__":
    main()
