"""Group Policy objects as data: settings tables, GPT.INI, versions, gPLink, and the plan.

A GPO is two halves that must agree ([MS-GPOL]): the ``groupPolicyContainer`` (GPC) object
``CN={GUID},CN=Policies,CN=System,<domain>`` in the directory, and the Group Policy Template
(GPT) folder ``\\\\<domain>\\SysVol\\<domain>\\Policies\\{GUID}`` holding ``GPT.INI`` and
``User\\Registry.pol``. Both carry the version (user << 16 | computer); a client only re-applies a
GPO whose version moved, so the version moves exactly when content changes, in both places.

Everything here is pure: the module reads the current state, these functions decide what it
should become, and the module writes only the difference. The settings tables are the single
source of truth for the registry values, their ranges, and the ADMX/ADML/ADM templates.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from .preg import PolEntry, PolValueError, delete_value_entry, make_entry

__all__ = [
    "AGENT_POLICY",
    "CREDENTIAL_ROAMING",
    "FUNCTIONALITY_VERSION",
    "REGISTRY_CSE",
    "REGISTRY_TOOL_USER",
    "GpLink",
    "GpoError",
    "GpoVersion",
    "PolicySetting",
    "PolicyTable",
    "RegistryChange",
    "SysvolCopy",
    "add_extension_names",
    "format_gplink",
    "gpc_dn",
    "gpt_unc_path",
    "merge_registry",
    "new_gpo_guid",
    "normalize_guid",
    "parse_extension_names",
    "parse_gplink",
    "parse_gpt_ini_version",
    "place_link",
    "policy_entries",
    "registry_value_entry",
    "remove_link",
    "same_registry",
    "sysvol_copy_problem",
    "target_version",
    "update_gpt_ini",
]

REGISTRY_CSE = "{35378EAC-683F-11D2-A89A-00C04FBBCFA2}"
REGISTRY_TOOL_USER = "{0F6B957E-509E-11D1-A7CC-0000F87571E3}"
FUNCTIONALITY_VERSION = 2
_HALF_MAX = 0xFFFF


class GpoError(ValueError):
    """A GPO setting, file or attribute is invalid; the message names the thing at fault."""


# --- settings tables -------------------------------------------------------------------------


@dataclass(frozen=True)
class PolicySetting:
    """One registry-backed policy value: how users name it, where it lives, what it may be."""

    option: str  # key in the module's dict option, e.g. "tombstone_days"
    value_name: str  # registry value name, e.g. "DIMSRoamingTombstoneDays"
    kind: str  # "bool" (REG_DWORD 0/1), "int" (REG_DWORD in range), "text" (REG_SZ)
    display: str  # short title, used by the templates
    explain: str  # help text, used by the templates
    minimum: int | None = None
    maximum: int | None = None
    default: int | str | None = None
    max_length: int | None = None  # for text

    def to_entry(self, key: str, value: object) -> PolEntry:
        """The Registry.pol entry for ``value``, validated against this setting's range."""
        where = f"{self.option} ({self.value_name})"
        if self.kind == "bool":
            if not isinstance(value, bool):
                raise GpoError(f"{where} must be true or false, not {value!r}")
            return make_entry(key, self.value_name, "REG_DWORD", int(value))
        if self.kind == "int":
            if isinstance(value, bool) or not isinstance(value, int):
                raise GpoError(f"{where} must be an integer, not {value!r}")
            assert self.minimum is not None and self.maximum is not None
            if not self.minimum <= value <= self.maximum:
                raise GpoError(
                    f"{where} must be between {self.minimum} and {self.maximum}, not {value}"
                )
            return make_entry(key, self.value_name, "REG_DWORD", value)
        if not isinstance(value, str):
            raise GpoError(f"{where} must be a string, not {value!r}")
        if self.max_length is not None and len(value) > self.max_length:
            raise GpoError(f"{where} is longer than {self.max_length} characters")
        try:
            return make_entry(key, self.value_name, "REG_SZ", value)
        except PolValueError as exc:
            raise GpoError(f"{where}: {exc}") from None


@dataclass(frozen=True)
class PolicyTable:
    """A set of settings under one user-side registry key (relative to HKCU)."""

    name: str  # identifier for templates (ADMX category / ADM category)
    key: str
    settings: tuple[PolicySetting, ...] = field(default_factory=tuple)

    def setting(self, option: str) -> PolicySetting:
        for setting in self.settings:
            if setting.option == option:
                return setting
        known = ", ".join(s.option for s in self.settings)
        raise GpoError(f"unknown {self.name} option {option!r} (known: {known})")


