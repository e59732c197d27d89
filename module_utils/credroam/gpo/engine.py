"""Read one GPO (:class:`GpoReader`) and bring it to the wanted state (:class:`GpoApplier`).

The engine behind ``library/ad_gpo.py`` and ``library/ad_gpo_info.py``. It reads everything
first (the groupPolicyContainer and its ACL, on every SYSVOL listed GPT.INI, User\\Registry.pol
and the folder's NT ACL, the gPLink of every container involved), lets the pure functions of
:mod:`gpo` and :mod:`secdesc` decide, and only then writes, in an order that keeps a GPO
consistent for clients even if it stops half-way: the folder's ACL before anything is created
in it (so files inherit the right ACL), files before the directory's version number (so a client
that sees the new version always finds the new files). Every write is recorded in
``operations`` (in check mode they are recorded and not performed), so a caller can show
exactly what was done.

SYSVOL is not replicated between Samba DCs, so the template is kept on every DC listed in
``sysvol_servers``; the first one is the reference for Registry.pol content a run does not set.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import ldap3
from ldap3.protocol.microsoft import security_descriptor_control
from ldap3.utils.conv import escape_filter_chars

from ..connection import RootDse, check_result, first
from . import preg
from .model import (
    FUNCTIONALITY_VERSION,
    REGISTRY_CSE,
    REGISTRY_TOOL_USER,
    GpLink,
    GpoError,
    GpoVersion,
    SysvolCopy,
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
    same_registry,
    sysvol_copy_problem,
    target_version,
    update_gpt_ini,
)
from .secdesc import (
    AUTHENTICATED_USERS,
    SecurityDescriptor,
    SecurityDescriptorError,
    format_sid,
    gpt_folder_descriptor,
    same_access,
    security_filter,
)
from .sysvol import Sysvol

__all__ = ["GpoApplier", "GpoReader", "GpoRequest", "GptState", "LinkRequest", "gpt_problems"]

GPC_ATTRIBUTES = [
    "displayName",
    "gPCFileSysPath",
    "versionNumber",
    "flags",
    "gPCFunctionalityVersion",
    "gPCUserExtensionNames",
    "whenChanged",
]
GPT_INI = "GPT.INI"
REGISTRY_POL = ("User", "Registry.pol")
# SD flags control values ([MS-ADTS] 3.1.1.3.4.1.11): which parts of nTSecurityDescriptor.
SD_OWNER_GROUP_DACL = 0x07
SD_DACL = 0x04


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


@dataclass(frozen=True)
class GptState:
    """One DC's copy of a GPO's template folder, as read."""

    server: str
    gpt_ini: bytes | None  # None: GPT.INI missing
    registry: list[preg.PolEntry]
    acl: SecurityDescriptor | None  # None: the folder is missing

    @property
    def version(self) -> GpoVersion | None:
        if self.gpt_ini is None:
            return None
        try:
            return parse_gpt_ini_version(self.gpt_ini)
        except GpoError as exc:
            raise GpoError(f"GPT.INI on {self.server}: {exc}") from None

    @property
    def copy(self) -> SysvolCopy:
        return SysvolCopy(self.server, self.version, tuple(self.registry))


class GpoReader:
    """Read-only view of GPOs through one DC's LDAP and the SYSVOL of each server listed."""

    def __init__(
        self,
        conn: ldap3.Connection,
        root: RootDse,
        sysvol_factory: Callable[[str], Sysvol],
        sysvol_servers: Sequence[str],
    ) -> None:
        servers = list(dict.fromkeys(s for s in sysvol_servers if s))
        if not servers:
            raise GpoError("no SYSVOL server to read the GPO template from")
        self.conn = conn
        self.root = root
        self.domain_dn = root.default_naming_context
        self.domain = root.domain_dns_name
        self.sysvol_servers = servers
        self._sysvol_factory = sysvol_factory
        self._sysvols: dict[str, Sysvol] = {}

    def sysvol(self, server: str) -> Sysvol:
        if server not in self._sysvols:
            self._sysvols[server] = self._sysvol_factory(server)
        return self._sysvols[server]

    def close(self) -> None:
        for sysvol in self._sysvols.values():
            sysvol.close()

    def _search(
        self, base: str, flt: str, scope, attributes: Sequence[str], controls=None
    ) -> list[dict]:
        self.conn.search(
            base, flt, search_scope=scope, attributes=list(attributes), controls=controls
        )
        result = self.conn.result or {}
        if result.get("result") == 32:  # noSuchObject
            return []
        check_result(self.conn, f"search under {base}")
        return [r for r in self.conn.response or [] if r.get("type") == "searchResEntry"]

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

    def read_gpc_descriptor(self, dn: str) -> SecurityDescriptor:
        """Owner, group and DACL of the GPC (the SACL needs a privilege and is not used)."""
        controls = security_descriptor_control(sdflags=SD_OWNER_GROUP_DACL)
        found = self._search(dn, "(objectClass=*)", ldap3.BASE, ["nTSecurityDescriptor"], controls)
        values = found[0]["raw_attributes"].get("nTSecurityDescriptor") if found else None
        if not values:
            raise GpoError(f"cannot read the nTSecurityDescriptor of {dn} (needs an admin)")
        try:
            return SecurityDescriptor.parse(values[0])
        except SecurityDescriptorError as exc:
            raise GpoError(f"nTSecurityDescriptor of {dn}: {exc}") from None

    def read_gpt(self, guid: str, server: str) -> GptState:
        sysvol = self.sysvol(server)
        raw_acl = sysvol.read_security(guid)
        gpt_ini = sysvol.read(guid, GPT_INI) if raw_acl is not None else None
        raw_pol = sysvol.read(guid, *REGISTRY_POL) if raw_acl is not None else None
        try:
            registry = preg.decode(raw_pol) if raw_pol is not None else []
        except preg.PolFormatError as exc:
            raise GpoError(f"{guid}\\User\\Registry.pol on {server}: {exc}") from None
        try:
            acl = SecurityDescriptor.parse(raw_acl) if raw_acl is not None else None
        except SecurityDescriptorError as exc:
            raise GpoError(f"NT ACL of {guid} on {server}: {exc}") from None
        return GptState(server, gpt_ini, registry, acl)

    def linking_containers(self, guid: str) -> dict[str, list[GpLink]]:
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

    def inspect(self, name: str | None, guid: str | None) -> dict[str, Any]:
        """Everything known about one GPO and the problems found, for ``ad_gpo_info``."""
        gpc = self.find(name, normalize_guid(guid) if guid else None)
        if gpc is None:
            return {"exists": False}
        gpts = [self.read_gpt(gpc.guid, server) for server in self.sysvol_servers]
        descriptor = self.read_gpc_descriptor(gpc.dn)
        folder_acl = gpt_folder_descriptor(descriptor)
        problems = gpt_problems(gpc.guid, gpc.version, gpts, folder_acl)
        containers = self.linking_containers(gpc.guid)
        attributes = {k: _plain(v) for k, v in gpc.attributes.items()}
        return {
            "exists": True,
            "guid": gpc.guid,
            "dn": gpc.dn,
            "name": first(gpc.attributes, "displayName"),
            "gpt_path": gpt_unc_path(gpc.guid, self.domain),
            "attributes": attributes,
            "version": gpc.version.as_dict(),
            "sysvols": {
                gpt.server: {
                    "exists": gpt.acl is not None,
                    "version": None if gpt.version is None else gpt.version.as_dict(),
                    "registry_values": [e.describe() for e in gpt.registry],
                    "acl_in_sync": gpt.acl is not None and same_access(gpt.acl, folder_acl),
                }
                for gpt in gpts
            },
            "registry_values": [e.describe() for e in gpts[0].registry],
            "links": {dn: _link_view(links, gpc.guid) for dn, links in sorted(containers.items())},
            "security_filtering": descriptor.apply_trustees,
            "problems": problems,
        }


