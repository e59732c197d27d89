#!/usr/bin/python
"""The compliance run's reads and checks over one forest; changes nothing."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: credroam_info
short_description: Check that credential roaming is configured and healthy in a forest
description:
  - Reads the forest and reports one result per check and subject (the forest, each DC, each
    user in scope) as V(pass), V(fail) or V(unknown) (could not be read; never a pass). Never
    writes. The role C(compliance) turns the report into JSON, JUnit XML and HTML.
  - "Schema, on every DC of the forest (the nTDSDSA objects under CN=Sites): native and credroam
    attributes and classes present (V(schema.present)) with the expected definitions
    (V(schema.definitions))."
  - "GPO: present (V(gpo.present)), linked to O(gpo_links) (V(gpo.linked)); on every DC's SYSVOL:
    GPT.INI version equal to the GPC's versionNumber (V(gpo.version)), Registry.pol parses
    (V(gpo.registry_pol)) and holds O(credential_roaming) (V(gpo.settings)), the folder's NT ACL
    follows the GPC's (V(gpo.acl))."
  - "Users under O(users_base_dn) matching O(users_filter), read with a paged search of
    O(page_size) entries a page: token count and sizes against the policy limits
    (V(user.limits)) and the sizing estimate O(sizing) (V(user.sizing)), values that do not
    decode (V(user.tokens)), tombstones older than their days (V(user.tombstones)), expired
    certificates not archived (V(user.expired)), plaintext private keys in any value
    (V(user.plaintext_keys)), roaming-key envelopes (V(user.roaming_key)), and whether every
    DC holds the same msPKIRoamingTimeStamp (V(replication.timestamp))."
  - "Agent hosts, from what the compliance play read on each (O(hosts)): the agent installed,
    running, as recorded at install and at least O(agent_version) (V(host.agent)); the PAM hook
    and its auth and session lines in every PAM service of the rollout (V(host.pam)); the
    systemd user units installed and enabled (V(host.units)); per user the agent keeps a state
    for on the host, the last successful sync within O(max_sync_age_hours)
    (V(host.last_sync))."
version_added: "0.1.0"
author: credroam
extends_documentation_fragment: [credroam_ldap, credroam_sysvol]
attributes:
  check_mode:
    support: full
    details: Read-only; runs the same in check mode.
  diff_mode:
    support: none
  platform:
    platforms: posix
seealso:
  - module: ad_gpo_info
  - module: ad_schema
options:
  dc_addresses:
    description: DC DNS name to address, for DCs the controller cannot resolve.
    type: dict
    default: {}
  schema_oid_base:
    description: As M(ad_schema)'s O(ad_schema#module:oid_base), when the rollout set one.
    type: str
  schema_attributes:
    description:
      - Attribute definitions the rollout added to credroam's (M(ad_schema)'s
        O(ad_schema#module:attributes), the role's C(roaming_schema_extra_attributes)); each
        must be present, as defined, on every DC. Checked before any network I/O.
    type: list
    elements: dict
    default: []
  schema_classes:
    description: Classes the rollout added (as M(ad_schema)'s O(ad_schema#module:classes)).
    type: list
    elements: dict
    default: []
  schema_extend:
    description: Classes the rollout extended (as M(ad_schema)'s O(ad_schema#module:extend)).
    type: list
    elements: dict
    default: []
  gpo_name:
    description: Display name of the credential roaming GPO.
    type: str
    default: Credential Roaming
  gpo_links:
    description: DNs of the containers the GPO must be linked to (enabled).
    type: list
    elements: str
    default: []
  credential_roaming:
    description:
      - The wanted credential roaming settings (as M(ad_gpo)'s O(credential_roaming)); each one
        given must be in every SYSVOL's Registry.pol. C(tombstone_days), C(max_tokens) and
        C(max_token_size) are also the limits users are checked against (defaults 60, 2000,
        65535).
    type: dict
    suboptions:
      enabled: {description: C(DIMSRoaming), type: bool}
      tombstone_days: {description: "C(DIMSRoamingTombstoneDays), 1-3650.", type: int}
      max_tokens: {description: "C(DIMSRoamingMaxNumTokens), 1-10000.", type: int}
      max_token_size: {description: "C(DIMSRoamingMaxTokenSize), 1-100000 bytes.", type: int}
      roam_unaffiliated_keys: {description: C(RoamUnaffiliatedKeys), type: bool}
      roam_unused_dpapi_keys: {description: C(RoamUnusedDpapiKeys), type: bool}
      roam_smartcard_certificates: {description: C(RoamSmartCardCertificates), type: bool}
  users_base_dn:
    description: Where the users in scope are (subtree). Default the domain.
    type: str
  users_filter:
    description: LDAP filter of the users in scope.
    type: str
    default: (&(objectCategory=person)(objectClass=user))
  page_size:
    description: Entries per page of the paged user search.
    type: int
    default: 1000
  sizing:
    description:
      - "The sizing estimate (spec section 5) a user within the policy limits is held to:
        C(certificates) x C(renewals) x C(machines) tokens of C(bytes_per_token) bytes."
    type: dict
    default: {}
    suboptions:
      certificates: {description: Certificates a user holds., type: int, default: 4}
      renewals: {description: Renewals kept of each., type: int, default: 3}
      machines: {description: Machines per user., type: int, default: 5}
      bytes_per_token: {description: Bytes per token., type: int, default: 2048}
  require_recovery_key:
    description: A user with sealed keys must also hold a recovery-wrapped roaming key.
    type: bool
    default: false
  hosts:
    description:
      - "What was read on each agent host, one mapping per host (the fact C(sync_agent_host_facts)
        that C(roles/sync_agent/tasks/facts.yml) sets; its keys are the fields of
        C(credroam.compliance.checks.HostFacts)). A host that could not be read is given as
        C({host: name, error: why}) and its host checks are V(unknown)."
      - Unset, hosts are not checked and the report says so.
    type: list
    elements: dict
  agent_version:
    description: The lowest agent version accepted on a host (V(host.agent)); empty accepts any.
    type: str
    default: ""
  max_sync_age_hours:
    description: The oldest a user's last successful sync on a host may be (V(host.last_sync)).
    type: int
    default: 168
  checks:
    description: Check ids to run (default all); reads no check needs are skipped.
    type: list
    elements: str
  fail_on_severity:
    description: RV(passed) is false when a check fails at or above this severity.
    type: str
    default: high
    choices: [info, low, medium, high, critical]
  unknown_blocks:
    description: An V(unknown) result (could not be read) at or above O(fail_on_severity) fails.
    type: bool
    default: true
requirements: [ldap3, smbprotocol, cryptography]
notes:
  - Supports check mode (it never changes anything).
  - A read-only account is enough, given read access to the users' confidential attributes
    (a delegated right, see the README's Compliance section); users whose confidential
    attributes it cannot read are reported V(unknown), not passed.
"""