CREDENTIAL_ROAMING = PolicyTable(
    name="CredentialRoaming",
    key="Software\\Policies\\Microsoft\\Cryptography\\AutoEnrollment",
    settings=(
        PolicySetting(
            "enabled",
            "DIMSRoaming",
            "bool",
            "Credential roaming",
            "Keeps the user's certificates and private keys in Active Directory so that every "
            "computer the user logs on to has the same set.",
            default=1,
        ),
        PolicySetting(
            "tombstone_days",
            "DIMSRoamingTombstoneDays",
            "int",
            "Days a deleted credential is kept as a tombstone",
            "A deleted certificate or key stays in the directory, marked deleted, for this many "
            "days so that every computer learns about the deletion.",
            minimum=1,
            maximum=3650,
            default=60,
        ),
        PolicySetting(
            "max_tokens",
            "DIMSRoamingMaxNumTokens",
            "int",
            "Maximum number of roaming credentials per user",
            "Credentials beyond this number are not roamed.",
            minimum=1,
            maximum=10000,
            default=2000,
        ),
        PolicySetting(
            "max_token_size",
            "DIMSRoamingMaxTokenSize",
            "int",
            "Maximum size of one roaming credential (bytes)",
            "A certificate or key larger than this is not roamed.",
            minimum=1,
            maximum=100000,
            default=65535,
        ),
        PolicySetting(
            "roam_unaffiliated_keys",
            "RoamUnaffiliatedKeys",
            "bool",
            "Roam private keys without a certificate",
            "Also roams private keys that no certificate refers to.",
            default=0,
        ),
        PolicySetting(
            "roam_unused_dpapi_keys",
            "RoamUnusedDpapiKeys",
            "bool",
            "Roam unused DPAPI master keys",
            "Also roams DPAPI master keys that no roamed key uses.",
            default=0,
        ),
        PolicySetting(
            "roam_smartcard_certificates",
            "RoamSmartCardCertificates",
            "bool",
            "Roam smart-card certificates",
            "Also roams the certificates of keys held on smart cards (never the keys).",
            default=0,
        ),
    ),
)

AGENT_POLICY = PolicyTable(
    name="CredroamAgent",
    key="Software\\Policies\\credroam",
    settings=(
        PolicySetting(
            "sync_interval_minutes",
            "SyncIntervalMinutes",
            "int",
            "Synchronisation interval (minutes)",
            "How often the credroam agent synchronises besides logon, unlock and store changes.",
            minimum=5,
            maximum=1440,
            default=60,
        ),
        PolicySetting(
            "archive_expired",
            "ArchiveExpired",
            "bool",
            "Archive expired certificates",
            "Expired certificates are archived locally and in the directory instead of deleted.",
            default=1,
        ),
        PolicySetting(
            "remove_at_logoff",
            "RemoveAtLogoff",
            "bool",
            "Remove roamed credentials at logoff",
            "Removes the roamed certificates and keys from the computer when the user logs off.",
            default=0,
        ),
        PolicySetting(
            "recovery_key_fingerprint",
            "RecoveryKeyFingerprint",
            "text",
            "Organisation recovery key (SHA-256 fingerprint)",
            "Roaming keys are also wrapped for the recovery key with this fingerprint.",
            max_length=64,
        ),
    ),
)


def policy_entries(table: PolicyTable, options: Mapping[str, object] | None) -> list[PolEntry]:
    """Entries for the options that are set; ``None`` means "not managed", not "delete"."""
    entries = []
    for option, value in (options or {}).items():
        setting = table.setting(option)
        if value is not None:
            entries.append(setting.to_entry(table.key, value))
    return entries


_HIVE_PREFIXES = ("hkcu\\", "hkey_current_user\\")


