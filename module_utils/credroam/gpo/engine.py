"""Read one GPO (:class:`GpoReader`) and bring it to the wanted state (:class:`GpoApplier`).

The engine behind ``library/ad_gpo.py`` and ``library/ad_gpo_info.py``. A run plans first and
writes second, as the schema plan does: planning reads everything (the groupPolicyContainer,
its children and its ACL; on every SYSVOL listed GPT.INI, User\\Registry.pol and the NT ACL of
the folder and of everything in it; the gPLink of every container involved), resolves every
group and link target, and lets the pure functions of :mod:`gpo` and :mod:`secdesc` decide.
A mistyped group or link target, or a SYSVOL that cannot be reached, therefore fails the run
before anything is written. Only then are the planned writes executed, in an order that keeps a
GPO consistent for clients even if it stops half-way: the folder's ACL before anything is
created in it (so files inherit a readable ACL), files before the directory's version number
(so a client that sees the new version always finds the new files). ``operations`` lists the
writes done (in check mode: planned and not done); a write that fails raises
:class:`GpoIncomplete` with the writes done and those left, and the next run plans from what it
finds, which completes a half-made GPO.

SYSVOL is not replicated between Samba DCs, so the template is kept on every DC listed in
``sysvol_servers``; the first one is the reference for Registry.pol content a run does not set.
Every file and folder in a GPO's folder carries the folder's own ACL, as ``samba-tool ntacl
sysvolreset`` sets it and ``sysvolcheck`` expects.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import ldap3
from ldap3.protocol.microsoft import security_descriptor_control
from ldap3.utils.conv import escape_filter_chars

from ..connection import RootDse
from ..ldapresult import check_result, first
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

__all__ = [
    "GpoApplier",
    "GpoIncomplete",
    "GpoReader",
    "GpoRequest",
    "GptState",
    "LinkRequest",
    "gpt_problems",
]

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
GPC_CHILDREN = ("User", "Machine")  # as samba-tool gpo create and GPMC make them
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
    # Every file and folder inside, by path under Policies ({GUID}, ...), with its NT ACL.
    contents: Mapping[tuple[str, ...], SecurityDescriptor] = field(default_factory=dict)

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

    def drifted(self, folder_acl: SecurityDescriptor) -> list[tuple[str, ...]]:
        """Paths inside the folder whose ACL is not the folder's own (what sysvolcheck wants)."""
        return [path for path, acl in self.contents.items() if not same_access(acl, folder_acl)]


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
        if not check_result(self.conn, f"search under {base}", missing_ok=True):
            return []
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
        """One SYSVOL's copy; a missing copy is accepted where the share has the domain folder."""
        sysvol = self.sysvol(server)
        raw_acl = sysvol.read_security(guid)
        if raw_acl is None:
            # A joined Samba DC starts with no Policies folder (Samba does not replicate
            # SYSVOL): the GPO's folder is then made with its parent. A share without the
            # domain's folder means a wrong server or domain name, and nothing is written.
            if not sysvol.exists() and not sysvol.domain_exists():
                raise GpoError(f"{sysvol.domain_root} does not exist on {server}")
            return GptState(server, None, [], None)
        gpt_ini = sysvol.read(guid, GPT_INI)
        raw_pol = sysvol.read(guid, *REGISTRY_POL)
        try:
            registry = preg.decode(raw_pol) if raw_pol is not None else []
        except preg.PolFormatError as exc:
            raise GpoError(f"{guid}\\User\\Registry.pol on {server}: {exc}") from None
        return GptState(
            server,
            gpt_ini,
            registry,
            self._parse_acl(raw_acl, (guid,), server),
            {path: self._read_acl(sysvol, path, server) for path in sysvol.tree(guid)},
        )

    @staticmethod
    def _read_acl(sysvol: Sysvol, path: tuple[str, ...], server: str) -> SecurityDescriptor:
        raw = sysvol.read_security(*path)
        if raw is None:
            raise GpoError(f"{_display(path)} on {server} vanished while it was read")
        return GpoReader._parse_acl(raw, path, server)

    @staticmethod
    def _parse_acl(raw: bytes, path: tuple[str, ...], server: str) -> SecurityDescriptor:
        try:
            return SecurityDescriptor.parse(raw)
        except SecurityDescriptorError as exc:
            raise GpoError(f"NT ACL of {_display(path)} on {server}: {exc}") from None

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
                    "acl_in_sync": gpt.acl is not None
                    and same_access(gpt.acl, folder_acl)
                    and not gpt.drifted(folder_acl),
                }
                for gpt in gpts
            },
            "registry_values": [e.describe() for e in gpts[0].registry],
            "links": {dn: _link_view(links, gpc.guid) for dn, links in sorted(containers.items())},
            "security_filtering": descriptor.apply_trustees,
            "problems": problems,
        }


