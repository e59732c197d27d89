#!/usr/bin/python
"""Read one Group Policy object end to end (GPC, every SYSVOL copy, links, ACLs); change nothing."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: ad_gpo_info
short_description: Read an Active Directory Group Policy object and the problems it has
description:
  - Reads both halves of a GPO, the groupPolicyContainer over LDAP and its folder on each
    SYSVOL in O(sysvol_servers) over SMB, with the same code that M(ad_gpo) reads with, and
    reports what disagrees. Never writes.
  - Problems found (RV(problems)); V(version_mismatch) (a C(GPT.INI) version other than the
    GPC's C(versionNumber)), V(missing_gpt) (no C(GPT.INI) on a SYSVOL), V(content_mismatch)
    (a SYSVOL's C(Registry.pol) differs from the first SYSVOL's), V(acl_drift) (the folder's
    NT ACL is not the one derived from the GPC's C(nTSecurityDescriptor), which
    C(samba-tool gpo aclcheck) also reports; or a file or folder inside does not carry that
    same ACL, which C(samba-tool ntacl sysvolcheck) reports). M(ad_gpo) repairs all of them.
version_added: "0.1.0"
author: credroam
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - credroam_ldap
  - credroam_sysvol
attributes:
  check_mode:
    support: full
    details: Read-only; runs the same in check mode.
  diff_mode:
    support: none
  platform:
    platforms: posix
    details: Runs on the controller (delegated to localhost) and reaches the DCs over the network.
seealso:
  - module: ad_gpo
options:
  name:
    description: Display name of the GPO (must be unique). One of O(name) and O(guid) is needed.
    type: str
  guid:
    description: GUID of the GPO, with or without braces.
    type: str
requirements: [ldap3, smbprotocol]
notes:
  - Supports check mode (it never changes anything). Reading C(nTSecurityDescriptor) needs an
    account allowed to read the GPO's owner and DACL (a GPO administrator).
"""

EXAMPLES = r"""
- name: Read the credential roaming GPO from both DCs
  ad_gpo_info:
    server: dc1.lab.example
    ca_cert: /etc/credroam/lab-ca.pem
    bind_user: Administrator@LAB.EXAMPLE
    bind_password: "{{ admin_password }}"
    name: Credential Roaming
    sysvol_servers: [dc1.lab.example, dc2.lab.example]
  delegate_to: localhost
  register: roaming_gpo

- name: Fail when the GPO has problems
  ansible.builtin.assert:
    that: roaming_gpo.problems | length == 0
    fail_msg: "{{ roaming_gpo.problems | map(attribute='message') | list }}"
"""

RETURN = r"""
exists:
  description: Whether the GPO exists; the other values are returned only when it does.
  returned: always
  type: bool
guid:
  description: GUID of the GPO, with braces.
  returned: when the GPO exists
  type: str
dn:
  description: DN of the groupPolicyContainer.
  returned: when the GPO exists
  type: str
name:
  description: displayName.
  returned: when the GPO exists
  type: str
gpt_path:
  description: UNC path of the GPT folder as gPCFileSysPath should hold it.
  returned: when the GPO exists
  type: str
attributes:
  description: The GPC's attributes (displayName, gPCFileSysPath, versionNumber, flags, ...).
  returned: when the GPO exists
  type: dict
version:
  description: Version in AD (versionNumber) as user, computer and the combined number.
  returned: when the GPO exists
  type: dict
  sample: {user: 2, computer: 0, number: 131072}
sysvols:
  description:
    - Per SYSVOL server; exists (the folder), version (of GPT.INI, null when missing),
      registry_values (its User\\Registry.pol), acl_in_sync (the NT ACL of the folder and of
      everything in it follows the GPC's).
  returned: when the GPO exists
  type: dict
registry_values:
  description: Registry.pol entries of the first SYSVOL (key, value, type, data or state=absent).
  returned: when the GPO exists
  type: list
  elements: dict
links:
  description: Containers linking the GPO, with enabled, enforced and order (1 = highest).
  returned: when the GPO exists
  type: dict
security_filtering:
  description: SIDs holding Apply Group Policy on the GPC.
  returned: when the GPO exists
  type: list
  elements: str
problems:
  description: What disagrees; each with kind, server and message.
  returned: when the GPO exists
  type: list
  elements: dict
  sample:
    - kind: version_mismatch
      server: dc2.lab.example
      message: GPT.INI version 65536 on dc2.lab.example, versionNumber 131072 in AD
"""

import traceback

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.credroam_ansible import (
    DIRECTORY_FAILURES,
    LDAP_REQUIRED_IF,
    connect_or_fail,
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
    from ansible.module_utils.credroam.gpo.engine import GpoReader

    CORE_IMPORT_ERROR = None
except ImportError:  # reported by require_libraries once the module is built
    CORE_IMPORT_ERROR = traceback.format_exc()


def argument_spec() -> dict:
    spec = ldap_argument_spec()
    spec.update(name={"type": "str"}, guid={"type": "str"}, **sysvol_argument_spec())
    return spec


def main() -> None:
    module = AnsibleModule(
        argument_spec=argument_spec(),
        required_if=LDAP_REQUIRED_IF,
        required_one_of=[("name", "guid")],
        mutually_exclusive=SYSVOL_MUTUALLY_EXCLUSIVE,
        supports_check_mode=True,
    )
    require_libraries(module, CORE_IMPORT_ERROR, "ldap3", "smbprotocol")
    params = module.params
    validate_sysvol(module)
    conn = connect_or_fail(module, validate_connection(module))
    reader = None
    try:
        reader = gpo_engine(GpoReader, conn, params)
        found = reader.inspect(params.get("name"), params.get("guid"))
    except DIRECTORY_FAILURES as exc:
        module.fail_json(msg=failure_message(exc, params))
    finally:
        if reader is not None:
            reader.close()
        close(conn)  # a DC that went away must not hide the cause
    module.exit_json(changed=False, **found)


if __name__ == "__main__":
    main()