EXAMPLES = r"""
- name: Check the forest
  credroam_info:
    server: dc1.example.com
    ca_cert: /etc/credroam/ad-ca.pem
    bind_user: credroam-audit@example.com
    bind_password: "{{ vault_audit_password }}"
    gpo_links: ["OU=Roaming,DC=example,DC=com"]
    users_base_dn: OU=Roaming,DC=example,DC=com
    credential_roaming: {enabled: true, tombstone_days: 60}
  delegate_to: localhost
  register: compliance
"""

RETURN = r"""
report:
  description: The report, as described by roles/compliance/files/report.schema.json.
  returned: always
  type: dict
passed:
  description: No result blocks (see O(fail_on_severity), O(unknown_blocks)).
  returned: always
  type: bool
blocking:
  description: How many results block.
  returned: always
  type: int
"""

from datetime import UTC, datetime

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.credroam_ansible import (
    DIRECTORY_FAILURES,
    LDAP_REQUIRED_IF,
    connect_or_fail,
    failure_message,
    ldap_argument_spec,
    target_from_params,
)

try:
    from ansible.module_utils.credroam.compliance import read
    from ansible.module_utils.credroam.compliance.checks import (
        CHECKS,
        SEVERITIES,
        HostFacts,
        HostWanted,
        Result,
        Sizing,
        gpo_results,
        host_results,
        replication_results,
        schema_results,
        user_results,
        user_stats,
    )
    from ansible.module_utils.credroam.compliance.report import build_report
    from ansible.module_utils.credroam.connection import connect, read_root_dse
    from ansible.module_utils.credroam.gpo.engine import GpoReader
    from ansible.module_utils.credroam.gpo.model import GpoError
    from ansible.module_utils.credroam.gpo.settings import CREDENTIAL_ROAMING, policy_entries
    from ansible.module_utils.credroam.roaming.model import Policy, ReconcileError
    from ansible.module_utils.credroam.schema.definitions import (
        CREDROAM_OID_BASE,
        SchemaDefinitionError,
        definitions_from_params,
    )
    from ansible.module_utils.credroam.timestamps import filetime_now
    from ansible.module_utils.credroam_sysvol_ansible import gpo_engine, sysvol_argument_spec

    IMPORT_ERROR = None
