"""The settings tables: every registry value credroam's GPO manages, with its range and text.

One source of truth for ``ad_gpo``'s validation, the Registry.pol entries it writes, the
ADMX/ADML/ADM templates rendered from it, and the agent reading its policy back.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from .model import GpoError
from .preg import PolEntry, PolValueError, delete_value_entry, make_entry

__all__ = [
    "AGENT_POLICY",
    "CREDENTIAL_ROAMING",
    "PolicySetting",
    "PolicyTable",
    "policy_entries",
    "registry_value_entry",
]


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
            "recovery_retention_days",
            "RecoveryRetentionDays",
            "int",
            "Days a recovery copy of a deleted credential is kept",
            "When a certificate or key deleted elsewhere is removed from this computer, a copy "
            "sealed under the user's roaming key is kept this many days, then removed. Not "
            "configured: the tombstone days. Copies whose deletion could not be ordered against "
            "a local change are kept until the user or an administrator resolves them.",
            minimum=1,
            maximum=3650,
            default=None,  # the tombstone days (Policy.recovery_retention_ticks)
        ),
        PolicySetting(
            "full_sync_interval_hours",
            "FullSyncIntervalHours",
            "int",
            "Full synchronisation interval (hours)",
            "A sync first checks whether anything changed and stops there when nothing did; a "
            "full comparison of every credential still runs at least this often.",
            minimum=1,
            maximum=168,
            default=4,
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
