"""The user's policy, found as Windows finds it, read as the user, cached per user.

:func:`read_policy` reads over LDAP, bound as the user, what :mod:`credroam.gpo.resolve` needs,
in three searches (four with the host's site): the user's objectSid and tokenGroups (a
constructed attribute, so a base search on the user), the gPLink and gPOptions of the domain and
of each OU above the user, and the container of every linked GPO with its DACL. It then reads
the ``User\\Registry.pol`` of each applicable GPO over SMB with signing required, as the user,
from the DC it was given -- never from the path a GPO names in gPCFileSysPath, which anyone who
can edit the GPO controls.

The cache is per user and per GPO version, so one user's refresh never touches another's:
``<cache_dir>/<user>/policy.json`` (the last good resolved policy) and
``<cache_dir>/<user>/gpo/{GUID}-<versionNumber>.pol`` (a Registry.pol as read), folders 0700,
files 0600, ``<user>`` a digest of the user's DN. A GPO whose version did not move is not read
again, so a refresh with nothing changed costs the LDAP searches alone. While the directory or
SYSVOL cannot be read, the last good policy is returned, marked ``from_cache`` with the reason.

Samba's client keeps one GPO version cache for the whole host, keyed by GPO alone, and handles
machine policy only; this module's cache is keyed by user and GPO version, and reads user policy.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import ldap3
from ldap3.core.exceptions import LDAPException
from ldap3.protocol.microsoft import security_descriptor_control
from ldap3.utils.conv import escape_filter_chars

from credroam.gpo import preg
from credroam.gpo.model import GpoError, GpoVersion, parse_gplink, parse_gpt_ini_version
from credroam.gpo.resolve import (
    AppliedGpo,
    Denial,
    DeniedGpo,
    GpoContainer,
    GpoSettings,
    GpoSource,
    Som,
    SomKind,
    applicable_gpos,
    dn_key,
    merge_settings,
    som_chain,
    user_token,
)
from credroam.gpo.secdesc import SecurityDescriptorError, format_sid
from credroam.roaming.fsutil import atomic_write, ensure_private_dir, read_private
from credroam.roaming.model import Policy

__all__ = [
    "CACHE_FORMAT",
    "PolicyUnavailableError",
    "ResolvedPolicy",
    "SmbCredentials",
    "cached_policy",
    "domain_of",
    "gpo_version_key",
    "gpo_versions_changed",
    "read_gpo_versions",
    "read_policy",
    "sysvol_path",
]

CACHE_FORMAT = 1
MAX_REGISTRY_POL = 1024 * 1024  # far above any real user Registry.pol
MAX_CACHE_FILE = 4 * 1024 * 1024
_SD_DACL = 0x04  # SD flags control: the DACL only (all the access check needs)
_GPC_ATTRIBUTES = [
    "displayName",
    "flags",
    "versionNumber",
    "gPCFileSysPath",
    "gPCFunctionalityVersion",
    "nTSecurityDescriptor",
]


class PolicyUnavailableError(Exception):
    """Neither the directory nor a cached policy could give the user's policy; says why."""


@dataclass(frozen=True)
class SmbCredentials:
    """How to reach SYSVOL as the user. ``server``: the DC (its FQDN for Kerberos).
    Without ``username`` the caller's Kerberos ticket is used; with it, NTLM or Kerberos
    through negotiate with ``password``. Signing is always required."""

    server: str
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    port: int = 445
    encrypt: bool = True
    timeout: int = 30


