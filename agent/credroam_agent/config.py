"""The agent's configuration: ``/etc/credroam/agent.toml``, read with tomllib and checked whole.

Every value is checked before any network I/O, and an error names the file and the key at
fault (exit code 2). Example (every key optional except ``directory.domain``)::

    stores = ["file", "nss"]         # the file store (canonical) and the mirrors applications
                                     # read: "nss" (~/.pki/nssdb), "networkmanager"
                                     # (roaming/store/mirror.py); default ["file"]

    [directory]
    domain = "lab.example"           # DNS domain: DCs from _ldap._tcp.<domain> unless dcs is set
    realm = "LAB.EXAMPLE"            # Kerberos realm (default: the domain upper-cased)
    base_dn = "DC=lab,DC=example"    # default: from the domain
    dcs = ["dc1.lab.example"]        # tried in order; the next on failure
    tls_mode = "ldaps"               # or "starttls"
    ca_file = "/etc/credroam/ca.pem"
    bind_method = "gssapi"           # the user's ticket; "simple" binds with the logon password
    timeout = 10

    [users]
    realm = "LAB.EXAMPLE"            # the realm of the AD accounts (default: directory.realm)
    map = { "jdoe" = "john.doe" }    # local name -> sAMAccountName; unlisted names map to self

    [paths]                          # "~" is the user's home, "$XDG_RUNTIME_DIR" the session's
    store = "~/.local/share/credroam/store"
    state = "~/.local/state/credroam/state.json"
    key_cache = "$XDG_RUNTIME_DIR/credroam/roaming.key"
    policy_cache = "~/.cache/credroam/policy"        # the user's last good Group Policy

    [enrollment]
    command = ["/usr/local/libexec/credroam-enroll"]   # CSR PEM on stdin, certificate on stdout
    timeout = 120

    [recovery]     # the organisation's recovery public key(s), PEM: the roaming key is also
    public_keys = ["/etc/credroam/recovery.pem"]   # wrapped for each (README, Key recovery)
    [windows]                        # read on Windows hosts only (agent/credroam_agent/windows.py)
    native_roaming = "auto"          # "auto": Windows' own client roams where the policy turns
                                     # roaming on (then only credroam's sealed keys come in,
                                     # roaming/native.py); "on"; "off": credroam roams it all
    non_exportable_keys = false      # keys credroam imports are marked non-exportable

    [policy]       # defaults; Group Policy wins where it sets a value. Any option of the GPO
    enabled = true # settings tables (gpo/settings.py), with the same ranges:
    tombstone_days = 60
    max_tokens = 2000
    max_token_size = 65535
    archive_expired = true
    roam_smartcard_certificates = false
    remove_at_logoff = false
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from credroam.gpo.model import GpoError
from credroam.gpo.resolve import POLICY_TABLES, GpoSettings
from credroam.roaming.envelope import EnvelopeError, public_key_id
from credroam.roaming.model import Policy
from credroam.roaming.store import StoreError
from credroam.roaming.store.mirror import make_mirrors

DEFAULT_PATH = "/etc/credroam/agent.toml"
CONFIG_ENV = "CREDROAM_AGENT_CONFIG"  # another file, e.g. for tests; same checks
BIND_METHODS = ("gssapi", "simple")
TLS_MODES = ("ldaps", "starttls")
NATIVE_ROAMING_MODES = ("auto", "on", "off")
DEFAULT_PATHS = {
    "store": "~/.local/share/credroam/store",
    "state": "~/.local/state/credroam/state.json",
    "key_cache": "$XDG_RUNTIME_DIR/credroam/roaming.key",
    "policy_cache": "~/.cache/credroam/policy",
}
# The [policy] keys are the options of the GPO settings tables (gpo.settings): same names,
# types, ranges and defaults as the Group Policy that may override them.
POLICY_SETTINGS = {s.option: (t, s) for t in POLICY_TABLES for s in t.settings}


class ConfigError(ValueError):
    """The configuration cannot be used; the message names the file and the key."""


@dataclass(frozen=True)
class DirectoryConfig:
    domain: str
    realm: str
    base_dn: str
    dcs: tuple[str, ...] = ()
    tls_mode: str = "ldaps"
    port: int | None = None
    ca_file: str | None = None
    bind_method: str = "gssapi"
    timeout: int = 10


@dataclass(frozen=True)
class WindowsConfig:
    """The ``[windows]`` section: how the agent works beside Windows' own roaming client."""

    native_roaming: str = "auto"
    non_exportable_keys: bool = False