def registry_value_entry(spec: Mapping[str, object]) -> PolEntry:
    """One ``registry_values`` item -> entry. ``state: absent`` writes a ``**del.`` entry.

    Keys are user-side (relative to HKCU); an ``HKCU\\`` prefix is accepted and dropped.
    """
    key = str(spec.get("key") or "").strip("\\")
    if key.lower().startswith(("hklm\\", "hkey_local_machine\\")):
        raise GpoError(f"registry key {key!r}: only user (HKCU) policy is managed")
    for prefix in _HIVE_PREFIXES:
        if key.lower().startswith(prefix):
            key = key[len(prefix) :]
    name = spec.get("value")
    if not key or not isinstance(name, str):
        raise GpoError(f"registry value needs a key and a value name: {dict(spec)!r}")
    try:
        if spec.get("state", "present") == "absent":
            return delete_value_entry(key, name)
        if spec.get("type") is None or spec.get("data") is None:
            raise GpoError(f"registry value {key}\\{name} needs type and data")
        return make_entry(key, name, str(spec["type"]), spec["data"])
    except PolValueError as exc:
        raise GpoError(str(exc)) from None


@dataclass(frozen=True)
class RegistryChange:
    """What happens to Registry.pol: the new entries and a per-value before/after."""

    entries: list[PolEntry]
    changed: bool
    before: list[dict]
    after: list[dict]


def _same_content(a: PolEntry, b: PolEntry) -> bool:
    return a.identity == b.identity and a.type == b.type and a.data == b.data


def same_registry(a: Sequence[PolEntry], b: Sequence[PolEntry]) -> bool:
    """Same entries in the same order, compared by content (not byte for byte)."""
    return len(a) == len(b) and all(_same_content(x, y) for x, y in zip(a, b, strict=True))


def merge_registry(
    current: Sequence[PolEntry], desired: Iterable[PolEntry], exclusive: bool = False
) -> RegistryChange:
    """Apply ``desired`` to ``current`` by identity (key + value name, case-insensitively).

    A desired entry replaces the current one in place (so unrelated entries keep their order);
    an entry with equal content is kept byte for byte (so case-only differences are no change);
    new entries go to the end. With ``exclusive``, entries not desired are dropped. A later
    desired entry with the same identity wins.
    """
    wanted: dict[tuple[str, str], PolEntry] = {}
    for entry in desired:
        wanted.pop(entry.identity, None)
        wanted[entry.identity] = entry
    result: list[PolEntry] = []
    placed: set[tuple[str, str]] = set()
    for entry in current:
        identity = entry.identity
        if identity in wanted:
            if identity in placed:
                continue  # a duplicate in the current file; the desired value stands once
            target = wanted[identity]
            result.append(entry if _same_content(entry, target) else target)
            placed.add(identity)
        elif not exclusive:
            result.append(entry)
    result.extend(entry for identity, entry in wanted.items() if identity not in placed)
    changed = len(result) != len(current) or any(
        not _same_content(a, b) for a, b in zip(result, current, strict=False)
    )
    return RegistryChange(
        entries=result,
        changed=changed,
        before=[e.describe() for e in current],
        after=[e.describe() for e in result],
    )


# --- identity and paths -----------------------------------------------------------------------

_GUID_RE = re.compile(
    r"^\{?([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})\}?$"
)


def normalize_guid(text: str) -> str:
    """``'{abc...}'`` / ``'abc...'`` -> ``'{ABC...}'``, the form GPO names use."""
    match = _GUID_RE.match(text.strip())
    if not match:
        raise GpoError(f"{text!r} is not a GPO GUID like {{31B2F340-016D-11D2-945F-00C04FB984F9}}")
    return "{" + match.group(1).upper() + "}"


def new_gpo_guid() -> str:
    return normalize_guid(str(uuid.uuid4()))


def gpc_dn(guid: str, domain_dn: str) -> str:
    return f"CN={normalize_guid(guid)},CN=Policies,CN=System,{domain_dn}"


def gpt_unc_path(guid: str, domain_dns_name: str) -> str:
    """gPCFileSysPath as Windows and samba-tool write it."""
    return f"\\\\{domain_dns_name}\\SysVol\\{domain_dns_name}\\Policies\\{normalize_guid(guid)}"


# --- versions ---------------------------------------------------------------------------------