@dataclass(frozen=True)
class _Step:
    """One planned write: what it is (an entry of ``operations``) and how to do it."""

    operation: dict[str, Any] | None  # None: a read that later writes depend on
    run: Callable[[], bool | None]  # False: found unnecessary when run, nothing written


class GpoIncomplete(GpoError):
    """A planned write failed: ``done`` lists the writes made, ``left`` those not made."""

    def __init__(self, cause: Exception, done: list[dict[str, Any]], left: list[dict[str, Any]]):
        self.cause = cause
        self.done = done
        self.left = left
        super().__init__(f"{cause}; {self.summary}")

    @property
    def summary(self) -> str:
        if not self.done:
            return "nothing was written"
        return (
            f"{len(self.done)} of {len(self.done) + len(self.left)} writes done, left undone: "
            + "; ".join(_describe(op) for op in self.left)
            + ". Run again to complete the GPO"
        )


class GpoApplier(GpoReader):
    """One run: LDAP through one DC, the template on every SYSVOL server listed.

    :meth:`apply` plans (reads only, every input checked) and then executes the plan."""

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
        self._steps: list[_Step] = []
        # The GPC's descriptor once known: read while planning, or after creating the GPC.
        self._descriptor: SecurityDescriptor | None = None

    # --- planned writes ----------------------------------------------------------------------
    def _plan(self, kind: str, target: str, run: Callable[[], Any], **details: Any) -> None:
        self._steps.append(_Step({"kind": kind, "target": target, **details}, run))

    def _execute(self) -> None:
        for index, step in enumerate(self._steps):
            try:
                written = step.run()
            # Whatever stops a write, the caller must learn what was done and what was not.
            except Exception as exc:
                left = [s.operation for s in self._steps[index:] if s.operation]
                raise GpoIncomplete(exc, list(self.operations), left) from exc
            if step.operation is not None and written is not False:
                self.operations.append(step.operation)

    def _ldap_add(self, dn: str, attributes: dict[str, Any]) -> None:
        def run() -> None:
            self.conn.add(dn, attributes=attributes)
            check_result(self.conn, f"adding {dn}")

        self._plan("ldap_add", dn, run, attributes=_printable(attributes))

    def _ldap_modify(self, dn: str, changes: dict[str, Any]) -> None:
        def run() -> None:
            self.conn.modify(dn, {k: [(ldap3.MODIFY_REPLACE, v)] for k, v in changes.items()})
            check_result(self.conn, f"modifying {', '.join(changes)} of {dn}")

        self._plan("ldap_modify", dn, run, replace=_printable(changes))

    def _ldap_delete(self, dn: str) -> None:
        def run() -> None:
            self.conn.delete(dn)
            check_result(self.conn, f"deleting {dn}")

        self._plan("ldap_delete", dn, run)

    def _smb_write(self, server: str, data: bytes, *parts: str) -> None:
        self._plan(
            "smb_write",
            _display(parts),
            lambda: self.sysvol(server).write(data, *parts),
            server=server,
            size=len(data),
        )

    def _smb_mkdir(self, server: str, *parts: str) -> None:
        self._plan("smb_mkdir", _display(parts), lambda: self.sysvol(server).makedirs(*parts),
                   server=server)  # fmt: skip

    def _smb_remove_tree(self, server: str, guid: str) -> None:
        self._plan("smb_remove_tree", guid, lambda: self.sysvol(server).remove_tree(guid),
                   server=server)  # fmt: skip

    def _smb_set_acl(self, server: str, folder_acl: SecurityDescriptor | None, *parts: str) -> None:
        """Give ``parts`` the GPO folder's ACL (``None``: derived from the GPC once created)."""

        def run() -> None:
            acl = folder_acl or gpt_folder_descriptor(self._gpc_descriptor_after())
            self.sysvol(server).write_security(acl.pack(), *parts)

        self._plan("smb_set_acl", _display(parts), run, server=server,
                   acl="the GPO folder's, from the GPC's nTSecurityDescriptor")  # fmt: skip

    def _gpc_descriptor_after(self) -> SecurityDescriptor:
        assert self._descriptor is not None, "set by the GPC's creation or filtering steps"
        return self._descriptor

    # --- the run ---------------------------------------------------------------------------
    def apply(self, request: GpoRequest) -> dict[str, Any]:
        """Plan, then (unless check mode) write. Raises GpoError and friends before any write,
        :class:`GpoIncomplete` after some."""
        self._steps, self.operations, self._descriptor = [], [], None
        if request.guid:
            request.guid = normalize_guid(request.guid)
        if not request.guid and not request.name:
            raise GpoError("give name or guid")
        gpc = self.find(request.name, request.guid)
        result = self._absent(gpc) if request.state == "absent" else self._present(request, gpc)
        if request.check_mode:
            self.operations = [step.operation for step in self._steps if step.operation]
        else:
            self._execute()
        result.update(changed=bool(self.operations), operations=self.operations)
        return result

    def _absent(self, gpc: _Gpc | None) -> dict[str, Any]:
        if gpc is None:
            return self._result(gpc, {"exists": False}, {"exists": False})
        containers = self.linking_containers(gpc.guid)
        for container, links in containers.items():
            self._write_gplink(container, links, remove_link(links, gpc.guid))
        for server in self.sysvol_servers:
            if self.sysvol(server).exists(gpc.guid):
                self._smb_remove_tree(server, gpc.guid)
        children = self._search(gpc.dn, "(objectClass=*)", ldap3.SUBTREE, ["objectClass"])
        for dn in sorted((c["dn"] for c in children), key=lambda d: -d.count(",")):
            self._ldap_delete(dn)
        before = {"exists": True, "guid": gpc.guid, "links": sorted(containers)}
        return self._result(gpc, before, {"exists": False})

    def _present(self, request: GpoRequest, gpc: _Gpc | None) -> dict[str, Any]:
        created = gpc is None
        if created:
            guid = request.guid or new_gpo_guid()
            if not request.name:
                raise GpoError(f"GPO {guid} does not exist; give name to create it")
            gpc = _Gpc(gpc_dn(guid, self.domain_dn), guid, {"displayName": [request.name]})
        # Every SYSVOL is reached (and every group resolved, every link target read) before
        # the first write is planned, let alone made.
        gpts = [self.read_gpt(gpc.guid, server) for server in self.sysvol_servers]
        sids = self._resolve_filtering(request.security_filtering)
        links_before, links_after, link_writes = self._plan_links(gpc.guid, request)
        if created:
            self._create(gpc.guid, gpc.dn, request.name)
        else:
            self._complete_children(gpc.dn)
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
        filter_before, filter_after, descriptor = self._plan_security_filtering(gpc, sids, created)
        folder_acl = gpt_folder_descriptor(descriptor) if descriptor else None
        acl_before = {}
        for gpt in gpts:
            acl_before[gpt.server] = self._sync_gpt(
                gpc.guid, gpt, folder_acl, change.entries if write_content else None, new_version,
                request.files,
            )  # fmt: skip

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

        for target, old, new in link_writes:
            self._write_gplink(target, old, new)
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
        result = self._result(gpc, before, after)
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

    def _create(self, guid: str, dn: str, name: str) -> None:
        attributes = {
            "objectClass": ["top", "container", "groupPolicyContainer"],
            "displayName": name,
            "gPCFileSysPath": gpt_unc_path(guid, self.domain),
            "flags": 0,
            "versionNumber": 0,
            "gPCFunctionalityVersion": FUNCTIONALITY_VERSION,
        }
        self._ldap_add(dn, attributes)
        for child in GPC_CHILDREN:
            self._ldap_add(f"CN={child},{dn}", {"objectClass": ["top", "container"]})
        # The new GPC's descriptor (AD derives it) is what its folders' ACLs are made from.
        self._steps.append(_Step(None, lambda: self._set_descriptor(self.read_gpc_descriptor(dn))))

    def _set_descriptor(self, descriptor: SecurityDescriptor) -> None:
        self._descriptor = descriptor

    def _complete_children(self, dn: str) -> None:
        """Add the User and Machine containers a GPO has, when a failed run left them out."""
        found = self._search(dn, "(objectClass=container)", ldap3.LEVEL, ["cn"])
        have = {str(first(entry["attributes"], "cn", "")).lower() for entry in found}
        for child in GPC_CHILDREN:
            if child.lower() not in have:
                self._ldap_add(f"CN={child},{dn}", {"objectClass": ["top", "container"]})

    def _sync_gpt(
        self,
        guid: str,
        gpt: GptState,
        folder_acl: SecurityDescriptor | None,
        entries: list[preg.PolEntry] | None,
        version: GpoVersion,
        files: Mapping[str, bytes],
    ) -> str:
        """Bring one SYSVOL's copy in line: the folder's ACL always, on the folder and on
        everything in it; with ``entries`` (content to write) also Registry.pol and GPT.INI;
        ``files`` published. Returns how the folder's ACL was found."""
        server = gpt.server
        if gpt.acl is None and entries is None:
            # Reported as a lagging SYSVOL and repaired on request; only what lives outside
            # the GPO's folder (the central store) is published.
            for relative, data in files.items():
                if not _inside(guid, relative):
                    self._publish_file(server, gpt, relative, data)
            return "missing"
        if gpt.acl is None:
            self._smb_mkdir(server, guid)
            self._smb_set_acl(server, folder_acl, guid)  # before anything inherits from it
            acl_state = "missing"
        elif folder_acl is None or not same_access(gpt.acl, folder_acl):
            self._smb_set_acl(server, folder_acl, guid)
            acl_state = "drift"
        else:
            acl_state = "in sync"
        written: list[tuple[str, ...]] = []
        if entries is not None:
            if gpt.gpt_ini is None:
                for folder in ("User", "Machine"):
                    written += self._mkdir_new(server, gpt, (guid, folder))
            if not same_registry(gpt.registry, entries):
                self._smb_write(server, preg.encode(entries), guid, *REGISTRY_POL)
                written.append((guid, *REGISTRY_POL))
            if gpt.copy.version != version:
                self._smb_write(server, update_gpt_ini(gpt.gpt_ini, version), guid, GPT_INI)
                written.append((guid, GPT_INI))
        for relative, data in files.items():
            written += self._publish_file(server, gpt, relative, data)
        # As sysvolreset does: everything inside carries the folder's own ACL, not an
        # inherited one. A file rewritten in place keeps its ACL; new paths inherited one.
        stale = list(gpt.contents) if folder_acl is None else gpt.drifted(folder_acl)
        new = [path for path in written if path not in gpt.contents]
        for path in dict.fromkeys(p for p in [*stale, *new] if _inside(guid, p)):
            self._smb_set_acl(server, folder_acl, *path)
        return acl_state

    def _mkdir_new(
        self, server: str, gpt: GptState, path: tuple[str, ...]
    ) -> list[tuple[str, ...]]:
        """Plan the folders of ``path`` that do not exist yet; the ones planned."""
        new = [path[:n] for n in range(2, len(path) + 1) if path[:n] not in gpt.contents]
        if new:
            self._smb_mkdir(server, *path)
        return new

    def _publish_file(
        self, server: str, gpt: GptState, relative: str, data: bytes
    ) -> list[tuple[str, ...]]:
        """Plan writing one extra file (and its folders); the paths it creates or replaces."""
        parts = tuple(p for p in relative.replace("/", "\\").split("\\") if p)
        if self.sysvol(server).read(*parts) == data:
            return []
        written: list[tuple[str, ...]] = []
        if len(parts) > 1:
            written += self._mkdir_new(server, gpt, parts[:-1])
        self._smb_write(server, data, *parts)
        return [*written, parts]

    # --- links -----------------------------------------------------------------------------
    def _plan_links(
        self, guid: str, request: GpoRequest
    ) -> tuple[dict, dict, list[tuple[str, list[GpLink], list[GpLink]]]]:
        """Links before and after, and the gPLink writes (target, old, new) that make them.
        Every target is read here, so a mistyped one fails the run before any write."""
        if request.links is None:
            return {}, {}, []
        gpo_dn = f"cn={guid},cn=policies,cn=system,{self.domain_dn}"  # as GPMC writes it
        current = self.linking_containers(guid)
        requested = {link.target.lower(): link for link in request.links}
        targets = {dn.lower(): dn for dn in current}
        for link in request.links:
            targets.setdefault(link.target.lower(), link.target)
        before: dict[str, dict] = {}
        after: dict[str, dict] = {}
        writes = []
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
            writes.append((target, links, new))
        return _drop_unlinked(before), _drop_unlinked(after), writes

    def _write_gplink(self, target: str, old: list[GpLink], new: list[GpLink]) -> None:
        if format_gplink(old) == format_gplink(new):
            return
        value = format_gplink(new)

        def run() -> None:
            self.conn.modify(target, {"gPLink": [(ldap3.MODIFY_REPLACE, [value] if value else [])]})
            check_result(self.conn, f"writing gPLink of {target}")

        self._plan("ldap_modify", target, run, replace={"gPLink": value or "(removed)"})

    # --- security filtering ----------------------------------------------------------------
    def _resolve_filtering(self, principals: Sequence[str] | None) -> list[str] | None:
        """The SIDs of the groups asked for (None: filtering not managed)."""
        if principals is None:
            return None
        return list(dict.fromkeys(self._resolve_sid(p) for p in principals))

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
        if len(found) != 1 or not found[0]["raw_attributes"].get("objectSid"):
            raise GpoError(f"security_filtering: no single account {principal!r} in the domain")
        return format_sid(found[0]["raw_attributes"]["objectSid"][0])

    def _plan_security_filtering(
        self, gpc: _Gpc, sids: list[str] | None, created: bool
    ) -> tuple[list[str] | None, list[str] | None, SecurityDescriptor | None]:
        """Before and after (None when not managed) and the GPC's descriptor after the run
        (None for a GPC not created yet: AD makes its descriptor, read once it exists)."""
        if created:
            if sids is not None:
                self._plan_filter_write(gpc.dn, sids, None)
            return (
                (None, None, None) if sids is None else ([AUTHENTICATED_USERS], sorted(sids), None)
            )
        current = self._descriptor = self.read_gpc_descriptor(gpc.dn)
        if sids is None:
            return None, None, current
        wanted = security_filter(current, sids)
        if wanted.aces != current.aces:
            self._plan_filter_write(gpc.dn, sids, wanted)
        return current.apply_trustees, wanted.apply_trustees, wanted

    def _plan_filter_write(
        self, dn: str, sids: list[str], wanted: SecurityDescriptor | None
    ) -> None:
        """Write the GPC's DACL with Apply Group Policy for ``sids``; ``wanted`` None: computed
        from the descriptor AD gave the GPC just created."""

        def run() -> bool:
            descriptor = wanted or security_filter(self._gpc_descriptor_after(), sids)
            if descriptor.aces == self._gpc_descriptor_after().aces:
                return False
            self.conn.modify(
                dn,
                {"nTSecurityDescriptor": [(ldap3.MODIFY_REPLACE, [descriptor.pack()])]},
                controls=security_descriptor_control(sdflags=SD_DACL),
            )
            check_result(self.conn, f"writing the ACL of {dn}")
            self._descriptor = descriptor
            return True

        described = f"DACL: Apply Group Policy for {', '.join(sorted(sids))}"
        self._plan("ldap_modify", dn, run, replace={"nTSecurityDescriptor": described})

    # --- result ----------------------------------------------------------------------------
    def _result(self, gpc: _Gpc | None, before: dict, after: dict) -> dict:
        """The result without ``changed`` and ``operations``, which the writes decide."""
        result: dict[str, Any] = {
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
    content_mismatch, acl_drift: of the folder, or of what is in it), server and a message
    naming both."""
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
        drifted = gpt.drifted(folder_acl) if gpt.acl is not None else []
        if drifted:
            paths = ", ".join(_display(path) for path in drifted)
            message = f"NT ACL of {paths} on {gpt.server} is not the GPO folder's own"
            problems.append({"kind": "acl_drift", "server": gpt.server, "message": message})
    return problems


def _inside(guid: str, path: str | Sequence[str]) -> bool:
    """Whether a Policies-relative path (text or parts) lies in the folder of GPO ``guid``."""
    first_part = path if isinstance(path, str) else path[0]
    return first_part.replace("/", "\\").split("\\")[0].upper() == guid.upper()


def _describe(operation: Mapping[str, Any]) -> str:
    """One operation in a sentence's words: kind, target and server."""
    where = f" on {operation['server']}" if "server" in operation else ""
    return f"{operation['kind']} {operation['target']}{where}"


def _display(path: Sequence[str]) -> str:
    """A SYSVOL path as Windows writes it, for messages and operations."""
    return "\\".join(path)


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