@dataclass(frozen=True)
class AgentConfig:
    path: str
    directory: DirectoryConfig
    user_realm: str
    user_map: Mapping[str, str] = field(default_factory=dict)
    paths: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_PATHS))
    enrollment_command: tuple[str, ...] = ()
    enrollment_timeout: int = 120
    policy: Mapping[str, bool | int | str] = field(default_factory=dict)  # only the values set
    stores: tuple[str, ...] = ("file",)  # the file store and the mirrors of it to keep
    recovery_key_files: tuple[str, ...] = ()
    recovery_public_keys: tuple[bytes, ...] = ()  # their PEM, read and checked by load_config
    windows: WindowsConfig = field(default_factory=WindowsConfig)

    def account_for(self, local_name: str) -> str:
        """The sAMAccountName a local user roams as (the mapping, else the same name)."""
        return self.user_map.get(local_name, local_name)

    def principal_for(self, local_name: str) -> str:
        """The AD account of a local user as ``name@REALM`` (Kerberos principal and UPN)."""
        return f"{self.account_for(local_name)}@{self.user_realm}"

    def path_for(self, name: str, home: str, runtime_dir: str | None) -> str | None:
        """A configured path with ``~`` and ``$XDG_RUNTIME_DIR`` expanded for one user; None
        when it needs a runtime folder the session does not have."""
        template = self.paths[name]
        if "$XDG_RUNTIME_DIR" in template:
            if not runtime_dir:
                return None
            template = template.replace("$XDG_RUNTIME_DIR", runtime_dir)
        if template == "~" or template.startswith("~/"):
            template = home + template[1:]
        return template


def _where(path: str, key: str) -> str:
    return f"{path}: {key}"


def _get(table: Mapping[str, Any], path: str, section: str, key: str, kind: type, default=None):
    value = table.get(key, default)
    if value is None:
        return None
    if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise ConfigError(f"{_where(path, f'{section}.{key}')} must be an integer, not {value!r}")
    if kind is not int and not isinstance(value, kind):
        raise ConfigError(
            f"{_where(path, f'{section}.{key}')} must be a {kind.__name__}, not {value!r}"
        )
    return value


def _check_keys(table: Mapping[str, Any], path: str, section: str, known: set[str]) -> None:
    unknown = sorted(set(table) - known)
    if unknown:
        raise ConfigError(
            f"{path}: unknown key(s) {', '.join(unknown)} in [{section}] "
            f"(known: {', '.join(sorted(known))})"
        )


def _table(data: Mapping[str, Any], path: str, name: str) -> Mapping[str, Any]:
    table = data.get(name, {})
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: [{name}] must be a table")
    return table