except ImportError as exc:  # pragma: no cover - depends on the controller's Python
    IMPORT_ERROR = exc
    SEVERITIES = ("info", "low", "medium", "high", "critical")

    def sysvol_argument_spec() -> dict:
        return {}


# The confidential attributes whose readability decides whether a user's checks can pass.
CONFIDENTIAL = (
    "msPKIAccountCredentials",
    "msPKIDPAPIMasterKeys",
    "msPKIRoamingTimeStamp",
    "credroamKeyEnvelopes",
    "credroamRoamingKeys",
)


def argument_spec() -> dict:
    spec = ldap_argument_spec()
    roaming = {
        name: {"type": kind}
        for name, kind in (
            ("enabled", "bool"),
            ("tombstone_days", "int"),
            ("max_tokens", "int"),
            ("max_token_size", "int"),
            ("roam_unaffiliated_keys", "bool"),
            ("roam_unused_dpapi_keys", "bool"),
            ("roam_smartcard_certificates", "bool"),
        )
    }
    sizing = {
        "certificates": {"type": "int", "default": 4},
        "renewals": {"type": "int", "default": 3},
        "machines": {"type": "int", "default": 5},
        "bytes_per_token": {"type": "int", "default": 2048},
    }
    spec.update(
        dc_addresses={"type": "dict", "default": {}},
        schema_oid_base={"type": "str"},
        schema_attributes={"type": "list", "elements": "dict", "default": []},
        schema_classes={"type": "list", "elements": "dict", "default": []},
        schema_extend={"type": "list", "elements": "dict", "default": []},
        gpo_name={"type": "str", "default": "Credential Roaming"},
        gpo_links={"type": "list", "elements": "str", "default": []},
        credential_roaming={"type": "dict", "options": roaming},
        users_base_dn={"type": "str"},
        users_filter={"type": "str", "default": "(&(objectCategory=person)(objectClass=user))"},
        page_size={"type": "int", "default": 1000},
        sizing={"type": "dict", "default": {}, "options": sizing},
        require_recovery_key={"type": "bool", "default": False},
        hosts={"type": "list", "elements": "dict"},
        agent_version={"type": "str", "default": ""},
        max_sync_age_hours={"type": "int", "default": 168},
        checks={"type": "list", "elements": "str"},
        fail_on_severity={"type": "str", "default": "high", "choices": list(SEVERITIES)},
        unknown_blocks={"type": "bool", "default": True},
        **sysvol_argument_spec(),
    )
    return spec


def validated_hosts(module: AnsibleModule) -> tuple[HostWanted, list[HostFacts] | None]:
    params = module.params
    try:
        wanted = HostWanted(params["agent_version"], params["max_sync_age_hours"])
        hosts = None
        if params["hosts"] is not None:
            hosts = [HostFacts.from_mapping(facts) for facts in params["hosts"]]
    except (TypeError, ValueError) as exc:
        module.fail_json(msg=f"hosts: {exc}")
    return wanted, hosts


def validated_schema(module: AnsibleModule):
    """credroam's definitions plus those the rollout added, as the rollout gave them."""
    params = module.params
    try:
        return definitions_from_params(
            attributes=params["schema_attributes"],
            classes=params["schema_classes"],
            extend=params["schema_extend"],
            oid_base=params["schema_oid_base"] or CREDROAM_OID_BASE,
            preset="credroam",
        )
    except SchemaDefinitionError as exc:
        module.fail_json(msg=f"invalid schema definition: {exc}")