class GpoApplier(GpoReader):
    """One run: LDAP through one DC, the template on every SYSVOL server listed."""

    def __init__(
        self,
        conn: ldap3.Connection,
        root: RootDse,
        sysvol_factory: Callable[[str], Sysvol],
        sysvol_servers: Sequence[str],
    ) -> None:
        super().__init__(conn, root, sysvol_factory, sysvol_servers)
        self.operations: list[dict[str, Any]] = []
        self.warnings: list[str] = []
        self.check_mode = False

    # --- writes, each recorded ----------------------------------------------------------------
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

    def _smb_write(self, server: str, data: bytes, *parts: str) -> None:
        self._record("smb_write", "\\".join(parts), server=server, size=len(data))
        if not self.check_mode:
            self.sysvol(server).write(data, *parts)

    def _smb_mkdir(self, server: str, *parts: str) -> None:
        self._record("smb_mkdir", "\\".join(parts), server=server)
        if not self.check_mode:
            self.sysvol(server).makedirs(*parts)

    def _smb_set_acl(self, server: str, acl: SecurityDescriptor | None, guid: str) -> None:
        self._record("smb_set_acl", guid, server=server, acl="from the GPC's nTSecurityDescriptor")
        if not self.check_mode:
            assert acl is not None, "a folder ACL is only unknown in check mode"
            self.sysvol(server).write_security(acl.pack(), guid)

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
        containers = self.linking_containers(gpc.guid)
        for container, links in containers.items():
            self._write_gplink(container, links, remove_link(links, gpc.guid))
        for server in self.sysvol_servers:
            if self.sysvol(server).exists(gpc.guid):
                self._record("smb_remove_tree", gpc.guid, server=server)
                if not self.check_mode:
                    self.sysvol(server).remove_tree(gpc.guid)
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
            gpts = [GptState(server, None, [], None) for server in self.sysvol_servers]
        else:
            gpts = [self.read_gpt(gpc.guid, server) for server in self.sysvol_servers]
            if request.name and first(gpc.attributes, "displayName") != request.name:
                self._ldap_modify(gpc.dn, {"displayName": request.name})
        ad_version = gpc.version
        copies = [gpt.copy for gpt in gpts]
        change = merge_registry(copies[0].entries, request.entries, request.registry_exclusive)
        lags = {} if created else _lags(ad_version, copies)
        repair = bool(lags) and request.repair_version_mismatch
        new_version = target_version(ad_version, copies, change.entries, change.changed, repair)
        write_content = created or change.changed or repair
        if lags and not write_content:
            for problem in lags.values():
                self.warnings.append(
                    f"GPO {gpc.guid} is out of sync: {problem}; "
                    "run with repair_version_mismatch=true to repair"
                )

        # The GPC's ACL first: the folders' NT ACLs are derived from it.
        filter_before, filter_after, descriptor = self._apply_security_filtering(
            gpc, request, created
        )
        folder_acl = gpt_folder_descriptor(descriptor) if descriptor else None
        acl_before = {}
        for gpt in gpts:
            acl_before[gpt.server] = self._sync_gpt(
                gpc.guid, gpt, folder_acl, change.entries if write_content else None, new_version
            )
            for relative, data in request.files.items():
                self._publish_file(gpt.server, relative, data)

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
        versions_before = {gpt.server: _number(gpt.copy.version) for gpt in gpts}
        versions_after = {
            gpt.server: new_version.number if write_content else _number(gpt.copy.version)
            for gpt in gpts
        }
        before = {
            "exists": not created,
            "registry_values": change.before,
            "version": {"ad": ad_version.number, "sysvol": versions_before},
            "sysvol_acl": acl_before,
            "links": links_before,
            "security_filtering": filter_before,
        }
        after = {
            "exists": True,
            "registry_values": change.after,
            "version": {"ad": new_version.number, "sysvol": versions_after},
            "sysvol_acl": {
                server: "in sync" if state != "missing" or write_content else state
                for server, state in acl_before.items()
            },
            "links": links_after,
            "security_filtering": filter_after,
        }
        result = self._result(bool(self.operations), gpc, before, after)
        result.update(
            version=new_version.as_dict(),
            sysvol_versions=versions_after,
            version_mismatch=bool(lags) and not write_content,
            version_mismatch_found=bool(lags),
            lagging_sysvols=sorted(lags),
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
        return _Gpc(dn, guid, {"displayName": [name], "versionNumber": [0]})

    def _sync_gpt(
        self,
        guid: str,
        gpt: GptState,
        folder_acl: SecurityDescriptor | None,
        entries: list[preg.PolEntry] | None,
        version: GpoVersion,
    ) -> str:
        """Bring one SYSVOL's copy in line: the folder's ACL always; with ``entries`` (content
        to write) also Registry.pol and GPT.INI. Returns how the ACL was found."""
        server = gpt.server
        if gpt.acl is None:
            if entries is None:
                return "missing"  # reported as a lagging SYSVOL; repaired on request
            self._smb_mkdir(server, guid)
            self._smb_set_acl(server, folder_acl, guid)  # before anything inherits from it
            acl_state = "missing"
        elif folder_acl is None or not same_access(gpt.acl, folder_acl):
            self._smb_set_acl(server, folder_acl, guid)
            acl_state = "drift"
        else:
            acl_state = "in sync"
        if entries is None:
            return acl_state
        if gpt.gpt_ini is None:
            for folder in ("User", "Machine"):
                self._smb_mkdir(server, guid, folder)
        if not same_registry(gpt.registry, entries):
            self._smb_write(server, preg.encode(entries), guid, *REGISTRY_POL)
        if gpt.copy.version != version:
            self._smb_write(server, update_gpt_ini(gpt.gpt_ini, version), guid, GPT_INI)
        return acl_state

    def _publish_file(self, server: str, relative: str, data: bytes) -> None:
        parts = tuple(p for p in relative.replace("/", "\\").split("\\") if p)
        current = self.sysvol(server).read(*parts)
        if current == data:
            return
        if len(parts) > 1:
            self._smb_mkdir(server, *parts[:-1])
        self._smb_write(server, data, *parts)

    # --- links -----------------------------------------------------------------------------
    def _apply_links(self, guid: str, request: GpoRequest) -> tuple[dict, dict]:
        if request.links is None:
            return {}, {}
        gpo_dn = f"cn={guid},cn=policies,cn=system,{self.domain_dn}"  # as GPMC writes it
        current = self.linking_containers(guid)
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
    ) -> tuple[list[str] | None, list[str] | None, SecurityDescriptor | None]:
        """Before and after (None when not managed) and the GPC's descriptor after the run
        (None only for a GPC that check mode did not create)."""
        sids = None
        if request.security_filtering is not None:
            sids = [self._resolve_sid(p) for p in request.security_filtering]
        if created and self.check_mode:
            if sids is None:
                return None, None, None
            return [AUTHENTICATED_USERS], sorted(set(sids)), None
        current = self.read_gpc_descriptor(gpc.dn)
        if sids is None:
            return None, None, current
        wanted = security_filter(current, sids)
        if wanted.aces != current.aces:
            self._record("ldap_modify", gpc.dn, replace={"nTSecurityDescriptor": "DACL: "
                         f"Apply Group Policy for {', '.join(wanted.apply_trustees)}"})  # fmt: skip
            if not self.check_mode:
                self.conn.modify(
                    gpc.dn,
                    {"nTSecurityDescriptor": [(ldap3.MODIFY_REPLACE, [wanted.pack()])]},
                    controls=security_descriptor_control(sdflags=SD_DACL),
                )
                check_result(self.conn, f"writing the ACL of {gpc.dn}")
        return current.apply_trustees, wanted.apply_trustees, wanted

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


