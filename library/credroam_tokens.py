#!/usr/bin/python
"""One user's roaming tokens in the directory: list, remove, prune, export, import, purge."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: credroam_tokens
short_description: List, remove, prune, export, import or purge one user's roaming tokens
description:
  - Acts on the roaming values of one user in Active Directory (C(msPKIAccountCredentials),
    C(msPKIDPAPIMasterKeys), C(credroamKeyEnvelopes), C(credroamRoamingKeys)), bound as the
    user or as an account with the right to read and write the user's Private-Information
    property set (the attributes are confidential).
  - Every write is the sync engine's own - one optimistic LDAP modify that deletes the exact
    values read, adds the new ones and replaces the exact C(msPKIRoamingTimeStamp) read with
    an advanced one, so every agent notices the change (its fast path compares the timestamp
    and the object's C(uSNChanged)). When another writer got in between, the values are read
    again and the operation planned again (at most three times).
  - The plan is made from one read before the first write; check mode writes nothing (no LDAP
    write, no file) and returns the planned RV(operations) and the RV(diff).
  - "O(operation=list): every value with its type, identifier, subject, expiry, size, and
    whether it is a tombstone or archived (RV(tokens)). Never writes."
  - "O(operation=remove): the token O(token) names is written as a tombstone dated after every
    value of it, so every host deletes its copy at its next sync (keeping a recovery copy). A
    certificate or request takes its sealed private key with it, as a sync does."
  - "O(operation=prune): as O(prune) lists - C(tombstones) older than O(tombstone_days) are
    deleted (what a sync does); C(archived) certificates that expired more than
    O(archived_older_than_days) ago are tombstoned with their keys; C(oversize) live tokens over
    O(max_token_size) are tombstoned and values too large to decode deleted; C(malformed)
    values (that fail their checks, which every host skips) are deleted."
  - "O(operation=export): the user's values exactly as read (sealed keys stay sealed) to
    O(path), a JSON document (format C(credroam-tokens-export), version 1, mode 0600): C(user)
    (C(dn), C(object_guid)), C(exported_at), C(server), C(roaming_timestamp) (base64, for
    reference), C(values) (each C(attribute) and C(value), the base64 of the LDAP value) and
    C(tokens) (the listing, for people; not read back). The file is rewritten only when the
    values differ from the ones it holds."
  - "O(operation=import): every live token of the export at O(path) that the directory lacks
    or holds only as a tombstone is written back, dated after what the directory holds so
    every host downloads it again, and every wrapped roaming key record it lacks is added. A
    token the directory holds live with other content is left alone (RV(notes)). An export of
    another user (objectGUID) is refused: sealed keys are bound to their user. A second import
    changes nothing."
  - "O(operation=purge), only with O(confirm=true): O(purge_form=tombstone) writes every live
    token as a tombstone; every host deletes its copies at its next sync, the tombstones go
    after the tombstone days, the wrapped roaming keys stay. O(purge_form=clear) deletes every
    value at once, as Windows' recovery procedure clears the attributes (the timestamp is
    advanced rather than cleared, so agents notice). Hosts then keep their copies - a host with
    its last-synced base takes the absence for replication lag and deletes its copies only
    after the tombstone days; a host without a base (new, or its state file lost) uploads its
    copies again. Use the tombstone form unless the agents are gone (rollback)."
  - With O(path), O(operation=remove), O(operation=prune) and O(operation=purge) first export
    the values to O(path), before any removal (not in check mode, and only when something is
    to be written).
version_added: "0.1.0"
author: credroam
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - credroam_ldap
attributes:
  check_mode:
    support: full
    details: Nothing is written; RV(operations) lists the LDAP modifies that would be sent.
  diff_mode:
    support: full
    details: One line per value before and after (key, state, size; no key material).
  platform:
    platforms: posix
    details: Runs on the controller (delegated to localhost) and reaches the DC over the network.
seealso:
  - module: credroam_info
  - module: credroam_sync
options:
  user:
    description:
      - The user, as a sAMAccountName, a userPrincipalName (with C(@)) or a DN (with C(=)).
    type: str
    required: true
  search_base:
    description: Where to look for O(user) (subtree). Default the domain (rootDSE).
    type: str
  operation:
    description: What to do (see the description).
    type: str
    choices: [list, remove, prune, export, import, purge]
    default: list
  token:
    description:
      - With O(operation=remove), the token to remove - an item key C(%<type>\<identifier>)
        (C(%3\<thumbprint>) a certificate, C(%9\<thumbprint>) its sealed key) or a bare
        identifier, which names every token of it (a thumbprint - the certificate and its key).
    type: str
  path:
    description:
      - The export file on the controller - written by O(operation=export), read by
        O(operation=import); with O(operation=remove), O(operation=prune) or O(operation=purge)
        an export is written there before anything is removed.
    type: path
  prune:
    description: What O(operation=prune) removes.
    type: list
    elements: str
    choices: [tombstones, archived, oversize, malformed]
    default: [tombstones, oversize]
  tombstone_days:
    description: C(DIMSRoamingTombstoneDays) of the policy (1-3650); older tombstones are pruned.
    type: int
    default: 60
  max_token_size:
    description: C(DIMSRoamingMaxTokenSize) of the policy (1-100000 bytes); larger are pruned.
    type: int
    default: 65535
  archived_older_than_days:
    description:
      - Archived certificates that expired more than this many days ago are pruned. Required
        when O(prune) holds C(archived).
    type: int
  purge_form:
    description: How O(operation=purge) removes everything (see the description).
    type: str
    choices: [tombstone, clear]
    default: tombstone
  confirm:
    description: Must be V(true) for O(operation=purge).
    type: bool
    default: false
requirements: [ldap3, cryptography]
notes:
  - Supports check mode and diff mode.
  - The export holds sealed private keys and wrapped roaming keys; it is written 0600. Keep it
    as the directory values themselves are kept - readable only by who may read the user's
    keys.
"""