def validated(module: AnsibleModule) -> tuple[Policy, Sizing, list[dict], set[str]]:
    """Everything the run needs from its arguments, checked before any network I/O."""
    params = module.params
    wanted = {k: v for k, v in (params["credential_roaming"] or {}).items() if v is not None}
    try:
        entries = [e.describe() for e in policy_entries(CREDENTIAL_ROAMING, wanted)]
        policy = Policy(
            tombstone_days=wanted.get("tombstone_days", 60),
            max_tokens=wanted.get("max_tokens", 2000),
            max_token_size=wanted.get("max_token_size", 65535),
        )
    except (GpoError, ReconcileError) as exc:
        module.fail_json(msg=f"credential_roaming: {exc}")
    sizing = Sizing(**(params["sizing"] or {}))
    if min(sizing.certificates, sizing.renewals, sizing.machines, sizing.bytes_per_token) < 1:
        module.fail_json(msg=f"sizing: every value must be at least 1, not {params['sizing']}")
    if not 1 <= params["page_size"] <= 1000:
        module.fail_json(
            msg=f"page_size must be 1-1000 (AD's MaxPageSize), not {params['page_size']}"
        )
    chosen = set(params["checks"] or CHECKS)
    unknown = sorted(chosen - set(CHECKS))
    if unknown:
        module.fail_json(msg=f"checks: unknown {', '.join(unknown)} (known: {', '.join(CHECKS)})")
    return policy, sizing, entries, chosen


def wants(chosen: set[str], prefix: str) -> bool:
    return any(check.startswith(prefix) for check in chosen)


class Run:
    """One compliance run: a connection per DC, results collected as they are made."""

    def __init__(self, module: AnsibleModule, conn) -> None:
        self.module = module
        self.params = module.params
        self.conn = conn
        self.base = target_from_params(self.params)
        self.root = None
        self.dcs: list[str] = []
        self.dc_conns: dict[str, object] = {}
        self.dc_errors: dict[str, str] = {}
        self.results: list[Result] = []
        self.stats: list[dict] = []
        self.user_dns: dict[str, str] = {}  # lower-cased DN -> DN as the search returned it

    def open_dcs(self) -> None:
        """Find the forest's DCs and connect to each; a DC that cannot be reached makes its
        results "could not read", not the run fail."""
        self.root = read_root_dse(self.conn)
        self.dcs = read.forest_dcs(self.conn, self.root.configuration_naming_context)
        for fqdn in self.dcs:
            try:
                target = read.dc_target(self.base, fqdn, self.params["dc_addresses"])
                self.dc_conns[fqdn] = connect(target)
            except DIRECTORY_FAILURES as exc:
                self.dc_errors[fqdn] = str(exc)

    def close(self) -> None:
        for conn in self.dc_conns.values():
            conn.unbind()

    def schema(self, defs) -> None:
        for fqdn in self.dcs:
            if fqdn in self.dc_errors:
                self.results += schema_results(fqdn, None, None, self.dc_errors[fqdn])
                continue
            try:
                missing, conflicts = read.schema_facts(
                    self.dc_conns[fqdn], self.root.schema_naming_context, defs
                )
                self.results += schema_results(fqdn, missing, conflicts)
            except read.READ_FAILURES as exc:
                self.results += schema_results(fqdn, None, None, str(exc))

    def gpo(self, wanted: list[dict]) -> None:
        addresses = self.params["dc_addresses"]
        servers = self.params["sysvol_servers"] or [addresses.get(dc, dc) for dc in self.dcs]
        dc_of = {server: server for server in servers}
        dc_of.update({address: dc for dc, address in addresses.items()})
        reader = gpo_engine(GpoReader, self.conn, {**self.params, "sysvol_servers": servers})
        try:
            facts = read.gpo_facts(reader, self.params["gpo_name"], dc_of)
        finally:
            reader.close()
        domain = self.root.domain_dns_name
        self.results += gpo_results(domain, facts, wanted, self.params["gpo_links"])

    def users(self, policy: Policy, sizing: Sizing) -> dict[str, str]:
        """Check every user in scope; returns the users (lower-cased DN) whose roaming data
        could not be read, and why."""
        sids, own = read.account_sids(self.conn, self.root.default_naming_context)
        guids = read.protecting_guids(self.conn, self.root.schema_naming_context, CONFIDENTIAL)
        readable = read.readable_for(sids, own, guids)
        now = filetime_now()
        unreadable: dict[str, str] = {}
        for user in read.users(
            self.conn, self.base_dn, self.params["users_filter"], readable, self.params["page_size"]
        ):
            self.user_dns[user.dn.lower()] = user.dn
            if not user.confidential_readable:
                unreadable[user.dn.lower()] = user.why_unreadable
            else:
                self.stats.append({"user": user.dn, **user_stats(user.record)})
            self.results += user_results(
                user, policy, sizing, now, self.params["require_recovery_key"]
            )
        return unreadable

    @property
    def base_dn(self) -> str:
        return self.params["users_base_dn"] or self.root.default_naming_context

    def replication(self, unreadable: dict[str, str]) -> None:
        per_dc = {}
        for fqdn in self.dcs:
            if fqdn in self.dc_errors:
                continue
            per_dc[fqdn] = read.timestamps(
                self.dc_conns[fqdn],
                self.base_dn,
                self.params["users_filter"],
                self.params["page_size"],
            )
        users = sorted({dn for stamps in per_dc.values() for dn in stamps})
        lost = [f"{dc} ({why})" for dc, why in self.dc_errors.items()]
        for dn in users:
            why = unreadable.get(dn, "")
            if lost and not why:
                why = f"could not compare: no connection to {', '.join(lost)}"
            stamps = {dc: stamps.get(dn) for dc, stamps in per_dc.items()}
            self.results += replication_results(self.user_dns.get(dn, dn), stamps, why)


