#!/usr/bin/python
"""The helpdesk's key recovery: a one-time record after a password reset; recovery-key rotation."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: credroam_recovery
short_description: Recover a user's roaming key after a password reset, or rotate the recovery key
description:
  - "O(operation=recover): after a password reset, opens the user's roaming key with the
    organisation's recovery private key (the user's recovery record) and wraps it under
    O(one_time_secret), in place of the user's password records (the old password must no
    longer open it). The user's next C(credroam-agent login --one-time-secret) opens it with
    the secret and replaces it with a record for the user's own password, so every sealed
    private key stays usable and the secret is spent. Where the helpdesk knows the user's new
    password (a reset without C(must change at next logon)), that password may be the secret:
    then a plain login opens it."
  - "O(operation=rotate): for every user under O(users_base_dn) holding a roaming key, each
    record for the old recovery key (whose private key is given) is rewrapped for
    O(new_recovery_public_key) and removed. Users are read with a paged search. Every user is
    planned before the first write; a second run changes nothing. A user without any recovery
    record is reported (the helpdesk could not recover it), not failed."
  - Every write is one LDAP modify per user that also replaces the exact
    C(msPKIRoamingTimeStamp) read, as every roaming write; a concurrent writer makes it re-read
    and re-plan. The roaming key itself never changes, so the users' hosts keep their caches
    and sealed keys.
  - Run as an account that may write the users' confidential attributes (the rollout or a
    helpdesk account with that right), on the controller (C(delegate_to) localhost).
version_added: "0.1.0"
author: credroam
extends_documentation_fragment: [credroam_ldap]
attributes:
  check_mode:
    support: full
    details: Reads and plans, writes nothing; RV(operations) are the planned modifies.
  diff_mode:
    support: full
    details: Per user, the roaming-key records (kind, key id, recovery key id) before and after.
  platform:
    platforms: posix
seealso:
  - module: credroam_info
options:
  operation:
    description: What to do.
    type: str
    required: true
    choices: [recover, rotate]
  user:
    description:
      - The user whose key to recover (O(operation=recover)); a sAMAccountName, a UPN or a DN.
    type: str
  one_time_secret:
    description:
      - The secret the key is wrapped under for the user's next login (O(operation=recover));
        at least 12 characters. Tell it to the user over the channel that carried the reset.
    type: str
  recovery_key:
    description:
      - The organisation's recovery private key (PEM, RSA), e.g. from a vault. For
        O(operation=rotate) the old one.
    type: str
  recovery_key_file:
    description: A file holding O(recovery_key) on the host the module runs on.
    type: path
  recovery_key_password:
    description: Password of an encrypted O(recovery_key).
    type: str
  new_recovery_public_key:
    description: "The new recovery public key (PEM, RSA, 2048 bits or more; O(operation=rotate))."
    type: str
  new_recovery_public_key_file:
    description: A file holding O(new_recovery_public_key).
    type: path
  users_base_dn:
    description: Where the users to rotate are (subtree). Default the domain.
    type: str
  users_filter:
    description: LDAP filter of the users to rotate.
    type: str
    default: (&(objectCategory=person)(objectClass=user))
  page_size:
    description: Entries per page of the paged user search (1-1000).
    type: int
    default: 1000
requirements: [ldap3, cryptography]
notes:
  - "The recovery private key and the one-time secret are C(no_log): they never appear in the
    result, which names keys by their ids only."
  - "Rotate the public key the agents wrap for (their C([recovery] public_keys)) before running
    O(operation=rotate): an agent still configured with the old key adds a record for it again
    at its user's next login."
"""

EXAMPLES = r"""
- name: Give alice a one-time secret for her next login after a password reset
  credroam_recovery:
    server: dc1.example.com
    ca_cert: /etc/credroam/ad-ca.pem
    bind_user: helpdesk@example.com
    bind_password: "{{ vault_helpdesk_password }}"
    operation: recover
    user: alice
    one_time_secret: "{{ recover_one_time_secret }}"
    recovery_key: "{{ vault_recovery_private_key }}"
  delegate_to: localhost

- name: Rotate the recovery key (run with --check first)
  credroam_recovery:
    server: dc1.example.com
    ca_cert: /etc/credroam/ad-ca.pem
    bind_user: admin@example.com
    bind_password: "{{ vault_admin_password }}"
    operation: rotate
    recovery_key_file: /secure/recovery-2025.key.pem
    new_recovery_public_key_file: files/recovery-2026.pem
    users_base_dn: OU=Roaming,DC=example,DC=com
  delegate_to: localhost
"""

