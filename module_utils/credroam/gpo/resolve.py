"""Which GPOs apply to a user, in which order, and the policy their Registry.pol values make.

Pure: the caller reads the directory (the user's token, the gPLink and gPOptions of each scope of
management, the groupPolicyContainer of each linked GPO) and each applicable GPO's
``User\\Registry.pol``; this module decides, as a Windows client does for user policy
([MS-GPOL] 3.2.5.1.5 GPO Search and 3.2.5.1.6 GPO Filter Evaluation):

* Scopes of management (SOMs) are processed site, domain, then the OUs from the top down to the
  user's own OU. Within one SOM the gPLink is stored lowest precedence first: its last entry
  has link order 1 and is applied last, so it wins.
* A disabled link is skipped. A SOM whose gPOptions blocks inheritance keeps its own links and
  drops every non-enforced link of the SOMs above it.
* Enforced links are applied after every non-enforced one, the lowest SOM first, so an enforced
  link higher up wins over an enforced link lower down and over everything not enforced; a
  block never stops them.
* A GPO is denied when its container is missing, its functionality version is not 2, its user
  configuration is disabled (flags bit 0x1), it is empty (version 0), or security filtering
  refuses it: the user's token (objectSid plus tokenGroups plus the well-known SIDs every
  logon carries) must be granted Read and the Apply Group Policy extended right by the DACL,
  evaluated in ACE order as AccessCheck does, so a deny ACE met first wins.
* A GPO linked to several SOMs is applied once, at its highest-precedence link.

Two pitfalls of Samba's own client (``samba.gp.gpclass.get_gpo_list``) are avoided on purpose:
its security check asks for Read only (a GPO filtered to other groups still applied), and its
enforced GPOs end up lowest SOM last (so an enforced link lower down won). Its version cache,
keyed by GPO alone and shared by every user of the host, is the caller's concern (see the agent's
``policy`` module: the cache is per user).

Registry.pol files are then folded in application order exactly as the registry would hold
them (``**del.``, ``**delvals.``, ``**DeleteValues``, ``**DeleteKeys`` included), and the
values of the settings tables (``settings.CREDENTIAL_ROAMING``, ``settings.AGENT_POLICY``) are
read back with the GPO that set each one.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from ..roaming.model import Policy, ReconcileError
from . import preg
from .model import GpoError, GpoVersion, normalize_guid, parse_gplink, with_link_order
from .secdesc import (
    ACCESS_ALLOWED,
    ACCESS_ALLOWED_OBJECT,
    ACCESS_DENIED,
    ACCESS_DENIED_OBJECT,
    APPLY_GROUP_POLICY,
    AUTHENTICATED_USERS,
    CONTROL_ACCESS,
    INHERIT_ONLY,
    SecurityDescriptor,
    SecurityDescriptorError,
)
from .settings import AGENT_POLICY, CREDENTIAL_ROAMING, PolicySetting, PolicyTable

__all__ = [
    "EVERYONE",
    "GPO_BLOCK_INHERITANCE",
    "POLICY_TABLES",
    "READ_ACCESS",
    "AppliedGpo",
    "Denial",
    "DeniedGpo",
    "GpoContainer",
    "GpoList",
    "GpoSettings",
    "GpoSource",
    "Som",
    "SomKind",
    "access_check",
    "applicable_gpos",
    "dn_key",
    "fold_registry",
    "merge_settings",
    "som_chain",
    "user_token",
]

POLICY_TABLES: tuple[PolicyTable, ...] = (CREDENTIAL_ROAMING, AGENT_POLICY)
GPO_BLOCK_INHERITANCE = 0x1  # gPOptions
_USER_DISABLED = 0x1  # groupPolicyContainer flags: the user configuration is disabled
_FUNCTIONALITY_VERSION = 2
EVERYONE = "S-1-1-0"
# Read as GPMC grants it and as a client needs it to process the GPO: read control, list
# contents, read properties (RC | LC | RP).
READ_ACCESS = 0x00020000 | 0x4 | 0x10


class SomKind(StrEnum):
    SITE = "site"
    DOMAIN = "domain"
    OU = "ou"


@dataclass(frozen=True)
class Som:
    """A scope of management as read: a site, the domain or an OU, with its gPLink/gPOptions."""

    dn: str
    kind: SomKind
    gplink: str | None = None
    gpoptions: int = 0

    @property
    def blocks_inheritance(self) -> bool:
        return bool(self.gpoptions & GPO_BLOCK_INHERITANCE)


@dataclass(frozen=True)
class GpoContainer:
    """The groupPolicyContainer of one GPO as read: what filtering and the source report need."""

    dn: str
    name: str  # displayName
    version: GpoVersion  # versionNumber
    security_descriptor: bytes  # nTSecurityDescriptor (at least the DACL)
    flags: int = 0
    file_sys_path: str = ""  # gPCFileSysPath
    functionality_version: int | None = _FUNCTIONALITY_VERSION

    @property
    def guid(self) -> str:
        return _guid_of(self.dn)


class Denial(StrEnum):
    """Why a linked GPO does not apply (the words gpresult uses where it has them)."""

    NOT_FOUND = "inaccessible: the GPO's container was not found"
    FUNCTIONALITY_VERSION = "invalid: gPCFunctionalityVersion is not 2"
    USER_DISABLED = "disabled: its user configuration is disabled"
    EMPTY = "empty: version 0"
    BAD_DESCRIPTOR = "inaccessible: its security descriptor cannot be read"
    NO_READ = "filtering: denied (security): no Read for the user"
    NO_APPLY = "filtering: not applied (security): no Apply Group Policy for the user"
    DENIED_APPLY = "filtering: denied (security): an ACE denies the user"


@dataclass(frozen=True)
class AppliedGpo:
    """A GPO that applies, with the link it applies through."""

    gpo: GpoContainer
    som: str  # the DN of the SOM linking it
    link_order: int  # as GPMC shows it in that SOM: 1 = highest precedence
    enforced: bool

    @property
    def guid(self) -> str:
        return self.gpo.guid

    @property
    def source(self) -> GpoSource:
        return GpoSource(self.guid, self.gpo.name, self.gpo.version.number, self.som)


@dataclass(frozen=True)
class DeniedGpo:
    gpo_dn: str
    som: str
    reason: Denial
    name: str = ""


@dataclass(frozen=True)
class GpoList:
    """``applied`` in application order (lowest precedence first: the last one wins)."""

    applied: tuple[AppliedGpo, ...]
    denied: tuple[DeniedGpo, ...]


# --- the walk ---------------------------------------------------------------------------------

_GUID_IN_DN = re.compile(r"^cn=(\{[0-9a-f-]{36}\})\s*,", re.IGNORECASE)


def _guid_of(dn: str) -> str:
    match = _GUID_IN_DN.match(dn.strip())
    if not match:
        raise GpoError(f"{dn!r} is not a GPO container DN (CN={{GUID}},CN=Policies,...)")
    return normalize_guid(match.group(1))


def dn_key(dn: str) -> str:
    """DNs compare case-insensitively, and without blanks around separators."""
    return ",".join(part.strip() for part in dn.split(",")).lower()


def _rdns(dn: str) -> list[str]:
    # DNs here come from the directory (already normalized); escaped commas in an OU name are
    # kept by joining a part that ends in a backslash with the next one.
    parts: list[str] = []
    for raw in dn.split(","):
        if parts and parts[-1].endswith("\\"):
            parts[-1] += "," + raw
        else:
            parts.append(raw.strip())
    return parts


def som_chain(user_dn: str, domain_dn: str) -> list[tuple[str, SomKind]]:
    """The domain and the OUs above ``user_dn``, top first: the SOMs to read, in walk order.

    Only OU components count (a user under CN=Users has the domain alone); the site, when the
    host's site is known, goes before all of them.
    """
    user, domain = _rdns(user_dn), _rdns(domain_dn)
    if len(user) <= len(domain) or dn_key(",".join(user[-len(domain) :])) != dn_key(domain_dn):
        raise GpoError(f"user {user_dn!r} is not inside the domain {domain_dn!r}")
    chain: list[tuple[str, SomKind]] = [(domain_dn, SomKind.DOMAIN)]
    above = user[1 : len(user) - len(domain)]  # the containers between the user and the domain
    for index in range(len(above) - 1, -1, -1):
        if above[index].lower().startswith("ou="):
            chain.append((",".join(above[index:] + domain), SomKind.OU))
    return chain


def user_token(object_sid: str, token_groups: Iterable[str]) -> frozenset[str]:
    """The SIDs a logon token of the user carries for this check: the user, the groups of
    tokenGroups (transitive, primary group included), Everyone and Authenticated Users."""
    return frozenset({object_sid.upper(), *(s.upper() for s in token_groups), EVERYONE,
                      AUTHENTICATED_USERS})  # fmt: skip


@dataclass(frozen=True)
class _Link:
    som: Som
    gpo_dn: str
    link_order: int
    enforced: bool


def _ordered_links(soms: Sequence[Som]) -> list[_Link]:
    """Every enabled link in application order, before filtering (``soms`` in walk order)."""
    per_som: list[tuple[Som, list[_Link]]] = []
    for som in soms:
        try:
            links = parse_gplink(som.gplink)
        except GpoError as exc:
            raise GpoError(f"gPLink of {som.dn}: {exc}") from None
        enabled = [
            _Link(som, link.gpo_dn, order, link.enforced)
            for order, link in with_link_order(links)
            if link.enabled
        ]
        per_som.append((som, enabled))
    # From the user's own OU upwards: a SOM that blocks inheritance keeps its own links and
    # drops the non-enforced links of every SOM above it.
    non_enforced: list[_Link] = []
    blocked = False
    for som, links in reversed(per_som):
        if not blocked:
            non_enforced[:0] = [link for link in links if not link.enforced]
        blocked = blocked or som.blocks_inheritance
    # Enforced links go last, the lowest SOM first, so the highest enforced link wins.
    enforced = [link for _, links in reversed(per_som) for link in links if link.enforced]
    return non_enforced + enforced


def applicable_gpos(
    soms: Sequence[Som],
    containers: Mapping[str, GpoContainer],
    token: Iterable[str],
) -> GpoList:
    """The GPOs that apply to a user, in application order, and those denied with the reason.

    ``soms``: site (if known), domain, then OUs top down (see :func:`som_chain`);
    ``containers``: each linked GPO's container by DN (any case) -- a missing one is denied;
    ``token``: the user's SIDs (see :func:`user_token`).
    """
    sids = frozenset(s.upper() for s in token)
    by_dn = {dn_key(dn): gpo for dn, gpo in containers.items()}
    chosen: dict[str, AppliedGpo] = {}
    denied: list[DeniedGpo] = []
    for link in _ordered_links(soms):
        gpo = by_dn.get(dn_key(link.gpo_dn))
        reason = Denial.NOT_FOUND if gpo is None else _denial(gpo, sids)
        if reason is not None:
            name = gpo.name if gpo is not None else ""
            denied.append(DeniedGpo(link.gpo_dn, link.som.dn, reason, name))
            continue
        assert gpo is not None
        # Applied once, at its highest-precedence link: a later occurrence replaces it.
        chosen.pop(gpo.guid, None)
        chosen[gpo.guid] = AppliedGpo(gpo, link.som.dn, link.link_order, link.enforced)
    return GpoList(tuple(chosen.values()), tuple(dict.fromkeys(denied)))


def _denial(gpo: GpoContainer, sids: frozenset[str]) -> Denial | None:
    if gpo.functionality_version != _FUNCTIONALITY_VERSION:
        return Denial.FUNCTIONALITY_VERSION
    if gpo.flags & _USER_DISABLED:
        return Denial.USER_DISABLED
    if gpo.version.number == 0:
        return Denial.EMPTY
    try:
        descriptor = SecurityDescriptor.parse(gpo.security_descriptor)
    except SecurityDescriptorError:
        return Denial.BAD_DESCRIPTOR
    return access_check(descriptor, sids)


def access_check(descriptor: SecurityDescriptor, sids: Iterable[str]) -> Denial | None:
    """None when ``sids`` are granted Read and Apply Group Policy, else why not.

    AccessCheck's rule ([MS-DTYP] 2.5.3.2): ACEs are visited in order; an allow ACE grants the
    bits not yet denied, a deny ACE denies the bits not yet granted. Inherit-only ACEs do not
    apply to the object itself. Object ACEs count for Apply when they name its GUID or no GUID
    at all; a plain ACE with control access grants every extended right.
    """
    token = frozenset(s.upper() for s in sids)
    granted = denied = 0
    apply_granted = apply_denied = False
    for ace in descriptor.aces:
        if ace.flags & INHERIT_ONLY or ace.type not in _ACCESS_TYPES:
            continue
        if ace.trustee.upper() not in token:
            continue
        allow = ace.type in (ACCESS_ALLOWED, ACCESS_ALLOWED_OBJECT)
        object_type = ace.object_type
        plain_bits = ace.mask if object_type is None else 0
        covers_apply = bool(ace.mask & CONTROL_ACCESS) and object_type in (None, APPLY_GROUP_POLICY)
        if allow:
            granted |= plain_bits & ~denied
            apply_granted = apply_granted or (covers_apply and not apply_denied)
        else:
            denied |= plain_bits & ~granted
            apply_denied = apply_denied or (covers_apply and not apply_granted)
    if apply_denied:
        return Denial.DENIED_APPLY
    if granted & READ_ACCESS != READ_ACCESS:
        return Denial.NO_READ
    if not apply_granted:
        return Denial.NO_APPLY
    return None


_ACCESS_TYPES = (ACCESS_ALLOWED, ACCESS_DENIED, ACCESS_ALLOWED_OBJECT, ACCESS_DENIED_OBJECT)


# --- the settings -----------------------------------------------------------------------------


@dataclass(frozen=True)
class GpoSource:
    """Where a value came from: the GPO (GUID, display name, versionNumber) and its link."""

    guid: str
    name: str
    version: int
    som: str

    def as_dict(self) -> dict[str, object]:
        return {"guid": self.guid, "name": self.name, "version": self.version, "som": self.som}

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> GpoSource:
        return cls(str(data["guid"]), str(data["name"]), int(data["version"]), str(data["som"]))  # type: ignore[arg-type]


Value = int | bool | str


@dataclass(frozen=True)
class GpoSettings:
    """The values Group Policy sets (option -> value) and the GPO each came from.

    Options not in ``values`` are not set by any applicable GPO: the local configuration or the
    table default decides them (:meth:`value`). ``problems`` names values that were present but
    unusable (wrong type, out of range) and the GPO at fault.
    """

    values: Mapping[str, Value] = field(default_factory=dict)
    sources: Mapping[str, GpoSource] = field(default_factory=dict)
    problems: tuple[str, ...] = ()

    def value(self, option: str, local: Mapping[str, object] | None = None) -> Value | None:
        """Group Policy wins; then ``local`` (e.g. the agent's config file); then the default."""
        if option in self.values:
            return self.values[option]
        table, setting = _setting(option)
        if local and local.get(option) is not None:
            return _validated(table, setting, local[option])
        return _typed_default(setting)

    def effective(self, local: Mapping[str, object] | None = None) -> dict[str, Value | None]:
        """Every option of both tables with the value in force."""
        return {s.option: self.value(s.option, local) for t in POLICY_TABLES for s in t.settings}

    def roaming_policy(self, local: Mapping[str, object] | None = None) -> Policy:
        """The reconciliation ``Policy`` in force (fields without a GPO setting keep their
        ``local`` value or their default)."""
        values = self.effective(local)
        fields = {name: values[name] for name in _POLICY_FIELDS if name in values}
        for name in _POLICY_FIELDS - values.keys():
            if local and local.get(name) is not None:
                fields[name] = local[name]
        try:
            return Policy(**fields)  # type: ignore[arg-type]
        except ReconcileError as exc:
            raise GpoError(f"local policy setting: {exc}") from None


_POLICY_FIELDS = frozenset(Policy.__dataclass_fields__)


def _setting(option: str) -> tuple[PolicyTable, PolicySetting]:
    for table in POLICY_TABLES:
        for setting in table.settings:
            if setting.option == option:
                return table, setting
    known = ", ".join(s.option for t in POLICY_TABLES for s in t.settings)
    raise GpoError(f"unknown policy option {option!r} (known: {known})")


def _typed_default(setting: PolicySetting) -> Value | None:
    if setting.default is None:
        return None
    return bool(setting.default) if setting.kind == "bool" else setting.default


def _validated(table: PolicyTable, setting: PolicySetting, value: object) -> Value:
    """A local value checked against the table (the same check ``ad_gpo`` makes)."""
    setting.to_entry(table.key, value)  # raises GpoError naming the option
    return value  # type: ignore[return-value]


def _from_registry(setting: PolicySetting, entry: preg.PolEntry) -> Value:
    """The typed value of a Registry.pol entry, or GpoError saying why it cannot be used."""
    value = entry.value()
    if setting.kind in ("bool", "int"):
        if entry.type != preg.RegType.REG_DWORD or not isinstance(value, int):
            raise GpoError(f"is {entry.type_name}, not REG_DWORD")
        if setting.kind == "bool":
            return value != 0
        assert setting.minimum is not None and setting.maximum is not None
        if not setting.minimum <= value <= setting.maximum:
            raise GpoError(f"{value} is outside {setting.minimum}..{setting.maximum}")
        return value
    if entry.type not in (preg.RegType.REG_SZ, preg.RegType.REG_EXPAND_SZ):
        raise GpoError(f"is {entry.type_name}, not REG_SZ")
    assert isinstance(value, str)
    if setting.max_length is not None and len(value) > setting.max_length:
        raise GpoError(f"is longer than {setting.max_length} characters")
    return value


def fold_registry(
    gpos: Sequence[tuple[GpoSource, Sequence[preg.PolEntry]]],
) -> dict[tuple[str, str], tuple[preg.PolEntry, GpoSource]]:
    """What the user's policy registry holds after applying each GPO's entries in order:
    (key, value name) lower-cased -> the entry and the GPO that wrote it last."""
    registry: dict[tuple[str, str], tuple[preg.PolEntry, GpoSource]] = {}
    for source, entries in gpos:
        for entry in entries:
            _apply_entry(registry, entry, source)
    return registry


def _apply_entry(
    registry: dict[tuple[str, str], tuple[preg.PolEntry, GpoSource]],
    entry: preg.PolEntry,
    source: GpoSource,
) -> None:
    key = entry.key.strip("\\").lower()
    name = entry.name.lower()
    if entry.is_delete_value:
        registry.pop((key, entry.target.lower()), None)
    elif name == preg.DELETE_ALL_VALUES:
        for identity in [i for i in registry if i[0] == key]:
            del registry[identity]
    elif name == preg.DELETE_VALUES.lower():
        for value_name in _name_list(entry):
            registry.pop((key, value_name.lower()), None)
    elif name == preg.DELETE_KEYS.lower():
        for subkey in _name_list(entry):
            doomed = f"{key}\\{subkey.strip(chr(92)).lower()}"
            for identity in [i for i in registry if i[0] == doomed or
                             i[0].startswith(doomed + "\\")]:  # fmt: skip
                del registry[identity]
    elif name.startswith("**soft."):  # set only where no value exists yet
        target = (key, name[len("**soft.") :])
        if target not in registry:
            registry[target] = (_renamed(entry, entry.name[len("**soft.") :]), source)
    elif name.startswith("**") or not name:
        return  # markers (**SecureKey, a bare key) set no value
    else:
        registry[(key, name)] = (entry, source)


def _renamed(entry: preg.PolEntry, name: str) -> preg.PolEntry:
    return preg.PolEntry(entry.key, name, entry.type, entry.data)


def _name_list(entry: preg.PolEntry) -> list[str]:
    value = entry.value()
    if isinstance(value, list):
        return [v for v in value if v]
    return [part for part in str(value or "").split(";") if part]


def merge_settings(gpos: Sequence[tuple[AppliedGpo, Sequence[preg.PolEntry]]]) -> GpoSettings:
    """The settings-table values the applied GPOs set, in application order (later wins),
    each with its source. A value present but unusable is reported and the option falls back
    to the local value or the default: the registry holds that value, not an earlier one."""
    registry = fold_registry([(applied.source, entries) for applied, entries in gpos])
    values: dict[str, Value] = {}
    sources: dict[str, GpoSource] = {}
    problems: list[str] = []
    for table in POLICY_TABLES:
        key = table.key.lower()
        for setting in table.settings:
            found = registry.get((key, setting.value_name.lower()))
            if found is None:
                continue
            entry, source = found
            try:
                values[setting.option] = _from_registry(setting, entry)
            except GpoError as exc:
                problems.append(
                    f"{setting.value_name} in GPO {source.name!r} {source.guid} "
                    f"(version {source.version}) ignored: {exc}"
                )
                continue
            sources[setting.option] = source
    return GpoSettings(values, sources, tuple(problems))