EXAMPLES = r"""
- name: List alice's tokens
  credroam_tokens:
    server: dc1.example.com
    ca_cert: /etc/credroam/ad-ca.pem
    bind_user: credroam-admin@example.com
    bind_password: "{{ vault_admin_password }}"
    user: alice
  delegate_to: localhost
  register: alice_tokens

- name: Remove one certificate (and its key) everywhere, exporting everything first
  credroam_tokens:
    server: dc1.example.com
    ca_cert: /etc/credroam/ad-ca.pem
    bind_user: credroam-admin@example.com
    bind_password: "{{ vault_admin_password }}"
    user: alice@example.com
    operation: remove
    token: 3F2A0C4B9E8D7F6A5B4C3D2E1F0A9B8C7D6E5F40
    path: /var/backups/credroam/alice.json
  delegate_to: localhost

- name: Prune tombstones, oversize values and certificates archived over a year ago
  credroam_tokens:
    server: dc1.example.com
    ca_cert: /etc/credroam/ad-ca.pem
    bind_user: credroam-admin@example.com
    bind_password: "{{ vault_admin_password }}"
    user: alice
    operation: prune
    prune: [tombstones, oversize, archived]
    archived_older_than_days: 365
  delegate_to: localhost
"""

RETURN = r"""
user_dn:
  description: The user's DN.
  returned: always
  type: str
tokens:
  description:
    - The user's values after the operation (in check mode, as they would be; for
      O(operation=list), as they are) - C(attribute), C(key), C(type), C(identifier),
      C(modified), C(size), C(tombstone), C(archived), C(subject), C(expires) and C(problem)
      (why a value fails its checks); times in ISO 8601 UTC.
  returned: always
  type: list
  elements: dict
changes:
  description: One line per value change written (or planned), e.g. C(replace <attribute> <key>).
  returned: always
  type: list
  elements: str
operations:
  description:
    - The LDAP modifies sent (in check mode, planned), as every credroam module reports them -
      C(kind) C(ldap_modify), C(target) the user's DN, C(changes) per attribute the number of
      values deleted and added (never the values).
  returned: always
  type: list
  elements: dict
export:
  description: The export file written or read - C(path), C(values) (count) and C(written).
  returned: when O(path) is given
  type: dict
notes:
  description: What an import left alone, and why.
  returned: always
  type: list
  elements: str
"""

