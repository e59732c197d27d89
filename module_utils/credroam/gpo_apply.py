"""Bring one GPO to the wanted state: read GPC + GPT, plan with :mod:`gpo`, write the difference.

The engine behind ``library/ad_gpo.py``. It reads everything first (the groupPolicyContainer,
GPT.INI, User\\Registry.pol, the gPLink of every container involved), lets the pure functions of
:mod:`gpo` decide, and only then writes, in an order that keeps a GPO consistent for clients
even if it stops half-way: files before the directory's version number, so a client that sees
the new version always finds the new files. Every write is recorded in ``operations`` (in check
mode they are recorded and not performed), so a caller can show exactly what was done.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import ldap3
from ldap3.protocol.microsoft import security_descriptor_control
from ldap3.utils.conv import escape_filter_chars

from . import preg
from .connection import RootDse, check_result, first
from .gpo import (
    FUNCTIONALITY_VERSION,
    REGISTRY_CSE,
    REGISTRY_TOOL_USER,
    GpLink,
    GpoError,
    GpoVersion,
    add_extension_names,
    format_gplink,
    gpc_dn,
    gpt_unc_path,
    link_order,
    merge_registry,
    new_gpo_guid,
    normalize_guid,
    parse_gplink,
    parse_gpt_ini_version,
    place_link,
    remove_link,
    update_gpt_ini,
)
from .secdesc import AUTHENTICATED_USERS, SecurityDescriptor, format_sid, security_filter
from .sysvol import Sysvol

__all__ = ["GpoApplier", "GpoRequest", "LinkRequest"]

GPC_ATTRIBUTES = [
    "displayName",
    "gPCFileSysPath",
    "versionNumber",
    "flags",
    "gPCFunctionalityVersion",
    "gPCUserExtensionNames",
]
GPT_INI = "GPT.INI"
REGISTRY_POL = ("User", "Registry.pol")


@dataclass(frozen=True)
class LinkRequest:
    target: str
    state: str = "present"
    enabled: bool = True
    enforced: bool = False
    order: int | None = None


@dataclass
class GpoRequest:
    name: str | None = None
    guid: str | None = None
    state: str = "present"
    entries: list[preg.PolEntry] = field(default_factory=list)
    registry_exclusive: bool = False
    links: list[LinkRequest] | None = None
    links_exclusive: bool = False
    repair_version_mismatch: bool = False
    security_filtering: list[str] | None = None  # group names, DNs or SIDs; None = unmanaged
    files: Mapping[str, bytes] = field(
        default_factory=dict
    )  # extra SYSVOL files, Policies-relative
    check_mode: bool = False


@dataclass
class _Gpc:
    dn: str
    guid: str
    attributes: dict[str, Any]

    @property
    def version(self) -> GpoVersion:
        return GpoVersion.from_number(int(first(self.attributes, "versionNumber", 0) or 0))


class GpoApplier:
    """One run against one DC: ``conn`` (bound ldap3), ``sysvol`` made on first use."""

    def __init__(
        self, conn: ldap3.Connection, root: RootDse, sysvol_factory: Callable[[], Sysvol]
    ) -> None:
        self.conn = conn
        self.root = root
        self.domain_dn = root.default_naming_context
        self.domain = root.domain_dns_name
        self._sysvol_factory = sysvol_factory
        self._sysvol: Sysvol | None = None
        self.operations: list[dict[str, Any]] = []
        self.warnings: list[str] = []
        self.check_mode = False

    # --- I/O helpers -----------------------------------------------------------------------
    @property
    def sysvol(self) -> Sysvol:
        if self._sysvol is None:
            self._sysvol = self._sysvol_factory()
        return self._sysvol

    def close(self) -> None:
        if self._sysvol is not None:
            self._sysvol.close()

    def _search(self, base: str, flt: str, scope, attributes: Sequence[str]) -> list[dict]:
        self.conn.search(base, flt, search_scope=scope, attributes=list(attributes))
        result = self.conn.result or {}
        if result.get("result") == 32:  # noSuchObject
            return []
        check_result(self.conn, f"search under {base}")
        return [r for r in self.conn.response or [] if r.get("type") == "searchResEntry"]

    def _record(self, kind: str, target: str, **details: Any) -> None:
        self.operations.append({"kind": kind, "target": target, **details})

    def _ldap_add(self, dn: str, attributes: dict[str, Any]) -> None:
        self._record("ldap_add", dn, attributes=_printable(attributes))
        if not self.check_mode:
            self.conn.add(dn, attributes=attributes)
            check_result(self.conn, f"adding {dn}")

    def _ldap_modify(self, dn: str, changes: dict[str, Any]) -> None:
        self._record("ldap_modify", dn, replace=_printable(changes))
        if not self.check_mode:
            self.conn.modify(dn, {k: [(ldap3.MODIFY_REPLACE, v)] for k, v in changes.items()})
            check_result(self.conn, f"modifying {', '.join(changes)} of {dn}")

    def _ldap_delete(self, dn: str) -> None:
        self._record("ldap_delete", dn)
        if not self.check_mode:
            self.conn.delete(dn)
            check_result(self.conn, f"deleting {dn}")

    def _smb_write(self, data: bytes, *parts: str) -> None:
        self._record("smb_write", "\\".join(parts), size=len(data))
        if not self.check_mode:
            self.sysvol.write(data, *parts)

    def _smb_mkdir(self, *parts: str) -> None:
        self._record("smb_mkdir", "\\".join(parts))
        if not self.check_mode:
            self.sysvol.makedirs(*parts)

    # --- reading ---------------------------------------------------------------------------
    @property
    def policies_dn(self) -> str:
        return f"CN=Policies,CN=System,{self.domain_dn}"

    def find(self, name: str | None, guid: str | None) -> _Gpc | None:
        if guid:
            dn = gpc_dn(guid, self.domain_dn)
            found = self._search(
                dn, "(objectClass=groupPolicyContainer)", ldap3.BASE, GPC_ATTRIBUTES
            )
        else:
            flt = f"(&(objectClass=groupPolicyContainer)(displayName={escape_filter_chars(name)}))"
            found = self._search(self.policies_dn, flt, ldap3.LEVEL, GPC_ATTRIBUTES)
            if len(found) > 1:
                names = ", ".join(r["dn"] for r in found)
                raise GpoError(f"{len(found)} GPOs are named {name!r} ({names}): give guid")
        if not found:
            return None
        entry = found[0]
        guid_text = entry["dn"].split(",", 1)[0].split("=", 1)[1]
        return _Gpc(entry["dn"], normalize_guid(guid_text), dict(entry["attributes"]))

    def _linking_containers(self, guid: str) -> dict[str, list[GpLink]]:
        flt = f"(gPLink=*{escape_filter_chars(guid)}*)"
        found: dict[str, list[GpLink]] = {}
        bases = [self.domain_dn, f"CN=Sites,{self.root.configuration_naming_context}"]
        for base in bases:
            for entry in self._search(base, flt, ldap3.SUBTREE, ["gPLink"]):
                links = parse_gplink(str(first(entry["attributes"], "gPLink", "")))
                if any(link.is_for(guid) for link in links):
                    found[entry["dn"]] = links
        return found

    def _read_gplink(self, target: str) -> list[GpLink]:
        found = self._search(target, "(objectClass=*)", ldap3.BASE, ["gPLink"])
        if not found:
            raise GpoError(f"link target {target!r} does not exist")
        return parse_gplink(str(first(found[0]["attributes"], "gPLink", "") or ""))

    def _read_registry(self, guid: str) -> list[preg.PolEntry]:
        raw = self.sysvol.read(guid, *REGISTRY_POL)
        if raw is None:
            return []
        try:
            return preg.decode(raw)
        except preg.PolFormatError as exc:
            raise GpoError(f"{guid}\\User\\Registry.pol on SYSVOL: {exc}") from None

    # --- the run ---------------------------------------------------------------------------
    def apply(self, request: GpoRequest) -> dict[str, Any]:
        self.check_mode = request.check_mode
        if request.guid:
            request.guid = normalize_guid(request.guid)
        if not request.guid and not request.name:
            raise GpoError("give name or guid")
        gpc = self.find(request.name, request.guid)
        if request.state == "absent":
            return self._absent(gpc)
        return self._present(request, gpc)

    def _absent(self, gpc: _Gpc | None) -> dict[str, Any]:
        if gpc is None:
            return self._result(False, None, {"exists": False}, {"exists": False})
        containers = self._linking_containers(gpc.guid)
        for container, links in containers.items():
            self._write_gplink(container, links, remove_link(links, gpc.guid))
        self._record("smb_remove_tree", gpc.guid)
        if not self.check_mode:
            self.sysvol.remove_tree(gpc.guid)
        children = self._search(gpc.dn, "(objectClass=*)", ldap3.SUBTREE, ["objectClass"])
        for dn in sorted((c["dn"] for c in children), key=lambda d: -d.count(",")):
            self._ldap_delete(dn)
        before = {"exists": True, "guid": gpc.guid, "links": sorted(containers)}
        return self._result(True, gpc, before, {"exists": False})

    def _present(self, request: GpoRequest, gpc: _Gpc | None) -> dict[str, Any]:
        created = gpc is None
        if created:
            guid = request.guid or new_gpo_guid()
            if not request.name:
                raise GpoError(f"GPO {guid} does not exist; give name to create it")
            gpc = self._create(guid, request.name)
            current_entries: list[preg.PolEntry] = []
            sysvol_version: GpoVersion | None = None
            gpt_raw: bytes | None = None
        else:
            gpt_raw = self.sysvol.read(gpc.guid, GPT_INI)
            sysvol_version = parse_gpt_ini_version(gpt_raw) if gpt_raw is not None else None
            current_entries = self._read_registry(gpc.guid)
            if request.name and first(gpc.attributes, "displayName") != request.name:
                self._ldap_modify(gpc.dn, {"displayName": request.name})
        ad_version = gpc.version
        mismatch = not created and sysvol_version != ad_version
        change = merge_registry(current_entries, request.entries, request.registry_exclusive)

        mismatch_repair = mismatch and request.repair_version_mismatch
        new_version = ad_version
        if change.changed:
            base = max(ad_version, sysvol_version or GpoVersion())
            new_version = base.bump_user()
        elif mismatch_repair:
            new_version = max(ad_version, sysvol_version or GpoVersion())
        elif mismatch:
            self.warnings.append(
                f"GPO {gpc.guid} is out of sync: versionNumber {ad_version.number} in AD, "
                f"GPT.INI {'missing' if sysvol_version is None else sysvol_version.number} on "
                "SYSVOL; run with repair_version_mismatch=true to repair"
            )

        if not created and sysvol_version is None and (change.changed or mismatch_repair):
            for folder in ((), ("User",), ("Machine",)):
                self._smb_mkdir(gpc.guid, *folder)
        if change.changed:
            self._smb_write(preg.encode(change.entries), gpc.guid, *REGISTRY_POL)
        gpt_written = created or (
            new_version != sysvol_version and (change.changed or mismatch_repair)
        )
        if gpt_written:
            self._smb_write(update_gpt_ini(gpt_raw, new_version), gpc.guid, GPT_INI)
        for relative, data in request.files.items():
            self._publish_file(relative, data)

        gpc_changes: dict[str, Any] = {}
        extension_names = first(gpc.attributes, "gPCUserExtensionNames")
        if change.entries:
            wanted_names = add_extension_names(extension_names, REGISTRY_CSE, REGISTRY_TOOL_USER)
            if wanted_names != extension_names:
                gpc_changes["gPCUserExtensionNames"] = wanted_names
        if new_version != ad_version:
            gpc_changes["versionNumber"] = new_version.ldap_value
        if gpc_changes:
            self._ldap_modify(gpc.dn, gpc_changes)

        links_before, links_after = self._apply_links(gpc.guid, request)
        filter_before, filter_after = self._apply_security_filtering(gpc, request, created)
        before = {
            "exists": not created,
            "registry_values": change.before,
            "version": _version_view(ad_version, sysvol_version),
            "links": links_before,
            "security_filtering": filter_before,
        }
        after = {
            "exists": True,
            "registry_values": change.after,
            "version": _version_view(new_version, new_version if gpt_written else sysvol_version),
            "links": links_after,
            "security_filtering": filter_after,
        }
        result = self._result(bool(self.operations), gpc, before, after)
        result.update(
            version=new_version.as_dict(),
            version_mismatch=mismatch and not (change.changed or mismatch_repair),
            version_mismatch_found=mismatch,
            registry_values=change.after,
            links=links_after,
            security_filtering=filter_after,
        )
        return result

    def _create(self, guid: str, name: str) -> _Gpc:
        dn = gpc_dn(guid, self.domain_dn)
        attributes = {
            "objectClass": ["top", "container", "groupPolicyContainer"],
            "displayName": name,
            "gPCFileSysPath": gpt_unc_path(guid, self.domain),
            "flags": 0,
            "versionNumber": 0,
            "gPCFunctionalityVersion": FUNCTIONALITY_VERSION,
        }
        self._ldap_add(dn, attributes)
        for child in ("User", "Machine"):  # as samba-tool gpo create and GPMC make them
            self._ldap_add(f"CN={child},{dn}", {"objectClass": ["top", "container"]})
        for folder in ((), ("User",), ("Machine",)):
            self._smb_mkdir(guid, *folder)
        return _Gpc(dn, guid, {"displayName": [name], "versionNumber": [0]})

    def _publish_file(self, relative: str, data: bytes) -> None:
        parts = tuple(p for p in relative.replace("/", "\\").split("\\") if p)
        current = self.sysvol.read(*parts)
        if current == data:
            return
        if len(parts) > 1:
            self._smb_mkdir(*parts[:-1])
        self._smb_write(data, *parts)

    # --- links -----------------------------------------------------------------------------
    def _apply_links(self, guid: str, request: GpoRequest) -> tuple[dict, dict]:
        if request.links is None:
            return {}, {}
        gpo_dn = f"cn={guid},cn=policies,cn=system,{self.domain_dn}"  # as GPMC writes it
        current = self._linking_containers(guid)
        requested = {link.target.lower(): link for link in request.links}
        targets = {dn.lower(): dn for dn in current}
        for link in request.links:
            targets.setdefault(link.target.lower(), link.target)
        before: dict[str, dict] = {}
        after: dict[str, dict] = {}
        for key, target in sorted(targets.items()):
            links = current.get(target)
            if links is None:
                links = next((v for k, v in current.items() if k.lower() == key), None)
            if links is None:
                links = self._read_gplink(target)
            before[target] = _link_view(links, guid)
            wanted = requested.get(key)
            if wanted is None:
                new = remove_link(links, guid) if request.links_exclusive else list(links)
            elif wanted.state == "absent":
                new = remove_link(links, guid)
            else:
                existing = next((link for link in links if link.is_for(guid)), None)
                link_dn = existing.gpo_dn if existing else gpo_dn
                new = place_link(
                    links, GpLink(link_dn, wanted.enabled, wanted.enforced), wanted.order
                )
            after[target] = _link_view(new, guid)
            self._write_gplink(target, links, new)
        return _drop_unlinked(before), _drop_unlinked(after)

    def _write_gplink(self, target: str, old: list[GpLink], new: list[GpLink]) -> None:
        if format_gplink(old) == format_gplink(new):
            return
        value = format_gplink(new)
        self._record("ldap_modify", target, replace={"gPLink": value or "(removed)"})
        if not self.check_mode:
            self.conn.modify(target, {"gPLink": [(ldap3.MODIFY_REPLACE, [value] if value else [])]})
            check_result(self.conn, f"writing gPLink of {target}")

    # --- security filtering ----------------------------------------------------------------
    def _resolve_sid(self, principal: str) -> str:
        if principal.upper().startswith("S-1-"):
            return principal.upper()
        if principal.lower() in ("authenticated users", "nt authority\\authenticated users"):
            return AUTHENTICATED_USERS
        if "=" in principal:
            found = self._search(principal, "(objectClass=*)", ldap3.BASE, ["objectSid"])
        else:
            flt = f"(sAMAccountName={escape_filter_chars(principal)})"
            found = self._search(self.domain_dn, flt, ldap3.SUBTREE, ["objectSid"])
        if len(found) != 1:
            raise GpoError(f"security_filtering: no single account {principal!r} in the domain")
        return format_sid(found[0]["raw_attributes"]["objectSid"][0])

    def _apply_security_filtering(
        self, gpc: _Gpc, request: GpoRequest, created: bool
    ) -> tuple[list[str] | None, list[str] | None]:
        if request.security_filtering is None:
            return None, None
        sids = [self._resolve_sid(p) for p in request.security_filtering]
        controls = security_descriptor_control(sdflags=0x04)  # DACL only
        if created and self.check_mode:
            return [AUTHENTICATED_USERS], sorted(set(sids))
        self.conn.search(gpc.dn, "(objectClass=*)", ldap3.BASE,
                         attributes=["nTSecurityDescriptor"], controls=controls)  # fmt: skip
        check_result(self.conn, f"reading the ACL of {gpc.dn}")
        raw = self.conn.response[0]["raw_attributes"]["nTSecurityDescriptor"][0]
        current = SecurityDescriptor.parse(raw)
        wanted = security_filter(current, sids)
        if wanted.aces != current.aces:
            self._record("ldap_modify", gpc.dn, replace={"nTSecurityDescriptor": "DACL: "
                         f"Apply Group Policy for {', '.join(wanted.apply_trustees)}"})  # fmt: skip
            if not self.check_mode:
                self.conn.modify(
                    gpc.dn,
                    {"nTSecurityDescriptor": [(ldap3.MODIFY_REPLACE, [wanted.pack()])]},
                    controls=controls,
                )
                check_result(self.conn, f"writing the ACL of {gpc.dn}")
        return current.apply_trustees, wanted.apply_trustees

    # --- result ----------------------------------------------------------------------------
    def _result(self, changed: bool, gpc: _Gpc | None, before: dict, after: dict) -> dict:
        result: dict[str, Any] = {
            "changed": changed,
            "operations": self.operations,
            "warnings": self.warnings,
            "diff": {"before": before, "after": after},
        }
        if gpc is not None:
            result.update(
                guid=gpc.guid,
                dn=gpc.dn,
                gpt_path=gpt_unc_path(gpc.guid, self.domain),
            )
        return result


def _version_view(ad: GpoVersion, sysvol: GpoVersion | None) -> dict:
    return {"ad": ad.number, "sysvol": None if sysvol is None else sysvol.number}


def _link_view(links: Sequence[GpLink], guid: str) -> dict:
    mine = next((link for link in links if link.is_for(guid)), None)
    if mine is None:
        return {"linked": False}
    return {
        "linked": True,
        "enabled": mine.enabled,
        "enforced": mine.enforced,
        "order": link_order(links, guid),
    }


def _drop_unlinked(view: dict[str, dict]) -> dict[str, dict]:
    return {target: state for target, state in view.items() if state["linked"]}


def _printable(attributes: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v if isinstance(v, str | int | list) else str(v) for k, v in attributes.items()}