@dataclass(frozen=True, order=True)
class GpoVersion:
    """user << 16 | computer, as GPT.INI ``Version=`` and the GPC's ``versionNumber`` hold it."""

    user: int = 0
    computer: int = 0

    def __post_init__(self) -> None:
        for half in (self.user, self.computer):
            if not 0 <= half <= _HALF_MAX:
                raise GpoError(f"GPO version half {half} is outside 0..65535")

    @classmethod
    def from_number(cls, number: int) -> GpoVersion:
        # versionNumber is a signed 32-bit INTEGER in the schema: a user half >= 0x8000
        # comes back negative over LDAP.
        number &= 0xFFFFFFFF
        return cls(number >> 16, number & _HALF_MAX)

    @property
    def number(self) -> int:
        return self.user << 16 | self.computer

    @property
    def ldap_value(self) -> int:
        """The value to write to versionNumber (signed 32-bit)."""
        return self.number - 2**32 if self.number >= 2**31 else self.number

    def bump_user(self) -> GpoVersion:
        """Next user version; a wrapping half goes to 1, never 0 (0 means "no settings")."""
        return GpoVersion(self.user + 1 if self.user < _HALF_MAX else 1, self.computer)

    def as_dict(self) -> dict[str, int]:
        return {"user": self.user, "computer": self.computer, "number": self.number}


_GPT_VERSION_RE = re.compile(rb"(?im)^([ \t]*version[ \t]*=[ \t]*)(-?\d+)[ \t]*(\r?)$")
_GPT_SECTION_RE = re.compile(rb"(?im)^[ \t]*\[general\][ \t]*\r?$")


def parse_gpt_ini_version(raw: bytes) -> GpoVersion:
    """``Version=`` of GPT.INI's [General] section; a file without it is version 0."""
    match = _GPT_VERSION_RE.search(raw)
    if not match:
        if raw.strip() and not _GPT_SECTION_RE.search(raw):
            raise GpoError("GPT.INI has neither a [General] section nor a Version line")
        return GpoVersion()
    try:
        return GpoVersion.from_number(int(match.group(2)))
    except ValueError:
        raise GpoError(f"GPT.INI Version={match.group(2)!r} is not a number") from None


def update_gpt_ini(raw: bytes | None, version: GpoVersion) -> bytes:
    """GPT.INI with ``Version=`` set, every other line kept as it was (CRLF, like Windows)."""
    line = b"Version=%d" % version.number
    if not raw or not raw.strip():
        return b"[General]\r\n" + line + b"\r\n"
    if _GPT_VERSION_RE.search(raw):
        return _GPT_VERSION_RE.sub(
            lambda m: m.group(1) + b"%d" % version.number + m.group(3), raw, 1
        )
    section = _GPT_SECTION_RE.search(raw)
    if not section:
        return b"[General]\r\n" + line + b"\r\n" + raw
    line_end = raw.find(b"\n", section.end())
    if line_end < 0:
        return raw + b"\r\n" + line + b"\r\n"
    return raw[: line_end + 1] + line + b"\r\n" + raw[line_end + 1 :]


# --- several SYSVOLs ---------------------------------------------------------------------------


@dataclass(frozen=True)
class SysvolCopy:
    """What one DC's SYSVOL holds of a GPO (SYSVOL is not replicated between Samba DCs)."""

    server: str
    version: GpoVersion | None  # None: GPT.INI is missing
    entries: Sequence[PolEntry] = ()


def sysvol_copy_problem(
    ad_version: GpoVersion, copy: SysvolCopy, reference: SysvolCopy
) -> str | None:
    """Why ``copy`` lags, or None. The first SYSVOL listed is the reference for content: a copy
    whose Registry.pol differs from it would give clients other settings under one version."""
    if copy.version is None:
        return f"GPT.INI missing on {copy.server}"
    if copy.version != ad_version:
        return (
            f"GPT.INI version {copy.version.number} on {copy.server}, "
            f"versionNumber {ad_version.number} in AD"
        )
    if copy is not reference and not same_registry(copy.entries, reference.entries):
        return f"User\\Registry.pol on {copy.server} differs from {reference.server}'s"
    return None


def target_version(
    ad_version: GpoVersion,
    copies: Sequence[SysvolCopy],
    wanted: Sequence[PolEntry],
    content_changed: bool,
    repair: bool,
) -> GpoVersion:
    """The version every copy and the GPC get. A content change bumps the user half past every
    version seen, so each client re-applies; a repair takes the highest version seen, bumped
    when a copy already at that version holds other content (its clients must re-apply too)."""
    if not content_changed and not repair:
        return ad_version
    top = max([ad_version, *(c.version for c in copies if c.version is not None)])
    if content_changed:
        return top.bump_user()
    if any(c.version == top and not same_registry(c.entries, wanted) for c in copies):
        return top.bump_user()
    return top