import json
import os
from datetime import UTC, datetime

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.credroam_ansible import (
    DIRECTORY_FAILURES,
    LDAP_REQUIRED_IF,
    connect_or_fail,
    exit_with_diff,
    failure_message,
    ldap_argument_spec,
    require_libraries,
    user_selector,
    validate_connection,
)

try:
    from ansible.module_utils.credroam.connection import close, read_root_dse
    from ansible.module_utils.credroam.roaming.directory import (
        ConcurrentModification,
        apply_changes,
        build_modifications,
        describe_changes,
        find_user,
        modify_operations,
        read_roaming,
    )
    from ansible.module_utils.credroam.roaming.fsutil import atomic_write
    from ansible.module_utils.credroam.roaming.model import Policy, ReconcileError
    from ansible.module_utils.credroam.roaming.tokenops import (
        ADMIN_LIMITS,
        after_changes,
        check_export,
        describe_record,
        diff_lines,
        export_document,
        import_changes,
        matching_keys,
        prune_changes,
        purge_changes,
        remove_changes,
        same_export,
    )
    from ansible.module_utils.credroam.timestamps import filetime_now

    CORE_IMPORT_ERROR = None
except ImportError:  # reported by require_libraries once the module is built
    import traceback

    CORE_IMPORT_ERROR = traceback.format_exc()

OPERATIONS = ("list", "remove", "prune", "export", "import", "purge")
# The same as tokenops.PRUNE_KINDS and PURGE_FORMS (a unit test holds them equal): the argument
# spec must stand even when the core cannot be imported, so that the failure is reported.
PRUNE_KINDS = ("tombstones", "archived", "oversize", "malformed")
PURGE_FORMS = ("tombstone", "clear")
REMOVING = ("remove", "prune", "purge")
MAX_ATTEMPTS = 3


def argument_spec() -> dict:
    spec = ldap_argument_spec()
    spec.update(
        user={"type": "str", "required": True},
        search_base={"type": "str"},
        operation={"type": "str", "default": "list", "choices": list(OPERATIONS)},
        token={"type": "str", "no_log": False},
        path={"type": "path"},
        prune={
            "type": "list",
            "elements": "str",
            "default": ["tombstones", "oversize"],
            "choices": list(PRUNE_KINDS),
        },
        tombstone_days={"type": "int", "default": 60},
        max_token_size={"type": "int", "default": 65535},
        archived_older_than_days={"type": "int"},
        purge_form={"type": "str", "default": "tombstone", "choices": list(PURGE_FORMS)},
        confirm={"type": "bool", "default": False},
    )
    return spec


def validated(module: AnsibleModule) -> dict | None:
    """Every argument checked before any network I/O; the export to import, when there is one."""
    params = module.params
    operation = params["operation"]
    try:
        Policy(tombstone_days=params["tombstone_days"], max_token_size=params["max_token_size"])
    except ReconcileError as exc:
        module.fail_json(msg=f"invalid policy values: {exc}")
    if operation == "remove" and not params["token"]:
        module.fail_json(msg="operation=remove needs token (an item key or an identifier)")
    if operation in ("export", "import") and not params["path"]:
        module.fail_json(msg=f"operation={operation} needs path (the export file)")
    if operation == "purge" and not params["confirm"]:
        module.fail_json(
            msg=f"operation=purge removes every roaming value of {params['user']}: "
            "set confirm=true to do it"
        )
    if operation == "prune" and "archived" in params["prune"]:
        days = params["archived_older_than_days"]
        if days is None or days < 0:
            module.fail_json(msg="prune=archived needs archived_older_than_days (0 or more)")
    if params["path"] and operation != "import":
        folder = os.path.dirname(params["path"]) or "."
        if not os.path.isdir(folder):
            module.fail_json(msg=f"path {params['path']}: folder {folder} does not exist")
    if operation != "import":
        return None
    try:
        with open(params["path"], encoding="utf-8") as handle:
            document = json.load(handle)
        check_export(document)
    except (OSError, ValueError) as exc:  # TokenOpsError and JSON errors are ValueErrors
        module.fail_json(msg=f"cannot import {params['path']}: {exc}")
    return document


