"""The compliance checks: pure functions from what was read to results.

Each check has an id, a title, a severity, what it verifies and how to fix a failure
(:data:`CHECKS`). A run produces one :class:`Result` per check and subject (the forest, a DC, a
host or a user): ``pass``, ``fail`` or ``unknown``. ``unknown`` means the data could not be read
(a confidential attribute the account may not read, a SYSVOL that did not answer): it is never
counted as a pass, and :func:`blocking` counts it like a failure unless told otherwise.

Every broken state is meant to be caught by exactly one check, so the checks are cut to not
overlap: ``gpo.version`` looks only at version numbers, ``gpo.settings`` only at the values in
each SYSVOL's Registry.pol, ``user.limits`` at the policy limits and ``user.sizing`` at the
planning estimate only while a user is still within the limits, ``user.tokens`` at values that
do not decode, and so on.

Host checks (``host.agent``, ``host.pam``, ``host.units``, ``host.last_sync``) judge what the
compliance play read on each agent host (:class:`HostFacts`: the sync_agent role's install
record and files, the agent's own ``--version`` and ``status --json``) against
:class:`HostWanted`; :data:`HOST_CHECKS` lists them, :func:`host_results` runs them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from ..roaming.directory import KEY_ENVELOPES, TOKEN_ATTRIBUTES, RoamingRecord
from ..roaming.model import ItemKind, Policy
from ..roaming.roamingkey import RecordKind, parse_wrapped_keys
from ..roaming.sync import DirectorySide, map_record
from ..timestamps import TICKS_PER_DAY
from .keyscan import scan_values

__all__ = [
    "CHECKS",
    "HOST_CHECKS",
    "REPORT_VERSION",
    "SEVERITIES",
    "Check",
    "GpoFacts",
    "HostFacts",
    "HostWanted",
    "Result",
    "Sizing",
    "Subject",
    "SysvolFacts",
    "UserFacts",
    "blocking",
    "gpo_results",
    "host_results",
    "parse_agent_version",
    "replication_results",
    "schema_results",
    "summarize",
    "user_results",
    "user_stats",
]

REPORT_VERSION = "1.1"
SEVERITIES = ("info", "low", "medium", "high", "critical")
PASS, FAIL, UNKNOWN = "pass", "fail", "unknown"


@dataclass(frozen=True)
class Check:
    id: str
    title: str
    severity: str
    what: str  # what a pass means
    fix: str  # how to fix a failure, in general; a result may say more


def _catalogue(*checks: Check) -> dict[str, Check]:
    return {check.id: check for check in checks}


CHECKS: dict[str, Check] = _catalogue(
    Check(
        "schema.present",
        "Schema attributes and classes present",
        "critical",
        "Every native and credroam attribute and class, and user's auxiliary class "
        "credroamUser, are in the DC's schema.",
        "Run playbooks/schema.yml (role roaming_schema); if only one DC lacks them, check "
        "its replication (samba-tool drs showrepl / repadmin /showrepl).",
    ),
    Check(
        "schema.definitions",
        "Schema definitions as expected",
        "critical",
        "Each attribute and class on the DC has the expected OID, syntax, single-valuedness, "
        "link, searchFlags and property set.",
        "An object with another definition holds our name or OID: schema objects cannot be "
        "changed, so resolve it by hand or choose other names/OIDs (roaming_schema_oid_base).",
    ),
    Check(
        "gpo.present",
        "Credential roaming GPO present",
        "critical",
        "The GPO exists in the domain.",
        "Run playbooks/gpo.yml (role roaming_gpo).",
    ),
    Check(
        "gpo.linked",
        "GPO linked where expected",
        "high",
        "The GPO is linked, enabled, to every container expected.",
        "Run playbooks/gpo.yml, or link the GPO (roaming_gpo_links).",
    ),
    Check(
        "gpo.version",
        "AD and SYSVOL versions agree",
        "high",
        "The DC's GPT.INI version equals the GPC's versionNumber, so clients apply the "
        "current settings.",
        "Run playbooks/gpo.yml (roaming_gpo_repair_version_mismatch: true repairs it).",
    ),
    Check(
        "gpo.settings",
        "GPO settings equal the wanted values",
        "high",
        "The DC's User\\Registry.pol holds the wanted credential roaming values.",
        "Run playbooks/gpo.yml with the same roaming_gpo_credential_roaming as the "
        "compliance run's compliance_credential_roaming.",
    ),
    Check(
        "gpo.registry_pol",
        "Registry.pol parses",
        "high",
        "The DC's User\\Registry.pol is a valid PReg file.",
        "Rewrite it: run playbooks/gpo.yml, which writes Registry.pol from the settings.",
    ),
    Check(
        "gpo.acl",
        "SYSVOL folder ACL matches the GPC",
        "medium",
        "The GPO folder's NT ACL on the DC is the file-system form of the GPC's DACL "
        "(what samba-tool gpo aclcheck checks).",
        "Run playbooks/gpo.yml (it rewrites the folder ACL), or samba-tool ntacl sysvolreset.",
    ),
    Check(
        "user.limits",
        "Tokens within the policy limits",
        "high",
        "The user's token count is at most DIMSRoamingMaxNumTokens, every token at most "
        "DIMSRoamingMaxTokenSize bytes, the total at most their product.",
        "Prune the user's tokens (tombstones past their days, archived certificates), or "
        "raise the limits in the GPO if the sizing really needs it.",
    ),
    Check(
        "user.sizing",
        "Tokens within the sizing estimate",
        "low",
        "The user's token count and size are within the sizing estimate (certificates x "
        "renewals x machines, spec section 5).",
        "Clean the user's stale certificates, or revise compliance_sizing.",
    ),
    Check(
        "user.tokens",
        "Tokens well-formed",
        "medium",
        "Every roaming value decodes: DN-Binary form, header, lengths, SHA-1, identifier "
        "pattern, certificate element.",
        "Remove the damaged values (they are skipped by every host and hold their item).",
    ),
    Check(
        "user.tombstones",
        "No tombstones past their days",
        "low",
        "No tombstone is older than DIMSRoamingTombstoneDays.",
        "A sync of the user purges them; or remove them as an administrator.",
    ),
    Check(
        "user.expired",
        "Expired certificates archived",
        "low",
        "Every expired certificate in the directory is marked archived.",
        "A sync of the user archives them.",
    ),
    Check(
        "user.plaintext_keys",
        "No plaintext private keys",
        "critical",
        "No value of the user's object holds an unencrypted private key (PEM, PKCS#8, "
        "PKCS#1, SEC1, raw or hex/base64 encoded).",
        "Remove the value at once and revoke the certificate of that key: anyone who could "
        "read the attribute may hold the key.",
    ),
    Check(
        "user.roaming_key",
        "Roaming-key envelopes present",
        "high",
        "A user with sealed private keys holds a password-wrapped roaming key, and a "
        "recovery-wrapped one when a recovery key is required.",
        "Log the user on to a host with the agent (it adds the password record), and "
        "configure the recovery key (roaming_gpo_agent_settings.recovery_key_fingerprint).",
    ),
    Check(
        "host.agent",
        "Agent installed at the wanted version",
        "high",
        "The agent zipapp is installed, runs, reports the version the sync_agent role recorded "
        "with the same checksum, and that version is at least the wanted one.",
        "Run playbooks/agent.yml (role sync_agent) on the host; it installs the wanted zipapp "
        "and records its version.",
    ),
    Check(
        "host.pam",
        "PAM hook in place",
        "high",
        "The agent's PAM hook is installed (root-owned, executable) and every PAM service the "
        "rollout names hands it the logon (auth, expose_authtok) and the session.",
        "Run playbooks/agent.yml; check that nothing else rewrote /etc/pam.d on the host.",
    ),
    Check(
        "host.units",
        "systemd user units in place",
        "medium",
        "Every systemd user unit the rollout enables is installed and enabled for all users "
        "(default.target wants it).",
        "Run playbooks/agent.yml (sync_agent_watch_unit, sync_agent_purge_unit).",
    ),
    Check(
        "host.last_sync",
        "Last successful sync recent",
        "medium",
        "Each user the agent keeps a state for on the host synced successfully within the "
        "allowed age (compliance_max_sync_age_hours).",
        "Look at the agent's events for the user on that host (credroam-agent status as the "
        "user): the DC may be unreachable, the user's password or ticket missing, or the agent "
        "failing; a user long away from the host also ages.",
    ),
    Check(
        "replication.timestamp",
        "DCs agree on the roaming timestamp",
        "medium",
        "Every DC holds the same msPKIRoamingTimeStamp for the user.",
        "Check replication between the DCs named (samba-tool drs showrepl / repadmin); a "
        "difference right after a sync is replication lag.",
    ),
)


@dataclass(frozen=True, order=True)
class Subject:
    kind: str  # forest, dc, host, user
    name: str

    def as_dict(self) -> dict[str, str]:
        return {"kind": self.kind, "name": self.name}


@dataclass(frozen=True)
class Result:
    check: str
    subject: Subject
    status: str  # pass, fail, unknown
    message: str  # what is wrong (or what was verified)
    where: str = ""  # the object, file or value at fault
    fix: str = ""  # empty: the check's general fix

    @property
    def severity(self) -> str:
        return CHECKS[self.check].severity if self.check in CHECKS else "medium"

    def as_dict(self) -> dict[str, Any]:
        fix = self.fix or (CHECKS[self.check].fix if self.check in CHECKS else "")
        return {
            "check": self.check,
            "subject": self.subject.as_dict(),
            "status": self.status,
            "severity": self.severity,
            "message": self.message,
            "where": self.where,
            "fix": fix if self.status != PASS else "",
        }


def _result(check: str, subject: Subject, problems: Sequence[str], ok: str, where: str = ""):
    if problems:
        return Result(check, subject, FAIL, "; ".join(problems), where)
    return Result(check, subject, PASS, ok, where)


# --- schema ----------------------------------------------------------------------------------


def schema_results(
    dc: str, missing: Sequence[str] | None, conflicts: Sequence[str] | None, error: str = ""
) -> list[Result]:
    """``missing`` (from ``missing_on_dc``) and ``conflicts`` (``SchemaConflict``'s list) of one
    DC's schema; None for both with ``error`` when the schema could not be read."""
    subject = Subject("dc", dc)
    if error:
        why = f"could not read the schema on {dc}: {error}"
        return [Result(c, subject, UNKNOWN, why) for c in ("schema.present", "schema.definitions")]
    lacks = [f"{dc} lacks {name}" for name in missing or ()]
    return [
        _result(
            "schema.present",
            subject,
            ["; ".join(lacks)] if lacks else [],
            "every attribute and class is present",
            "CN=Schema",
        ),
        _result(
            "schema.definitions",
            subject,
            list(conflicts or ()),
            "every definition present is as expected",
            "CN=Schema",
        ),
    ]


# --- GPO -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SysvolFacts:
    """One DC's copy of the GPO folder as read over SMB."""

    dc: str
    gpt_version: int | None = None  # None: GPT.INI missing
    registry: tuple[Mapping[str, Any], ...] | None = None  # PolEntry.describe(); None: unknown
    registry_error: str = ""  # User\Registry.pol does not parse
    acl_in_sync: bool | None = None  # None: could not compare
    acl_error: str = ""
    error: str = ""  # the SYSVOL could not be read at all


@dataclass(frozen=True)
class GpoFacts:
    name: str
    exists: bool
    guid: str = ""
    ad_version: int = 0
    links: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # container -> view
    sysvols: tuple[SysvolFacts, ...] = ()
    error: str = ""  # the GPC could not be read


def _registry_map(entries: Iterable[Mapping[str, Any]]) -> dict[tuple[str, str], Any]:
    return {
        (str(e["key"]).lower().strip("\\"), str(e["value"]).lower()): e.get("data", "absent")
        for e in entries
    }


def _settings_problems(dc: str, found: Iterable[Mapping], wanted: Iterable[Mapping]) -> list[str]:
    have = _registry_map(found)
    problems = []
    for e in wanted:
        identity = (str(e["key"]).lower().strip("\\"), str(e["value"]).lower())
        if identity not in have:
            problems.append(f"{e['value']} missing (wanted {e.get('data')}) on {dc}")
        elif have[identity] != e.get("data", "absent"):
            problems.append(f"{e['value']} is {have[identity]}, wanted {e.get('data')} on {dc}")
    return problems


def _sysvol_results(gpo: GpoFacts, sysvol: SysvolFacts, wanted: Sequence[Mapping]) -> list:
    subject = Subject("dc", sysvol.dc)
    where = f"\\\\{sysvol.dc}\\SYSVOL\\...\\Policies\\{gpo.guid}"
    if sysvol.error:
        why = f"could not read the GPO folder on {sysvol.dc}: {sysvol.error}"
        checks = ("gpo.version", "gpo.registry_pol", "gpo.settings", "gpo.acl")
        return [Result(c, subject, UNKNOWN, why, where) for c in checks]
    results = []
    if sysvol.gpt_version is None:
        version_problems = [f"GPT.INI missing on {sysvol.dc}"]
    elif sysvol.gpt_version != gpo.ad_version:
        version_problems = [
            f"GPT.INI version {sysvol.gpt_version} on {sysvol.dc}, "
            f"versionNumber {gpo.ad_version} in AD"
        ]
    else:
        version_problems = []
    results.append(
        _result(
            "gpo.version",
            subject,
            version_problems,
            f"version {gpo.ad_version} in AD and on SYSVOL",
            where + "\\GPT.INI",
        )
    )
    pol = where + "\\User\\Registry.pol"
    if sysvol.registry_error:
        results.append(Result("gpo.registry_pol", subject, FAIL, sysvol.registry_error, pol))
        why = f"Registry.pol on {sysvol.dc} does not parse (see gpo.registry_pol)"
        results.append(Result("gpo.settings", subject, UNKNOWN, why, pol))
    else:
        results.append(Result("gpo.registry_pol", subject, PASS, "Registry.pol parses", pol))
        problems = _settings_problems(sysvol.dc, sysvol.registry or (), wanted)
        results.append(_result("gpo.settings", subject, problems, "settings as wanted", pol))
    if sysvol.acl_in_sync is None:
        why = f"could not compare the folder ACL on {sysvol.dc}: {sysvol.acl_error or 'unread'}"
        results.append(Result("gpo.acl", subject, UNKNOWN, why, where))
    else:
        drift = f"NT ACL of {gpo.guid} on {sysvol.dc} does not follow the GPC's DACL"
        drift = [] if sysvol.acl_in_sync else [drift]
        results.append(_result("gpo.acl", subject, drift, "folder ACL follows the GPC", where))
    return results


def gpo_results(
    forest: str,
    gpo: GpoFacts,
    wanted: Sequence[Mapping[str, Any]],
    expected_links: Sequence[str],
) -> list[Result]:
    """``wanted``: the Registry.pol entries (``PolEntry.describe()``) the GPO must hold."""
    subject = Subject("forest", forest)
    if gpo.error:
        why = f"could not read GPO {gpo.name!r}: {gpo.error}"
        return [Result("gpo.present", subject, UNKNOWN, why)]
    if not gpo.exists:
        return [Result("gpo.present", subject, FAIL, f"no GPO named {gpo.name!r} in {forest}")]
    results = [Result("gpo.present", subject, PASS, f"GPO {gpo.name!r} is {gpo.guid}", gpo.guid)]
    links = {dn.lower(): view for dn, view in gpo.links.items()}
    unlinked = []
    for target in expected_links:
        view = links.get(target.lower())
        if view is None or not view.get("linked"):
            unlinked.append(f"not linked to {target}")
        elif not view.get("enabled", True):
            unlinked.append(f"link to {target} is disabled")
    results.append(
        _result(
            "gpo.linked",
            subject,
            unlinked,
            f"linked to {', '.join(expected_links) or 'nothing expected'}",
        )
    )
    for sysvol in gpo.sysvols:
        results += _sysvol_results(gpo, sysvol, wanted)
    return results


# --- users -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sizing:
    """The planning estimate of spec section 5: certificates x renewals x machines tokens."""

    certificates: int = 4
    renewals: int = 3
    machines: int = 5
    bytes_per_token: int = 2048

    @property
    def tokens(self) -> int:
        return self.certificates * self.renewals * self.machines

    @property
    def total_bytes(self) -> int:
        return self.tokens * self.bytes_per_token


@dataclass(frozen=True)
class UserFacts:
    dn: str
    record: RoamingRecord
    values: Mapping[str, Sequence[bytes]]  # every attribute read (lower-case names), raw
    # False: the account may not read the user's confidential attributes (they read as absent).
    confidential_readable: bool = True
    why_unreadable: str = ""


_USER_CHECKS = tuple(check for check in CHECKS if check.startswith("user."))


def user_stats(record: RoamingRecord) -> dict[str, int]:
    """Token count and total bytes (encoded tokens; undecodable values by their raw size)."""
    token_values = {a.lower() for a in TOKEN_ATTRIBUTES}
    rejected = [r for r in record.rejected if r.attribute.lower() in token_values]
    total = sum(s.token.encoded_size for s in record.tokens) + sum(len(r.raw) for r in rejected)
    return {"tokens": len(record.tokens) + len(rejected), "bytes": total}


def _limit_problems(record: RoamingRecord, stats: dict[str, int], policy: Policy) -> list[str]:
    problems = []
    if stats["tokens"] > policy.max_tokens:
        problems.append(
            f"{stats['tokens']} tokens, over DIMSRoamingMaxNumTokens {policy.max_tokens}"
        )
    oversize = [s.token.key for s in record.tokens if s.token.encoded_size > policy.max_token_size]
    oversize += [r.attribute for r in record.rejected if r.check == "size-limit"]
    if oversize:
        problems.append(
            f"{len(oversize)} token(s) over DIMSRoamingMaxTokenSize "
            f"{policy.max_token_size} bytes: {', '.join(oversize[:5])}"
        )
    if stats["bytes"] > policy.max_tokens * policy.max_token_size:
        problems.append(
            f"{stats['bytes']} bytes in total, over {policy.max_tokens * policy.max_token_size}"
        )
    return problems


def _sizing_problems(stats: dict[str, int], sizing: Sizing) -> list[str]:
    problems = []
    if stats["tokens"] > sizing.tokens:
        problems.append(f"{stats['tokens']} tokens, over the sizing estimate of {sizing.tokens}")
    if stats["bytes"] > sizing.total_bytes:
        problems.append(f"{stats['bytes']} bytes, over the estimate of {sizing.total_bytes}")
    return problems


def _malformed(side: DirectorySide) -> list[str]:
    """Values that do not decode, and certificate tokens whose element fails its checks.

    Sealed keys cannot be opened without the user's roaming key, which the compliance account
    does not have: their envelopes are not judged here (the agent reports them)."""
    found = []
    for rejected in side.rejected:
        if rejected.check == "size-limit":
            continue  # user.limits
        if rejected.attribute == KEY_ENVELOPES and rejected.check == "envelope":
            continue
        found.append(rejected.describe())
    return found


def _old_tombstones(record: RoamingRecord, policy: Policy, now: int) -> list[str]:
    cutoff = now - policy.tombstone_ticks
    old = [s for s in record.tokens if s.token.is_tombstone and s.token.last_modified < cutoff]
    return [
        f"{s.attribute} {s.token.key}: tombstone {(now - s.token.last_modified) // TICKS_PER_DAY}"
        f" days old, over {policy.tombstone_days}"
        for s in old
    ]


def _unarchived_expired(side: DirectorySide, now: int) -> list[str]:
    return [
        f"{item.key} expired and is not archived"
        for item in side.items.values()
        if item.kind == ItemKind.CERTIFICATE
        and not item.tombstone
        and not item.archived
        and item.expires is not None
        and item.expires <= now
    ]


def _roaming_key_problems(record: RoamingRecord, require_recovery: bool) -> list[str]:
    sealed = [s for s in record.tokens if s.attribute == KEY_ENVELOPES and not s.token.is_tombstone]
    if not sealed:
        return []
    wrapped, problems = parse_wrapped_keys(record)
    kinds = {w.kind for w in wrapped}
    if RecordKind.PASSWORD not in kinds:
        problems.append(f"{len(sealed)} sealed key(s) but no password-wrapped roaming key")
    if require_recovery and RecordKind.RECOVERY not in kinds:
        problems.append(f"{len(sealed)} sealed key(s) but no recovery-wrapped roaming key")
    return problems


def user_results(
    user: UserFacts, policy: Policy, sizing: Sizing, now: int, require_recovery: bool
) -> list[Result]:
    subject = Subject("user", user.dn)
    if not user.confidential_readable:
        why = (
            f"could not read the confidential roaming attributes of {user.dn}: "
            f"{user.why_unreadable or 'the account lacks the right'}"
        )
        return [Result(check, subject, UNKNOWN, why, user.dn) for check in _USER_CHECKS]
    record = user.record
    stats = user_stats(record)
    side = map_record(record, None, now=now)  # certificates only: keys stay sealed
    limits = _limit_problems(record, stats, policy)
    # Over the policy limits, user.limits speaks; the estimate is for users within them.
    sizing_problems = [] if limits else _sizing_problems(stats, sizing)
    checked = {
        "user.limits": (limits, f"{stats['tokens']} tokens, {stats['bytes']} bytes"),
        "user.sizing": (sizing_problems, "within the sizing estimate"),
        "user.tokens": (_malformed(side), "every value decodes"),
        "user.tombstones": (_old_tombstones(record, policy, now), "no tombstone past its days"),
        "user.expired": (_unarchived_expired(side, now), "no expired certificate unarchived"),
        "user.plaintext_keys": (
            [hit.describe() for hit in scan_values(user.values)],
            "no plaintext private key",
        ),
        "user.roaming_key": (
            _roaming_key_problems(record, require_recovery),
            "roaming-key envelopes as required",
        ),
    }
    return [
        _result(check, subject, problems, ok, user.dn) for check, (problems, ok) in checked.items()
    ]


def replication_results(
    user_dn: str, stamps: Mapping[str, bytes | None], unreadable: str = ""
) -> list[Result]:
    """``stamps``: DC -> the user's raw msPKIRoamingTimeStamp there (None: no value)."""
    subject = Subject("user", user_dn)
    if unreadable:
        return [Result("replication.timestamp", subject, UNKNOWN, unreadable, user_dn)]
    shown = {dc: (raw.hex() if raw else "none") for dc, raw in sorted(stamps.items())}
    if len(set(shown.values())) <= 1:
        return [
            Result("replication.timestamp", subject, PASS, f"{len(shown)} DC(s) agree", user_dn)
        ]
    detail = ", ".join(f"{dc}: {value}" for dc, value in shown.items())
    return [
        Result(
            "replication.timestamp",
            subject,
            FAIL,
            f"DCs disagree on msPKIRoamingTimeStamp of {user_dn} ({detail})",
            user_dn,
        )
    ]


# --- hosts -----------------------------------------------------------------------------------


def parse_agent_version(text: str) -> tuple[int, ...] | None:
    """``credroam-agent 0.1.0`` (what ``--version`` prints and the role records) or ``0.1.0``
    -> (0, 1, 0); None when the text is no such version."""
    match = re.fullmatch(r"(?:credroam-agent\s+)?(\d+(?:\.\d+)*)", text.strip())
    return tuple(int(part) for part in match.group(1).split(".")) if match else None


@dataclass(frozen=True)
class HostWanted:
    """What every agent host is held to."""

    agent_version: str = ""  # the lowest version accepted; "": any
    max_sync_age_hours: int = 168

    def __post_init__(self) -> None:
        if self.agent_version and parse_agent_version(self.agent_version) is None:
            raise ValueError(f"agent_version {self.agent_version!r} is not a version like 0.1.0")
        if self.max_sync_age_hours < 1:
            raise ValueError(
                f"max_sync_age_hours must be at least 1, not {self.max_sync_age_hours}"
            )


@dataclass(frozen=True)
class HostFacts:
    """What the compliance play read on one agent host (roles/sync_agent/tasks/facts.yml): the
    files the sync_agent role installed, as the role names them on that host, and what the
    agent itself says. Plain data, so the facts travel through Ansible unchanged."""

    host: str
    error: str = ""  # the host could not be read at all (unreachable, not Linux)
    agent_path: str = ""
    agent_sha256: str | None = None  # of the installed zipapp; None: not there
    record_path: str = ""
    record: str | None = None  # the role's install record: "credroam-agent X\nsha256 Y\n"
    reports: str = ""  # what `credroam-agent --version` printed; "": it did not run
    run_error: str = ""  # why it did not run
    hook_path: str = ""
    hook: Mapping[str, Any] | None = None  # {"owner": ..., "executable": ...}; None: not there
    pam: Mapping[str, str] = field(default_factory=dict)  # service -> file text ('': missing)
    units: Mapping[str, bool] = field(default_factory=dict)  # wanted unit -> file installed
    units_enabled: Mapping[str, bool] = field(default_factory=dict)  # -> default.target wants it
    # user -> the agent's `status --json` document, or {"error": why it could not be read}
    syncs: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> HostFacts:
        """The facts as the play hands them over, ``syncs`` as the text the agent printed. A
        key it does not know is refused, so a renamed fact cannot silently read as absent."""
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown or not data.get("host"):
            why = f"unknown keys {', '.join(unknown)}" if unknown else "no host name"
            raise ValueError(f"host facts of {data.get('host') or '?'}: {why}")
        syncs = {user: _status_document(out) for user, out in (data.get("syncs") or {}).items()}
        return cls(**{**data, "syncs": syncs})

    @property
    def recorded(self) -> tuple[str, str]:
        """(version line, sha256) of the install record; empty strings where absent."""
        lines = (self.record or "").splitlines()
        version = lines[0].strip() if lines else ""
        digest = next((ln.split(None, 1)[1] for ln in lines[1:] if ln.startswith("sha256 ")), "")
        return version, digest.strip()

    def last_syncs(self) -> dict[str, str | None]:
        """User -> the agent's last successful sync (ISO 8601), None for none on this host;
        users whose status could not be read are left out."""
        return {
            user: doc.get("last_successful_sync")
            for user, doc in sorted(self.syncs.items())
            if "error" not in doc
        }


def _status_document(printed: str | Mapping[str, Any]) -> Mapping[str, Any]:
    """The agent's ``status --json`` output as a document; {"error": ...} when it is none."""
    if isinstance(printed, Mapping):
        return printed
    try:
        document = json.loads(printed)
    except ValueError:
        document = None
    if not isinstance(document, dict):
        shown = printed.strip()[:200] or "nothing"
        return {"error": f"credroam-agent status --json printed {shown!r}, not its JSON report"}
    return document


def _agent_problems(facts: HostFacts, wanted: HostWanted) -> list[str]:
    host = facts.host
    if facts.record is None and facts.agent_sha256 is None:
        return [f"no agent installed on {host} ({facts.agent_path})"]
    problems = []
    recorded, digest = facts.recorded
    if facts.agent_sha256 is None:
        problems.append(f"the zipapp {facts.agent_path} is missing on {host}")
    elif not facts.reports:
        problems.append(f"the agent on {host} does not run: {facts.run_error or 'no output'}")
    if facts.record is None:
        problems.append(f"no install record {facts.record_path} on {host}")
    elif facts.reports and facts.reports.strip() != recorded:
        problems.append(f"{facts.record_path} records {recorded!r}, the agent reports "
                        f"{facts.reports.strip()!r}")  # fmt: skip
    if facts.agent_sha256 and digest and facts.agent_sha256 != digest:
        problems.append(f"the zipapp's sha256 on {host} differs from the one recorded at install")
    running = parse_agent_version(facts.reports or recorded)
    if wanted.agent_version and running is not None:
        if running < parse_agent_version(wanted.agent_version):
            shown = ".".join(map(str, running))
            problems.append(
                f"agent {shown} on {host}, older than the wanted {wanted.agent_version}"
            )
    elif wanted.agent_version and (facts.reports or recorded):
        problems.append(
            f"the agent's version on {host} is unreadable: {facts.reports or recorded!r}"
        )
    return problems


def _pam_has(text: str, kind: str, hook: str) -> bool:
    """Whether a line of PAM type ``kind`` runs ``hook`` through pam_exec (auth: with the
    password, expose_authtok)."""
    for line in text.splitlines():
        fields = line.split("#", 1)[0].split()
        if not fields or fields[0].lstrip("-") != kind:
            continue
        runs_hook = any(f.endswith("pam_exec.so") for f in fields) and hook in fields
        if runs_hook and (kind != "auth" or "expose_authtok" in fields):
            return True
    return False


def _pam_problems(facts: HostFacts) -> list[str]:
    host, hook = facts.host, facts.hook_path
    if facts.hook is None:
        problems = [f"PAM hook {hook} missing on {host}"]
    else:
        problems = []
        if facts.hook.get("owner") != "root":
            problems.append(f"PAM hook {hook} on {host} is owned by {facts.hook.get('owner')}")
        if not facts.hook.get("executable"):
            problems.append(f"PAM hook {hook} on {host} is not executable")
    for service, text in sorted(facts.pam.items()):
        where = f"/etc/pam.d/{service} on {host}"
        if not text:
            problems.append(f"{where} missing or empty")
            continue
        for kind in ("auth", "session"):
            if not _pam_has(text, kind, hook):
                problems.append(f"{where} has no {kind} line running {hook}")
    return problems


def _unit_problems(facts: HostFacts) -> list[str]:
    problems = []
    for unit, installed in sorted(facts.units.items()):
        if not installed:
            problems.append(f"user unit {unit} not installed on {facts.host}")
        elif not facts.units_enabled.get(unit):
            problems.append(f"user unit {unit} not enabled on {facts.host}")
    return problems


def _age(since: str, now: datetime) -> timedelta:
    moment = datetime.fromisoformat(since)
    return max(now - moment, timedelta(0))  # a host clock ahead is not an age


def _last_sync_results(facts: HostFacts, wanted: HostWanted, now: datetime) -> list[Result]:
    """One result per user the agent keeps a state for on the host (a user who never synced
    there has none: nothing to judge); "unknown" when the agent could not say."""
    if not facts.reports:
        why = f"no agent ran on {facts.host} to say when its users synced (see host.agent)"
        return [Result("host.last_sync", Subject("host", facts.host), UNKNOWN, why, facts.host)]
    results = []
    limit = timedelta(hours=wanted.max_sync_age_hours)
    for user, doc in sorted(facts.syncs.items()):
        subject = Subject("host", f"{facts.host}/{user}")
        if "error" in doc:
            why = f"could not read {user}'s last sync on {facts.host}: {doc['error']}"
            results.append(Result("host.last_sync", subject, UNKNOWN, why, facts.host))
            continue
        since = doc.get("last_successful_sync")
        if not since:
            continue
        try:
            age = _age(str(since), now)
        except (TypeError, ValueError):
            why = f"the agent on {facts.host} gave {user}'s last sync as {since!r}"
            results.append(Result("host.last_sync", subject, UNKNOWN, why, facts.host))
            continue
        hours = age.total_seconds() / 3600
        problems = []
        if age > limit:
            problems.append(
                f"{user}'s last successful sync on {facts.host} was {since}, {hours:.0f} hours "
                f"ago, over {wanted.max_sync_age_hours}"
            )
        ok = f"{user} synced {hours:.1f} hours ago ({since})"
        results.append(_result("host.last_sync", subject, problems, ok, facts.host))
    return results


def _host_check(
    check: str, ok: str, problems: Callable[[HostFacts, HostWanted], list[str]]
) -> Callable[[HostFacts, HostWanted, datetime], list[Result]]:
    """A check with one result per host, failing with ``problems``' list."""

    def run(facts: HostFacts, wanted: HostWanted, now: datetime) -> list[Result]:
        found = problems(facts, wanted)
        return [_result(check, Subject("host", facts.host), found, ok, facts.host)]

    return run


# Check id -> function(facts, wanted, now) -> results.
HOST_CHECKS: dict[str, Callable[[HostFacts, HostWanted, datetime], list[Result]]] = {
    "host.agent": _host_check(
        "host.agent", "agent installed at the wanted version", _agent_problems
    ),
    "host.pam": _host_check(
        "host.pam", "PAM hook and its lines in place", lambda facts, _: _pam_problems(facts)
    ),
    "host.units": _host_check(
        "host.units", "user units installed and enabled", lambda facts, _: _unit_problems(facts)
    ),
    "host.last_sync": _last_sync_results,
}


def host_results(facts: HostFacts, wanted: HostWanted, now: datetime) -> list[Result]:
    """Every host check's results for one host; all "unknown" when it could not be read."""
    if facts.error:
        why = f"could not read {facts.host}: {facts.error}"
        subject = Subject("host", facts.host)
        return [Result(check, subject, UNKNOWN, why, facts.host) for check in HOST_CHECKS]
    results: list[Result] = []
    for check in HOST_CHECKS.values():
        results += check(facts, wanted, now)
    return results


# --- the verdict -----------------------------------------------------------------------------


def blocking(
    results: Iterable[Result | Mapping[str, Any]], threshold: str, unknown_blocks: bool = True
) -> list[dict[str, Any]]:
    """The results that make the run fail: failures (and, by default, unknowns) at or above
    ``threshold``."""
    if threshold not in SEVERITIES:
        raise ValueError(f"severity must be one of {', '.join(SEVERITIES)}, not {threshold!r}")
    floor = SEVERITIES.index(threshold)
    statuses = {FAIL, UNKNOWN} if unknown_blocks else {FAIL}
    found = []
    for result in results:
        item = result.as_dict() if isinstance(result, Result) else dict(result)
        if item["status"] in statuses and SEVERITIES.index(item["severity"]) >= floor:
            found.append(item)
    return found


def summarize(results: Sequence[Result]) -> dict[str, Any]:
    counts = {PASS: 0, FAIL: 0, UNKNOWN: 0}
    by_severity = {s: {FAIL: 0, UNKNOWN: 0} for s in SEVERITIES}
    by_check: dict[str, dict[str, int]] = {}
    for result in results:
        counts[result.status] += 1
        by_check.setdefault(result.check, {PASS: 0, FAIL: 0, UNKNOWN: 0})[result.status] += 1
        if result.status != PASS:
            by_severity[result.severity][result.status] += 1
    return {"total": len(results), **counts, "by_severity": by_severity, "by_check": by_check}