# --- extension names --------------------------------------------------------------------------

_EXTENSION_GROUP_RE = re.compile(r"\[((?:\{[0-9A-Fa-f-]{36}\})+)\]")
_BRACED_GUID_RE = re.compile(r"\{[0-9A-Fa-f-]{36}\}")


def parse_extension_names(value: str | None) -> list[tuple[str, ...]]:
    """``[{CSE}{tool}...][...]`` -> [(CSE, tool, ...), ...] with upper-case GUIDs."""
    text = (value or "").strip()
    groups = _EXTENSION_GROUP_RE.findall(text)
    if _EXTENSION_GROUP_RE.sub("", text).strip():
        raise GpoError(f"gPCUserExtensionNames {value!r} is not a list of [{{CSE}}{{tool}}]")
    return [tuple(g.upper() for g in _BRACED_GUID_RE.findall(group)) for group in groups]


def add_extension_names(value: str | None, cse: str, tool: str) -> str:
    """Add ``tool`` under ``cse``; groups and tools sorted by GUID, as Windows requires."""
    groups = {g[0]: set(g[1:]) for g in parse_extension_names(value)}
    groups.setdefault(cse.upper(), set()).add(tool.upper())
    return "".join(
        "[" + cse_guid + "".join(sorted(tools)) + "]" for cse_guid, tools in sorted(groups.items())
    )


# --- links ------------------------------------------------------------------------------------

_LINK_RE = re.compile(r"\[LDAP://([^;\]]+);(\d+)\]", re.IGNORECASE)
_LINK_GUID_RE = re.compile(r"^cn=(\{[0-9a-fA-F-]{36}\}),", re.IGNORECASE)
_OPT_DISABLED, _OPT_ENFORCED = 1, 2


@dataclass(frozen=True)
class GpLink:
    """One entry of a container's gPLink."""

    gpo_dn: str
    enabled: bool = True
    enforced: bool = False

    @property
    def options(self) -> int:
        return (0 if self.enabled else _OPT_DISABLED) | (_OPT_ENFORCED if self.enforced else 0)

    @property
    def guid(self) -> str | None:
        match = _LINK_GUID_RE.match(self.gpo_dn)
        return match.group(1).upper() if match else None

    def is_for(self, guid: str) -> bool:
        return self.guid == normalize_guid(guid)


def parse_gplink(value: str | None) -> list[GpLink]:
    """gPLink in stored order. The LAST entry has link order 1 (highest precedence)."""
    text = (value or "").strip()
    links = [
        GpLink(dn, not int(opts) & _OPT_DISABLED, bool(int(opts) & _OPT_ENFORCED))
        for dn, opts in _LINK_RE.findall(text)
    ]
    if _LINK_RE.sub("", text).strip():
        raise GpoError(f"gPLink {value!r} is not a list of [LDAP://<dn>;<options>]")
    return links


def format_gplink(links: Sequence[GpLink]) -> str:
    return "".join(f"[LDAP://{link.gpo_dn};{link.options}]" for link in links)


def link_order(links: Sequence[GpLink], guid: str) -> int | None:
    """GPMC's link order (1 = highest precedence) of ``guid`` in stored ``links``."""
    for index, link in enumerate(links):
        if link.is_for(guid):
            return len(links) - index
    return None


def place_link(links: Sequence[GpLink], link: GpLink, order: int | None = None) -> list[GpLink]:
    """Stored gPLink with ``link`` in it. ``order`` as in GPMC (1 = highest precedence);
    without an order an existing link keeps its place and a new one goes last in precedence
    (first in the stored string), as GPMC and samba-tool do. Orders past the end are clamped."""
    guid = link.guid
    if guid is None:
        raise GpoError(f"link target {link.gpo_dn!r} is not a GPO DN (CN={{GUID}},...)")
    if order is not None and order < 1:
        raise GpoError(f"link order must be 1 or more, not {order}")
    current_order = link_order(links, guid)
    others = [existing for existing in links if not existing.is_for(guid)]
    if order is None:
        order = current_order if current_order is not None else len(others) + 1
    order = min(order, len(others) + 1)
    index = len(others) + 1 - order
    return [*others[:index], link, *others[index:]]


def remove_link(links: Sequence[GpLink], guid: str) -> list[GpLink]:
    return [link for link in links if not link.is_for(guid)]