def gpt_problems(
    guid: str, ad_version: GpoVersion, gpts: Sequence[GptState], folder_acl: SecurityDescriptor
) -> list[dict[str, str]]:
    """What is wrong with each SYSVOL copy: kind (missing_gpt, version_mismatch,
    content_mismatch, acl_drift), server and a message naming both."""
    problems = []
    reference = gpts[0].copy
    for gpt in gpts:
        copy = gpt.copy
        lag = sysvol_copy_problem(ad_version, copy, reference)
        if lag is not None:
            if copy.version is None:
                kind = "missing_gpt"
            elif copy.version != ad_version:
                kind = "version_mismatch"
            else:
                kind = "content_mismatch"
            problems.append({"kind": kind, "server": gpt.server, "message": lag})
        if gpt.acl is not None and not same_access(gpt.acl, folder_acl):
            message = (
                f"NT ACL of {guid} on {gpt.server} does not follow the GPC's nTSecurityDescriptor"
            )
            problems.append({"kind": "acl_drift", "server": gpt.server, "message": message})
    return problems


def _number(version: GpoVersion | None) -> int | None:
    return None if version is None else version.number


def _lags(ad_version: GpoVersion, copies: Sequence[SysvolCopy]) -> dict[str, str]:
    """Lagging SYSVOL server -> what is wrong with its copy."""
    found = {c.server: sysvol_copy_problem(ad_version, c, copies[0]) for c in copies}
    return {server: problem for server, problem in found.items() if problem is not None}


def _plain(values: Any) -> Any:
    """An LDAP attribute value as JSON-friendly data (single values unwrapped)."""
    if isinstance(values, list | tuple):
        items = [_plain(v) for v in values]
        return items[0] if len(items) == 1 else items
    if isinstance(values, bytes):
        return values.hex()
    return values if isinstance(values, str | int | bool | type(None)) else str(values)


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