def plan(params: dict, record, document: dict | None, now: int) -> tuple[list, list[str]]:
    """The value changes of the operation on ``record`` at ``now``, and notes."""
    operation = params["operation"]
    if operation == "remove":
        return remove_changes(record, params["token"], now), []
    if operation == "prune":
        changes = prune_changes(
            record,
            now,
            params["prune"],
            tombstone_days=params["tombstone_days"],
            max_token_size=params["max_token_size"],
            archived_older_than_days=params["archived_older_than_days"],
        )
        return changes, []
    if operation == "purge":
        return purge_changes(record, params["purge_form"], now), []
    if operation == "import":
        return import_changes(record, document, now)
    return [], []


def write_export(path: str, record, server: str, check_mode: bool = False) -> dict:
    """Write the export of ``record`` unless ``path`` already holds the same values (or in
    check mode, say whether it would be written)."""
    now = datetime.now(UTC).isoformat(timespec="seconds")
    document = export_document(record, server=server, exported_at=now)
    try:
        with open(path, encoding="utf-8") as handle:
            if same_export(json.load(handle), document):
                return {"path": path, "values": len(document["values"]), "written": False}
    except (OSError, ValueError):
        pass  # absent or not an export: written anew
    if not check_mode:
        data = json.dumps(document, indent=2, sort_keys=True).encode("utf-8") + b"\n"
        atomic_write(path, data, 0o600)
    return {"path": path, "values": len(document["values"]), "written": True}


def run(module: AnsibleModule, conn, document: dict | None) -> dict:
    params = module.params
    server = params["server"]
    root = read_root_dse(conn)
    user = find_user(
        conn, params["search_base"] or root.default_naming_context, **user_selector(params["user"])
    )
    result: dict = {"user_dn": user.dn, "operations": [], "changes": [], "notes": []}
    for _ in range(MAX_ATTEMPTS):
        now = filetime_now()
        record = read_roaming(conn, user.dn, ADMIN_LIMITS)
        if params["operation"] == "remove" and not matching_keys(record, params["token"]):
            module.warn(f"{user.dn} holds no token named {params['token']}: nothing to remove")
        changes, notes = plan(params, record, document, now)
        modifications, _ = build_modifications(record, changes, now)
        after = after_changes(record, changes)
        result.update(
            tokens=[info.as_dict() for info in describe_record(after)],
            changes=describe_changes(changes),
            notes=notes,
            diff={
                "before_header": f"{user.dn} (read from {server})",
                "before": diff_lines(record),
                "after": diff_lines(after),
            },
        )
        if params["operation"] == "export":
            result["export"] = write_export(params["path"], record, server, module.check_mode)
            result["changed"] = result["export"]["written"]
            return result
        if params["operation"] == "import":
            result["export"] = {"path": params["path"], "values": len(document["values"])}
        if module.check_mode or not changes:
            result["operations"] += modify_operations(user.dn, modifications)
            result["changed"] = bool(changes)
            return result
        if params["path"] and params["operation"] in REMOVING:
            result["export"] = write_export(params["path"], record, server)
        try:
            applied = apply_changes(conn, record, changes, now=now)
        except ConcurrentModification as exc:
            result["operations"] += modify_operations(user.dn, exc.applied)
            continue  # another writer got in between: read again, plan again
        result["operations"] += modify_operations(user.dn, applied.modifications)
        result["changed"] = True
        return result
    module.fail_json(
        msg=f"gave up on {user.dn}: its roaming values kept changing on {server} between the "
        f"read and the write ({MAX_ATTEMPTS} attempts)",
        changed=bool(result["operations"]),
        operations=result["operations"],
    )


def main() -> None:
    module = AnsibleModule(
        argument_spec=argument_spec(),
        required_if=LDAP_REQUIRED_IF,
        supports_check_mode=True,
    )
    require_libraries(module, CORE_IMPORT_ERROR, "ldap3")
    document = validated(module)
    conn = connect_or_fail(module, validate_connection(module))
    try:
        result = run(module, conn, document)
    except DIRECTORY_FAILURES as exc:  # credroam's errors (TokenOpsError too) and ldap3's
        module.fail_json(msg=failure_message(exc, module.params))
    finally:
        close(conn)
    exit_with_diff(module, result)


if __name__ == "__main__":
    main()