RETURN = r"""
users:
  description: One entry per user planned or changed.
  returned: always
  type: list
  elements: dict
  contains:
    user: {description: The user's DN., type: str}
    changed: {description: Whether the user's records changed (in check mode would)., type: bool}
    actions: {description: What was done to the user's records., type: list, elements: str}
    problems:
      description: Records skipped, or why the user cannot be recovered.
      type: list
      elements: str
operations:
  description: The LDAP modifies sent (in check mode, planned); values are counted, not shown.
  returned: always
  type: list
  elements: dict
  sample: [{kind: ldap_modify, target: "CN=alice,OU=Roaming,DC=example,DC=com", changes: {}}]
"""

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
    from ansible.module_utils.credroam.connection import read_root_dse
    from ansible.module_utils.credroam.roaming.directory import find_user, read_roaming
    from ansible.module_utils.credroam.roaming.envelope import (
        EnvelopeError,
        load_recovery_private_key,
        public_key_id,
    )
    from ansible.module_utils.credroam.roaming.roamingkey import (
        describe_wrapped,
        plan_recovery,
        plan_rotation,
        recover_with_recovery_key,
        roaming_key_holders,
        rotate_recovery_key,
    )
    from ansible.module_utils.credroam.timestamps import filetime_now

    CORE_IMPORT_ERROR = None
except ImportError:  # pragma: no cover - depends on the controller's Python
    import traceback

    CORE_IMPORT_ERROR = traceback.format_exc()

MIN_SECRET_LENGTH = 12


def argument_spec() -> dict:
    spec = ldap_argument_spec()
    spec.update(
        operation={"type": "str", "required": True, "choices": ["recover", "rotate"]},
        user={"type": "str"},
        one_time_secret={"type": "str", "no_log": True},
        recovery_key={"type": "str", "no_log": True},
        recovery_key_file={"type": "path"},
        recovery_key_password={"type": "str", "no_log": True},
        new_recovery_public_key={"type": "str"},
        new_recovery_public_key_file={"type": "path"},
        users_base_dn={"type": "str"},
        users_filter={"type": "str", "default": "(&(objectCategory=person)(objectClass=user))"},
        page_size={"type": "int", "default": 1000},
    )
    return spec


def _read(module: AnsibleModule, option: str) -> bytes | None:
    """The PEM given inline in ``option`` or in the file ``<option>_file``."""
    text, path = module.params[option], module.params[f"{option}_file"]
    if text:
        return text.encode()
    if not path:
        return None
    try:
        with open(path, "rb") as handle:
            return handle.read(64 * 1024)
    except OSError as exc:
        module.fail_json(msg=f"{option}_file: cannot read {path}: {exc.strerror}")
    return None


def validated_keys(module: AnsibleModule):
    """The recovery private key, loaded, and for rotate the new public key: checked, with the
    user and secret, before any network I/O."""
    params = module.params
    operation = params["operation"]
    pem = _read(module, "recovery_key")
    if pem is None:
        module.fail_json(msg="recovery_key or recovery_key_file is required")
    password = params["recovery_key_password"]
    try:
        private_key = load_recovery_private_key(pem, password.encode() if password else None)
    except EnvelopeError as exc:
        module.fail_json(msg=f"recovery_key: {exc}")
    if operation == "recover":
        if not params["user"]:
            module.fail_json(msg="operation=recover needs user")
        secret = params["one_time_secret"] or ""
        if len(secret) < MIN_SECRET_LENGTH:
            module.fail_json(
                msg=f"one_time_secret must be at least {MIN_SECRET_LENGTH} characters "
                f"(it guards the user's private keys until the next login)"
            )
        return private_key, None
    new_public = _read(module, "new_recovery_public_key")
    if new_public is None:
        module.fail_json(msg="operation=rotate needs new_recovery_public_key(_file)")
    try:
        new_id = public_key_id(new_public)
    except EnvelopeError as exc:
        module.fail_json(msg=f"new_recovery_public_key: {exc}")
    if new_id == public_key_id(private_key.public_key()):
        module.fail_json(msg="new_recovery_public_key is the current recovery key's own")
    if not 1 <= params["page_size"] <= 1000:
        module.fail_json(msg=f"page_size must be 1-1000, not {params['page_size']}")
    return private_key, new_public