def _string_list(value: Any, path: str, key: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ConfigError(f"{_where(path, key)} must be a list of non-empty strings")
    return tuple(value)


def _directory(data: Mapping[str, Any], path: str) -> DirectoryConfig:
    table = _table(data, path, "directory")
    known = {"domain", "realm", "base_dn", "dcs", "tls_mode", "port", "ca_file"}
    _check_keys(table, path, "directory", known | {"bind_method", "timeout"})
    domain = _get(table, path, "directory", "domain", str)
    if not domain:
        raise ConfigError(f"{_where(path, 'directory.domain')} is required (the AD DNS domain)")
    domain = domain.strip(".").lower()
    realm = _get(table, path, "directory", "realm", str) or domain.upper()
    base_dn = _get(table, path, "directory", "base_dn", str) or ",".join(
        f"DC={label}" for label in domain.split(".")
    )
    tls_mode = _get(table, path, "directory", "tls_mode", str, "ldaps")
    if tls_mode not in TLS_MODES:
        raise ConfigError(
            f"{_where(path, 'directory.tls_mode')} must be one of {', '.join(TLS_MODES)}"
        )
    bind_method = _get(table, path, "directory", "bind_method", str, "gssapi")
    if bind_method not in BIND_METHODS:
        raise ConfigError(
            f"{_where(path, 'directory.bind_method')} must be one of {', '.join(BIND_METHODS)}"
        )
    port = _get(table, path, "directory", "port", int)
    if port is not None and not 0 < port < 65536:
        raise ConfigError(f"{_where(path, 'directory.port')} {port} is not a TCP port")
    timeout = _get(table, path, "directory", "timeout", int, 10)
    if timeout <= 0:
        raise ConfigError(f"{_where(path, 'directory.timeout')} must be positive")
    dcs = table.get("dcs", [])
    return DirectoryConfig(
        domain=domain,
        realm=realm,
        base_dn=base_dn,
        dcs=_string_list(dcs, path, "directory.dcs") if dcs else (),
        tls_mode=tls_mode,
        port=port,
        ca_file=_get(table, path, "directory", "ca_file", str),
        bind_method=bind_method,
        timeout=timeout,
    )


def _users(data: Mapping[str, Any], path: str, realm: str) -> tuple[str, dict[str, str]]:
    table = _table(data, path, "users")
    _check_keys(table, path, "users", {"realm", "map"})
    mapping = table.get("map", {})
    if not isinstance(mapping, dict) or not all(
        isinstance(k, str) and isinstance(v, str) and v for k, v in mapping.items()
    ):
        raise ConfigError(f"{_where(path, 'users.map')} must map local names to account names")
    return _get(table, path, "users", "realm", str) or realm, dict(mapping)


def _paths(data: Mapping[str, Any], path: str) -> dict[str, str]:
    table = _table(data, path, "paths")
    _check_keys(table, path, "paths", set(DEFAULT_PATHS))
    paths = dict(DEFAULT_PATHS)
    for name in DEFAULT_PATHS:
        value = _get(table, path, "paths", name, str)
        if value is not None:
            expanded = value.replace("$XDG_RUNTIME_DIR", "/run").replace("~", "/home", 1)
            if not os.path.isabs(expanded):
                raise ConfigError(
                    f"{_where(path, f'paths.{name}')} must be absolute, or start with ~ or "
                    f"$XDG_RUNTIME_DIR: {value!r}"
                )
            paths[name] = value
    return paths


def _stores(data: Mapping[str, Any], path: str) -> tuple[str, ...]:
    names = _string_list(data.get("stores", ["file"]), path, "stores")
    try:
        # make_mirrors holds the rules (known names, none twice, "file" present) and does no
        # I/O, so the names are checked here, before anything runs.
        make_mirrors(names, home="/", state_dir="/")
    except StoreError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    return names


def _windows(data: Mapping[str, Any], path: str) -> WindowsConfig:
    table = _table(data, path, "windows")
    _check_keys(table, path, "windows", {"native_roaming", "non_exportable_keys"})
    mode = _get(table, path, "windows", "native_roaming", str, "auto")
    if mode not in NATIVE_ROAMING_MODES:
        raise ConfigError(
            f"{_where(path, 'windows.native_roaming')} must be one of "
            f"{', '.join(NATIVE_ROAMING_MODES)}, not {mode!r}"
        )
    non_exportable = _get(table, path, "windows", "non_exportable_keys", bool, False)
    return WindowsConfig(native_roaming=mode, non_exportable_keys=non_exportable)


def parse_policy_values(table: Mapping[str, Any], where: str) -> dict[str, bool | int | str]:
    """The [policy] values, each checked as ``ad_gpo`` checks the same GPO setting."""
    _check_keys(table, where, "policy", set(POLICY_SETTINGS))
    values: dict[str, bool | int | str] = {}
    for name, value in table.items():
        settings_table, setting = POLICY_SETTINGS[name]
        try:
            setting.to_entry(settings_table.key, value)
        except GpoError as exc:
            raise ConfigError(f"{_where(where, f'policy.{name}')}: {exc}") from None
        values[name] = value
    return values


def parse_config(text: str, path: str) -> AgentConfig:
    """The configuration in ``text`` (TOML) read from ``path``; raises ConfigError."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    sections = {"directory", "users", "paths", "enrollment", "policy", "recovery", "windows"}
    _check_keys(data, path, "top level", sections | {"stores"})
    directory = _directory(data, path)
    user_realm, user_map = _users(data, path, directory.realm)
    enrollment = _table(data, path, "enrollment")
    _check_keys(enrollment, path, "enrollment", {"command", "timeout"})
    command = enrollment.get("command", [])
    timeout = _get(enrollment, path, "enrollment", "timeout", int, 120)
    if timeout <= 0:
        raise ConfigError(f"{_where(path, 'enrollment.timeout')} must be positive")
    return AgentConfig(
        path=path,
        directory=directory,
        user_realm=user_realm,
        user_map=user_map,
        paths=_paths(data, path),
        enrollment_command=_string_list(command, path, "enrollment.command") if command else (),
        enrollment_timeout=timeout,
        policy=parse_policy_values(_table(data, path, "policy"), path),
        stores=_stores(data, path),
        recovery_key_files=_recovery_key_files(data, path),
        windows=_windows(data, path),
    )


def _recovery_key_files(data: Mapping[str, Any], path: str) -> tuple[str, ...]:
    table = _table(data, path, "recovery")
    _check_keys(table, path, "recovery", {"public_keys"})
    files = table.get("public_keys", [])
    return _string_list(files, path, "recovery.public_keys") if files else ()


def read_recovery_keys(config: AgentConfig) -> AgentConfig:
    """``config`` with the PEM of each ``recovery.public_keys`` file, each checked to be an RSA
    public key the envelope can wrap for; ConfigError names the file at fault."""
    keys = []
    for name in config.recovery_key_files:
        try:
            with open(name, "rb") as handle:
                pem = handle.read(64 * 1024)
            public_key_id(pem)
        except OSError as exc:
            raise ConfigError(
                f"{config.path}: recovery.public_keys: cannot read {name}: {exc.strerror}"
            ) from None
        except EnvelopeError as exc:
            raise ConfigError(f"{config.path}: recovery.public_keys: {name}: {exc}") from None
        keys.append(pem)
    return replace(config, recovery_public_keys=tuple(keys))


def load_config(path: str | None = None) -> AgentConfig:
    """Read and check the configuration file (``path``, $CREDROAM_AGENT_CONFIG, the default)."""
    path = path or os.environ.get(CONFIG_ENV) or DEFAULT_PATH
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except OSError as exc:
        raise ConfigError(f"cannot read the agent configuration {path}: {exc.strerror}") from None
    return read_recovery_keys(parse_config(text, path))


# --- the policy in force ----------------------------------------------------------------------


@dataclass(frozen=True)
class PolicyInForce:
    """Group Policy over the config file over the settings tables' defaults (GPO wins where
    both set a value, as Windows' policy wins over local preferences), and where each value
    came from. ``gpo`` is what the user's applicable GPOs set (empty: no GPO sets anything,
    or none could be read); ``gpo_note`` qualifies it, e.g. "cached: no DC reachable"."""

    config: AgentConfig
    gpo: GpoSettings = field(default_factory=GpoSettings)
    gpo_note: str = ""

    @property
    def values(self) -> dict[str, bool | int | str | None]:
        return self.gpo.effective(self.config.policy)

    def value(self, option: str) -> bool | int | str | None:
        return self.gpo.value(option, self.config.policy)

    @property
    def sources(self) -> dict[str, str]:
        return {option: self.source(option) for option in POLICY_SETTINGS}

    def source(self, option: str) -> str:
        gpo = self.gpo.sources.get(option)
        if gpo is not None:
            note = f", {self.gpo_note}" if self.gpo_note else ""
            return f"GPO {gpo.name} {gpo.guid} version {gpo.version}{note}"
        if option in self.config.policy:
            return f"config {self.config.path}"
        return "default"

    def roaming_policy(self) -> Policy:
        """The core's ``Policy`` for reconcile."""
        return self.gpo.roaming_policy(self.config.policy)

    @property
    def enabled(self) -> bool:
        return bool(self.value("enabled"))