def run(module: AnsibleModule) -> dict:
    policy, sizing, wanted, chosen = validated(module)
    host_wanted, hosts = validated_hosts(module)
    defs = validated_schema(module)
    conn = connect_or_fail(module)
    run = Run(module, conn)
    unreadable: dict[str, str] = {}
    try:
        run.open_dcs()
        if wants(chosen, "schema."):
            run.schema(defs)
        if wants(chosen, "gpo."):
            run.gpo(wanted)
        if wants(chosen, "user.") or "replication.timestamp" in chosen:
            unreadable = run.users(policy, sizing)
        if "replication.timestamp" in chosen:
            run.replication(unreadable)
    except DIRECTORY_FAILURES as exc:
        module.fail_json(msg=failure_message(exc, module.params))
    finally:
        run.close()
        conn.unbind()
    if hosts is not None and wants(chosen, "host."):
        now = datetime.now(UTC)
        for facts in hosts:
            run.results += host_results(facts, host_wanted, now)
    else:
        hosts = None
    results = [r for r in run.results if r.check in chosen]
    report = build_report(
        forest={
            "domain": run.root.domain_dns_name,
            "server": module.params["server"],
            "dcs": run.dcs,
            "users_base_dn": run.base_dn,
        },
        results=results,
        users=run.stats,
        policy=policy,
        sizing=sizing,
        threshold=module.params["fail_on_severity"],
        unknown_blocks=module.params["unknown_blocks"],
        generated_at=datetime.now(UTC).isoformat(timespec="seconds"),
        hosts=hosts,
    )
    return {
        "changed": False,
        "report": report,
        "passed": report["verdict"]["passed"],
        "blocking": report["verdict"]["blocking"],
    }


def main() -> None:
    module = AnsibleModule(
        argument_spec=argument_spec(),
        required_if=LDAP_REQUIRED_IF,
        mutually_exclusive=[("smb_server", "sysvol_servers")],
        supports_check_mode=True,
    )
    if IMPORT_ERROR is not None:
        module.fail_json(
            msg=f"credroam_info needs the credroam core and smbprotocol: {IMPORT_ERROR}"
        )
    module.exit_json(**run(module))


if __name__ == "__main__":
    main()