class Run:
    def __init__(self, module: AnsibleModule, conn, private_key, new_public) -> None:
        self.module = module
        self.params = module.params
        self.conn = conn
        self.private_key = private_key
        self.new_public = new_public
        self.users: list[dict] = []
        self.operations: list[dict] = []
        self.diffs: list[dict] = []

    def note(self, dn: str, changes, before: list[str], after: list[str]) -> None:
        self.users.append(
            {
                "user": dn,
                "changed": bool(changes.changes),
                "actions": list(changes.actions),
                "problems": list(changes.problems),
            }
        )
        self.operations += changes.operations
        if before != after:
            self.diffs.append(
                {
                    "before_header": dn,
                    "after_header": dn,
                    "before": "\n".join(before) + "\n",
                    "after": "\n".join(after) + "\n",
                }
            )

    def recover(self, domain_dn: str) -> None:
        dn = find_user(self.conn, domain_dn, **user_selector(self.params["user"])).dn
        record = read_roaming(self.conn, dn)
        plan = plan_recovery(  # planned first, so the diff shows what the write will do
            record,
            recovery_private_key=self.private_key,
            new_password=self.params["one_time_secret"],
            user=dn,
        )
        before, after = describe_wrapped(record), describe_wrapped(record, plan.changes)
        _, changes = recover_with_recovery_key(
            self.conn,
            dn,
            recovery_private_key=self.private_key,
            new_password=self.params["one_time_secret"],
            now=filetime_now(),
            check_mode=self.module.check_mode,
        )
        self.note(dn, changes, before, after)

    def rotate(self, domain_dn: str) -> None:
        base = self.params["users_base_dn"] or domain_dn
        holders = roaming_key_holders(
            self.conn, base, self.params["users_filter"], self.params["page_size"]
        )
        planned = []
        for dn in list(holders):  # every user planned before the first write
            record = read_roaming(self.conn, dn)
            plan = plan_rotation(
                record, old_private_key=self.private_key, new_public_key=self.new_public, user=dn
            )
            planned.append((dn, describe_wrapped(record), describe_wrapped(record, plan.changes)))
        for dn, before, after in planned:
            changes = rotate_recovery_key(
                self.conn,
                dn,
                old_private_key=self.private_key,
                new_public_key=self.new_public,
                now=filetime_now(),
                check_mode=self.module.check_mode or before == after,
            )
            self.note(dn, changes, before, after)


def main() -> None:
    module = AnsibleModule(
        argument_spec=argument_spec(),
        required_if=LDAP_REQUIRED_IF,
        mutually_exclusive=[
            ("recovery_key", "recovery_key_file"),
            ("new_recovery_public_key", "new_recovery_public_key_file"),
        ],
        supports_check_mode=True,
    )
    require_libraries(module, CORE_IMPORT_ERROR, "ldap3")
    private_key, new_public = validated_keys(module)
    conn = connect_or_fail(module, validate_connection(module))
    run = Run(module, conn, private_key, new_public)
    try:
        domain_dn = read_root_dse(conn).default_naming_context
        if module.params["operation"] == "recover":
            run.recover(domain_dn)
        else:
            run.rotate(domain_dn)
    except DIRECTORY_FAILURES as exc:
        done = bool(run.operations) and not module.check_mode
        module.fail_json(
            msg=failure_message(exc, module.params) + ("" if done else "; nothing was written"),
            changed=done,
            operations=run.operations,
            users=run.users,
        )
    finally:
        conn.unbind()
    result = {
        "changed": any(user["changed"] for user in run.users),
        "users": run.users,
        "operations": run.operations,
        "diff": run.diffs,
    }
    exit_with_diff(module, result)


if __name__ == "__main__":
    main()