@dataclass(frozen=True)
class ResolvedPolicy:
    """The user's policy and where each value came from.

    ``settings``: what Group Policy set (option -> value, with the GPO of each); ``applied``:
    the GPOs that apply, in application order (the last wins); ``denied``: linked GPOs that do
    not apply and why; ``gpo_versions``: GUID -> versionNumber of every linked GPO read (what
    :func:`gpo_versions_changed` compares); ``server``: the DC read; ``read_at``: when (Unix
    time); ``from_cache``: the directory could not be read and this is the last good policy,
    ``stale_reason`` says why.
    """

    user_dn: str
    settings: GpoSettings
    applied: tuple[GpoSource, ...]
    denied: tuple[DeniedGpo, ...]
    gpo_versions: Mapping[str, int]
    server: str | None
    read_at: float
    problems: tuple[str, ...] = ()
    from_cache: bool = False
    stale_reason: str | None = None

    @property
    def policy(self) -> Policy:
        """The reconciliation policy, Group Policy over the defaults."""
        return self.settings.roaming_policy()

    def roaming_policy(self, local: Mapping[str, object] | None = None) -> Policy:
        """The reconciliation policy with ``local`` (the config file) under Group Policy."""
        return self.settings.roaming_policy(local)

    def effective(self, local: Mapping[str, object] | None = None) -> dict[str, Any]:
        """Every option of the settings tables with its value in force."""
        return self.settings.effective(local)

    @property
    def version_key(self) -> tuple[tuple[str, int], ...]:
        """``gpo_versions`` sorted, comparable with :func:`gpo_version_key`."""
        return tuple(sorted(self.gpo_versions.items()))

    def source(self, option: str) -> GpoSource | None:
        """The GPO that set ``option``, or None (config file or default)."""
        return self.settings.sources.get(option)

    def as_dict(self) -> dict[str, Any]:
        return {
            "format": CACHE_FORMAT,
            "user_dn": self.user_dn,
            "values": dict(self.settings.values),
            "sources": {k: v.as_dict() for k, v in self.settings.sources.items()},
            "problems": list(self.problems),
            "applied": [source.as_dict() for source in self.applied],
            "denied": [
                {"gpo_dn": d.gpo_dn, "som": d.som, "reason": d.reason.name, "name": d.name}
                for d in self.denied
            ],
            "gpo_versions": dict(self.gpo_versions),
            "server": self.server,
            "read_at": self.read_at,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ResolvedPolicy:
        sources = {k: GpoSource.from_dict(v) for k, v in data["sources"].items()}
        return cls(
            user_dn=str(data["user_dn"]),
            settings=GpoSettings(dict(data["values"]), sources),
            applied=tuple(GpoSource.from_dict(s) for s in data["applied"]),
            denied=tuple(
                DeniedGpo(d["gpo_dn"], d["som"], Denial[d["reason"]], d.get("name", ""))
                for d in data["denied"]
            ),
            gpo_versions={str(k): int(v) for k, v in data["gpo_versions"].items()},
            server=data.get("server"),
            read_at=float(data["read_at"]),
            problems=tuple(str(p) for p in data.get("problems", ())),
        )


class _ReadError(Exception):
    """The directory or SYSVOL could not be read; the message names the server and object."""


# --- the directory side -----------------------------------------------------------------------


def domain_of(user_dn: str) -> str:
    """The domain DN of a user DN: its trailing DC= components."""
    parts = [p.strip() for p in user_dn.split(",")]
    tail: list[str] = []
    for part in reversed(parts):
        if not part.lower().startswith("dc="):
            break
        tail.insert(0, part)
    if not tail:
        raise GpoError(f"user DN {user_dn!r} has no DC= components")
    return ",".join(tail)


def _search(
    conn: ldap3.Connection,
    base: str,
    flt: str,
    scope: str,
    attributes: list[str],
    controls: list | None = None,
) -> list[dict]:
    where = f"{base} on {conn.server.host}"
    try:
        conn.search(base, flt, search_scope=scope, attributes=attributes, controls=controls)
    except LDAPException as exc:
        raise _ReadError(f"cannot search {where}: {exc}") from exc
    result = conn.result or {}
    if result.get("result", 0) not in (0, 32):  # 32: noSuchObject, nothing found
        raise _ReadError(
            f"search of {where} failed: {result.get('description')} {result.get('message', '')}"
        )
    return [r for r in conn.response or [] if r.get("type") == "searchResEntry"]


def _first_raw(entry: Mapping[str, Any], name: str) -> bytes | None:
    for key, values in entry.get("raw_attributes", {}).items():
        if key.lower() == name.lower() and values:
            return values[0]
    return None


def _text(entry: Mapping[str, Any], name: str, default: str = "") -> str:
    raw = _first_raw(entry, name)
    return raw.decode("utf-8", "replace") if raw is not None else default


def _int(entry: Mapping[str, Any], name: str, default: int | None = 0) -> int | None:
    raw = _first_raw(entry, name)
    try:
        return int(raw) if raw is not None else default
    except ValueError:
        return default


def _read_token(conn: ldap3.Connection, user_dn: str) -> frozenset[str]:
    found = _search(conn, user_dn, "(objectClass=*)", ldap3.BASE, ["objectSid", "tokenGroups"])
    if not found:
        raise _ReadError(f"user {user_dn} not found on {conn.server.host}")
    raw = found[0].get("raw_attributes", {})
    values = {key.lower(): value for key, value in raw.items()}
    if not values.get("objectsid"):
        raise _ReadError(f"cannot read objectSid of {user_dn} on {conn.server.host}")
    try:
        sid = format_sid(values["objectsid"][0])
        groups = [format_sid(value) for value in values.get("tokengroups", [])]
    except SecurityDescriptorError as exc:
        raise _ReadError(f"token of {user_dn}: {exc}") from exc
    return user_token(sid, groups)


def _dn_filter(dns: Iterable[str]) -> str:
    terms = "".join(f"(distinguishedName={escape_filter_chars(dn)})" for dn in dns)
    return f"(|{terms})"


def _read_soms(
    conn: ldap3.Connection, user_dn: str, domain_dn: str, site_dn: str | None
) -> list[Som]:
    chain = som_chain(user_dn, domain_dn)
    found = _search(conn, domain_dn, _dn_filter(dn for dn, _ in chain), ldap3.SUBTREE,
                    ["gPLink", "gPOptions"])  # fmt: skip
    by_dn = {dn_key(entry["dn"]): entry for entry in found}
    soms = []
    if site_dn:
        site = _search(conn, site_dn, "(objectClass=*)", ldap3.BASE, ["gPLink", "gPOptions"])
        if site:
            soms.append(_som(site_dn, SomKind.SITE, site[0]))
    for dn, kind in chain:
        entry = by_dn.get(dn_key(dn))
        soms.append(_som(dn, kind, entry) if entry else Som(dn, kind))
    return soms


def _som(dn: str, kind: SomKind, entry: Mapping[str, Any]) -> Som:
    return Som(dn, kind, _text(entry, "gPLink") or None, _int(entry, "gPOptions") or 0)


def _linked_gpo_dns(soms: Iterable[Som]) -> list[str]:
    dns: dict[str, str] = {}
    for som in soms:
        try:
            links = parse_gplink(som.gplink)
        except GpoError as exc:
            raise _ReadError(f"gPLink of {som.dn}: {exc}") from exc
        for link in links:
            dns.setdefault(dn_key(link.gpo_dn), link.gpo_dn)
    return list(dns.values())


def _read_containers(
    conn: ldap3.Connection, domain_dn: str, gpo_dns: list[str]
) -> dict[str, GpoContainer]:
    if not gpo_dns:
        return {}
    found = _search(
        conn,
        f"CN=Policies,CN=System,{domain_dn}",
        f"(&(objectClass=groupPolicyContainer){_dn_filter(gpo_dns)})",
        ldap3.LEVEL,
        _GPC_ATTRIBUTES,
        controls=security_descriptor_control(sdflags=_SD_DACL),
    )
    containers = {}
    for entry in found:
        try:
            version = GpoVersion.from_number(_int(entry, "versionNumber") or 0)
            container = GpoContainer(
                dn=entry["dn"],
                name=_text(entry, "displayName"),
                version=version,
                security_descriptor=_first_raw(entry, "nTSecurityDescriptor") or b"",
                flags=_int(entry, "flags") or 0,
                file_sys_path=_text(entry, "gPCFileSysPath"),
                functionality_version=_int(entry, "gPCFunctionalityVersion", None),
            )
            _ = container.guid  # a container not named by a GUID is no GPO
        except GpoError:
            continue
        containers[entry["dn"]] = container
    return containers


def read_gpo_versions(
    conn: ldap3.Connection, domain_dn: str, guids: Iterable[str]
) -> dict[str, int]:
    """GUID -> versionNumber of the given GPOs, in one search (a GPO gone is left out)."""
    dns = [f"CN={guid},CN=Policies,CN=System,{domain_dn}" for guid in guids]
    if not dns:
        return {}
    found = _search(conn, f"CN=Policies,CN=System,{domain_dn}",
                    f"(&(objectClass=groupPolicyContainer){_dn_filter(dns)})", ldap3.LEVEL,
                    ["versionNumber"])  # fmt: skip
    versions = {}
    for entry in found:
        guid = entry["dn"].split(",", 1)[0].split("=", 1)[1].upper()
        versions[guid] = GpoVersion.from_number(_int(entry, "versionNumber") or 0).number
    return versions


def gpo_version_key(
    conn: ldap3.Connection, resolved: ResolvedPolicy
) -> tuple[tuple[str, int], ...]:
    """The versions now of the GPOs ``resolved`` was made from, sorted, in one search: what a
    watch loop compares (a GPO gone drops out). A new link or a filtering change moves no
    version: the periodic refresh (:func:`read_policy`) catches those."""
    try:
        now = read_gpo_versions(conn, domain_of(resolved.user_dn), resolved.gpo_versions)
    except _ReadError as exc:
        raise PolicyUnavailableError(str(exc)) from exc
    return tuple(sorted(now.items()))


def gpo_versions_changed(conn: ldap3.Connection, resolved: ResolvedPolicy) -> bool:
    """Whether a GPO the policy was made from changed version or went away (one search)."""
    return gpo_version_key(conn, resolved) != resolved.version_key


# --- SYSVOL -----------------------------------------------------------------------------------


class _SysvolReader:
    """Read-only files of one DC's sysvol share, SMB signing required, as the given user."""

    def __init__(self, smb: SmbCredentials) -> None:
        self.smb = smb
        self._cache: dict = {}
        self._open = False

    def _session(self) -> Any:
        try:
            import smbclient  # smbprotocol: vendored in the agent's zipapp
        except ImportError as exc:  # pragma: no cover - depends on the host
            raise _ReadError(f"the Python package smbprotocol is needed: {exc}") from exc
        if not self._open:
            try:
                smbclient.register_session(
                    self.smb.server,
                    username=self.smb.username,
                    password=self.smb.password,
                    port=self.smb.port,
                    encrypt=self.smb.encrypt,
                    connection_timeout=self.smb.timeout,
                    connection_cache=self._cache,
                    require_signing=True,
                )
            except Exception as exc:  # smbprotocol raises many unrelated types
                raise _ReadError(
                    f"cannot open an SMB session to {self.smb.server} as "
                    f"{self.smb.username or 'the Kerberos ticket owner'}: {exc}"
                ) from exc
            self._open = True
        return smbclient

    def read(self, unc_path: str, limit: int) -> bytes | None:
        """The file's bytes (at most ``limit``), or None when it does not exist."""
        smbclient = self._session()
        try:
            with smbclient.open_file(unc_path, mode="rb", connection_cache=self._cache) as f:
                data = f.read(limit + 1)
        except FileNotFoundError:
            return None
        except Exception as exc:
            if getattr(exc, "errno", None) == 2:
                return None
            raise _ReadError(f"reading {unc_path} on {self.smb.server} failed: {exc}") from exc
        if len(data) > limit:
            raise _ReadError(f"{unc_path} on {self.smb.server} is larger than {limit} bytes")
        return data

    def close(self) -> None:
        if self._open:
            import smbclient

            with contextlib.suppress(Exception):
                smbclient.reset_connection_cache(connection_cache=self._cache)
            self._open = False


def sysvol_path(server: str, domain_dn: str, guid: str, *parts: str) -> str:
    """``\\\\<dc>\\sysvol\\<domain>\\Policies\\{GUID}\\<parts>``, built from the DC being
    read and the GPO's GUID alone (never from gPCFileSysPath)."""
    domain = ".".join(part.split("=", 1)[1] for part in domain_dn.split(","))
    return "\\".join(["", "", server, "sysvol", domain.lower(), "Policies", guid, *parts])


# --- the per-user cache -----------------------------------------------------------------------


class _UserCache:
    """One user's cache folder: the last good policy and Registry.pol files by GPO version."""

    def __init__(self, cache_dir: str | os.PathLike, user_dn: str) -> None:
        digest = hashlib.sha256(dn_key(user_dn).encode()).hexdigest()[:32]
        self.root = Path(cache_dir) / digest
        self.user_dn = user_dn

    def _dirs(self) -> Path:
        ensure_private_dir(str(self.root.parent))
        ensure_private_dir(str(self.root))
        ensure_private_dir(str(self.root / "gpo"))
        return self.root / "gpo"

    def _pol_file(self, guid: str, version: int) -> Path:
        return self.root / "gpo" / f"{guid}-{version}.pol"

    def registry_pol(self, guid: str, version: int) -> bytes | None:
        path = self._pol_file(guid, version)
        try:
            return read_private(str(path), MAX_REGISTRY_POL)
        except FileNotFoundError:
            return None

    def save_registry_pol(self, guid: str, version: int, raw: bytes) -> None:
        self._dirs()
        atomic_write(str(self._pol_file(guid, version)), raw)

    def keep_only(self, wanted: Iterable[tuple[str, int]]) -> None:
        """Remove Registry.pol copies of GPO versions no longer in use."""
        names = {f"{guid}-{version}.pol" for guid, version in wanted}
        folder = self.root / "gpo"
        if not folder.is_dir():
            return
        for path in folder.iterdir():
            if path.name.endswith(".pol") and path.name not in names:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()

    def save_policy(self, resolved: ResolvedPolicy) -> None:
        self._dirs()
        data = json.dumps(resolved.as_dict(), indent=1, sort_keys=True).encode()
        atomic_write(str(self.root / "policy.json"), data)

    def load_policy(self) -> ResolvedPolicy | None:
        path = self.root / "policy.json"
        try:
            data = json.loads(read_private(str(path), MAX_CACHE_FILE))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise PolicyUnavailableError(f"cached policy {path} is unreadable: {exc}") from exc
        version = data.get("format") if isinstance(data, dict) else None
        if not isinstance(version, int) or version > CACHE_FORMAT:
            raise PolicyUnavailableError(
                f"cached policy {path} has format {version!r}, newer than this agent's "
                f"{CACHE_FORMAT}: left alone"
            )
        if dn_key(str(data.get("user_dn", ""))) != dn_key(self.user_dn):
            raise PolicyUnavailableError(f"cached policy {path} belongs to another user")
        try:
            return ResolvedPolicy.from_dict(data)
        except (KeyError, TypeError, ValueError) as exc:
            raise PolicyUnavailableError(f"cached policy {path} is malformed: {exc}") from exc


def cached_policy(cache_dir: str | os.PathLike, user_dn: str) -> ResolvedPolicy | None:
    """The user's last good policy (``from_cache`` set), or None when there is none."""
    found = _UserCache(cache_dir, user_dn).load_policy()
    return None if found is None else _stale(found, "read from the cache only")


def _stale(resolved: ResolvedPolicy, reason: str) -> ResolvedPolicy:
    return replace(resolved, from_cache=True, stale_reason=reason)


# --- the whole read ---------------------------------------------------------------------------


def read_policy(
    conn: ldap3.Connection | None,
    user_dn: str,
    smb: SmbCredentials,
    cache_dir: str | os.PathLike,
    *,
    site_dn: str | None = None,
    clock: Callable[[], float] = time.time,
) -> ResolvedPolicy:
    """The user's policy from the GPOs that apply to them, or the last good one from the cache.

    ``conn``: bound as the user (None when no DC answers: the cache is used); ``user_dn``: the
    user's DN as the directory spells it; ``smb``: SYSVOL of the same DC, as the same user;
    ``cache_dir``: the parent of the per-user cache folders; ``site_dn``: the host's site
    (CN=<site>,CN=Sites,CN=Configuration,...) when known. Raises
    :class:`PolicyUnavailableError` when neither the directory nor the cache can give it.
    """
    cache = _UserCache(cache_dir, user_dn)
    if conn is None:
        return _from_cache(cache, "no domain controller reachable")
    try:
        resolved = _read_fresh(conn, user_dn, smb, cache, site_dn, clock)
    except _ReadError as exc:
        return _from_cache(cache, str(exc))
    try:
        cache.save_policy(resolved)
        cache.keep_only((source.guid, source.version) for source in resolved.applied)
    except OSError as exc:  # the policy read is good; only the fallback for later is lost
        problem = f"cannot cache the policy under {cache.root}: {exc}"
        resolved = replace(resolved, problems=(*resolved.problems, problem))
    return resolved


def _from_cache(cache: _UserCache, reason: str) -> ResolvedPolicy:
    found = cache.load_policy()
    if found is None:
        raise PolicyUnavailableError(f"no policy for {cache.user_dn}: {reason}, none cached")
    return _stale(found, reason)


def _read_fresh(
    conn: ldap3.Connection,
    user_dn: str,
    smb: SmbCredentials,
    cache: _UserCache,
    site_dn: str | None,
    clock: Callable[[], float],
) -> ResolvedPolicy:
    domain_dn = domain_of(user_dn)
    token = _read_token(conn, user_dn)
    soms = _read_soms(conn, user_dn, domain_dn, site_dn)
    containers = _read_containers(conn, domain_dn, _linked_gpo_dns(soms))
    try:
        gpo_list = applicable_gpos(soms, containers, token)
    except GpoError as exc:
        raise _ReadError(str(exc)) from exc
    problems: list[str] = []
    reader = _SysvolReader(smb)
    try:
        with_entries = [
            (applied, _registry_entries(applied, reader, cache, domain_dn, problems))
            for applied in gpo_list.applied
        ]
    finally:
        reader.close()
    settings = merge_settings(with_entries)
    return ResolvedPolicy(
        user_dn=user_dn,
        settings=settings,
        applied=tuple(applied.source for applied in gpo_list.applied),
        denied=gpo_list.denied,
        gpo_versions={c.guid: c.version.number for c in containers.values()},
        server=smb.server,
        read_at=clock(),
        problems=(*problems, *settings.problems),
    )


def _registry_entries(
    applied: AppliedGpo,
    reader: _SysvolReader,
    cache: _UserCache,
    domain_dn: str,
    problems: list[str],
) -> list[preg.PolEntry]:
    """One GPO's User\\Registry.pol: from the user's cache when that version was read before,
    else over SMB. It is cached only when the folder's GPT.INI carries the container's version:
    a SYSVOL that lags (Samba does not replicate SYSVOL) is used as it is, reported, and read
    again at the next refresh. A malformed file is reported and contributes nothing."""
    guid, version = applied.guid, applied.gpo.version.number
    path = sysvol_path(reader.smb.server, domain_dn, guid, "User", "Registry.pol")
    raw = cache.registry_pol(guid, version)
    if raw is None:
        lag = _sysvol_lag(applied, reader, domain_dn)
        raw = reader.read(path, MAX_REGISTRY_POL) or b""  # missing: no user registry settings
        if lag is not None:
            problems.append(lag)
        else:
            try:
                cache.save_registry_pol(guid, version, raw)
            except OSError as exc:  # read again next time; the policy itself is good
                problems.append(f"cannot cache {path} under {cache.root}: {exc}")
    if not raw:
        return []
    try:
        return preg.decode(raw)
    except preg.PolFormatError as exc:
        problems.append(f"{path} of GPO {applied.gpo.name!r} (version {version}) ignored: {exc}")
        return []


def _sysvol_lag(applied: AppliedGpo, reader: _SysvolReader, domain_dn: str) -> str | None:
    """Why this DC's copy of the GPO's folder is not at the container's version, or None."""
    path = sysvol_path(reader.smb.server, domain_dn, applied.guid, "GPT.INI")
    raw = reader.read(path, MAX_REGISTRY_POL)
    try:
        found = parse_gpt_ini_version(raw) if raw is not None else None
    except GpoError as exc:
        return f"{path}: {exc}"
    if found == applied.gpo.version:
        return None
    shown = "missing" if found is None else f"at version {found.number}"
    return (
        f"{path} is {shown} while versionNumber of GPO {applied.gpo.name!r} is "
        f"{applied.gpo.version.number}: SYSVOL on {reader.smb.server} lags, not cached"
    )
